//! The CPU backend: the reference every CUDA kernel is checked against, and the engine that runs
//! where there is no GPU. Rayon over blocks of particles; the hot loop is in [`propagate`].
//!
//! The semantics of each primitive (which the CUDA backend mirrors) are written at its method
//! below; the arithmetic itself lives in one place each: `crate::potential` (docs/steering.md),
//! `crate::resample` (docs/resampling.md), `crate::sampler` (docs/samplers.md), `crate::reward` (docs/rewards.md).

pub mod field;
pub mod activation;
pub mod propagate;

use std::ops::Range;
use std::sync::Arc;

use anyhow::ensure;
use rayon::prelude::*;

use super::{Backend, BackendInfo, GroupResample, GroupWeights, Init, Layout, RunSpec, ScoreOn, WeighAt};
use crate::potential::{sanitize_log_weight, PotentialState};
use crate::resample::{self, Stream};
use crate::reward::RewardOn;
use crate::rng::{Philox, Purpose};
use crate::sampler::{self, RenoiseForm};
use field::VelocityField;

/// A population on the host, structure of arrays.
#[derive(Clone, Debug)]
pub struct CpuParticles {
    pub layout: Layout,
    pub dim: usize,
    /// Positions, `x[d·total + i]`.
    pub x: Vec<f32>,
    /// Potential state carried along the ancestry (docs/steering.md).
    pub state: Vec<PotentialState>,
    /// Log-weights carried since the last resampling (f64: see `crate::potential`).
    pub log_w: Vec<f64>,
    /// The within-group index each particle descends from at t = 0.
    pub root: Vec<u32>,
    /// ESS of each group at the last weighing (adaptive resampling decides on it; 0 before).
    pub last_ess: Vec<f64>,
}

impl CpuParticles {
    pub fn total(&self) -> usize {
        self.layout.total()
    }
}

/// The CPU engine.
#[derive(Default, Clone)]
pub struct CpuBackend {
    /// A velocity field that replaces the model (tests with closed-form answers); None: the model.
    field: Option<Arc<dyn VelocityField>>,
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// A CPU backend that integrates `field` instead of `spec.model` (whose `dim` must match).
    /// For statistical tests: see [`field`].
    pub fn with_field(field: Arc<dyn VelocityField>) -> Self {
        Self { field: Some(field) }
    }

    /// `v(t, x)` for every particle (SoA).
    fn velocities(&self, spec: &RunSpec, t: f32, x: &[f32], total: usize) -> Vec<f32> {
        match &self.field {
            Some(f) => field::velocities_field(f.as_ref(), spec.model.dim, t, x, total),
            None => propagate::velocities(&spec.model, t, x, total),
        }
    }

    /// Rewards of every particle at grid index `step`: on the state itself when `on_sample`
    /// (the final reward, docs/rewards.md) or `reward_on = xt`, else on `x̂1 = x + (1−t)·v(t, x)`.
    fn rewards(&self, spec: &RunSpec, p: &CpuParticles, step: usize, on_sample: bool) -> anyhow::Result<Vec<f32>> {
        let (total, dim) = (p.total(), p.dim);
        let hat;
        let x: &[f32] = if on_sample || spec.reward_on == RewardOn::Xt {
            &p.x
        } else {
            let t = spec.sampler.time(step);
            let v = self.velocities(spec, t, &p.x, total);
            hat = p.x.iter().zip(&v).map(|(&x, &v)| sampler::predicted_data(x, v, t)).collect::<Vec<f32>>();
            &hat
        };
        // The reward's time t: that of the step (1 for the final sample, docs/rewards.md).
        let mut out = vec![0f32; total];
        spec.reward.eval_soa(x, dim, total, spec.sampler.time(step), &mut out)?;
        Ok(out)
    }
}

