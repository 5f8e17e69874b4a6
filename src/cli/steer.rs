//! `flowsteer steer`: Feynman–Kac steering (SPEC §5–7), and the options every particle command
//! shares with `flowsteer search` ([`CommonArgs`]).
//!
//! With no options it steers the checkerboard model towards the point (2, 0.5) with `max`,
//! λ = 10, 4,096 particles, 100 midpoint steps and 5 resamplings between t = 0.6 and 0.95, and
//! prints a short summary against an unsteered run of the same noises.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::backend::cpu::CpuBackend;
use crate::backend::{Backend, BackendChoice, Init, Layout, RunSpec};
use crate::methods::{self, FkConfig, ScheduleSpec};
use crate::model::Mlp;
use crate::potential::{Potential, PotentialKind};
use crate::resample::ResampleScheme;
use crate::reward::{Reward, RewardOn};
use crate::sampler::{Sampler, SamplerKind, SdeForm};
use crate::summary::{self, Outputs};

/// The default model, shipped by `flowsteer train` (issue 2).
pub const DEFAULT_MODEL: &str = "models/checkerboard.safetensors";

/// Options shared by `steer` and every `search` method.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// The velocity model (safetensors, SPEC §1).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// The reward (SPEC §4): point([x,y]), line(axis, c), gaussian([x,y], sigma),
    /// obstacle([x,y], rho, q_star, eta), and weighted sums, e.g.
    /// "gaussian([2,0.5], 0.5) + 0.5*obstacle([1,0], 0.4, 0.5, 1.0)".
    #[arg(long, default_value = "point([2,0.5])", allow_hyphen_values = true)]
    pub reward: String,
    /// Where intermediate rewards are evaluated: the predicted data x̂1 or the noisy state.
    #[arg(long, value_enum, default_value_t)]
    pub reward_on: RewardOn,
    /// Integrator (SPEC §2).
    #[arg(long, value_enum, default_value_t)]
    pub sampler: SamplerKind,
    /// Uniform time steps.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// SDE diffusion scale k in ω_t = k·(1−t) (sampler sde only).
    #[arg(long, default_value_t = 0.1)]
    pub k: f32,
    /// SDE form: the marginal-preserving one, or the legacy tutorial form (SPEC §2).
    #[arg(long, value_enum, default_value_t)]
    pub sde_form: SdeForm,
    /// Seed of every random draw (SPEC §3).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Engine: auto (CUDA when usable, else CPU), cpu or cuda.
    #[arg(long, value_enum, default_value_t)]
    pub backend: BackendChoice,
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
    /// Particles per group N.
    #[arg(long, default_value_t = 4096)]
    pub particles: usize,
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
    /// Resample every K grid steps between --t-start and --t-end instead.
    #[arg(long, value_name = "K")]
    pub resample_every: Option<usize>,
    #[arg(long, default_value_t = 0.6, allow_hyphen_values = true)]
    pub t_start: f64,
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
}

/// Everything resolved from [`CommonArgs`] before any work starts.
pub struct Prepared {
    pub spec: RunSpec,
    pub model_path: PathBuf,
}

/// Resolves `--backend` to a concrete engine.
// TODO(dedupe): replace by core's resolution helper in src/cli/common.rs once it lands.
pub fn resolve_backend(choice: BackendChoice) -> anyhow::Result<CpuBackend> {
    match choice {
        BackendChoice::Auto | BackendChoice::Cpu => Ok(CpuBackend::new()),
        BackendChoice::Cuda => bail!(
            "--backend cuda: the CUDA backend is not available in this build; use --backend cpu (or auto)"
        ),
    }
}

impl CommonArgs {
    /// Loads the model, parses the reward, checks the sampler; `potential` and `resample`
    /// complete the run's specification.
    pub fn prepare(&self, potential: Potential, resample: ResampleScheme, adaptive_ess: Option<f32>) -> anyhow::Result<Prepared> {
        let reward: Reward = self.reward.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        let sampler = Sampler { kind: self.sampler, steps: self.steps, k: self.k, form: self.sde_form };
        sampler.validate().map_err(anyhow::Error::msg)?;
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
            if out.exists() && !out.is_dir() {
                bail!("--out {} exists and is not a directory; give a directory path", out.display());
            }
        }
        let model = load_model(&self.model)?;
        reward.checks_dim(model.dim).map_err(|e| anyhow::anyhow!("--reward {:?}: {e}", self.reward))?;
        let spec = RunSpec { model, sampler, reward, reward_on: self.reward_on, potential, resample, adaptive_ess, seed: self.seed };
        Ok(Prepared { spec, model_path: self.model.clone() })
    }
}

