//! Feynman–Kac potentials (docs/steering.md): the per-particle update at a resampling step.
//!
//! One function, [`Potential::update`], holds the arithmetic of docs/steering.md's table and of the
//! terminal correction; the CPU backend calls it and `kernels/potential.cu` mirrors it.
//!
//! The reward is f32, but everything the potential carries (running max, sum or previous reward,
//! `Σ log G`) and every log-weight is f64: rewards of −5·10^11 (inside an obstacle) cancel in
//! `λ·r_K − Σ log G` and would leave errors of ~10^5 in f32 (docs/steering.md).

use std::fmt;

/// Which potential weights the particles (docs/steering.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PotentialKind {
    #[default]
    Max,
    Add,
    Diff,
    Rt,
    /// Importance sampling: one weighting, at the final step.
    Is,
    /// Best-of-N: no weighting; final particles sorted by reward.
    Bon,
}

impl PotentialKind {
    pub fn name(self) -> &'static str {
        match self {
            PotentialKind::Max => "max",
            PotentialKind::Add => "add",
            PotentialKind::Diff => "diff",
            PotentialKind::Rt => "rt",
            PotentialKind::Is => "is",
            PotentialKind::Bon => "bon",
        }
    }

    /// Whether particles are weighted (and resampled) at intermediate steps.
    pub fn resamples_intermediate(self) -> bool {
        matches!(self, PotentialKind::Max | PotentialKind::Add | PotentialKind::Diff | PotentialKind::Rt)
    }

    /// Whether the final weight divides out the potentials accumulated along the ancestry.
    pub fn has_terminal_correction(self) -> bool {
        matches!(self, PotentialKind::Max | PotentialKind::Add | PotentialKind::Rt)
    }
}

impl fmt::Display for PotentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A potential with its temperature `λ > 0` and the running-max/previous-reward start `r_min`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Potential {
    pub kind: PotentialKind,
    pub lambda: f32,
    pub r_min: f32,
    /// `--clamp-weights C`: every incremental weight `exp(log G_k)` is clamped to `[0, C]` before
    /// it is normalised, as a 2025 tutorial's FK code does (`clamp(w, 0, 1e10)`). Biased: only to
    /// reproduce its figures (docs/steering.md "Clamped weights"). None: no clamp.
    pub clamp_weights: Option<f32>,
}

impl Default for Potential {
    fn default() -> Self {
        Self { kind: PotentialKind::Max, lambda: 10.0, r_min: 0.0, clamp_weights: None }
    }
}

/// The per-particle state a potential carries along the ancestry (gathered on resampling).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct PotentialState {
    /// Running max `m`, running sum `s` or previous reward `r_{k−1}`, by kind.
    pub carried: f64,
    /// `Σ_{j<k} log G_j` along the ancestry, divided out at the end (terminal correction).
    pub accumulated_log_g: f64,
}

/// `--lambda` as typed. λ is an f32 (as the kernels take it), so a λ beyond f32's range would be stored
/// as inf (and `1e300` reported as "inf"); such values are refused as given, as are those that
/// would round to 0. Sign and finiteness are [`Potential::validate`]'s.
pub fn parse_lambda(s: &str) -> Result<f32, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number"))?;
    let as_f32 = v as f32;
    if v.is_finite() && as_f32.is_infinite() {
        return Err(format!(
            "{s} is beyond the largest f32 ({}), the precision λ is held in; a λ far above \
             1 / (the spread of the rewards) already keeps only the best particle, as `flowsteer search bon` does",
            crate::format::number(f32::MAX as f64)
        ));
    }
    if v != 0.0 && as_f32 == 0.0 {
        return Err(format!("{s} is below the smallest f32 ({}): every weight would be equal", crate::format::number(f32::MIN_POSITIVE as f64)));
    }
    Ok(as_f32)
}

