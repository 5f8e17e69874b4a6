//! One rank's share of a population on the CPU, and the global weighing of docs/steering.md across ranks
//! (docs/steering.md, docs/distributed.md).
//!
//! A rank holds global indices `range` of `layout` (groups of `n`; a group may span ranks). The
//! per-particle work (integration, rewards, the potential update) is the CPU backend's, keyed by
//! the global index (docs/random.md), so it is the same whatever P. The per-group reductions are made
//! independent of P by an exact accumulator: weights relative to the group's maximum are taken in
//! fixed point with 64 fractional bits (`floor(exp(lw − max)·2^64)`, see [`weight_fx`]) and
//! summed in `u128`, where addition is associative — every rank then reads the same sums, bit for
//! bit, for any P. A weight below 2^-64 of the largest counts as 0: such a particle is never
//! chosen; exact multinomial resampling would choose it with probability < N·2^-64 per step.

use std::ops::Range;

use anyhow::{bail, ensure};

use super::comm::{Bytes, Communicator, Reader};
use super::engine::RankEngine;
use super::share;
use crate::backend::cpu::{candidate_around_pivot, propagate};
use crate::backend::{GroupWeights, Init, Layout, RunSpec};
use crate::potential::{sanitize_log_weight, PotentialState};
use crate::resample::{draws, ResampleScheme};
use crate::reward::RewardOn;
use crate::rng::{Philox, Purpose};
use crate::sampler;

/// 1.0 in the fixed point of [`weight_fx`].
pub const FX_ONE: u128 = 1 << 64;
const FX_SCALE: f64 = 18_446_744_073_709_551_616.0; // 2^64

/// A non-negative f64 (< 2^63) in fixed point with 64 fractional bits, rounded down.
pub fn to_fx(x: f64) -> u128 {
    (x * FX_SCALE) as u128
}

/// The weight `exp(lw − max)` in fixed point; 0 for −inf; `FX_ONE` for every particle when the
/// whole group is −inf (`max = −inf`: uniform resampling, docs/steering.md).
pub fn weight_fx(lw: f64, max: f64) -> u128 {
    if max == f64::NEG_INFINITY {
        FX_ONE
    } else if lw == f64::NEG_INFINITY {
        0
    } else {
        to_fx((lw - max).exp())
    }
}

/// `w²` in fixed point (for the ESS).
fn weight_sq_fx(lw: f64, max: f64) -> u128 {
    if lw == f64::NEG_INFINITY || max == f64::NEG_INFINITY {
        0
    } else {
        let w = (lw - max).exp();
        to_fx(w * w)
    }
}

/// The exponential spacing `E = −ln u` of multinomial resampling (crate::resample) in fixed point.
pub fn spacing_fx(rng: &Philox, particle: u64, step: u32, draw: u32) -> u128 {
    to_fx(-(rng.uniform(particle, step, Purpose::Resampling, draw) as f64).ln())
}

/// One rank's particles, structure of arrays like the CPU backend (`x[d·len + i]`).
#[derive(Clone, Debug)]
pub struct Population {
    pub layout: Layout,
    pub dim: usize,
    /// The global indices held here.
    pub range: Range<usize>,
    pub x: Vec<f32>,
    pub state: Vec<PotentialState>,
    /// f64, as the CPU backend's (crate::potential).
    pub log_w: Vec<f64>,
    /// Within-group index of the particle each one descends from at t = 0.
    pub root: Vec<u32>,
    /// Where the per-particle work runs (integration and rewards; super::engine).
    pub engine: RankEngine,
}

impl Population {
    /// This rank's share of `layout`, started as the CPU backend starts a population.
    pub fn new(spec: &RunSpec, layout: Layout, comm: &dyn Communicator, init: Init<'_>, engine: &RankEngine) -> anyhow::Result<Population> {
        let (total, dim) = (layout.total(), spec.model.dim);
        let range = share::share(total, comm.size(), comm.rank());
        let len = range.len();
        let mut x = vec![0f32; dim * len];
        match init {
            Init::Noise => {
                let rng = Philox::new(spec.seed);
                let mut z = vec![0f32; dim];
                for (i, gi) in range.clone().enumerate() {
                    rng.normal_vector(gi as u64, 0, Purpose::InitialNoise, &mut z);
                    for d in 0..dim {
                        x[d * len + i] = z[d];
                    }
                }
            }
            Init::Given(rows) => {
                ensure!(rows.len() == total * dim, "initial points hold {} values, expected {total} × {dim}", rows.len());
                crate::backend::rows_to_soa(&rows[range.start * dim..range.end * dim], dim, len, &mut x);
            }
            Init::AroundPivot { pivot, radius, cycle } => {
                // As the CPU backend draws them, keyed by the global index (docs/search.md).
                ensure!(pivot.len() == layout.groups * dim, "the pivot holds {} values, expected one D = {dim} point per group ({} groups)", pivot.len(), layout.groups);
                ensure!(radius.is_finite() && radius >= 0.0, "the search radius must be a finite number ≥ 0, got {radius}");
                let rng = Philox::new(spec.seed);
                let mut c = vec![0f32; dim];
                for (i, gi) in range.clone().enumerate() {
                    let g = gi / layout.n;
                    candidate_around_pivot(&rng, &pivot[g * dim..(g + 1) * dim], radius, cycle, gi as u64, gi % layout.n, &mut c);
                    for d in 0..dim {
                        x[d * len + i] = c[d];
                    }
                }
            }
        }
        Ok(Population {
            layout,
            dim,
            x,
            state: vec![spec.potential.initial_state(); len],
            log_w: vec![0.0; len],
            root: range.clone().map(|i| (i % layout.n) as u32).collect(),
            range,
            engine: engine.clone(),
        })
    }

    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// Integrates grid steps `steps`; the noise of particle i is keyed by its global index.
    pub fn propagate(&mut self, spec: &RunSpec, steps: Range<usize>) -> anyhow::Result<()> {
        let (len, first) = (self.len(), self.range.start as u64);
        match &self.engine {
            RankEngine::Cpu => {
                propagate::propagate(&spec.model, &spec.sampler, spec.seed, &mut self.x, len, first, steps);
                Ok(())
            }
            gpu => gpu.propagate_on_gpu(spec, &mut self.x, len, first, steps),
        }
    }

