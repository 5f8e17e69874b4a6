//! A sampling run: [`SampleConfig`] → the model's sampler (docs/samplers.md) on N particles →
//! [`SampleOutcome`]: `samples.npy` and `summary.json` (docs/outputs.md), with the checkerboard
//! quality measures of docs/quality.md when the model is 2-D.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::config::SampleConfig;
use super::prepare::{self, ResolvedBackend};
use crate::backend::cpu::CpuBackend;
use crate::backend::{Backend, BackendChoice, BackendInfo, Init, Layout, RunSpec};
use crate::checkerboard;
use crate::model::{Mlp, MlpShape};
use crate::potential::Potential;
use crate::resample::ResampleScheme;
use crate::reward::{Reward, RewardOn, DEFAULT_EPS};
use crate::sampler::Sampler;

/// Particles when neither `--particles` nor `--init` is given.
pub const DEFAULT_PARTICLES: usize = 10_000;
/// At most this many samples enter the energy distance (docs/quality.md); more only cost time, since
/// the estimator's standard error is already ≈ 3·10^-4 at this size (see `checkerboard`).
pub const ENERGY_SAMPLES: usize = 100_000;

/// The run specification of plain sampling: no reward, no resampling.
pub fn sampling_spec(model: Mlp, sampler: Sampler, seed: u64) -> RunSpec {
    RunSpec {
        model,
        sampler,
        reward: Reward { terms: Vec::new(), eps: DEFAULT_EPS },
        reward_on: RewardOn::default(),
        potential: Potential::default(),
        resample: ResampleScheme::default(),
        adaptive_ess: None,
        seed,
    }
}

/// Wall-clock seconds of each phase (docs/outputs.md).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PhaseTimes {
    pub load: f64,
    /// Kernel compilation (0 on the CPU).
    pub compile: f64,
    pub init: f64,
    pub propagate: f64,
    pub readback: f64,
    pub quality: f64,
    pub total: f64,
}

