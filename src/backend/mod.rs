//! The boundary between the methods (FK steering, search) and the engines that run them.
//!
//! A method is written once against [`Backend`]; a backend supplies the primitive operations on a
//! population it owns (on the host or on the device). Nothing here knows which method calls it,
//! and no method branches on the backend. A backend may fuse primitives: [`Backend::interval`]
//! runs propagate → weigh → resample as one unit, so that the CUDA backend can capture a whole
//! resampling interval as one graph with no host round trip; only the small per-group summaries
//! come back.

pub mod cpu;
pub mod cuda;

use std::ops::Range;

use crate::model::Mlp;
use crate::potential::Potential;
use crate::resample::ResampleScheme;
use crate::reward::{Reward, RewardOn};
use crate::sampler::{RenoiseForm, Sampler};

/// Everything a run is specialised on (the CUDA backend compiles kernels for it).
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub model: Mlp,
    pub sampler: Sampler,
    pub reward: Reward,
    pub reward_on: RewardOn,
    pub potential: Potential,
    pub resample: ResampleScheme,
    /// Adaptive resampling threshold τ: resample only when ESS < τ·N (docs/steering.md). None: always.
    pub adaptive_ess: Option<f32>,
    pub seed: u64,
}

/// `groups` independent populations of `n` particles each (docs/steering.md `groups`). Particle `i` of
/// group `g` has the global index `g·n + i`, which is also its random-number counter (docs/random.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub n: usize,
    pub groups: usize,
}

impl Layout {
    pub fn total(&self) -> usize {
        self.n * self.groups
    }
}

/// Where the starting points come from.
#[derive(Clone, Copy, Debug)]
pub enum Init<'a> {
    /// `x0 ~ N(0, I)` from Philox, purpose `InitialNoise`, step 0 (docs/random.md).
    Noise,
    /// Given starting points, `[total, D]` row-major (the `--init` file).
    Given(&'a [f32]),
    /// Zeroth-order search candidates (docs/search.md): candidate `i` is `pivot + u_i`, `u_i` uniform in
    /// the ball of radius `radius`, drawn with purpose `SearchPerturbation`, step = `cycle`.
    /// Candidate 0 of each group is the pivot itself, so the best never gets worse.
    AroundPivot { pivot: &'a [f32], radius: f32, cycle: u32 },
}

/// The resampling step being weighed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeighAt {
    /// Grid index of the current time `t = step / n`.
    pub step: usize,
    /// 0-based index k of this resampling point in the schedule (used for the trace).
    pub index: usize,
    /// The last resampling point, at t = 1: the reward is on the sample itself and the terminal
    /// correction applies (docs/steering.md).
    pub is_final: bool,
}

/// Per-group results of one weighing (docs/steering.md); all reductions in f64.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct GroupWeights {
    /// `log Σ_i W_{k−1,i}·G_{k,i}`, the log Ẑ increment.
    pub log_z_increment: f64,
    /// ESS of the (carried + new) weights, `(Σw)²/Σw²`.
    pub ess: f64,
    /// Largest log-weight after the update.
    pub max_log_weight: f64,
    /// Particles whose reward or weight was NaN or +inf (counted as −inf).
    pub nonfinite: u64,
    /// Every log-weight was −inf: resampling falls back to uniform (docs/steering.md).
    pub all_neg_inf: bool,
    /// Mean reward of the group at this step (on x̂1 or x_t, as evaluated).
    pub mean_reward: f64,
}

/// Per-group results of one resampling decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct GroupResample {
    /// False when adaptive resampling skipped the step (weights are carried to the next one).
    pub resampled: bool,
    /// Distinct parents chosen at this step.
    pub distinct_parents: u64,
}

/// What one resampling interval reports back to the host.
#[derive(Clone, Debug, Default)]
pub struct IntervalReport {
    pub weights: Vec<GroupWeights>,
    pub resample: Vec<GroupResample>,
    /// Ancestor indices `[total]` (within-group, 0..n), when asked for (`--ancestry`).
    pub ancestors: Option<Vec<u32>>,
}

/// One resampling interval: integrate `steps`, weigh at their end, then resample unless this is
/// the final point.
#[derive(Clone, Debug)]
pub struct IntervalPlan {
    pub steps: Range<usize>,
    pub weigh: WeighAt,
    pub resample: bool,
    pub keep_ancestors: bool,
}

/// Scores the search methods rank by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreOn {
    /// The reward of the current state as the final sample (t = 1).
    Sample,
    /// The reward at grid index `step`, on x̂1 or x_t as `RunSpec::reward_on` says.
    Intermediate { step: usize },
}

/// A device (or the host) as reported in `info` and `summary.json`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BackendInfo {
    pub backend: String,
    pub device: String,
}

/// The primitive operations every method is built from.
pub trait Backend {
    /// A population of particles with their FK state, owned by the backend.
    type Particles;

    fn info(&self) -> BackendInfo;

