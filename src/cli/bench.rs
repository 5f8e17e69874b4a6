//! `flowsteer bench`: throughput of the primitives of a run and of a whole FK run, against the
//! machine's own limit measured in the same process.
//!
//! For each particle count it times, after a warm-up and over repeats (median and min–max):
//! * `propagate`: `--steps` sampler steps ([`Backend::propagate`]); particle-steps/s, GFLOP/s
//!   from counted FLOPs (2 per multiply-add of the MLP, [`Mlp::macs_per_eval`] per evaluation:
//!   34,048 per midpoint step of the default model), and the fraction of the FP32 limit;
//! * `potential`: one weighing ([`Backend::weigh`]: x̂1, reward, potential, log-weights);
//! * `resample`: one resampling with its gather ([`Backend::resample`]); particles/s and GB/s;
//! * `steer`: a whole FK run through [`Backend::interval`] (docs/steering.md, docs/resampling.md, docs/schedules.md default schedule).
//!
//! Every row is generic over [`Backend`]; a primitive that a backend does not implement yet shows
//! as `n/a (reason)`. The FP32 limit on the CPU is the FMA peak of the pool's threads ([`peak`]),
//! sampled again right after every timed repeat (the clock may change); a blocked SGEMM
//! ([`sgemm`]) measured at the start shows how close real matrix code gets to it.
//!
//! Over 600 lines because the four timed rows, the SGEMM and the table share one set of
//! options and one measuring discipline; splitting them would scatter that discipline.

use std::time::Instant;

use anyhow::{bail, Context};

mod peak;

use super::particles::ParticleList;
use crate::backend::cpu::propagate::Isa;
use crate::backend::{Backend, BackendChoice, Init, IntervalPlan, Layout, RunSpec, WeighAt};
use crate::methods::ScheduleSpec;
use crate::model::{Activation, Mlp};
use crate::potential::Potential;
use crate::resample::ResampleScheme;
use crate::reward::{Reward, RewardOn, Term, DEFAULT_EPS};
use crate::sampler::{Sampler, SamplerKind, SdeForm};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Engine to measure: cpu, cuda, or auto (CUDA when usable, else the CPU).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Particle counts: a comma list and/or doubling ranges, e.g. `16384,65536` or `2^10..2^16`.
    #[arg(long, default_value = "2^14,2^16")]
    pub particles: ParticleList,
    /// Model file (safetensors); default: the default shape (D = 2, H = 64, L = 3, ELU) with
    /// random weights (the throughput does not depend on the weights' values).
    #[arg(long)]
    pub model: Option<std::path::PathBuf>,
    /// Sampler whose steps are timed: midpoint, euler or sde.
    #[arg(long, value_enum, default_value_t = SamplerKind::Sde)]
    pub sampler: SamplerKind,
    /// Grid steps of the time grid (the steer run integrates all of them).
    #[arg(long, default_value_t = 100)]
    pub grid: usize,
    /// Steps per timed propagate call.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Timed repeats of each measurement (the median and the min–max spread are reported).
    #[arg(long, default_value_t = 7)]
    pub repeats: usize,
    /// Untimed runs of each measurement before the timed ones.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Which rows to time (comma list of propagate, potential, resample, steer).
    #[arg(long, default_value = "propagate,potential,resample,steer")]
    pub rows: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Profile with Nsight: one warm-up and one repeat at the largest count of --particles, the
    /// steer row cut to its first INTERVALS resampling intervals (2 when bare), NVTX ranges on
    /// the CUDA backend. The numbers are not results (the JSON says "profile": INTERVALS).
    #[arg(long, value_name = "INTERVALS", num_args = 0..=1, default_missing_value = super::profile::DEFAULT_INTERVALS,
          value_parser = super::profile::parse_intervals)]
    pub profile: Option<usize>,
}

