//! `flowsteer steer`: Feynman–Kac steering (SPEC §5–7), and the options every particle command
//! shares with `flowsteer search` ([`CommonArgs`]).
//!
//! With no options it steers the checkerboard model towards the point (2, 0.5) with `max`,
//! λ = 10, 4,096 particles, 100 midpoint steps and 5 resamplings between t = 0.6 and 0.95, and
//! prints a short summary against an unsteered run of the same noises.

use std::path::PathBuf;

use anyhow::bail;

use crate::backend::{Backend, Init, Layout, RunSpec};
use crate::cli::common::{self, BackendArgs, InitRows, ModelArgs, ResolvedBackend, SamplerArgs};
use crate::methods::{self, FkConfig, ScheduleSpec};
use crate::potential::{Potential, PotentialKind};
use crate::resample::ResampleScheme;
use crate::reward::{Reward, RewardOn};
use crate::summary::{self, Baseline, Outputs};

/// Particles per group when neither `--particles` nor `--init` is given.
pub const DEFAULT_PARTICLES: usize = 4096;

/// Options shared by `steer` and every `search` method.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The reward (SPEC §4): point([x,y]), line(axis, c), gaussian([x,y], sigma),
    /// obstacle([x,y], rho, q_star, eta), and weighted sums, e.g.
    /// "gaussian([2,0.5], 0.5) + 0.5*obstacle([1,0], 0.4, 0.5, 1.0)".
    #[arg(long, default_value = "point([2,0.5])", allow_hyphen_values = true)]
    pub reward: String,
    /// Where intermediate rewards are evaluated: the predicted data x̂1 or the noisy state.
    #[arg(long, value_enum, default_value_t)]
    pub reward_on: RewardOn,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Seed of every random draw (SPEC §3).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Write summary.json, samples.npy, trace.csv and log_weights.npy into DIR.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also write plot.png (needs --out).
    #[arg(long)]
    pub plot: bool,
    /// Print nothing but errors.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Particles per group N [default: 4096, or the rows of --init divided by --groups].
    #[arg(long)]
    pub particles: Option<usize>,
    /// Independent populations run side by side (SPEC §5 `groups`).
    #[arg(long, default_value_t = 1)]
    pub groups: usize,
    /// Potential (SPEC §5).
    #[arg(long, value_enum, default_value_t)]
    pub potential: PotentialKind,
    /// Temperature λ > 0.
    #[arg(long, default_value_t = 10.0, allow_hyphen_values = true)]
    pub lambda: f32,
    /// Start of the running max / previous reward of `max` and `diff`.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub r_min: f32,
    /// Resampling scheme (SPEC §6).
    #[arg(long, value_enum, default_value_t)]
    pub resample: ResampleScheme,
    /// Resampling points between --t-start and --t-end (SPEC §7).
    #[arg(long, default_value_t = 5)]
    pub resample_count: usize,
    /// Resample every K grid steps between --t-start and --t-end instead (not with
    /// --resample-count; docs/schedules.md).
    #[arg(long, value_name = "K", conflicts_with = "resample_count")]
    pub resample_every: Option<usize>,
    /// Start of the resampling range: the first point (SPEC §7).
    #[arg(long, default_value_t = 0.6, allow_hyphen_values = true)]
    pub t_start: f64,
    /// End of the resampling range: points sit at t_start + j·(t_end − t_start)/count, j < count,
    /// and the final time t = 1 is always added (SPEC §7).
    #[arg(long, default_value_t = 0.95, allow_hyphen_values = true)]
    pub t_end: f64,
    /// Resample only when ESS < TAU·N (TAU defaults to 0.5 when the flag is bare); off by default.
    #[arg(long, value_name = "TAU", num_args = 0..=1, default_missing_value = "0.5")]
    pub adaptive_ess: Option<f32>,
    /// Starting points: a .npy file of shape [N·G, D] instead of Philox noise.
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// Also write ancestry.npy, [K, N·G] ancestor indices (one row per resampling).
    #[arg(long)]
    pub ancestry: bool,
    /// Run each resampling interval as one backend call (no per-phase times).
    #[arg(long)]
    pub fused: bool,
    /// Skip the unsteered run of the same noises that the summary compares against.
    #[arg(long)]
    pub no_baseline: bool,
    /// Profile with Nsight: run only the first INTERVALS resampling intervals (2 when bare), with
    /// NVTX ranges on the CUDA backend; prints per-phase times and writes no output files.
    #[arg(long, value_name = "INTERVALS", num_args = 0..=1, default_missing_value = super::profile::DEFAULT_INTERVALS,
          value_parser = super::profile::parse_intervals)]
    pub profile: Option<usize>,
}

/// Everything resolved from [`CommonArgs`] before any work starts.
pub struct Prepared {
    pub spec: RunSpec,
    pub model_path: PathBuf,
    /// The engine `--backend` resolved to, and why.
    pub backend: ResolvedBackend,
    /// `--no-graph`: plain kernel launches on the CUDA backend.
    pub no_graph: bool,
}

