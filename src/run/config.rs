//! Plain configuration of a run: what the command line parses into, and what a caller without
//! one (an MPI rank, a sweep point, a test) fills in directly. Nothing here has been checked;
//! the run layer checks it when it prepares the run, with messages that name the command-line
//! option of each field.

use std::path::PathBuf;

use crate::backend::BackendChoice;
use crate::methods::ScheduleSpec;
use crate::potential::Potential;
use crate::resample::ResampleScheme;
use crate::reward::RewardOn;
use crate::sampler::{RenoiseForm, Sampler};

use super::prepare::DEFAULT_MODEL;
use crate::potential::PotentialKind;
use crate::sampler::{SamplerKind, SdeForm};

/// The reward `steer` and `search` use when none is given (docs/steering.md "Defaults"): smooth,
/// so that λ·r stays within a few units and resampling keeps many ancestors.
pub const DEFAULT_REWARD: &str = "gaussian([2.25,2.25], 0.5)";

/// `steer`'s potential when none is given: `rt` with λ = 1 (a Gaussian reward is ≤ 0, where
/// `max` with r_min = 0 would never move).
pub const DEFAULT_STEER_POTENTIAL: Potential = Potential { kind: PotentialKind::Rt, lambda: 1.0, r_min: 0.0, clamp_weights: None };

/// `steer`'s sampler when none is given: the marginal SDE, so that the copies a resampling makes
/// diverge again (an ODE moves them along one path); `sample` and `search` keep midpoint.
pub const DEFAULT_STEER_SAMPLER: Sampler = Sampler { kind: SamplerKind::Sde, steps: 100, k: 0.1, form: SdeForm::Marginal };

/// What `steer` and every `search` method share.
#[derive(Clone, Debug)]
pub struct CommonConfig {
    /// The velocity model's safetensors file (docs/model.md).
    pub model: PathBuf,
    /// The reward expression (docs/rewards.md), e.g. [`DEFAULT_REWARD`].
    pub reward: String,
    /// `--reward-cmd`: a program that computes the reward instead (docs/writing-a-reward.md).
    pub reward_cmd: Option<String>,
    /// Seconds the program may take to answer one batch.
    pub reward_timeout: f64,
    pub reward_on: RewardOn,
    pub sampler: Sampler,
    pub seed: u64,
    pub backend: BackendChoice,
    /// Plain kernel launches on the CUDA backend instead of captured graphs.
    pub no_graph: bool,
    /// Where to write the run's files; None writes nothing.
    pub out: Option<PathBuf>,
    /// Replace a non-empty `out` whole instead of refusing it.
    pub force: bool,
    /// Also write plot.png (needs `out`).
    pub plot: bool,
    /// Print nothing but errors.
    pub quiet: bool,
}

impl Default for CommonConfig {
    /// The command line's defaults.
    fn default() -> Self {
        CommonConfig {
            model: PathBuf::from(DEFAULT_MODEL),
            reward: DEFAULT_REWARD.into(),
            reward_cmd: None,
            reward_timeout: 60.0,
            reward_on: RewardOn::default(),
            sampler: Sampler::default(),
            seed: 0,
            backend: BackendChoice::Auto,
            no_graph: false,
            out: None,
            force: false,
            plot: false,
            quiet: false,
        }
    }
}

/// `flowsteer steer`: FK steering (docs/steering.md, docs/resampling.md, docs/schedules.md).
#[derive(Clone, Debug)]
pub struct SteerConfig {
    pub common: CommonConfig,
    /// Particles per group N; None: the rows of `init` divided by `groups`, or
    /// [`super::steer::DEFAULT_PARTICLES`].
    pub particles: Option<usize>,
    pub groups: usize,
    pub potential: Potential,
    pub resample: ResampleScheme,
    pub schedule: ScheduleSpec,
    /// Resample only when ESS < τ·N.
    pub adaptive_ess: Option<f32>,
    /// Starting points: an `[N·G, D]` .npy file instead of Philox noise.
    pub init: Option<PathBuf>,
    /// Also write ancestry.npy.
    pub ancestry: bool,
    /// Each resampling interval as one backend call.
    pub fused: bool,
    /// Run the unsteered baseline of the same noises that the summary compares against.
    pub baseline: bool,
    /// Run only the first INTERVALS resampling intervals, write nothing (Nsight profiling).
    pub profile: Option<usize>,
    /// λ per resampling point (docs/steering.md "Tempering").
    pub tempering: crate::methods::Tempering,
    /// Resample once more at t = 1, so that samples.npy is an equally weighted sample
    /// (`--no-final-resample` keeps the weighted one; docs/outputs.md).
    pub final_resample: bool,
}

impl SteerConfig {
    /// `flowsteer steer`'s defaults (docs/steering.md "Defaults"): [`DEFAULT_REWARD`],
    /// [`DEFAULT_STEER_POTENTIAL`], [`DEFAULT_STEER_SAMPLER`] and a final resampling.
    pub fn defaults() -> Self {
        SteerConfig {
            common: CommonConfig { sampler: DEFAULT_STEER_SAMPLER, ..CommonConfig::default() },
            particles: None,
            groups: 1,
            potential: DEFAULT_STEER_POTENTIAL,
            resample: ResampleScheme::default(),
            schedule: ScheduleSpec::default(),
            adaptive_ess: None,
            init: None,
            ancestry: false,
            fused: false,
            baseline: true,
            profile: None,
            tempering: crate::methods::Tempering::default(),
            final_resample: true,
        }
    }
}

/// A search baseline (docs/search.md).
#[derive(Clone, Debug)]
pub enum SearchMethod {
    /// Best-of-N: `particles` samples per group, keep the `top_k` best.
    /// `particles` None: the rows of `init` divided by the groups, or 4096.
    Bon { particles: Option<usize>, top_k: usize, init: Option<PathBuf> },
    /// Zeroth-order search: `cycles` cycles of `candidates` candidates in a ball of `radius`
    /// around a pivot (`pivot`: D comma-separated numbers or a .npy file; None draws one).
    Zeroth { candidates: usize, cycles: usize, radius: f32, pivot: Option<String> },
    /// Search over paths: a beam of `particles`, `candidates` renoised copies each round.
    Paths {
        /// None: the rows of `init` divided by the groups, or 256.
        particles: Option<usize>,
        candidates: usize,
        t_start: f64,
        delta_f: f64,
        delta_b: f64,
        renoise: RenoiseForm,
        top_k: usize,
        init: Option<PathBuf>,
    },
}

/// `flowsteer search bon|zeroth|paths`.
#[derive(Clone, Debug)]
pub struct SearchConfig {
    pub common: CommonConfig,
    /// Independent searches run side by side.
    pub groups: usize,
    pub method: SearchMethod,
}

/// `flowsteer sample`: plain sampling (docs/samplers.md).
#[derive(Clone, Debug)]
pub struct SampleConfig {
    pub model: PathBuf,
    pub sampler: Sampler,
    /// N; None takes the rows of `init`, or [`super::sample::DEFAULT_PARTICLES`].
    pub particles: Option<usize>,
    pub seed: u64,
    /// Start from this `[N, D]` noise instead of drawing it.
    pub init: Option<PathBuf>,
    pub backend: BackendChoice,
    /// Where samples.npy and summary.json go.
    pub out: PathBuf,
    /// Replace a non-empty `out` whole instead of refusing it.
    pub force: bool,
}