/// Samples `n` particles (rows of `init` when given) through every step of `spec.sampler` on
/// `backend`; returns the final positions row-major `[n, D]`, the backend's description and
/// the phase times it measured (init, propagate, readback).
pub fn sample_on<B: Backend>(
    backend: &mut B,
    spec: &RunSpec,
    n: usize,
    init: Option<&[f32]>,
    times: &mut PhaseTimes,
) -> anyhow::Result<(Vec<f32>, BackendInfo)> {
    let clock = Instant::now();
    let init = init.map_or(Init::Noise, Init::Given);
    let mut particles = backend.init(spec, Layout { n, groups: 1 }, init)?;
    times.init = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let steps = spec.sampler.steps;
    let bar = progress_bar(steps as u64);
    // Chunks of steps give the same result as one call (every draw is addressed by particle and
    // step, docs/random.md); they only let the progress bar move.
    let chunk = (steps / 50).max(1);
    let mut done = 0;
    while done < steps {
        let end = (done + chunk).min(steps);
        backend.propagate(spec, &mut particles, done..end)?;
        bar.inc((end - done) as u64);
        done = end;
    }
    bar.finish_and_clear();
    times.propagate = clock.elapsed().as_secs_f64();

    let clock = Instant::now();
    let rows = backend.read_positions(&particles)?;
    times.readback = clock.elapsed().as_secs_f64();
    Ok((rows, backend.info()))
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("sampling {bar:40} {pos}/{len} steps ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}

/// The resolved configuration, as written to `summary.json`.
#[derive(Debug, serde::Serialize)]
pub struct SampleSummaryConfig {
    pub model: String,
    pub model_sha256: String,
    pub model_shape: MlpShape,
    pub sampler: Sampler,
    pub particles: usize,
    pub seed: u64,
    pub init: Option<String>,
    pub out: String,
}

/// Throughput of the propagate phase (docs/outputs.md).
#[derive(Debug, serde::Serialize)]
pub struct Throughput {
    pub particle_steps: u64,
    /// Velocity evaluations: particle-steps × evaluations per step (docs/search.md's NFE, all particles).
    pub nfe: u64,
    pub particle_steps_per_s: f64,
    pub nfe_per_s: f64,
    /// Multiply-adds per second in the MLP (2 FLOPs each).
    pub gflops: f64,
}

/// Quality of 2-D samples against the checkerboard (docs/quality.md).
#[derive(Debug, serde::Serialize)]
pub struct Quality {
    /// Fraction of all samples on the data squares.
    pub on_square_fraction: f64,
    /// Energy distance between the first `energy_samples` samples and as many fresh data points
    /// (seed = the run's seed, an independent Philox key); block estimator, see `checkerboard`.
    pub energy_distance: f64,
    pub energy_distance_std_error: f64,
    pub energy_samples: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct SampleSummary {
    pub command: &'static str,
    pub version: &'static str,
    pub config: SampleSummaryConfig,
    pub backend: BackendInfo,
    pub backend_resolution: ResolvedBackend,
    pub times_s: PhaseTimes,
    pub throughput: Throughput,
    /// Samples with a NaN or infinite coordinate (kept in samples.npy as they are).
    pub nonfinite_samples: usize,
    /// Present when the model is 2-D.
    pub quality: Option<Quality>,
}

/// The docs/quality.md measures for 2-D samples.
pub fn quality(rows: &[f32], seed: u64) -> Quality {
    let on_square_fraction = checkerboard::on_square_fraction(rows);
    let m = (rows.len() / 2).min(ENERGY_SAMPLES);
    let (energy_distance, energy_distance_std_error) = if m >= 2 {
        let data = checkerboard::sample_checkerboard(m, seed);
        let e = checkerboard::energy_distance_blocks(&rows[..2 * m], &data, 2);
        (e.value, e.std_error)
    } else {
        (f64::NAN, f64::NAN)
    };
    Quality { on_square_fraction, energy_distance, energy_distance_std_error, energy_samples: m }
}


/// A finished sampling run: the samples and the summary that goes with them.
pub struct SampleOutcome {
    /// Final positions, row-major `[N, D]`.
    pub rows: Vec<f32>,
    pub dim: usize,
    pub summary: SampleSummary,
    /// Where [`SampleOutcome::report`] writes.
    pub out: PathBuf,
    /// Replace a non-empty output directory whole (`--force`).
    pub force: bool,
}

impl SampleOutcome {
    /// Writes `samples.npy` and `summary.json` into `dir`, whole or not at all (`dir` must be
    /// missing or empty unless `force` was set); lists them on stderr when `announce` is set.
    pub fn write(&self, dir: &Path, announce: bool) -> anyhow::Result<Vec<PathBuf>> {
        let mut set = crate::output::OutputSet::default();
        crate::output::stage_samples_and_summary(&mut set, dir, &self.rows, self.dim, &self.summary)?;
        crate::output::commit_outputs_announcing(set, self.force, announce)
    }

    /// What the command line does with an outcome: write the files into `out`.
    pub fn report(&self) -> anyhow::Result<()> {
        self.write(&self.out, true)?;
        Ok(())
    }
}

/// Samples as `cfg` says, printing the model, throughput and quality on stderr.
pub fn sample(cfg: &SampleConfig) -> anyhow::Result<SampleOutcome> {
    Ok(sample_ranked(cfg)?.expect("one process is rank 0"))
}

/// [`sample`], also under mpirun/srun (docs/distributed.md): each rank integrates its share and
/// rank 0 alone gets the outcome (None on the other ranks).
pub fn sample_ranked(cfg: &SampleConfig) -> anyhow::Result<Option<SampleOutcome>> {
    let world = crate::distributed::driver::world();
    let rank0 = world.as_ref().is_none_or(|w| w.rank() == 0);
    let start = Instant::now();
    let mut times = PhaseTimes::default();
    let sampler = cfg.sampler;
    sampler.validate().map_err(anyhow::Error::msg)?;
    let resolved = prepare::resolve_backend_announcing(cfg.backend, rank0)?;
    crate::output::prepare_out_dir(&cfg.out, cfg.force)?;

    let clock = Instant::now();
    let model = prepare::load_model(&cfg.model)?;
    let model_sha256 = prepare::file_sha256(&cfg.model)?;
    let dim = model.dim;
    let (init, n) = match &cfg.init {
        Some(path) => {
            if let Some(p) = cfg.particles {
                prepare::validate_particles(p, "--particles")?;
            }
            let (rows, n) = prepare::read_init(path, dim, cfg.particles)?;
            (Some(rows), n)
        }
        None => (None, prepare::validate_particles(cfg.particles.unwrap_or(DEFAULT_PARTICLES), "--particles")?),
    };
    // Refused before any allocation when it cannot fit (issue 13, item 1).
    let side = if resolved.choice == BackendChoice::Cuda { crate::memory::Side::Device } else { crate::memory::Side::Host };
    crate::memory::check(&crate::memory::sample(side, dim, init.is_some()), n as u64)?;
    times.load = clock.elapsed().as_secs_f64();
    if rank0 {
        eprintln!("model {}: {}; {sampler}; {n} particles, seed {}", cfg.model.display(), model.shape(), cfg.seed);
    }

    let spec = sampling_spec(model, sampler, cfg.seed);
    let (rows, info) = if let Some(w) = world {
        let Some((rows, mut info)) = crate::distributed::driver::sample_rows(&*w, &spec, n, init.as_deref(), &cfg.model, &mut times, resolved.choice)? else {
            return Ok(None);
        };
        info.device = format!("{} per rank, {} MPI ranks", info.device, w.size());
        (rows, info)
    } else {
        match resolved.choice {
            BackendChoice::Cpu => sample_on(&mut CpuBackend::new(), &spec, n, init.as_deref(), &mut times)?,
            choice @ (BackendChoice::Cuda | BackendChoice::CudaEmulated) => match crate::backend::cuda::AnyBackend::resolve(choice)? {
                crate::backend::cuda::AnyBackend::Cuda(mut b) => {
                    b.check_model(&spec.model).map_err(|e| e.context(format!("model file {}", cfg.model.display())))?;
                    sample_on(&mut b, &spec, n, init.as_deref(), &mut times)?
                }
                crate::backend::cuda::AnyBackend::Cpu(mut b) => sample_on(&mut b, &spec, n, init.as_deref(), &mut times)?,
            },
            BackendChoice::Auto => unreachable!("resolve() never returns auto"),
        }
    };

    let clock = Instant::now();
    // All samples non-finite: an error naming the cause, nothing written (issue 13, item 4).
    if let Some(warning) = crate::finite::check_final_samples(&rows, dim, &spec.model, &spec.sampler)? {
        eprintln!("{warning}");
    }
    let nonfinite_samples = crate::finite::nonfinite_rows(&rows, dim);
    let quality = (dim == 2).then(|| quality(&rows, cfg.seed));
    times.quality = clock.elapsed().as_secs_f64();
    times.total = start.elapsed().as_secs_f64();

    let particle_steps = (n * sampler.steps) as u64;
    let nfe = particle_steps * sampler.evals_per_step() as u64;
    let per_s = |x: u64| if times.propagate > 0.0 { x as f64 / times.propagate } else { f64::NAN };
    let throughput = Throughput {
        particle_steps,
        nfe,
        particle_steps_per_s: per_s(particle_steps),
        nfe_per_s: per_s(nfe),
        gflops: per_s(nfe) * 2.0 * spec.model.macs_per_eval() as f64 / 1e9,
    };
    eprintln!(
        "{} on {}: {:.3} s propagate, {:.3e} particle-steps/s, {:.3e} NFE/s",
        info.backend, info.device, times.propagate, throughput.particle_steps_per_s, throughput.nfe_per_s
    );
    if let Some(q) = &quality {
        eprintln!(
            "on-square fraction {:.4}, energy distance {} ({} samples)",
            q.on_square_fraction,
            crate::checkerboard::energy_distance_text(q.energy_distance, q.energy_distance_std_error),
            q.energy_samples
        );
    }

    let summary = SampleSummary {
        command: "sample",
        version: env!("CARGO_PKG_VERSION"),
        config: SampleSummaryConfig {
            model: cfg.model.display().to_string(),
            model_sha256,
            model_shape: spec.model.shape(),
            sampler,
            particles: n,
            seed: cfg.seed,
            init: cfg.init.as_ref().map(|p| p.display().to_string()),
            out: cfg.out.display().to_string(),
        },
        backend: info,
        backend_resolution: resolved,
        times_s: times,
        throughput,
        nonfinite_samples,
        quality,
    };
    Ok(Some(SampleOutcome { rows, dim, summary, out: cfg.out.clone(), force: cfg.force }))
}
