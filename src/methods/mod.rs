//! The methods of docs/steering.md, docs/resampling.md, docs/schedules.md, docs/search.md, written once against [`crate::backend::Backend`].
//!
//! Each method drives a backend through its primitives and returns a [`RunResult`], the one
//! shape the CLI (files, summaries) and the sweep read. No method branches on the backend.

pub mod fk;
pub mod schedule;
pub mod search;
pub mod tempering;

use std::time::Instant;

use crate::backend::Layout;

pub use fk::{steer, steer_tempered, FkConfig};
pub use tempering::{LambdaSchedule, Tempering};
pub use schedule::{Schedule, ScheduleSpec};
pub use search::{best_of_n, search_over_paths, zeroth_order, BonConfig, PathsConfig, ZerothConfig};

/// Wall time by phase, seconds. With fused intervals the phases are not separable: `fused` is
/// true and `propagate`, `potential`, `resample` hold only what ran outside intervals.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct PhaseTimes {
    /// Integration (`Backend::propagate`).
    pub propagate: f64,
    /// Rewards, potentials, weights and scores (`weigh`, `score`).
    pub potential: f64,
    /// Resampling and the search methods' reshuffles (`resample`, `select_top`, `replicate`,
    /// `renoise`).
    pub resample: f64,
    /// Whole intervals run as one call (`Backend::interval`).
    pub fused_intervals: f64,
    pub fused: bool,
    /// The whole method, initialisation and read-back included.
    pub total: f64,
}

/// Accumulates time into a phase.
pub(crate) fn timed<T>(slot: &mut f64, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    *slot += start.elapsed().as_secs_f64();
    out
}

/// One row of `trace.csv`: one resampling point (FK), cycle (zeroth-order) or round (paths),
/// for one group. Fields that do not apply are NaN (floats) or 0.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct TraceRow {
    /// 0-based index of the point, cycle or round.
    pub index: usize,
    /// Grid index of the time (FK, paths); the cycle for zeroth-order search.
    pub step: usize,
    pub t: f64,
    pub group: usize,
    /// Particles alive in the group at this row.
    pub particles: usize,
    pub ess: f64,
    pub log_z_increment: f64,
    pub max_log_weight: f64,
    pub mean_reward: f64,
    pub best_reward: f64,
    pub nonfinite: u64,
    pub all_neg_inf: bool,
    pub resampled: bool,
    pub distinct_parents: u64,
    /// Distinct starting particles (roots at t = 0) with descendants in the group after this
    /// point: how much of the initial diversity is left (FK steering).
    pub distinct_ancestors: u64,
    /// Model evaluations so far (all groups).
    pub nfe: u64,
    /// λ of the potential at this point (FK steering; docs/steering.md "Tempering").
    pub lambda: f64,
}

impl TraceRow {
    pub const CSV_HEADER: &'static str =
        "index,step,t,group,particles,ess,log_z_increment,max_log_weight,mean_reward,best_reward,nonfinite,all_neg_inf,resampled,distinct_parents,distinct_ancestors,nfe,lambda";

    pub fn csv_line(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            self.index,
            self.step,
            self.t,
            self.group,
            self.particles,
            self.ess,
            self.log_z_increment,
            self.max_log_weight,
            self.mean_reward,
            self.best_reward,
            self.nonfinite,
            self.all_neg_inf as u8,
            self.resampled as u8,
            self.distinct_parents,
            self.distinct_ancestors,
            self.nfe,
            self.lambda
        )
    }

    pub(crate) fn blank(index: usize, step: usize, t: f64, group: usize, particles: usize) -> Self {
        Self {
            index,
            step,
            t,
            group,
            particles,
            ess: f64::NAN,
            log_z_increment: f64::NAN,
            max_log_weight: f64::NAN,
            mean_reward: f64::NAN,
            best_reward: f64::NAN,
            lambda: f64::NAN,
            ..Self::default()
        }
    }
}

/// `trace.csv` as text.
pub fn trace_csv(rows: &[TraceRow]) -> String {
    let mut s = String::from(TraceRow::CSV_HEADER);
    s.push('\n');
    for r in rows {
        s.push_str(&r.csv_line());
        s.push('\n');
    }
    s
}

/// What every method returns.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub method: String,
    /// The final layout (search methods keep fewer particles than they ran).
    pub layout: Layout,
    pub dim: usize,
    /// Final particles `[total, D]`, best first within each group for the search methods.
    pub positions: Vec<f32>,
    /// Final rewards on the samples, `[total]`.
    pub rewards: Vec<f32>,
    /// Final log-weights `[total]`, f64 (0 where a method does not weight).
    pub log_weights: Vec<f64>,
    /// The index each final particle descends from at t = 0 (within its group).
    pub root_ids: Vec<u32>,
    pub trace: Vec<TraceRow>,
    /// Grid indices of the resampling points (FK) or of the rounds (paths).
    pub schedule: Vec<usize>,
    /// `[K][total]` ancestor indices, one row per resampling, when asked for.
    pub ancestry: Option<Vec<Vec<u32>>>,
    /// log Ẑ per group (FK steering).
    pub log_z: Option<Vec<f64>>,
    /// Model evaluations (velocity evaluations of one particle), all groups together.
    pub nfe: u64,
    /// Particle-steps integrated, all groups together.
    pub particle_steps: u64,
    pub times: PhaseTimes,
    /// NaN/+inf rewards or weights met (docs/steering.md).
    pub nonfinite: u64,
    /// Weighings at which a whole group was −inf (resampled uniformly).
    pub all_neg_inf_events: u64,
    /// Distinct roots left per group at the end.
    pub distinct_ancestors: Vec<u64>,
    /// The final particles were resampled at t = 1 with the final weights: an equally weighted
    /// sample (log-weights 0). False: a weighted sample, its weights in `log_weights`.
    pub final_resampled: bool,
    /// `(grid index, [total, D] positions)` at chosen times, when asked for (plots).
    pub snapshots: Vec<(usize, Vec<f32>)>,
}

impl RunResult {
    /// An empty result for `method` on D = `dim`, filled in as the method runs.
    pub(crate) fn new(method: impl Into<String>, dim: usize) -> Self {
        Self {
            method: method.into(),
            layout: Layout { n: 0, groups: 0 },
            dim,
            positions: Vec::new(),
            rewards: Vec::new(),
            log_weights: Vec::new(),
            root_ids: Vec::new(),
            trace: Vec::new(),
            schedule: Vec::new(),
            ancestry: None,
            log_z: None,
            nfe: 0,
            particle_steps: 0,
            times: PhaseTimes::default(),
            nonfinite: 0,
            all_neg_inf_events: 0,
            distinct_ancestors: Vec::new(),
            final_resampled: false,
            snapshots: Vec::new(),
        }
    }

    pub fn total_seconds(&self) -> f64 {
        self.times.total
    }

    /// Particle-steps per second over the whole run.
    pub fn particle_steps_per_second(&self) -> f64 {
        self.particle_steps as f64 / self.times.total.max(1e-12)
    }
}

/// Distinct root ids per group.
pub(crate) fn distinct_roots(roots: &[u32], layout: Layout) -> Vec<u64> {
    roots
        .chunks(layout.n.max(1))
        .map(|g| {
            let mut v = g.to_vec();
            v.sort_unstable();
            v.dedup();
            v.len() as u64
        })
        .collect()
}

/// A stopwatch for the total.
pub(crate) struct Clock(Instant);

impl Clock {
    pub fn start() -> Self {
        Clock(Instant::now())
    }
    pub fn seconds(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}
