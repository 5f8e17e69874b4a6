//! λ per resampling point (docs/steering.md, "Tempering"): `--lambda-schedule constant | linear |
//! geometric | adaptive`.
//!
//! With K resampling points (the last at t = 1), the potential at intermediate point k uses
//! λ_k instead of one λ; the final point always uses the final λ. Why the target does not move:
//! the terminal correction of `max`, `add` and `rt` is `λ·r_K − Σ_{j<K} log G_j`, the sum taken
//! along the particle's ancestry of the log-potentials it actually received. Whatever λ_j
//! produced them, the product of all weights along an ancestry is
//! `Π_{j<K} G_j · exp(λ·r_K) / Π_{j<K} G_j = exp(λ·r_K)`, so the target stays
//! `p(x1)·exp(λ·r(x1))/Z` for every schedule. The schedule only decides how hard the
//! intermediate points select (how many ancestors survive). `diff` telescopes only for a constant
//! λ (`Σ_k λ_k·(r_k − r_{k−1})` is not `λ·r_K − λ·r_0` otherwise), so it takes only `constant`.
//!
//! Schedules (k = 0..K−2 the intermediate points):
//! - `constant`: λ_k = λ (what flowsteer always did).
//! - `linear`: λ_k = λ·(k+1)/K.
//! - `geometric`: λ_k = λ·2^{−(K−1−k)}: doubling towards λ.
//! - `adaptive` (potential `rt`): with `rt` every resampled point multiplies the population by
//!   `exp(λ_k·r_k)`, so the tilt a particle has been selected for is the running level
//!   `Λ_k = Σ_{j≤k} λ_j` (for a reward that changes little along the path). The adaptive schedule
//!   chooses the increment λ_k as the largest value in `[0, λ − Λ_{k−1}]` at which the ESS of
//!   the weights after the update, `exp(lw_i + λ_k·r_i)`, is at least `target·N` in every group;
//!   by bisection on the rewards of the point, since that ESS falls as λ_k grows (for equal
//!   carried weights it is `N·(E e^{λr})²/E e^{2λr}`, whose logarithm has derivative
//!   `−2·(E_{2λ}[r] − E_λ[r]) ≤ 0`, the tilted mean of r rising with the tilt). Once Λ reaches
//!   λ the remaining intermediate points select nothing (λ_k = 0), and the final point
//!   weighs `λ·r_K − Σ_j λ_j·r_j`, small when the level has reached λ: the population arrives at
//!   the target already selected, instead of being corrected by a few heavy weights at the end.
//!   The trace reports each λ_k (the increment used by the potential at that point).

use crate::potential::PotentialKind;

/// How λ changes over the resampling points (`--lambda-schedule`).
#[derive(Clone, Copy, Debug, PartialEq, Default, serde::Serialize)]
#[serde(tag = "schedule", rename_all = "lowercase")]
pub enum Tempering {
    #[default]
    Constant,
    Linear,
    Geometric,
    /// ESS target as a fraction of N (`--target-ess`, in (0, 1)).
    Adaptive { target_ess: f32 },
}

/// The names `--lambda-schedule` accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LambdaSchedule {
    #[default]
    Constant,
    Linear,
    Geometric,
    Adaptive,
}

impl Tempering {
    pub fn new(schedule: LambdaSchedule, target_ess: f32) -> Result<Self, String> {
        Ok(match schedule {
            LambdaSchedule::Constant => Tempering::Constant,
            LambdaSchedule::Linear => Tempering::Linear,
            LambdaSchedule::Geometric => Tempering::Geometric,
            LambdaSchedule::Adaptive => {
                if !(target_ess > 0.0 && target_ess < 1.0) {
                    return Err(format!("--target-ess must be a fraction of N in (0, 1), e.g. 0.5; got {target_ess}"));
                }
                Tempering::Adaptive { target_ess }
            }
        })
    }

    /// Whether `kind` keeps its target under this schedule (see the module comment).
    pub fn check(&self, kind: PotentialKind) -> Result<(), String> {
        match (self, kind) {
            (Tempering::Constant, _) | (_, PotentialKind::Is | PotentialKind::Bon) => Ok(()),
            (_, PotentialKind::Diff) => Err("--potential diff telescopes only with a constant λ; use --lambda-schedule constant, or --potential rt/max/add with a λ schedule".into()),
            (Tempering::Adaptive { .. }, PotentialKind::Max | PotentialKind::Add) => Err(format!(
                "--lambda-schedule adaptive needs --potential rt (its weight exp(λ·r) is what the bisection controls); with --potential {kind} use linear or geometric"
            )),
            _ => Ok(()),
        }
    }