    /// Rewards at grid index `step`, as `CpuBackend` computes them: on the state when `on_sample`
    /// or `reward_on = xt`, else on x̂1; at the step's time t (an expression may read t,
    /// docs/rewards.md). Fails only for a reward program that fails.
    pub fn rewards(&self, spec: &RunSpec, step: usize, on_sample: bool) -> anyhow::Result<Vec<f32>> {
        let (len, dim) = (self.len(), self.dim);
        if !matches!(self.engine, RankEngine::Cpu) {
            return self.engine.rewards_on_gpu(spec, &self.x, len, self.range.start as u64, step, on_sample);
        }
        let t = spec.sampler.time(step);
        let hat;
        let x: &[f32] = if on_sample || spec.reward_on == RewardOn::Xt {
            &self.x
        } else {
            let v = propagate::velocities(&spec.model, t, &self.x, len);
            hat = self.x.iter().zip(&v).map(|(&x, &v)| sampler::predicted_data(x, v, t)).collect::<Vec<f32>>();
            &hat
        };
        let mut out = vec![0f32; len];
        spec.reward.eval_soa(x, dim, len, t, &mut out)?;
        Ok(out)
    }

    /// Positions as rows `[len, D]`.
    pub fn rows(&self) -> Vec<f32> {
        crate::backend::soa_to_rows(&self.x, self.dim, self.len(), self.len())
    }

    /// Groups this rank touches.
    pub fn groups(&self) -> Range<usize> {
        share::groups_of(&self.range, self.layout.n)
    }

    /// Local indices of group `g`'s part here.
    pub fn local_segment(&self, g: usize) -> Range<usize> {
        let s = share::segment(&self.range, self.layout.n, g);
        s.start - self.range.start..s.end - self.range.start
    }
}

/// Per-rank, per-group exact sums after a weighing; the resampling reads them.
#[derive(Clone, Debug, Default)]
pub struct SegmentSums {
    /// Σ of [`weight_fx`] over the segment, with the group's global maximum.
    pub weights: u128,
    /// Σ of the multinomial spacings over the segment (0 unless a multinomial resampling follows).
    pub spacings: u128,
    /// Within-group index of the segment's last particle with a positive weight.
    pub last_positive: Option<u64>,
}

/// What a global weighing leaves: per-group results (every rank has all groups) and the
/// per-rank sums (`by_rank[r]` = (first group of rank r, its segments' sums)).
#[derive(Clone, Debug)]
pub struct Weighed {
    pub groups: Vec<GroupWeights>,
    pub by_rank: Vec<(usize, Vec<SegmentSums>)>,
}

impl Weighed {
    /// Rank `r`'s sums for group `g`, if it holds part of it.
    pub fn segment(&self, r: usize, g: usize) -> Option<&SegmentSums> {
        let (lo, v) = &self.by_rank[r];
        g.checked_sub(*lo).and_then(|k| v.get(k))
    }
}