/// One measured row of the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    pub particles: usize,
    pub phase: String,
    /// Median seconds per call, and the fastest and slowest repeat; None when the row could not run.
    pub median_s: Option<f64>,
    pub min_s: Option<f64>,
    pub max_s: Option<f64>,
    /// particle-steps/s (propagate, steer) or particles/s (potential, resample).
    pub rate: Option<f64>,
    pub rate_unit: &'static str,
    pub gflops: Option<f64>,
    pub gbytes_per_s: Option<f64>,
    /// The FP32 limit (FMA peak) measured beside this row's repeats (median), GFLOP/s.
    pub fp32_limit_gflops: Option<f64>,
    /// Median over repeats of GFLOP/s over the FP32 limit measured right after that repeat.
    pub fraction_of_fp32_limit: Option<f64>,
    /// Why the row has no numbers.
    pub note: Option<String>,
}

/// The whole report (`--json`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    pub backend: String,
    pub device: String,
    pub kernels: String,
    pub threads: usize,
    pub model: String,
    pub sampler: String,
    pub fp32_limit_gflops: f64,
    pub fp32_limit_source: String,
    /// The blocked SGEMM's rate at the start (median of repeats), GFLOP/s: matrix code's share of the limit.
    pub sgemm_gflops: f64,
    /// `--profile N`: a cut run for tracing, not a result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<usize>,
    pub rows: Vec<Row>,
}

pub fn run(mut args: Args) -> anyhow::Result<()> {
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    if args.steps == 0 || args.steps > args.grid {
        bail!("--steps must be between 1 and --grid ({}), got {}", args.grid, args.steps);
    }
    let mut counts: Vec<usize> = args.particles.counts().iter().map(|&n| n as usize).collect();
    if args.profile.is_some() {
        // A small trace: one count (the largest), one warm-up, one timed repeat.
        counts.drain(..counts.len() - 1);
        args.warmup = args.warmup.min(1);
        args.repeats = 1;
    }
    let rows = parse_rows(&args.rows)?;
    if args.backend == BackendChoice::Auto && !crate::backend::cuda::AUTO_SELECTS_CUDA {
        let why = match crate::backend::cuda::availability() {
            Err(why) => crate::run::prepare::cpu_fallback_reason(&why),
            Ok(_) => "CUDA is not selected automatically yet".into(),
        };
        eprintln!("backend: cpu (auto: {why})");
    }
    let model = match &args.model {
        Some(p) => Mlp::load(p).with_context(|| format!("loading --model {}", p.display()))?,
        None => Mlp::init_uniform(2, 64, 3, Activation::Elu, 0),
    };
    // The largest count must fit before anything is allocated (the GPU checks device memory).
    let side = if args.backend == BackendChoice::Cuda { crate::memory::Side::Device } else { crate::memory::Side::Host };
    let largest = counts.iter().copied().max().unwrap_or(0);
    crate::memory::check(&crate::memory::bench(side, model.dim), largest as u64)?;
    let pool = match args.threads {
        Some(0) => bail!("--threads must be at least 1 (or left out for every core)"),
        Some(n) => rayon::ThreadPoolBuilder::new().num_threads(n).build()?,
        None => rayon::ThreadPoolBuilder::new().build()?,
    };
    pool.install(|| {
        let sampler = Sampler { kind: args.sampler, steps: args.grid, k: 0.1, form: SdeForm::Marginal };
        let spec = bench_spec(model, sampler);
        eprintln!("measuring the FP32 limit (FMA peak and a blocked SGEMM on {} threads) ...", rayon::current_num_threads());
        let limit = peak::measure(PEAK_BUDGET);
        let sgemm = sgemm::measure(args.warmup, args.repeats);
        // Created inside the pool: a CUDA backend (graphs, streams) stays on this thread.
        let mut backend = crate::backend::cuda::AnyBackend::resolve(args.backend)?;
        if let Some(n) = args.profile {
            crate::run::profile::start(&mut backend, n);
        }
        let info = backend.info();
        let mut report = Report {
            backend: info.backend,
            device: info.device,
            kernels: Isa::detect().name().to_string(),
            threads: rayon::current_num_threads(),
            model: spec.model.shape().to_string(),
            sampler: spec.sampler.to_string(),
            fp32_limit_gflops: limit.gflops,
            fp32_limit_source: limit.describe(),
            sgemm_gflops: sgemm.gflops,
            profile: args.profile,
            rows: Vec::new(),
        };
        // The table streams: its heading first, then each row once, as it is measured.
        if !args.json {
            print_heading(&report);
        }
        for &n in &counts {
            for phase in &rows {
                let row = measure_row(&mut backend, &spec, n, *phase, &args);
                if !args.json {
                    println!("{}", format_row(&row));
                }
                report.rows.push(row);
            }
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_legend();
        }
        Ok(())
    })
}