/// Gathers every per-particle state of `p` by global source indices `src` (`dst` particle `i`
/// takes particle `src[i]`), with `layout` the new layout (`src.len()` particles).
fn gather_all(p: &mut CpuParticles, src: &[usize], layout: Layout, reset_log_w: bool) {
    let (old_total, new_total, dim) = (p.total(), src.len(), p.dim);
    debug_assert_eq!(layout.total(), new_total);
    let mut x = vec![0f32; dim * new_total];
    for d in 0..dim {
        let (from, to) = (&p.x[d * old_total..(d + 1) * old_total], &mut x[d * new_total..(d + 1) * new_total]);
        to.par_iter_mut().zip(src.par_iter()).for_each(|(t, &s)| *t = from[s]);
    }
    p.x = x;
    p.state = src.iter().map(|&s| p.state[s]).collect();
    p.log_w = if reset_log_w { vec![0.0; new_total] } else { src.iter().map(|&s| p.log_w[s]).collect() };
    p.root = src.iter().map(|&s| p.root[s]).collect();
    if p.layout.groups != layout.groups {
        p.last_ess = vec![0.0; layout.groups];
    }
    p.layout = layout;
}

/// `log Σ exp(lw)` in f64 over a group, with its max; −inf for an all −inf group.
fn log_sum_exp(lw: &[f64]) -> (f64, f64, f64, f64) {
    let max = lw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return (f64::NEG_INFINITY, max, 0.0, 0.0);
    }
    let (mut s1, mut s2) = (0f64, 0f64);
    for &l in lw {
        let w = (l - max).exp();
        s1 += w;
        s2 += w * w;
    }
    (max + s1.ln(), max, s1, s2)
}

/// Candidate `i` of a zeroth-order search (docs/search.md) around `pivot` (D entries), global index
/// `particle`: the pivot itself for `i = 0`, else `pivot + ρ·u^(1/D)·z/|z|`, uniform in the ball,
/// with `z` the D normals at (particle, cycle, SearchPerturbation, draws 0..⌈D/4⌉) and `u` lane 0
/// of draw ⌈D/4⌉ (`crate::rng`'s counter layout).
pub fn candidate_around_pivot(rng: &Philox, pivot: &[f32], radius: f32, cycle: u32, particle: u64, i: usize, out: &mut [f32]) {
    out.copy_from_slice(pivot);
    if i == 0 || radius == 0.0 {
        return;
    }
    let dim = pivot.len();
    let mut z = vec![0f32; dim];
    rng.normal_vector(particle, cycle, Purpose::SearchPerturbation, &mut z);
    let norm = z.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm == 0.0 {
        return; // probability 2^-24 per pair of lanes; the candidate is the pivot
    }
    let u = rng.uniform(particle, cycle, Purpose::SearchPerturbation, dim.div_ceil(4) as u32);
    let r = radius * u.powf(1.0 / dim as f32);
    for d in 0..dim {
        out[d] += r * z[d] / norm;
    }
}

/// `x ← a·x + b·ξ` on `len` particles held coordinate-major (`x[d·len + i]`), the first with
/// global index `first`: `ξ` the normals at (global index, step = `round`, Renoising), so a
/// share of a population renoises as the whole does (`Backend::renoise`, `crate::distributed`).
pub fn renoise_soa(seed: u64, (a, b): (f32, f32), x: &mut [f32], dim: usize, len: usize, first: u64, round: u32) {
    let rng = Philox::new(seed);
    let noise: Vec<Vec<f32>> = (0..len)
        .into_par_iter()
        .map(|i| {
            let mut z = vec![0f32; dim];
            rng.normal_vector(first + i as u64, round, Purpose::Renoising, &mut z);
            z
        })
        .collect();
    for (i, z) in noise.iter().enumerate() {
        for (d, &zd) in z.iter().enumerate() {
            let v = &mut x[d * len + i];
            *v = a * *v + b * zd;
        }
    }
}