/// Loads a model, with a hint when the default model has not been trained yet.
pub fn load_model(path: &Path) -> anyhow::Result<Mlp> {
    if !path.exists() {
        if path == Path::new(DEFAULT_MODEL) {
            bail!("model file {DEFAULT_MODEL} not found: train it with `flowsteer train`, or give --model FILE");
        }
        bail!("model file {} not found; give --model FILE", path.display());
    }
    Ok(Mlp::load(path)?)
}

/// Reads `--init` and checks its shape against `[total, D]`.
pub fn read_init(path: &Path, total: usize, dim: usize) -> anyhow::Result<Vec<f32>> {
    let a = crate::npy::read_f32(path)?;
    if a.shape != [total, dim] {
        bail!(
            "--init {} holds an array of shape {:?}; expected [N·G, D] = [{total}, {dim}] (one starting point per particle)",
            path.display(),
            a.shape
        );
    }
    if let Some(i) = a.data.iter().position(|v| !v.is_finite()) {
        bail!("--init {} holds a non-finite value at flat index {i}; starting points must be finite", path.display());
    }
    Ok(a.data)
}

/// Checks N and G.
pub fn check_layout(particles: usize, groups: usize, what: &str) -> anyhow::Result<Layout> {
    if particles == 0 {
        bail!("{what} must be at least 1, got 0");
    }
    if groups == 0 {
        bail!("--groups must be at least 1, got 0");
    }
    particles.checked_mul(groups).filter(|&t| t < (1usize << 40)).with_context(|| format!("{what} × --groups is too large"))?;
    Ok(Layout { n: particles, groups })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let potential = Potential { kind: args.potential, lambda: args.lambda, r_min: args.r_min };
    let layout = check_layout(args.particles, args.groups, "--particles")?;
    let schedule = ScheduleSpec { t_start: args.t_start, t_end: args.t_end, count: args.resample_count, every: args.resample_every };
    schedule.validate().map_err(anyhow::Error::msg)?;
    if args.ancestry && args.common.out.is_none() {
        bail!("--ancestry writes ancestry.npy into the output directory; give --out DIR");
    }
    let prep = args.common.prepare(potential, args.resample, args.adaptive_ess)?;
    let init_rows = match &args.init {
        Some(p) => Some(read_init(p, layout.total(), prep.spec.model.dim)?),
        None => None,
    };
    let mut backend = resolve_backend(args.common.backend)?;
    let cfg = FkConfig { layout, schedule, keep_ancestors: args.ancestry, fused: args.fused, snapshots: args.common.plot };
    let resolved = methods::fk::resolve_schedule(&prep.spec, &schedule).map_err(anyhow::Error::msg)?;
    let quiet = args.common.quiet;
    if !quiet {
        println!("flowsteer steer: {} on {}", prep.spec.potential.kind, backend.info().device);
        println!("  resampling at grid steps {resolved}");
    }
    let init = init_rows.as_deref().map_or(Init::Noise, Init::Given);
    let result = methods::steer(&mut backend, &prep.spec, &cfg, init)?;
    let baseline = if args.no_baseline {
        None
    } else {
        Some(baseline_rewards(&mut backend, &prep.spec, layout, init)?)
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
        print!("{}", summary::human_summary(&prep.spec, &result, baseline.as_deref()));
    }
    let outputs = Outputs { ancestry: args.ancestry, plot: args.common.plot };
    if let Some(dir) = &args.common.out {
        let info = backend.info();
        let written = summary::write_outputs(dir, &prep, &args.common, config, &info, &result, baseline.as_deref(), outputs)?;
        if !quiet {
            println!("  wrote {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
        }
    }
    Ok(())
}

/// Final rewards of an unsteered run of the same starting points (potential `bon`, no
/// reordering): what steering is compared against.
pub fn baseline_rewards<B: Backend>(backend: &mut B, spec: &RunSpec, layout: Layout, init: Init<'_>) -> anyhow::Result<Vec<f32>> {
    let mut plain = spec.clone();
    plain.potential = Potential { kind: PotentialKind::Is, ..spec.potential };
    let mut p = backend.init(&plain, layout, init)?;
    backend.propagate(&plain, &mut p, 0..plain.sampler.steps)?;
    backend.score(&plain, &mut p, crate::backend::ScoreOn::Sample)
}