/// The phases a row can time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Propagate,
    Potential,
    Resample,
    Steer,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Propagate => "propagate",
            Phase::Potential => "potential",
            Phase::Resample => "resample",
            Phase::Steer => "steer",
        }
    }
}

fn parse_rows(s: &str) -> anyhow::Result<Vec<Phase>> {
    s.split(',')
        .map(|r| match r.trim() {
            "propagate" => Ok(Phase::Propagate),
            "potential" => Ok(Phase::Potential),
            "resample" => Ok(Phase::Resample),
            "steer" => Ok(Phase::Steer),
            other => bail!("unknown row `{other}` in --rows; use a comma list of propagate, potential, resample, steer"),
        })
        .collect()
}

/// The run the rows time: a point reward at (1, 1) (dimension-extended with zeros), the default
/// potential (max, λ = 10), multinomial resampling.
fn bench_spec(model: Mlp, sampler: Sampler) -> RunSpec {
    let mut c = vec![0f32; model.dim];
    c[0] = 1.0;
    if model.dim > 1 {
        c[1] = 1.0;
    }
    RunSpec {
        model,
        sampler,
        reward: Reward { terms: vec![(1.0, Term::Point { c })], eps: DEFAULT_EPS },
        reward_on: RewardOn::X1Hat,
        potential: Potential::default(),
        resample: ResampleScheme::Multinomial,
        adaptive_ess: None,
        seed: 0,
    }
}

/// Time spent on each thread measuring the FMA peak: at the start, and after each repeat.
const PEAK_BUDGET: std::time::Duration = std::time::Duration::from_millis(20);
const PEAK_SAMPLE: std::time::Duration = std::time::Duration::from_millis(3);