/// docs/steering.md's weighing at grid index `step` across ranks: rewards and potential update here, then
/// two collectives (the group maxima, then the exact sums), so every rank returns the same
/// [`GroupWeights`] for every group. `spacings_at`: the grid index of a multinomial resampling
/// that follows (its spacing sums ride along with the second collective).
pub fn weigh(
    comm: &dyn Communicator,
    spec: &RunSpec,
    pop: &mut Population,
    step: usize,
    is_final: bool,
    spacings_at: Option<usize>,
) -> anyhow::Result<Weighed> {
    let rewards = pop.rewards(spec, step, is_final)?;
    let groups_here = pop.groups();
    let total_groups = pop.layout.groups;
    let potential = spec.potential;
    let before = pop.log_w.clone();
    // Round 1: maxima before and after, NaN counts, reward sums.
    let mut rec = Bytes::default();
    for g in groups_here.clone() {
        let seg = pop.local_segment(g);
        let max_before = before[seg.clone()].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (mut nonfinite, mut r_sum, mut r_count) = (0u64, 0f64, 0u64);
        for i in seg.clone() {
            let (log_g, next) = potential.update(pop.state[i], rewards[i], is_final);
            pop.state[i] = next;
            let (v, bad) = sanitize_log_weight(pop.log_w[i] + log_g);
            pop.log_w[i] = v;
            nonfinite += bad as u64;
            if rewards[i].is_finite() {
                r_sum += rewards[i] as f64;
                r_count += 1;
            }
        }
        let max_after = pop.log_w[seg].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        rec.f64(max_before).f64(max_after).u64(nonfinite).f64(r_sum).u64(r_count);
    }
    let (mut max_b, mut max_a) = (vec![f64::NEG_INFINITY; total_groups], vec![f64::NEG_INFINITY; total_groups]);
    let (mut nonfinite, mut r_sum, mut r_count) = (vec![0u64; total_groups], vec![0f64; total_groups], vec![0u64; total_groups]);
    for (r, bytes) in comm.all_gather(&rec.0).into_iter().enumerate() {
        let mut rd = Reader::new(&bytes);
        for g in share::groups_of(&share::share(pop.layout.total(), comm.size(), r), pop.layout.n) {
            max_b[g] = max_b[g].max(rd.f64());
            max_a[g] = max_a[g].max(rd.f64());
            nonfinite[g] += rd.u64();
            // In rank order: the mean reward's last bits may change with P (it is reported, not
            // used to decide anything).
            r_sum[g] += rd.f64();
            r_count[g] += rd.u64();
        }
    }
    // Round 2: exact sums with the global maxima.
    let rng = Philox::new(spec.seed);
    let n = pop.layout.n;
    let mut rec = Bytes::default();
    for g in groups_here.clone() {
        let seg = pop.local_segment(g);
        let (mut s1b, mut s1a, mut s2a, mut e) = (0u128, 0u128, 0u128, 0u128);
        let mut last_positive = u64::MAX;
        for i in seg {
            s1b += weight_fx(before[i], max_b[g]);
            let w = weight_fx(pop.log_w[i], max_a[g]);
            s1a += w;
            s2a += weight_sq_fx(pop.log_w[i], max_a[g]);
            let within = ((pop.range.start + i) % n) as u64;
            if w > 0 {
                last_positive = within;
            }
            if let Some(at) = spacings_at {
                e += spacing_fx(&rng, (pop.range.start + i) as u64, at as u32, draws::SPACING);
            }
        }
        rec.u128(s1b).u128(s1a).u128(s2a).u128(e).u64(last_positive);
    }
    let (mut s1b, mut s1a, mut s2a) = (vec![0u128; total_groups], vec![0u128; total_groups], vec![0u128; total_groups]);
    let mut by_rank = Vec::with_capacity(comm.size());
    for (r, bytes) in comm.all_gather(&rec.0).into_iter().enumerate() {
        let mut rd = Reader::new(&bytes);
        let gs = share::groups_of(&share::share(pop.layout.total(), comm.size(), r), n);
        let mut segs = Vec::with_capacity(gs.len());
        for g in gs.clone() {
            s1b[g] += rd.u128();
            let a = rd.u128();
            s1a[g] += a;
            s2a[g] += rd.u128();
            let spacings = rd.u128();
            let lp = rd.u64();
            segs.push(SegmentSums { weights: a, spacings, last_positive: (lp != u64::MAX).then_some(lp) });
        }
        by_rank.push((gs.start, segs));
    }
    let lse = |max: f64, s: u128| if max == f64::NEG_INFINITY { f64::NEG_INFINITY } else { max + (s as f64 / FX_SCALE).ln() };
    let groups = (0..total_groups)
        .map(|g| {
            let all_neg_inf = max_a[g] == f64::NEG_INFINITY;
            let (before, after) = (lse(max_b[g], s1b[g]), lse(max_a[g], s1a[g]));
            let (s1, s2) = (s1a[g] as f64 / FX_SCALE, s2a[g] as f64 / FX_SCALE);
            GroupWeights {
                log_z_increment: if before == f64::NEG_INFINITY { f64::NEG_INFINITY } else { after - before },
                ess: if all_neg_inf { 0.0 } else { s1 * s1 / s2 },
                max_log_weight: max_a[g],
                nonfinite: nonfinite[g],
                all_neg_inf,
                mean_reward: if r_count[g] > 0 { r_sum[g] / r_count[g] as f64 } else { f64::NAN },
            }
        })
        .collect();
    Ok(Weighed { groups, by_rank })
}

/// The resampling schemes that run across ranks.
pub fn check_scheme(scheme: ResampleScheme) -> anyhow::Result<()> {
    if scheme == ResampleScheme::Residual {
        bail!("--resample residual does not run across MPI ranks yet; use multinomial, systematic or stratified, or run without mpirun");
    }
    Ok(())
}