/// Best first: higher score first, NaN last, ties to the lower index (`Backend::select_top`).
pub fn rank_order(scores: &[f32], i: usize, j: usize) -> std::cmp::Ordering {
    score_order((scores[i], i as u64), (scores[j], j as u64))
}

/// [`rank_order`] on (score, index) pairs held apart from a score array (the candidates that
/// MPI ranks exchange, crate::distributed).
pub fn score_order((a, i): (f32, u64), (b, j): (f32, u64)) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => i.cmp(&j),
        (true, false) => Greater,
        (false, true) => Less,
        (false, false) => b.partial_cmp(&a).unwrap().then(i.cmp(&j)),
    }
}

/// A short description of this CPU, e.g. "x86_64, 2 threads, avx2+fma".
/// The starting noise of `total` particles in `dim` dimensions, coordinate-major
/// (`x[d·total + i]`, the CPU layout): particle i's normal vector at step 0, purpose
/// InitialNoise (docs/random.md), so every backend and tool starts from the same points.
pub fn initial_noise(seed: u64, dim: usize, total: usize) -> Vec<f32> {
    let rng = Philox::new(seed);
    let mut x = vec![0f32; dim * total];
    let mut z = vec![0f32; dim];
    for i in 0..total {
        rng.normal_vector(i as u64, 0, Purpose::InitialNoise, &mut z);
        for d in 0..dim {
            x[d * total + i] = z[d];
        }
    }
    x
}

pub fn cpu_description() -> String {
    let threads = rayon::current_num_threads();
    #[cfg(target_arch = "x86_64")]
    let features = {
        let mut f = Vec::new();
        if std::is_x86_feature_detected!("avx2") {
            f.push("avx2");
        }
        if std::is_x86_feature_detected!("fma") {
            f.push("fma");
        }
        if std::is_x86_feature_detected!("avx512f") {
            f.push("avx512f");
        }
        f.join("+")
    };
    #[cfg(not(target_arch = "x86_64"))]
    let features = String::from("-");
    format!("{}, {threads} threads, {features}", std::env::consts::ARCH)
}

impl Backend for CpuBackend {
    type Particles = CpuParticles;

    fn info(&self) -> BackendInfo {
        BackendInfo { backend: "cpu".into(), device: cpu_description() }
    }

    fn init(&mut self, spec: &RunSpec, layout: Layout, init: Init<'_>) -> anyhow::Result<CpuParticles> {
        let dim = spec.model.dim;
        let total = layout.total();
        ensure!(total > 0, "a population needs at least one particle (got n = {}, groups = {})", layout.n, layout.groups);
        let mut x = vec![0f32; dim * total];
        let rng = Philox::new(spec.seed);
        match init {
            Init::Noise => x = initial_noise(spec.seed, dim, total),
            Init::Given(rows) => {
                ensure!(rows.len() == total * dim, "initial points hold {} values, expected {total} × {dim}", rows.len());
                super::rows_to_soa(rows, dim, total, &mut x);
            }
            Init::AroundPivot { pivot, radius, cycle } => {
                ensure!(
                    pivot.len() == layout.groups * dim,
                    "the pivot holds {} values, expected one D = {dim} point per group ({} groups)",
                    pivot.len(),
                    layout.groups
                );
                ensure!(radius.is_finite() && radius >= 0.0, "the search radius must be a finite number ≥ 0, got {radius}");
                let mut c = vec![0f32; dim];
                for g in 0..layout.groups {
                    for i in 0..layout.n {
                        let gi = g * layout.n + i;
                        candidate_around_pivot(&rng, &pivot[g * dim..(g + 1) * dim], radius, cycle, gi as u64, i, &mut c);
                        for d in 0..dim {
                            x[d * total + gi] = c[d];
                        }
                    }
                }
            }
        }
        Ok(CpuParticles {
            layout,
            dim,
            x,
            state: vec![spec.potential.initial_state(); total],
            log_w: vec![0.0; total],
            root: (0..total).map(|i| (i % layout.n) as u32).collect(),
            last_ess: vec![0.0; layout.groups],
        })
    }