/// Timed repeats of `f` after `warmup` untimed runs, each followed by one sample of the FP32
/// limit (the clock may change between repeats).
struct Timings {
    /// Seconds of each repeat, in order.
    times: Vec<f64>,
    /// The FMA peak measured right after each repeat, GFLOP/s.
    limits: Vec<f64>,
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Medians as the reward statistics define them ([`crate::stats::quantile`] at ½).
fn median(v: &[f64]) -> f64 {
    crate::stats::quantile(&sorted(v), 0.5)
}

impl Timings {
    fn median(&self) -> f64 {
        median(&self.times)
    }
    fn min(&self) -> f64 {
        sorted(&self.times)[0]
    }
    fn max(&self) -> f64 {
        *sorted(&self.times).last().unwrap()
    }
    fn median_limit(&self) -> f64 {
        median(&self.limits)
    }
    /// The median over repeats of (this repeat's GFLOP/s) / (the limit measured beside it).
    fn median_fraction(&self, flops: f64) -> f64 {
        let f: Vec<f64> = self.times.iter().zip(&self.limits).map(|(t, l)| flops / t / 1e9 / l).collect();
        median(&f)
    }
}

fn time_repeats(warmup: usize, repeats: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Timings> {
    for _ in 0..warmup {
        f()?;
    }
    let mut out = Timings { times: Vec::with_capacity(repeats), limits: Vec::with_capacity(repeats) };
    for _ in 0..repeats {
        let t = Instant::now();
        f()?;
        out.times.push(t.elapsed().as_secs_f64());
        out.limits.push(peak::measure(PEAK_SAMPLE).gflops);
    }
    Ok(out)
}

fn measure_row<B: Backend>(backend: &mut B, spec: &RunSpec, n: usize, phase: Phase, args: &Args) -> Row {
    let mut row = Row {
        particles: n,
        phase: phase.name().to_string(),
        median_s: None,
        min_s: None,
        max_s: None,
        rate: None,
        rate_unit: match phase {
            Phase::Propagate | Phase::Steer => "particle-steps/s",
            Phase::Potential | Phase::Resample => "particles/s",
        },
        gflops: None,
        gbytes_per_s: None,
        fp32_limit_gflops: None,
        fraction_of_fp32_limit: None,
        note: None,
    };
    let layout = Layout { n, groups: 1 };
    let dim = spec.model.dim as f64;
    let flops_per_eval = 2.0 * spec.model.macs_per_eval() as f64;
    let evals_per_step = spec.sampler.evals_per_step() as f64;
    let result = (|| -> anyhow::Result<(Timings, f64, f64, f64)> {
        // Each phase holds one population at a time: the steer row builds its own in every repeat,
        // so none may be alive beside it (two of 10^9 particles do not fit an 80 GB device).
        let init = |backend: &mut B| backend.init(spec, layout, Init::Noise);
        let at = WeighAt { step: args.grid * 3 / 4, index: 0, is_final: false };
        // (timings, units per call, flops per call, bytes per call)
        match phase {
            Phase::Propagate => {
                let mut p = init(backend)?;
                let steps = 0..args.steps;
                let tm = time_repeats(args.warmup, args.repeats, || backend.propagate(spec, &mut p, steps.clone()))?;
                let units = (n * args.steps) as f64;
                // Positions in and out once per call (the block stays on chip for all steps).
                Ok((tm, units, units * evals_per_step * flops_per_eval, 2.0 * 4.0 * dim * n as f64))
            }
            Phase::Potential => {
                let mut p = init(backend)?;
                let tm = time_repeats(args.warmup, args.repeats, || backend.weigh(spec, &mut p, at).map(|_| ()))?;
                // One velocity evaluation for x̂1; reads x, reads and writes the potential state
                // and the log-weight (4 bytes each).
                Ok((tm, n as f64, n as f64 * flops_per_eval, n as f64 * (4.0 * dim + 16.0)))
            }
            Phase::Resample => {
                let mut p = init(backend)?;
                backend.weigh(spec, &mut p, at)?;
                let tm = time_repeats(args.warmup, args.repeats, || backend.resample(spec, &mut p, at.step, false).map(|_| ()))?;
                // Reads the weights, writes the ancestors, gathers position, potential state,
                // log-weight and root id (read + write each).
                Ok((tm, n as f64, 0.0, n as f64 * (8.0 + 2.0 * (4.0 * dim + 12.0))))
            }
            Phase::Steer => {
                // docs/schedules.md's default schedule (5 points from t = 0.6 to 0.95, plus the final time).
                let mut points = ScheduleSpec::default().resolve(spec.sampler.steps).map_err(anyhow::Error::msg)?.steps;
                if let Some(k) = args.profile {
                    points.truncate(k);
                }
                let tm = time_repeats(args.warmup.min(1), args.repeats.min(3), || {
                    let mut p = backend.init(spec, layout, Init::Noise)?;
                    let mut from = 0;
                    for (k, &s) in points.iter().enumerate() {
                        let is_final = s == spec.sampler.steps;
                        let plan = IntervalPlan {
                            steps: from..s,
                            weigh: WeighAt { step: s, index: k, is_final },
                            resample: !is_final,
                            keep_ancestors: false,
                        };
                        backend.interval(spec, &mut p, &plan)?;
                        from = s;
                    }
                    backend.read_positions(&p).map(|_| ())
                })?;
                // The steps integrated (all of the grid, unless --profile cut the run).
                let steps = *points.last().unwrap() as f64;
                let units = n as f64 * steps;
                // Every intermediate weighing evaluates the model once more for x̂1; the final one scores
                // the sample itself.
                let intermediate = points.iter().filter(|&&s| s != spec.sampler.steps).count();
                let flops = units * evals_per_step * flops_per_eval + intermediate as f64 * n as f64 * flops_per_eval;
                Ok((tm, units, flops, 0.0))
            }
        }
    })();
    match result {
        Ok((tm, units, flops, bytes)) => {
            let m = tm.median();
            row.median_s = Some(m);
            row.min_s = Some(tm.min());
            row.max_s = Some(tm.max());
            row.rate = Some(units / m);
            row.fp32_limit_gflops = Some(tm.median_limit());
            if flops > 0.0 {
                row.gflops = Some(flops / m / 1e9);
                row.fraction_of_fp32_limit = Some(tm.median_fraction(flops));
            }
            if bytes > 0.0 {
                row.gbytes_per_s = Some(bytes / m / 1e9);
            }
        }
        Err(e) => row.note = Some(format!("{e:#}")),
    }
    row
}

fn format_row(r: &Row) -> String {
    let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map(f).unwrap_or_else(|| "-".into());
    match &r.note {
        Some(why) => format!("{:>10}  {:<9}  n/a ({why})", r.particles, r.phase),
        None => format!(
            "{:>10}  {:<9}  {:>9}  {:>17}  {:>11}  {:>9}  {:>8}  {:>9}  {:>7}",
            r.particles,
            r.phase,
            opt(r.median_s, &|v| format!("{:.3}", v * 1e3)),
            match (r.min_s, r.max_s) {
                (Some(lo), Some(hi)) => format!("{:.3}–{:.3}", lo * 1e3, hi * 1e3),
                _ => "-".into(),
            },
            opt(r.rate, &|v| format!("{v:.3e}")),
            opt(r.gflops, &|v| format!("{v:.1}")),
            opt(r.gbytes_per_s, &|v| format!("{v:.2}")),
            opt(r.fp32_limit_gflops, &|v| format!("{v:.1}")),
            opt(r.fraction_of_fp32_limit, &|v| format!("{:.1}%", v * 100.0)),
        ),
    }
}

fn print_heading(report: &Report) {
    println!("backend {} — {} — {} kernels, {} threads", report.backend, report.device, report.kernels, report.threads);
    println!("model {}; sampler {}", report.model, report.sampler);
    println!(
        "FP32 limit at start: {:.1} GFLOP/s ({}); a blocked SGEMM reaches {:.1}",
        report.fp32_limit_gflops, report.fp32_limit_source, report.sgemm_gflops
    );
    if let Some(n) = report.profile {
        println!("--profile {n}: one repeat, steer row cut to {n} interval(s); a trace, not a result");
    }
    println!(
        "{:>10}  {:<9}  {:>9}  {:>17}  {:>11}  {:>9}  {:>8}  {:>9}  {:>7}",
        "particles", "phase", "median ms", "min–max ms", "rate", "GFLOP/s", "GB/s", "peak", "of it"
    );
}

fn print_legend() {
    println!(
        "rate: particle-steps/s (propagate, steer) or particles/s (potential, resample); peak: the FP32 limit in \
         GFLOP/s measured right after each repeat (median); of it: median over repeats of GFLOP/s / that limit"
    );
}

/// A blocked single-precision matrix multiply, to measure this machine's FP32 matmul rate.
///
/// `C[M×N] += A[M×K]·B[K×N]` the GotoBLAS way: A packed in panels of 6 rows, B in panels of 16
/// columns, both K-blocked by 256 so that an A panel (6 KiB) stays in L1 and a B block in L2; a
/// 6×16 microkernel keeps the 12 accumulators in AVX registers and does one broadcast and two
/// loads per 12 FMAs. Rayon spreads the row panels over all cores. Its rate on this machine is
/// within a few percent of OpenBLAS's `sgemm` (see the README's benchmark section).
pub mod sgemm {
    use rayon::prelude::*;
    use std::time::Instant;

    use crate::backend::cpu::propagate::Isa;

    const MR: usize = 6;
    const NR: usize = 16;
    const KC: usize = 256;
    /// Matrix sizes: M a multiple of MR, N of NR, K of KC.
    pub const M: usize = 6 * 128;
    pub const N: usize = 16 * 64;
    pub const K: usize = KC * 4;

    /// A measured rate.
    #[derive(Clone, Copy, Debug)]
    pub struct Limit {
        pub gflops: f64,
        pub best_gflops: f64,
        pub threads: usize,
        pub isa: Isa,
    }

    impl Limit {
        pub fn describe(&self) -> String {
            format!(
                "blocked SGEMM {M}×{N}×{K}, {} kernels, {} threads, median of repeats; best {:.1}",
                self.isa.name(),
                self.threads,
                self.best_gflops
            )
        }
    }

    #[inline(always)]
    fn micro(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize) {
        let mut acc = [[0f32; NR]; MR];
        for r in 0..MR {
            acc[r].copy_from_slice(&c[r * ldc..r * ldc + NR]);
        }
        for p in 0..kc {
            let bv: &[f32; NR] = b[p * NR..(p + 1) * NR].try_into().unwrap();
            let av: &[f32; MR] = a[p * MR..(p + 1) * MR].try_into().unwrap();
            for r in 0..MR {
                for l in 0..NR {
                    acc[r][l] = av[r].mul_add(bv[l], acc[r][l]);
                }
            }
        }
        for r in 0..MR {
            c[r * ldc..r * ldc + NR].copy_from_slice(&acc[r]);
        }
    }

    /// One row panel of C (MR rows × N) over one K block.
    #[inline(always)]
    fn panel_body(a_panel: &[f32], b_block: &[f32], c_rows: &mut [f32]) {
        for jp in 0..N / NR {
            micro(KC, a_panel, &b_block[jp * KC * NR..(jp + 1) * KC * NR], &mut c_rows[jp * NR..], N);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn panel_avx2(a_panel: &[f32], b_block: &[f32], c_rows: &mut [f32]) {
        panel_body(a_panel, b_block, c_rows)
    }

    /// Packed operands: `a[kb][ip][p][r]` and `b[kb][jp][p][l]`.
    pub struct Packed {
        a: Vec<f32>,
        b: Vec<f32>,
        pub c: Vec<f32>,
    }

    impl Packed {
        /// Packs row-major `a` (`M×K`) and `b` (`K×N`).
        pub fn new(a: &[f32], b: &[f32]) -> Self {
            let mut pa = vec![0f32; M * K];
            let mut pb = vec![0f32; K * N];
            for kb in 0..K / KC {
                for ip in 0..M / MR {
                    for p in 0..KC {
                        for r in 0..MR {
                            pa[((kb * (M / MR) + ip) * KC + p) * MR + r] = a[(ip * MR + r) * K + kb * KC + p];
                        }
                    }
                }
                for jp in 0..N / NR {
                    for p in 0..KC {
                        for l in 0..NR {
                            pb[((kb * (N / NR) + jp) * KC + p) * NR + l] = b[(kb * KC + p) * N + jp * NR + l];
                        }
                    }
                }
            }
            Self { a: pa, b: pb, c: vec![0f32; M * N] }
        }

        /// `C += A·B`.
        pub fn multiply(&mut self, isa: Isa) {
            let (a, b) = (&self.a, &self.b);
            for kb in 0..K / KC {
                let b_block = &b[kb * KC * N..(kb + 1) * KC * N];
                self.c.par_chunks_mut(MR * N).enumerate().for_each(|(ip, c_rows)| {
                    let a_panel = &a[(kb * (M / MR) + ip) * KC * MR..(kb * (M / MR) + ip + 1) * KC * MR];
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: Avx2Fma comes from Isa::detect on a CPU with AVX2 and FMA.
                        Isa::Avx2Fma => unsafe { panel_avx2(a_panel, b_block, c_rows) },
                        _ => panel_body(a_panel, b_block, c_rows),
                    }
                });
            }
        }
    }

    /// Deterministic test operands.
    pub fn operands() -> (Vec<f32>, Vec<f32>) {
        let a = (0..M * K).map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5).collect();
        let b = (0..K * N).map(|i| ((i * 104_729 % 997) as f32 / 997.0) - 0.5).collect();
        (a, b)
    }

    /// The FP32 rate of the SGEMM on the current rayon pool: median and best over `repeats`.
    pub fn measure(warmup: usize, repeats: usize) -> Limit {
        let isa = Isa::detect();
        let (a, b) = operands();
        let mut p = Packed::new(&a, &b);
        let flops = 2.0 * (M * N * K) as f64;
        for _ in 0..warmup.max(1) {
            p.multiply(isa);
        }
        let mut rates: Vec<f64> = (0..repeats.max(3))
            .map(|_| {
                let t = Instant::now();
                p.multiply(isa);
                flops / t.elapsed().as_secs_f64() / 1e9
            })
            .collect();
        rates.sort_by(|x, y| x.partial_cmp(y).unwrap());
        Limit { gflops: rates[rates.len() / 2], best_gflops: *rates.last().unwrap(), threads: rayon::current_num_threads(), isa }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// The packed product against a plain f64 product on a sample of entries (|Δ| ≤ 1e-3:
        /// 1024 terms of size ≤ 0.25 in f32 with FMA, error ≲ sqrt(1024)·0.25·2^-24·K... far
        /// below; a packing or indexing error is O(1)).
        #[test]
        fn sgemm_matches_plain_product() {
            let (a, b) = operands();
            let mut p = Packed::new(&a, &b);
            p.multiply(Isa::detect());
            for &(i, j) in &[(0usize, 0usize), (5, 15), (6, 16), (M - 1, N - 1), (100, 517), (377, 3)] {
                let want: f64 = (0..K).map(|k| a[i * K + k] as f64 * b[k * N + j] as f64).sum();
                assert!((p.c[i * N + j] as f64 - want).abs() < 1e-3, "({i},{j}): {} vs {want}", p.c[i * N + j]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_particles_parse() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: Args,
        }
        let cli = Cli::try_parse_from(["bench"]).unwrap();
        assert_eq!(cli.bench.particles.counts(), &[1 << 14, 1 << 16]);
        assert!(Cli::try_parse_from(["bench", "--particles", "2^12..2^10"]).is_err());
    }

    /// Issue 11.2: the steer row built its populations while the row's first one was still
    /// alive, so a count that fits the device once could not run (10^9 particles on an 80 GB
    /// GPU). On an emulated device with room for one and a half populations the row runs.
    #[test]
    fn the_steer_row_holds_one_population_at_a_time() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: Args,
        }
        let cli = Cli::try_parse_from(["bench", "--grid", "10", "--steps", "1", "--repeats", "1", "--warmup", "0"]).unwrap();
        let n = 4096;
        let need = crate::backend::cuda::device::bytes_needed(2, n, 1);
        let mut backend = match crate::backend::cuda::CudaBackend::emulated(need * 3 / 2 + (1 << 16)) {
            Ok(b) => b,
            Err(e) => {
                assert!(std::env::var_os("FLOWSTEER_CI").is_none(), "CI must have the emulator: {e:#}");
                return println!("SKIPPED: {e:#}");
            }
        };
        let sampler = Sampler { kind: SamplerKind::Euler, steps: 10, k: 0.1, form: SdeForm::Marginal };
        let spec = bench_spec(Mlp::init_uniform(2, 64, 3, Activation::Elu, 0), sampler);
        let row = measure_row(&mut backend, &spec, n, Phase::Steer, &cli.bench);
        assert!(row.note.is_none(), "{:?}", row.note);
        assert!(row.median_s.is_some());
    }
}