    /// Allocates `layout` particles, their positions from `init`, FK state at its start
    /// (potential state from [`Potential::initial_state`], log-weights 0, root ids = own index).
    fn init(&mut self, spec: &RunSpec, layout: Layout, init: Init<'_>) -> anyhow::Result<Self::Particles>;

    /// Integrates grid steps `steps` (from `t = steps.start/n` to `t = steps.end/n`).
    fn propagate(&mut self, spec: &RunSpec, p: &mut Self::Particles, steps: Range<usize>) -> anyhow::Result<()>;

    /// Rewards, potential update and log-weights at a resampling point, with the per-group
    /// reductions of docs/steering.md (the new log-potential is added to the carried log-weight).
    fn weigh(&mut self, spec: &RunSpec, p: &mut Self::Particles, at: WeighAt) -> anyhow::Result<Vec<GroupWeights>>;

    /// Resamples each group by `spec.resample` (skipping groups whose ESS ≥ τ·N when adaptive),
    /// gathers every per-particle state, and resets the log-weights of resampled groups.
    /// `step` is the grid index, the counter of the resampling uniforms (docs/random.md).
    fn resample(
        &mut self,
        spec: &RunSpec,
        p: &mut Self::Particles,
        step: usize,
        keep_ancestors: bool,
    ) -> anyhow::Result<(Vec<GroupResample>, Option<Vec<u32>>)>;

    /// One resampling interval. Backends that can fuse the three primitives override this.
    fn interval(&mut self, spec: &RunSpec, p: &mut Self::Particles, plan: &IntervalPlan) -> anyhow::Result<IntervalReport> {
        self.propagate(spec, p, plan.steps.clone())?;
        let weights = self.weigh(spec, p, plan.weigh)?;
        let (resample, ancestors) = if plan.resample {
            self.resample(spec, p, plan.weigh.step, plan.keep_ancestors)?
        } else {
            (Vec::new(), None)
        };
        Ok(IntervalReport { weights, resample, ancestors })
    }

    /// Positions, `[total, D]` row-major.
    fn read_positions(&mut self, p: &Self::Particles) -> anyhow::Result<Vec<f32>>;
    /// Current log-weights, `[total]`.
    fn read_log_weights(&mut self, p: &Self::Particles) -> anyhow::Result<Vec<f64>>;
    /// The index each particle descends from at t = 0 (within its group), `[total]`.
    fn read_root_ids(&mut self, p: &Self::Particles) -> anyhow::Result<Vec<u32>>;

    /// Scores every particle (search methods, final rewards), `[total]`; NaN stays NaN.
    fn score(&mut self, spec: &RunSpec, p: &mut Self::Particles, on: ScoreOn) -> anyhow::Result<Vec<f32>>;

    /// Keeps, in each group, the `keep` particles with the highest score under `on` (NaN last,
    /// ties to the lower index), best first; the layout becomes `{ n: keep, groups }`. Returns
    /// their scores and their former within-group indices.
    fn select_top(
        &mut self,
        spec: &RunSpec,
        p: &mut Self::Particles,
        on: ScoreOn,
        keep: usize,
    ) -> anyhow::Result<(Vec<f32>, Vec<u32>)>;

    /// Copies each particle `copies` times in place (particle `i` becomes `i·copies .. (i+1)·copies`);
    /// the layout becomes `{ n: n·copies, groups }`.
    fn replicate(&mut self, p: &mut Self::Particles, copies: usize) -> anyhow::Result<()>;

    /// Renoises every particle from grid index `from` back to `to < from` (docs/samplers.md), noise with
    /// purpose `Renoising`, step = `round` (a method-chosen index, distinct per round).
    fn renoise(&mut self, spec: &RunSpec, p: &mut Self::Particles, from: usize, to: usize, form: RenoiseForm, round: u32)
        -> anyhow::Result<()>;
}

/// Which engine a command runs on (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// CUDA when a usable device exists and the CUDA backend is enabled, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
    /// The CUDA backend with its kernels run on the CPU by the host emulator
    /// (kernels/emulator.hpp): slow, for checking kernels and their orchestration without a GPU.
    #[serde(rename = "cuda-emulated")]
    CudaEmulated,
}

/// Row-major points `rows` (`[total, dim]`) into the structure-of-arrays layout both backends
/// keep positions in: coordinate `d` of particle `i` at `soa[d·stride + i]` (`stride ≥ total`).
pub fn rows_to_soa(rows: &[f32], dim: usize, stride: usize, soa: &mut [f32]) {
    let total = rows.len() / dim;
    debug_assert!(stride >= total && soa.len() >= dim * stride);
    for (i, row) in rows.chunks_exact(dim).enumerate() {
        for (d, &v) in row.iter().enumerate() {
            soa[d * stride + i] = v;
        }
    }
}

/// The inverse of [`rows_to_soa`]: the first `total` particles as row-major `[total, dim]`.
pub fn soa_to_rows(soa: &[f32], dim: usize, stride: usize, total: usize) -> Vec<f32> {
    debug_assert!(stride >= total && soa.len() >= dim * stride);
    let mut rows = vec![0f32; total * dim];
    for (i, row) in rows.chunks_exact_mut(dim).enumerate() {
        for (d, v) in row.iter_mut().enumerate() {
            *v = soa[d * stride + i];
        }
    }
    rows
}