impl Potential {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.lambda.is_finite() && self.lambda > 0.0) {
            return Err(format!("--lambda must be a finite number > 0, got {}", self.lambda));
        }
        if !self.r_min.is_finite() {
            return Err(format!("--r-min must be finite, got {}", self.r_min));
        }
        if let Some(c) = self.clamp_weights {
            if !(c.is_finite() && c > 0.0) {
                return Err(format!("--clamp-weights must be a finite number > 0 (the tutorial's is 1e10), got {c}"));
            }
        }
        Ok(())
    }

    /// `log G` under `--clamp-weights C`: `min(log G, ln C)`, so `exp(log G) ≤ C`. NaN stays NaN
    /// (the NaN rule drops it); +∞ becomes ln C, as `clamp(inf, 0, C)` does in the tutorial.
    #[inline(always)]
    pub fn clamp_log_g(&self, log_g: f64) -> f64 {
        match self.clamp_weights {
            Some(c) if log_g > (c as f64).ln() => (c as f64).ln(),
            _ => log_g,
        }
    }

    /// The state every particle starts with: `m_0 = r_min`, `s_0 = 0`, `r_0 = r_min`.
    pub fn initial_state(&self) -> PotentialState {
        let carried = match self.kind {
            PotentialKind::Add => 0.0,
            _ => self.r_min as f64,
        };
        PotentialState { carried, accumulated_log_g: 0.0 }
    }

    /// The log-potential `log G_k` of a particle with reward `r` at a resampling step, and its new
    /// state. At the final step (`is_final`) this is the final log-weight, with the terminal
    /// correction `λ·r_K − Σ_{j<K} log G_j` for `max`, `add` and `rt` (docs/steering.md).
    ///
    /// A non-finite reward or result is returned as is; the caller maps NaN and +inf to −inf
    /// log-weight and counts them (docs/steering.md). In f64: `λ·r` of two f32 is exact.
    #[inline(always)]
    pub fn update(&self, state: PotentialState, r: f32, is_final: bool) -> (f64, PotentialState) {
        let (lambda, r) = (self.lambda as f64, r as f64);
        let mut next = state;
        let log_g = match self.kind {
            PotentialKind::Max | PotentialKind::Add | PotentialKind::Rt if is_final => lambda * r - state.accumulated_log_g,
            PotentialKind::Max => {
                next.carried = state.carried.max(r);
                lambda * next.carried
            }
            PotentialKind::Add => {
                next.carried = state.carried + r;
                lambda * next.carried
            }
            PotentialKind::Rt => lambda * r,
            PotentialKind::Diff => {
                next.carried = r;
                lambda * (r - state.carried)
            }
            PotentialKind::Is => {
                if is_final {
                    lambda * r
                } else {
                    0.0
                }
            }
            PotentialKind::Bon => 0.0,
        };
        // The clamp acts on what resampling uses, so the terminal correction divides out the
        // clamped values (docs/steering.md "Clamped weights").
        let log_g = self.clamp_log_g(log_g);
        if !is_final {
            next.accumulated_log_g = state.accumulated_log_g + log_g;
        }
        (log_g, next)
    }
}

