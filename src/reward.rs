//! Rewards `r : R^D → R` (SPEC §4): built-in terms and their weighted sums.
//!
//! [`Reward::eval`] is the CPU definition; the CUDA backend generates device code from the same
//! terms (`backend::cuda::reward_codegen`). Parsing the command-line form lives in
//! `reward_parse.rs`.

/// Where intermediate rewards are evaluated (SPEC §4); the final reward is always on the sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RewardOn {
    /// The predicted data `x̂1 = x + (1−t)·v`.
    #[default]
    #[value(name = "x1hat")]
    #[serde(rename = "x1hat")]
    X1Hat,
    /// The noisy state `x_t` itself.
    Xt,
}

/// One built-in reward term (SPEC §4).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Term {
    /// `1 / (|x − c|² + eps)`
    Point { c: Vec<f32> },
    /// `1 / (|x_axis − c| + eps)`
    Line { axis: usize, c: f32 },
    /// `−|x − c|² / (2σ²)`
    Gaussian { c: Vec<f32>, sigma: f32 },
    /// `d = max(|x − c| − ρ, 1e-6)`; `−½·η·(1/d − 1/Q*)²` if `d ≤ Q*`, else 0.
    Obstacle { c: Vec<f32>, rho: f32, q_star: f32, eta: f32 },
}

/// A weighted sum of terms.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Reward {
    pub terms: Vec<(f32, Term)>,
    /// The `eps` of `point` and `line` (default 1e-3).
    pub eps: f32,
}

/// The distance floor of `obstacle` (SPEC §4).
pub const OBSTACLE_MIN_DISTANCE: f32 = 1e-6;
/// The default `eps` of `point` and `line`.
pub const DEFAULT_EPS: f32 = 1e-3;

impl Term {
    /// The term at `x`, in f32 (every backend's arithmetic).
    #[inline]
    pub fn eval(&self, x: &[f32], eps: f32) -> f32 {
        match self {
            Term::Point { c } => 1.0 / (sq_dist(x, c) + eps),
            Term::Line { axis, c } => 1.0 / ((x[*axis] - c).abs() + eps),
            Term::Gaussian { c, sigma } => -sq_dist(x, c) / (2.0 * sigma * sigma),
            Term::Obstacle { c, rho, q_star, eta } => {
                let d = (sq_dist(x, c).sqrt() - rho).max(OBSTACLE_MIN_DISTANCE);
                if d <= *q_star {
                    let g = 1.0 / d - 1.0 / q_star;
                    -0.5 * eta * g * g
                } else {
                    0.0
                }
            }
        }
    }

    /// The point the term pulls towards or pushes away from, for summaries and plots.
    pub fn centre(&self) -> Option<&[f32]> {
        match self {
            Term::Point { c } | Term::Gaussian { c, .. } | Term::Obstacle { c, .. } => Some(c),
            Term::Line { .. } => None,
        }
    }
}

impl Reward {
    /// `Σ w_i · term_i(x)`.
    #[inline]
    pub fn eval(&self, x: &[f32]) -> f32 {
        self.terms.iter().map(|(w, t)| w * t.eval(x, self.eps)).sum()
    }

    /// The dimension every vector argument has, if any term fixes it.
    pub fn checks_dim(&self, dim: usize) -> Result<(), String> {
        for (_, t) in &self.terms {
            if let Some(c) = t.centre() {
                if c.len() != dim {
                    return Err(format!("reward term {t} has a {}-vector but the model's data dimension is D = {dim}; give {dim} entries", c.len()));
                }
            }
            if let Term::Line { axis, .. } = t {
                if *axis >= dim {
                    return Err(format!("line axis {axis} does not exist for D = {dim}; use 0..{}", dim - 1));
                }
            }
        }
        Ok(())
    }

    /// The attracting target (the first point or gaussian centre), for "fraction within r".
    pub fn target(&self) -> Option<&[f32]> {
        self.terms.iter().find_map(|(w, t)| match t {
            Term::Point { c } | Term::Gaussian { c, .. } if *w > 0.0 => Some(c.as_slice()),
            _ => None,
        })
    }
}

#[inline(always)]
fn sq_dist(x: &[f32], c: &[f32]) -> f32 {
    x.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_match_their_formulas() {
        let eps = DEFAULT_EPS;
        let x = [1.0f32, 2.0];
        assert!((Term::Point { c: vec![1.0, 0.0] }.eval(&x, eps) - 1.0 / 4.001).abs() < 1e-7);
        assert!((Term::Line { axis: 1, c: 1.5 }.eval(&x, eps) - 1.0 / 0.501).abs() < 1e-6);
        assert_eq!(Term::Gaussian { c: vec![1.0, 0.0], sigma: 0.5 }.eval(&x, eps), -8.0);
        // |x − c| = 2, ρ = 1.5 -> d = 0.5 ≤ Q* = 1: −½·2·(2 − 1)² = −1.
        let ob = Term::Obstacle { c: vec![1.0, 0.0], rho: 1.5, q_star: 1.0, eta: 2.0 };
        assert!((ob.eval(&x, eps) + 1.0).abs() < 1e-6);
        let far = Term::Obstacle { c: vec![1.0, 0.0], rho: 0.5, q_star: 1.0, eta: 2.0 };
        assert_eq!(far.eval(&x, eps), 0.0);
    }
}