    fn propagate(&mut self, spec: &RunSpec, p: &mut CpuParticles, steps: Range<usize>) -> anyhow::Result<()> {
        ensure!(steps.end <= spec.sampler.steps, "grid steps {steps:?} run past the last step {}", spec.sampler.steps);
        let total = p.total();
        match &self.field {
            Some(f) => field::propagate_field(f.as_ref(), &spec.sampler, spec.seed, &mut p.x, total, 0, steps),
            None => propagate::propagate(&spec.model, &spec.sampler, spec.seed, &mut p.x, total, 0, steps),
        }
        Ok(())
    }

    /// docs/steering.md at grid index `at.step` (t = step/steps): the reward on the sample when final,
    /// else on x̂1 (or x_t); `(log G, state') = potential.update(state, r, is_final)`;
    /// `lw' = lw + log G`, NaN/+inf → −inf (counted); per group in f64: max, ESS = (Σw)²/Σw² with
    /// `w = exp(lw' − max)`, log Ẑ increment = logsumexp(lw') − logsumexp(lw), mean of the
    /// finite rewards. The ESS is kept for [`Backend::resample`]'s adaptive decision.
    fn weigh(&mut self, spec: &RunSpec, p: &mut CpuParticles, at: WeighAt) -> anyhow::Result<Vec<GroupWeights>> {
        ensure!(at.step <= spec.sampler.steps, "weighing at grid index {} past the last {}", at.step, spec.sampler.steps);
        let rewards = self.rewards(spec, p, at.step, at.is_final)?;
        let n = p.layout.n;
        let potential = spec.potential;
        let out: Vec<GroupWeights> = p
            .log_w
            .par_chunks_mut(n)
            .zip(p.state.par_chunks_mut(n))
            .zip(rewards.par_chunks(n))
            .map(|((lw, st), r)| {
                let (lse_before, ..) = log_sum_exp(lw);
                let mut nonfinite = 0u64;
                let (mut r_sum, mut r_count) = (0f64, 0u64);
                for i in 0..lw.len() {
                    let (log_g, next) = potential.update(st[i], r[i], at.is_final);
                    st[i] = next;
                    let (v, bad) = sanitize_log_weight(lw[i] + log_g);
                    lw[i] = v;
                    nonfinite += bad as u64;
                    if r[i].is_finite() {
                        r_sum += r[i] as f64;
                        r_count += 1;
                    }
                }
                let (lse, max, s1, s2) = log_sum_exp(lw);
                let all_neg_inf = max == f64::NEG_INFINITY;
                GroupWeights {
                    log_z_increment: if lse_before == f64::NEG_INFINITY { f64::NEG_INFINITY } else { lse - lse_before },
                    ess: if all_neg_inf { 0.0 } else { s1 * s1 / s2 },
                    max_log_weight: max,
                    nonfinite,
                    all_neg_inf,
                    mean_reward: if r_count > 0 { r_sum / r_count as f64 } else { f64::NAN },
                }
            })
            .collect();
        p.last_ess = out.iter().map(|g| g.ess).collect();
        Ok(out)
    }