/// docs/steering.md's rule for bad weights: NaN and +inf become −inf (the particle is dropped).
#[inline(always)]
pub fn sanitize_log_weight(lw: f64) -> (f64, bool) {
    if lw.is_nan() || lw == f64::INFINITY {
        (f64::NEG_INFINITY, true)
    } else {
        (lw, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_beyond_f32_is_refused_as_typed() {
        let e = parse_lambda("1e300").unwrap_err();
        assert!(e.contains("1e300 is beyond the largest f32 (3.403e38)") && !e.contains("inf"), "{e}");
        assert!(parse_lambda("1e-300").unwrap_err().contains("1e-300 is below"));
        assert_eq!(parse_lambda("2.5"), Ok(2.5));
        assert_eq!(parse_lambda("3e38"), Ok(3e38));
        assert!(parse_lambda("ten").unwrap_err().contains("`ten` is not a number"));
    }

    fn run(kind: PotentialKind, rewards: &[f32]) -> Vec<f64> {
        let p = Potential { kind, lambda: 2.0, r_min: 0.0, clamp_weights: None };
        let mut s = p.initial_state();
        rewards
            .iter()
            .enumerate()
            .map(|(k, &r)| {
                let (g, n) = p.update(s, r, k + 1 == rewards.len());
                s = n;
                g
            })
            .collect()
    }

    /// Worked by hand: rewards 1, 3, 2 (final), λ = 2.
    #[test]
    fn hand_worked_potentials() {
        // max: m = 1, 3 -> log G = 2, 6; final 2·2 − (2 + 6) = −4.
        assert_eq!(run(PotentialKind::Max, &[1.0, 3.0, 2.0]), vec![2.0, 6.0, -4.0]);
        // add: s = 1, 4 -> 2, 8; final 4 − 10 = −6.
        assert_eq!(run(PotentialKind::Add, &[1.0, 3.0, 2.0]), vec![2.0, 8.0, -6.0]);
        // rt: 2, 6; final 4 − 8 = −4.
        assert_eq!(run(PotentialKind::Rt, &[1.0, 3.0, 2.0]), vec![2.0, 6.0, -4.0]);
        // diff: 2(1−0), 2(3−1), 2(2−3).
        assert_eq!(run(PotentialKind::Diff, &[1.0, 3.0, 2.0]), vec![2.0, 4.0, -2.0]);
        // is: nothing until the final λ·r.
        assert_eq!(run(PotentialKind::Is, &[1.0, 3.0, 2.0]), vec![0.0, 0.0, 4.0]);
    }

    /// The product of all weights telescopes to exp(λ·r_K) for every corrected potential.
    #[test]
    fn weights_telescope_to_the_final_reward() {
        let rewards = [0.3f32, -1.2, 2.5, 0.7];
        for kind in [PotentialKind::Max, PotentialKind::Add, PotentialKind::Rt, PotentialKind::Diff, PotentialKind::Is] {
            let total: f64 = run(kind, &rewards).iter().sum();
            let want = 2.0 * rewards[3] as f64; // diff telescopes to λ·(r_K − r_0), r_0 = r_min = 0
            assert!((total - want).abs() < 1e-12, "{kind}: {total} vs {want}");
        }
    }

    /// `--clamp-weights e^3`: rewards 1, 3, 2 (final), λ = 2, potential max. Unclamped log G would
    /// be 2, 6, then 4 − 8; clamped, 2, 3 (= ln C), then the final 4 − (2 + 3) = −1: the
    /// correction divides out the clamped values actually used. A final above ln C is clamped too.
    #[test]
    fn clamped_weights_cap_each_increment_at_ln_c() {
        let c = 3f32.exp();
        let p = Potential { kind: PotentialKind::Max, lambda: 2.0, r_min: 0.0, clamp_weights: Some(c) };
        let mut s = p.initial_state();
        let mut got = Vec::new();
        for (k, r) in [1.0f32, 3.0, 2.0].into_iter().enumerate() {
            let (g, n) = p.update(s, r, k == 2);
            got.push(g);
            s = n;
        }
        let ln_c = (c as f64).ln();
        let near = |a: f64, b: f64| (a - b).abs() < 1e-5;
        assert!(near(got[0], 2.0) && near(got[1], ln_c) && near(got[2], 4.0 - 2.0 - ln_c), "{got:?}");
        assert!(near(p.update(p.initial_state(), 10.0, true).0, ln_c), "the final weight is clamped too");
        assert!(p.clamp_log_g(f64::NAN).is_nan(), "NaN is left to the NaN rule");
        assert_eq!(p.clamp_log_g(f64::INFINITY), ln_c);
        assert_eq!(Potential { clamp_weights: None, ..p }.clamp_log_g(1e6), 1e6);
        assert!(Potential { clamp_weights: Some(0.0), ..p }.validate().unwrap_err().contains("--clamp-weights"));
    }

    #[test]
    fn nan_and_plus_inf_become_minus_inf() {
        assert_eq!(sanitize_log_weight(f64::NAN), (f64::NEG_INFINITY, true));
        assert_eq!(sanitize_log_weight(f64::INFINITY), (f64::NEG_INFINITY, true));
        assert_eq!(sanitize_log_weight(f64::NEG_INFINITY), (f64::NEG_INFINITY, false));
        assert_eq!(sanitize_log_weight(1.5), (1.5, false));
    }
}