    /// λ of a fixed schedule at intermediate point `k` of `points` (the last is the final one).
    pub fn fixed(&self, lambda: f32, k: usize, points: usize) -> f32 {
        match self {
            Tempering::Linear => lambda * (k + 1) as f32 / points as f32,
            Tempering::Geometric => lambda * 0.5f32.powi((points - 1 - k) as i32),
            Tempering::Constant | Tempering::Adaptive { .. } => lambda,
        }
    }
}

/// ESS `(Σw)²/Σw²` of `w_i = exp(lw_i + λ·r_i)` (f64; NaN and +inf rewards count as weight 0,
/// as the NaN rule does), 0 when every weight is 0.
pub fn ess_at(lw: &[f64], r: &[f32], lambda: f64) -> f64 {
    let v: Vec<f64> = lw
        .iter()
        .zip(r)
        .map(|(&l, &r)| if r.is_nan() || r == f32::INFINITY { f64::NEG_INFINITY } else { l + lambda * r as f64 })
        .collect();
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY || max.is_nan() {
        return 0.0;
    }
    let (mut s1, mut s2) = (0f64, 0f64);
    for x in v {
        let w = (x - max).exp();
        s1 += w;
        s2 += w * w;
    }
    s1 * s1 / s2
}

/// The adaptive λ_k (see the module comment): the largest λ in `[lo, hi]` with the ESS of every
/// group (`n` particles each) at least `target·n`, by 50 bisections (λ to 2^-50 of the range).
pub fn adaptive_lambda(lw: &[f64], r: &[f32], n: usize, lo: f32, hi: f32, target: f32) -> f32 {
    let ok = |lambda: f64| lw.chunks(n).zip(r.chunks(n)).all(|(l, r)| ess_at(l, r, lambda) >= target as f64 * n as f64);
    if ok(hi as f64) {
        return hi;
    }
    if !ok(lo as f64) {
        return lo;
    }
    let (mut a, mut b) = (lo as f64, hi as f64);
    for _ in 0..50 {
        let m = 0.5 * (a + b);
        if ok(m) {
            a = m;
        } else {
            b = m;
        }
    }
    a as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_schedules_end_at_lambda() {
        let (l, k) = (8.0, 4);
        assert_eq!((0..k).map(|i| Tempering::Linear.fixed(l, i, k)).collect::<Vec<_>>(), vec![2.0, 4.0, 6.0, 8.0]);
        assert_eq!((0..k).map(|i| Tempering::Geometric.fixed(l, i, k)).collect::<Vec<_>>(), vec![1.0, 2.0, 4.0, 8.0]);
        assert_eq!(Tempering::Constant.fixed(l, 0, k), 8.0);
        assert!(Tempering::new(LambdaSchedule::Adaptive, 1.0).is_err());
        assert!(Tempering::Linear.check(PotentialKind::Diff).is_err());
        assert!(Tempering::Adaptive { target_ess: 0.5 }.check(PotentialKind::Max).is_err());
        assert!(Tempering::Adaptive { target_ess: 0.5 }.check(PotentialKind::Rt).is_ok());
    }

    /// Rewards spread evenly over [−2, 2]: the bisection lands on ESS = N/2 (checked by
    /// recomputing the ESS), respects both ends of the bracket, and lets the harder group decide.
    #[test]
    fn bisection_hits_the_target_ess() {
        let n = 1000;
        let r: Vec<f32> = (0..n).map(|i| i as f32 / n as f32 * 4.0 - 2.0).collect();
        let lw = vec![0f64; n];
        let l = adaptive_lambda(&lw, &r, n, 0.0, 100.0, 0.5);
        assert!(l > 0.0 && l < 100.0);
        assert!((ess_at(&lw, &r, l as f64) / n as f64 - 0.5).abs() < 1e-4, "{l}");
        // Already fine at the top: the top; already too low at the bottom: the bottom.
        assert_eq!(adaptive_lambda(&lw, &r, n, 0.0, 1e-3, 0.5), 1e-3);
        assert_eq!(adaptive_lambda(&lw, &r, n, 50.0, 100.0, 0.5), 50.0);
        // Two groups: the harder one decides.
        let r2: Vec<f32> = r.iter().chain(r.iter().map(|v| v * 0.1).collect::<Vec<_>>().iter()).copied().collect();
        let lw2 = vec![0f64; 2 * n];
        assert_eq!(adaptive_lambda(&lw2, &r2, n, 0.0, 100.0, 0.5), l);
    }
}