impl Prepared {
    /// The engine to run on: the CPU, or the CUDA backend (issue 4).
    pub fn engine(&self) -> anyhow::Result<crate::backend::cuda::AnyBackend> {
        let mut b = crate::backend::cuda::AnyBackend::resolve(self.backend.choice)?;
        if let crate::backend::cuda::AnyBackend::Cuda(c) = &mut b {
            c.use_graph &= !self.no_graph;
        }
        Ok(b)
    }

    /// Where the particles live, for the memory estimate (docs: src/memory.rs): the CPU and the
    /// emulator hold them in host memory.
    pub fn memory_side(&self) -> crate::memory::Side {
        match self.backend.choice {
            crate::backend::BackendChoice::Cuda => crate::memory::Side::Device,
            _ => crate::memory::Side::Host,
        }
    }

    /// The layout of a run with `--particles` (None: `default`, or the rows of `--init` divided
    /// by G) and `--groups`, with the `--init` rows when given (issue 13, item 5).
    pub fn layout_and_init(&self, particles: Option<usize>, default: usize, groups: usize, init: Option<&std::path::Path>) -> anyhow::Result<(Layout, Option<Vec<f32>>)> {
        let Some(path) = init else {
            return Ok((check_layout(particles.unwrap_or(default), groups, "--particles")?, None));
        };
        common::validate_particles(groups, "--groups")?;
        let rows = match particles {
            Some(n) => InitRows { name: "N·G", count: Some(n.saturating_mul(groups)), from: "--particles × --groups =", fix: "set --particles and --groups to match the file, or leave --particles out" },
            None => InitRows { name: "N·G", count: None, from: "", fix: "" },
        };
        let (data, total) = common::read_init_rows(path, self.spec.model.dim, &rows)?;
        if total % groups != 0 {
            bail!(
                "--init {} holds {total} rows, not a multiple of --groups {groups}: with groups the file holds N·G rows, N particles per group; give a file of {} or {} rows, or another --groups",
                path.display(),
                total / groups * groups,
                (total / groups + 1) * groups
            );
        }
        Ok((check_layout(total / groups, groups, "--particles")?, Some(data)))
    }

    /// Reads `--init` for `total` = N·G particles, as `[N·G, D]`.
    pub fn read_init(&self, path: &std::path::Path, total: usize) -> anyhow::Result<Vec<f32>> {
        let rows = InitRows { name: "N·G", count: Some(total), from: "--particles × --groups =", fix: "set --particles and --groups to match the file" };
        Ok(common::read_init_rows(path, self.spec.model.dim, &rows)?.0)
    }
}

impl CommonArgs {
    /// Resolves the backend, loads the model, parses the reward, checks the sampler and `--out`;
    /// `potential` and `resample` complete the run's specification.
    pub fn prepare(&self, potential: Potential, resample: ResampleScheme, adaptive_ess: Option<f32>) -> anyhow::Result<Prepared> {
        let reward: Reward = self.reward.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        let sampler = self.sampler.sampler()?;
        potential.validate().map_err(anyhow::Error::msg)?;
        if let Some(tau) = adaptive_ess {
            if !(tau.is_finite() && tau > 0.0 && tau <= 1.0) {
                bail!("--adaptive-ess τ must lie in (0, 1], got {tau}; e.g. --adaptive-ess 0.5");
            }
        }
        if self.plot && self.out.is_none() {
            bail!("--plot writes plot.png into the output directory; give --out DIR");
        }
        if let Some(out) = &self.out {
            common::prepare_out_dir(out)?;
        }
        let backend = self.backend.resolve_announcing(!self.quiet)?;
        let model = self.model.load()?;
        reward.checks_dim(model.dim).map_err(|e| anyhow::anyhow!("--reward {:?}: {e}", self.reward))?;
        let spec = RunSpec { model, sampler, reward, reward_on: self.reward_on, potential, resample, adaptive_ess, seed: self.seed };
        Ok(Prepared { spec, model_path: self.model.model.clone(), backend, no_graph: self.backend.no_graph })
    }
}

/// Checks N and G, and that N·G is a population one run supports.
pub fn check_layout(particles: usize, groups: usize, what: &str) -> anyhow::Result<Layout> {
    common::validate_particles(particles, what)?;
    common::validate_particles(groups, "--groups")?;
    let total = particles.saturating_mul(groups);
    common::validate_particles(total, &format!("{what} × --groups ="))?;
    Ok(Layout { n: particles, groups })
}