    /// Per group: skipped (weights carried) when `adaptive_ess = τ` and ESS ≥ τ·n; else ancestors
    /// by `spec.resample` (`crate::resample`, uniforms at counter step = `step`), gather of
    /// position, potential state and root id, log-weights reset to 0.
    fn resample(
        &mut self,
        spec: &RunSpec,
        p: &mut CpuParticles,
        step: usize,
        keep_ancestors: bool,
    ) -> anyhow::Result<(Vec<GroupResample>, Option<Vec<u32>>)> {
        let n = p.layout.n;
        let rng = Philox::new(spec.seed);
        let threshold = spec.adaptive_ess.map(|tau| tau as f64 * n as f64);
        let mut anc = vec![0u32; p.total()];
        let reports: Vec<GroupResample> = anc
            .par_chunks_mut(n)
            .zip(p.log_w.par_chunks(n))
            .enumerate()
            .map(|(g, (a, lw))| {
                if threshold.is_some_and(|th| p.last_ess[g] >= th) {
                    for (i, ai) in a.iter_mut().enumerate() {
                        *ai = i as u32;
                    }
                    return GroupResample { resampled: false, distinct_parents: n as u64 };
                }
                let s = Stream { rng: &rng, step: step as u32, group: g as u64, n: n as u64 };
                resample::ancestors(spec.resample, lw, s, a);
                GroupResample { resampled: true, distinct_parents: resample::distinct_parents(a, n) }
            })
            .collect();
        let src: Vec<usize> = anc.iter().enumerate().map(|(i, &a)| (i / n) * n + a as usize).collect();
        let old_log_w = std::mem::take(&mut p.log_w);
        gather_all(p, &src, p.layout, true);
        // Groups that skipped keep their (identity-gathered) carried weights.
        for (g, r) in reports.iter().enumerate() {
            if !r.resampled {
                p.log_w[g * n..(g + 1) * n].copy_from_slice(&old_log_w[g * n..(g + 1) * n]);
            }
        }
        Ok((reports, keep_ancestors.then_some(anc)))
    }

    fn read_positions(&mut self, p: &CpuParticles) -> anyhow::Result<Vec<f32>> {
        Ok(super::soa_to_rows(&p.x, p.dim, p.total(), p.total()))
    }

    fn read_log_weights(&mut self, p: &CpuParticles) -> anyhow::Result<Vec<f64>> {
        Ok(p.log_w.clone())
    }

    fn read_root_ids(&mut self, p: &CpuParticles) -> anyhow::Result<Vec<u32>> {
        Ok(p.root.clone())
    }

    /// The reward of every particle: on the state (`Sample`), or at grid index `step` on x̂1 or
    /// x_t as `spec.reward_on` says. NaN stays NaN.
    fn score(&mut self, spec: &RunSpec, p: &mut CpuParticles, on: ScoreOn) -> anyhow::Result<Vec<f32>> {
        Ok(match on {
            ScoreOn::Sample => self.rewards(spec, p, spec.sampler.steps, true)?,
            ScoreOn::Intermediate { step } => {
                ensure!(step <= spec.sampler.steps, "scoring at grid index {step} past the last {}", spec.sampler.steps);
                self.rewards(spec, p, step, false)?
            }
        })
    }

    /// Per group, the `keep` best by [`rank_order`], best first; every per-particle state
    /// (position, potential state, log-weight, root id) follows.
    fn select_top(&mut self, spec: &RunSpec, p: &mut CpuParticles, on: ScoreOn, keep: usize) -> anyhow::Result<(Vec<f32>, Vec<u32>)> {
        let n = p.layout.n;
        ensure!(keep >= 1 && keep <= n, "cannot keep {keep} of {n} particles per group; keep between 1 and {n}");
        let scores = self.score(spec, p, on)?;
        let order: Vec<Vec<u32>> = scores
            .par_chunks(n)
            .map(|s| {
                let mut idx: Vec<usize> = (0..n).collect();
                let cmp = |a: &usize, b: &usize| rank_order(s, *a, *b);
                if keep < n {
                    idx.select_nth_unstable_by(keep - 1, cmp);
                    idx.truncate(keep);
                }
                idx.sort_unstable_by(cmp);
                idx.into_iter().map(|i| i as u32).collect()
            })
            .collect();
        let former: Vec<u32> = order.concat();
        let src: Vec<usize> = former.iter().enumerate().map(|(k, &i)| (k / keep) * n + i as usize).collect();
        let kept_scores = src.iter().map(|&s| scores[s]).collect();
        gather_all(p, &src, Layout { n: keep, groups: p.layout.groups }, false);
        Ok((kept_scores, former))
    }

    fn replicate(&mut self, p: &mut CpuParticles, copies: usize) -> anyhow::Result<()> {
        ensure!(copies >= 1, "cannot make 0 copies of each particle");
        let src: Vec<usize> = (0..p.total() * copies).map(|k| k / copies).collect();
        gather_all(p, &src, Layout { n: p.layout.n * copies, groups: p.layout.groups }, false);
        Ok(())
    }

    /// `x ← a·x + b·ξ` with `(a, b) = renoise_coefficients(form, t_from, t_to)` (docs/samplers.md),
    /// `ξ` the normals at (global index, step = `round`, Renoising).
    fn renoise(&mut self, spec: &RunSpec, p: &mut CpuParticles, from: usize, to: usize, form: RenoiseForm, round: u32) -> anyhow::Result<()> {
        ensure!(to < from && from <= spec.sampler.steps, "renoising must go back in time: from grid index {from} to {to}");
        let (t, s) = (spec.sampler.time(from), spec.sampler.time(to));
        let (total, dim) = (p.total(), p.dim);
        renoise_soa(spec.seed, sampler::renoise_coefficients(form, t, s), &mut p.x, dim, total, 0, round);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, Mlp};
    use crate::potential::{Potential, PotentialKind};
    use crate::resample::ResampleScheme;
    use crate::reward::{Reward, Term};
    use crate::sampler::Sampler;

    /// A zero model (v = 0, so x̂1 = x and nothing moves), reward gaussian([0,0], 1) = −|x|²/2.
    fn spec(kind: PotentialKind, adaptive: Option<f32>) -> RunSpec {
        RunSpec {
            model: Mlp::zeros(2, 4, 1, Activation::Relu),
            sampler: Sampler { steps: 4, ..Sampler::default() },
            reward: Reward { terms: vec![(1.0, Term::Gaussian { c: vec![0.0, 0.0], sigma: 1.0 })], eps: 1e-3 },
            reward_on: RewardOn::X1Hat,
            potential: Potential { kind, lambda: 2.0, r_min: 0.0, clamp_weights: None },
            resample: ResampleScheme::Multinomial,
            adaptive_ess: adaptive,
            seed: 1,
        }
    }

    const AT_2: WeighAt = WeighAt { step: 2, index: 0, is_final: false };
    const AT_4: WeighAt = WeighAt { step: 4, index: 1, is_final: true };

    /// Two particles at (0,0) and (1,0): rewards 0 and −½, λ = 2, potential rt.
    /// Step 1: log G = [0, −1], ESS = (1 + e⁻¹)²/(1 + e⁻²), log Ẑ += log((1 + e⁻¹)/2).
    /// Final: log G = λ·r − Σ log G along the ancestry = [0, 0], so the carried [0, −1] stays and
    /// log Ẑ += 0: in total log Ẑ = log E[exp(λ r)] over the two starting points, exactly.
    #[test]
    fn carried_weights_and_terminal_correction_by_hand() {
        let e = std::f64::consts::E;
        let want_z1 = ((1.0 + 1.0 / e) / 2.0).ln();
        for adaptive in [Some(0.1f32), None] {
            let sp = spec(PotentialKind::Rt, adaptive);
            let mut b = CpuBackend::new();
            let mut p = b.init(&sp, Layout { n: 2, groups: 1 }, Init::Given(&[0.0, 0.0, 1.0, 0.0])).unwrap();
            b.propagate(&sp, &mut p, 0..2).unwrap();
            let w = b.weigh(&sp, &mut p, AT_2).unwrap()[0];
            assert!((w.log_z_increment - want_z1).abs() < 1e-6, "{w:?}");
            assert!((w.ess - (1.0 + 1.0 / e).powi(2) / (1.0 + 1.0 / (e * e))).abs() < 1e-6);
            assert_eq!(p.log_w, vec![0.0, -2.0 * 0.5]);
            let (r, _) = b.resample(&sp, &mut p, 2, false).unwrap();
            // ESS ≈ 1.65 ≥ 0.1·2: the adaptive run carries; the other resamples and resets.
            assert_eq!(r[0].resampled, adaptive.is_none());
            b.propagate(&sp, &mut p, 2..4).unwrap();
            let f = b.weigh(&sp, &mut p, AT_4).unwrap()[0];
            assert!(f.log_z_increment.abs() < 1e-6, "{f:?}");
            if adaptive.is_some() {
                assert_eq!(p.log_w, vec![0.0, -1.0]);
            } else {
                assert_eq!(p.log_w, vec![0.0, 0.0]);
            }
        }
    }