pub fn run(mut args: Args) -> anyhow::Result<()> {
    if args.profile.is_some() {
        // A cut run is not a result: write nothing (and create no --out directory).
        if let Some(dir) = args.common.out.take() {
            eprintln!("--profile: ignoring --out {} (a profiled run writes no files)", dir.display());
        }
        args.common.plot = false;
        args.ancestry = false;
    }
    let potential = Potential { kind: args.potential, lambda: args.lambda, r_min: args.r_min };
    let schedule = ScheduleSpec { t_start: args.t_start, t_end: args.t_end, count: args.resample_count, every: args.resample_every };
    schedule.validate().map_err(anyhow::Error::msg)?;
    if args.ancestry && args.common.out.is_none() {
        bail!("--ancestry writes ancestry.npy into the output directory; give --out DIR");
    }
    let prep = args.common.prepare(potential, args.resample, args.adaptive_ess)?;
    let (layout, init_rows) = prep.layout_and_init(args.particles, DEFAULT_PARTICLES, args.groups, args.init.as_deref())?;
    let points = methods::fk::resolve_schedule(&prep.spec, &schedule).map_err(anyhow::Error::msg)?.steps.len();
    let needs = crate::memory::steer(prep.memory_side(), prep.spec.model.dim, points, args.ancestry, !args.no_baseline, false, layout.groups);
    crate::memory::check(&needs, layout.total() as u64)?;
    let mut backend = prep.engine()?;
    if let Some(n) = args.profile {
        super::profile::start(&mut backend, n);
    }
    let cfg = FkConfig { layout, schedule, keep_ancestors: args.ancestry, fused: args.fused, snapshots: args.common.plot, max_intervals: args.profile };
    let resolved = methods::fk::resolve_schedule(&prep.spec, &schedule).map_err(anyhow::Error::msg)?;
    let quiet = args.common.quiet;
    if !quiet {
        let (spec, info) = (&prep.spec, backend.info());
        let groups = if layout.groups > 1 { format!(" × {} groups", layout.groups) } else { String::new() };
        println!("flowsteer steer: FK steering towards {} (larger is better), potential {}, λ = {}", spec.reward, spec.potential.kind, spec.potential.lambda);
        let setup = format!(
            "{} particles{groups}, sampler {}, seed {}; model {}; {} backend on {}",
            layout.n,
            spec.sampler,
            spec.seed,
            prep.model_path.display(),
            info.backend,
            info.device
        );
        println!("{}", summary::wrap(&setup));
        println!("  resampling at grid steps {resolved}");
    }
    let init = init_rows.as_deref().map_or(Init::Noise, Init::Given);
    let result = methods::steer(&mut backend, &prep.spec, &cfg, init)?;
    if args.profile.is_some() {
        let t = &result.times;
        println!(
            "profile: ran {} of {} resampling intervals (up to grid step {}); seconds: propagate {:.6}, potential {:.6}, resample {:.6}, fused intervals {:.6}, total {:.6}",
            result.schedule.len(),
            resolved.steps.len(),
            result.schedule.last().copied().unwrap_or(0),
            t.propagate,
            t.potential,
            t.resample,
            t.fused_intervals,
            t.total
        );
        return Ok(());
    }
    // All final samples non-finite: an error naming the cause, nothing written (issue 13, item 4).
    if let Some(warning) = crate::finite::check_final_samples(&result.positions, result.dim, &prep.spec.model, &prep.spec.sampler)? {
        eprintln!("{warning}");
    }
    let baseline = if args.no_baseline {
        None
    } else {
        Some(baseline(&mut backend, &prep.spec, layout, init)?)
    };
    let config = serde_json::json!({
        "command": "steer",
        "particles": layout.n,
        "groups": layout.groups,
        "potential": prep.spec.potential,
        "resample": prep.spec.resample,
        "resample_count": args.resample_count,
        "resample_every": args.resample_every,
        "t_start": args.t_start,
        "t_end": args.t_end,
        "adaptive_ess": args.adaptive_ess,
        "init": args.init.as_ref().map(|p| p.display().to_string()),
        "fused": args.fused,
    });
    if !quiet {
        print!("{}", summary::human_summary(&prep.spec, &result, baseline.as_ref()));
    }
    let outputs = Outputs { ancestry: args.ancestry, plot: args.common.plot };
    if let Some(dir) = &args.common.out {
        let info = backend.info();
        summary::write_outputs(dir, &prep, &args.common, config, &info, &result, baseline.as_ref(), outputs)?;
    }
    Ok(())
}

/// An unsteered run of the same starting points (potential `is`, no reordering): what steering
/// is compared against.
pub fn baseline<B: Backend>(backend: &mut B, spec: &RunSpec, layout: Layout, init: Init<'_>) -> anyhow::Result<Baseline> {
    let mut plain = spec.clone();
    plain.potential = Potential { kind: PotentialKind::Is, ..spec.potential };
    let mut p = backend.init(&plain, layout, init)?;
    backend.propagate(&plain, &mut p, 0..plain.sampler.steps)?;
    let rewards = backend.score(&plain, &mut p, crate::backend::ScoreOn::Sample)?;
    Ok(Baseline { rewards, positions: backend.read_positions(&p)? })
}