    /// max with r_min = 0: m = max(0, r) = [0, 0], so log G = [0, 0] at step 1; final
    /// λ·r − 0 = [0, −1]: the weights are exactly exp(λ r_K).
    #[test]
    fn max_potential_final_weight_is_the_final_reward() {
        let sp = spec(PotentialKind::Max, None);
        let mut b = CpuBackend::new();
        let mut p = b.init(&sp, Layout { n: 2, groups: 1 }, Init::Given(&[0.0, 0.0, 1.0, 0.0])).unwrap();
        b.weigh(&sp, &mut p, AT_2).unwrap();
        assert_eq!(p.log_w, vec![0.0, 0.0]);
        b.resample(&sp, &mut p, 2, false).unwrap();
        b.weigh(&sp, &mut p, AT_4).unwrap();
        assert_eq!(p.log_w, vec![0.0, -1.0]);
    }

    #[test]
    fn nan_rewards_are_dropped_and_counted_and_all_minus_inf_is_reported() {
        let mut sp = spec(PotentialKind::Rt, None);
        sp.reward = Reward { terms: vec![(1.0, Term::Point { c: vec![0.0, 0.0] })], eps: 0.0 };
        let mut b = CpuBackend::new();
        // Particle 0 sits on the point: 1/0 = +inf reward → −inf weight, counted.
        let mut p = b.init(&sp, Layout { n: 2, groups: 1 }, Init::Given(&[0.0, 0.0, 1.0, 0.0])).unwrap();
        let w = b.weigh(&sp, &mut p, AT_2).unwrap()[0];
        assert_eq!((w.nonfinite, w.all_neg_inf), (1, false));
        assert_eq!(p.log_w[0], f64::NEG_INFINITY);
        let mut p = b.init(&sp, Layout { n: 2, groups: 1 }, Init::Given(&[0.0, 0.0, 0.0, 0.0])).unwrap();
        let w = b.weigh(&sp, &mut p, AT_2).unwrap()[0];
        assert_eq!((w.nonfinite, w.all_neg_inf, w.ess), (2, true, 0.0));
        let (r, a) = b.resample(&sp, &mut p, 2, true).unwrap();
        assert!(r[0].resampled && a.unwrap().len() == 2);
        assert_eq!(p.log_w, vec![0.0, 0.0]);
    }

    #[test]
    fn groups_are_independent_and_resampling_gathers_every_state() {
        let sp = spec(PotentialKind::Rt, None);
        let mut b = CpuBackend::new();
        // Group 0: one particle far away (weight ≈ 0); group 1: equal rewards.
        let init = [0.0, 0.0, 0.0, 0.1, 9.0, 9.0, 1.0, 0.0, -1.0, 0.0, 0.0, 1.0];
        let mut p = b.init(&sp, Layout { n: 3, groups: 2 }, Init::Given(&init)).unwrap();
        let w = b.weigh(&sp, &mut p, AT_2).unwrap();
        assert!(w[0].ess < 2.01 && w[1].ess > 2.999);
        let (_, anc) = b.resample(&sp, &mut p, 2, true).unwrap();
        let anc = anc.unwrap();
        assert!(anc[..3].iter().all(|&a| a < 2), "{anc:?}");
        assert_eq!(p.root, anc, "root ids follow the ancestors");
        let pos = b.read_positions(&p).unwrap();
        for (i, &a) in anc.iter().enumerate() {
            let src = (i / 3) * 3 + a as usize;
            assert_eq!(&pos[2 * i..2 * i + 2], &init[2 * src..2 * src + 2]);
        }
    }

    #[test]
    fn select_top_replicate_and_renoise() {
        let sp = spec(PotentialKind::Bon, None);
        let mut b = CpuBackend::new();
        // Rewards −|x|²/2: particle 2 best, then 0 and 3 tie (lower index first), then 1.
        let init = [1.0, 0.0, 3.0, 0.0, 0.0, 0.5, 0.0, -1.0];
        let mut p = b.init(&sp, Layout { n: 4, groups: 1 }, Init::Given(&init)).unwrap();
        let (scores, former) = b.select_top(&sp, &mut p, ScoreOn::Sample, 3).unwrap();
        assert_eq!(former, vec![2, 0, 3]);
        assert_eq!(scores, vec![-0.125, -0.5, -0.5]);
        assert_eq!(p.layout, Layout { n: 3, groups: 1 });
        b.replicate(&mut p, 2).unwrap();
        assert_eq!(b.read_root_ids(&p).unwrap(), vec![2, 2, 0, 0, 3, 3]);
        // Exact renoising from t = 1 to t = 1/2: x ← x/2 + ½·ξ.
        let before = b.read_positions(&p).unwrap();
        b.renoise(&sp, &mut p, 4, 2, RenoiseForm::Exact, 7).unwrap();
        let after = b.read_positions(&p).unwrap();
        let rng = Philox::new(sp.seed);
        for i in 0..6 {
            let mut z = [0f32; 2];
            rng.normal_vector(i as u64, 7, Purpose::Renoising, &mut z);
            for d in 0..2 {
                assert!((after[2 * i + d] - (0.5 * before[2 * i + d] + 0.5 * z[d])).abs() < 1e-6);
            }
        }
        assert!(b.select_top(&sp, &mut p, ScoreOn::Sample, 7).is_err());
    }

    /// Candidates lie in the ball; candidate 0 is the pivot; the radius law is uniform in the
    /// disc, so P(|u| ≤ ρ/√2) = ½: over 4,000 candidates the count has sd √(4000/4) ≈ 32, and
    /// the bound is 5 sd.
    #[test]
    fn candidates_fill_the_ball_around_the_pivot() {
        let sp = spec(PotentialKind::Bon, None);
        let mut b = CpuBackend::new();
        let pivot = [1.0f32, -2.0, 0.0, 0.0];
        let p = b.init(&sp, Layout { n: 2000, groups: 2 }, Init::AroundPivot { pivot: &pivot, radius: 0.5, cycle: 3 }).unwrap();
        let pos = b.read_positions(&p).unwrap();
        assert_eq!(&pos[..2], &pivot[..2]);
        assert_eq!(&pos[4000..4002], &pivot[2..]);
        let mut inner = 0;
        for i in 0..4000 {
            let g = i / 2000;
            let r = ((pos[2 * i] - pivot[2 * g]).powi(2) + (pos[2 * i + 1] - pivot[2 * g + 1]).powi(2)).sqrt();
            assert!(r <= 0.5 + 1e-6);
            inner += (r <= 0.5 / 2f32.sqrt()) as i32;
        }
        assert!((inner - 2000).abs() < 160, "{inner}");
        assert!(b.init(&sp, Layout { n: 2, groups: 1 }, Init::AroundPivot { pivot: &pivot, radius: 0.5, cycle: 0 }).is_err());
    }
}
