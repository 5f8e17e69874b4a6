//! The time grid, the integrators and renoising of docs/samplers.md, as per-coordinate formulas.
//!
//! Every CPU path (the scalar reference and the blocked hot loop) calls these functions, so each
//! formula of docs/samplers.md exists once on the CPU; `kernels/propagate.cu` is its CUDA twin.

use std::fmt;
use std::str::FromStr;

/// Which integrator moves particles from `t` to `t + h` (docs/samplers.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    Euler,
    #[default]
    Midpoint,
    Sde,
}

/// The SDE's form: the marginal-preserving one, or the legacy tutorial form (docs/samplers.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SdeForm {
    #[default]
    Marginal,
    Legacy,
}

/// Renoising from `t` back to `s < t` (docs/samplers.md): exact for the OT path, or the legacy form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RenoiseForm {
    #[default]
    Exact,
    Legacy,
}

/// A sampler: integrator, number of uniform steps, and the SDE's diffusion scale `k`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Sampler {
    pub kind: SamplerKind,
    pub steps: usize,
    /// Diffusion scale `k ≥ 0` in `ω_t = k·(1−t)`; used by `sde` only.
    pub k: f32,
    pub form: SdeForm,
}

impl Default for Sampler {
    fn default() -> Self {
        Self { kind: SamplerKind::Midpoint, steps: 100, k: 0.1, form: SdeForm::Marginal }
    }
}

impl Sampler {
    /// Checks the parameters a user can get wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.steps == 0 {
            return Err("--steps must be at least 1".into());
        }
        if self.steps >= (1 << 24) {
            return Err(format!("--steps {} is too many: the random-number counter holds step indices below 2^24", self.steps));
        }
        if !(self.k.is_finite() && self.k >= 0.0) {
            return Err(format!("--k must be a finite number ≥ 0, got {}", self.k));
        }
        Ok(())
    }

    /// `t_i = i / n`, computed in f32 the same way on every backend.
    #[inline(always)]
    pub fn time(&self, i: usize) -> f32 {
        i as f32 / self.steps as f32
    }

    /// The step `h = 1/n`.
    #[inline(always)]
    pub fn h(&self) -> f32 {
        1.0 / self.steps as f32
    }

    /// Velocity evaluations per step: 1 for euler, 2 for midpoint and sde.
    pub fn evals_per_step(&self) -> usize {
        match self.kind {
            SamplerKind::Euler => 1,
            SamplerKind::Midpoint | SamplerKind::Sde => 2,
        }
    }

    /// Whether a step draws noise.
    pub fn is_stochastic(&self) -> bool {
        self.kind == SamplerKind::Sde && self.k > 0.0
    }
}

impl fmt::Display for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            SamplerKind::Euler => write!(f, "euler, {} steps", self.steps),
            SamplerKind::Midpoint => write!(f, "midpoint, {} steps", self.steps),
            SamplerKind::Sde => write!(f, "sde ({:?} form, k = {}), {} steps", self.form, self.k, self.steps),
        }
    }
}

impl FromStr for SamplerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <SamplerKind as clap::ValueEnum>::from_str(s, true)
    }
}

/// Euler: `x + h·v`.
#[inline(always)]
pub fn euler_update(x: f32, v: f32, h: f32) -> f32 {
    x + h * v
}

/// The midpoint's half-step point `x + (h/2)·v0`.
#[inline(always)]
pub fn midpoint_probe(x: f32, v0: f32, h: f32) -> f32 {
    x + 0.5 * h * v0
}

/// Midpoint: `x + h·vm`.
#[inline(always)]
pub fn midpoint_update(x: f32, vm: f32, h: f32) -> f32 {
    x + h * vm
}

/// The noise scale of one SDE step: `sqrt(k·(1−t)·h)` (marginal) or `h·sqrt(k·(1−t))` (legacy).
#[inline(always)]
pub fn sde_noise_scale(form: SdeForm, k: f32, t: f32, h: f32) -> f32 {
    match form {
        SdeForm::Marginal => (k * (1.0 - t) * h).sqrt(),
        SdeForm::Legacy => h * (k * (1.0 - t)).sqrt(),
    }
}

/// One SDE step for one coordinate (docs/samplers.md):
/// marginal `x + h·[vm + (k/2)·(t·v0 − x)] + σ·ξ`; legacy `x + h·[vm − (k/2)·(t·vm − x)] + σ·ξ`,
/// with `σ` from [`sde_noise_scale`].
#[inline(always)]
#[allow(clippy::too_many_arguments)] // a scalar formula, argument for argument its CUDA twin's
pub fn sde_update(form: SdeForm, x: f32, v0: f32, vm: f32, t: f32, h: f32, k: f32, noise_scale: f32, xi: f32) -> f32 {
    let drift = match form {
        SdeForm::Marginal => vm + 0.5 * k * (t * v0 - x),
        SdeForm::Legacy => vm - 0.5 * k * (t * vm - x),
    };
    x + h * drift + noise_scale * xi
}

/// Predicted data `x̂1 = x + (1−t)·v`.
#[inline(always)]
pub fn predicted_data(x: f32, v: f32, t: f32) -> f32 {
    x + (1.0 - t) * v
}

/// Predicted noise `x̂0 = x − t·v`.
#[inline(always)]
pub fn predicted_noise(x: f32, v: f32, t: f32) -> f32 {
    x - t * v
}

/// The coefficients `(a, b)` of renoising from `t` back to `s`: `x_s = a·x_t + b·ξ` (docs/samplers.md).
/// Exact: `a = s/t`, `b = sqrt((1−s)² − (s/t)²·(1−t)²)`. Legacy: `a = 1`, `b = t − s`.
pub fn renoise_coefficients(form: RenoiseForm, t: f32, s: f32) -> (f32, f32) {
    debug_assert!(s < t && t > 0.0);
    match form {
        RenoiseForm::Exact => {
            let a = s / t;
            let var = (1.0 - s) * (1.0 - s) - a * a * (1.0 - t) * (1.0 - t);
            (a, var.max(0.0).sqrt())
        }
        RenoiseForm::Legacy => (1.0, t - s),
    }
}

/// The one-particle reference integrator: grid steps `steps` of `sampler` (docs/samplers.md) for the
/// particle with global index `particle`, velocities from `velocity(t, x, v)`, SDE noise drawn
/// from Philox exactly as every backend draws it (purpose `SdeNoise`, counter step = grid index,
/// docs/random.md). It calls the same per-coordinate formulas as the blocked hot loop, one particle at a
/// time, so that the hot loop can be checked against it and the formulas against closed-form
/// velocity fields.
pub fn integrate_reference(
    sampler: &Sampler,
    seed: u64,
    particle: u64,
    x: &mut [f32],
    steps: std::ops::Range<usize>,
    mut velocity: impl FnMut(f32, &[f32], &mut [f32]),
) {
    let dim = x.len();
    let rng = crate::rng::Philox::new(seed);
    let h = sampler.h();
    let (mut v0, mut vm, mut probe, mut xi) = (vec![0f32; dim], vec![0f32; dim], vec![0f32; dim], vec![0f32; dim]);
    for step in steps {
        let t = sampler.time(step);
        velocity(t, x, &mut v0);
        if sampler.kind == SamplerKind::Euler {
            for d in 0..dim {
                x[d] = euler_update(x[d], v0[d], h);
            }
            continue;
        }
        for d in 0..dim {
            probe[d] = midpoint_probe(x[d], v0[d], h);
        }
        velocity(t + 0.5 * h, &probe, &mut vm);
        if sampler.kind == SamplerKind::Midpoint {
            for d in 0..dim {
                x[d] = midpoint_update(x[d], vm[d], h);
            }
        } else {
            let scale = sde_noise_scale(sampler.form, sampler.k, t, h);
            rng.normal_vector(particle, step as u32, crate::rng::Purpose::SdeNoise, &mut xi);
            for d in 0..dim {
                x[d] = sde_update(sampler.form, x[d], v0[d], vm[d], t, h, sampler.k, scale, xi[d]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dx/dt = λx` from x0 = 1 over [0, 1]: exact `e^λ`. With `z = λh`, one Euler step
    /// multiplies by `1 + z` and one midpoint step by `1 + z + z²/2`, so the end point is that
    /// factor to the n-th power (checked to f32 rounding: at most half an ulp of a number below 1,
    /// 2^-25, per step) and the global errors are, from `ln(1 + z) = z − z²/2 + z³/3 − …` and
    /// `ln(1 + z + z²/2) = z − z³/6 + z⁴/8 − …`:
    /// Euler `e^λ·λ²h/2·(1 + c₁·λh + …)`, midpoint `e^λ·λ³h²/6·(1 − ¾·λh + …)`, |c₁| < 1.
    /// So `error·n` and `error·n²` must equal the leading constants to within a relative
    /// `|λ|h + (λh)²` (next orders, |λh| ≤ 0.15 here) plus the rounding `n·2^-25 / error`:
    /// O(h) for Euler and O(h²) for midpoint, with the constants too.
    #[test]
    fn integrators_match_their_leading_error_terms() {
        let lambda = -1.5f64;
        let exact = lambda.exp();
        for &n in &[10usize, 20, 40] {
            let h = 1.0 / n as f64;
            let z = lambda * h;
            for (kind, power, constant, factor) in [
                (SamplerKind::Euler, 1, exact * lambda * lambda / 2.0, 1.0 + z),
                (SamplerKind::Midpoint, 2, exact * lambda.powi(3) / 6.0, 1.0 + z + z * z / 2.0),
            ] {
                let sampler = Sampler { kind, steps: n, k: 0.0, form: SdeForm::Marginal };
                let mut x = [1f32];
                integrate_reference(&sampler, 0, 0, &mut x, 0..n, |_, x, v| v[0] = lambda as f32 * x[0]);
                let rounding = n as f64 * 2f64.powi(-25);
                let discrete = factor.powi(n as i32);
                assert!((x[0] as f64 - discrete).abs() <= rounding, "{kind:?} n={n}: {} vs the exact map {discrete}", x[0]);
                let err = exact - x[0] as f64;
                let scaled = err * (n as f64).powi(power);
                let rel = (scaled - constant).abs() / constant.abs();
                let bound = z.abs() + z * z + rounding / err.abs();
                eprintln!("{kind:?} n={n}: relative deviation from the leading term {rel:.4} (bound {bound:.4})");
                assert!(rel < bound, "{kind:?} n={n}: error·n^{power} = {scaled}, leading term {constant}, bound {bound}");
            }
        }
    }

    /// The marginal SDE with k = 0 is the midpoint ODE, step for step, bit for bit.
    #[test]
    fn sde_reference_with_k_zero_is_midpoint() {
        let v = |t: f32, x: &[f32], v: &mut [f32]| {
            v[0] = (x[1] * t).sin() - x[0];
            v[1] = x[0] * 0.5 + t;
        };
        let mid = Sampler { kind: SamplerKind::Midpoint, steps: 40, k: 0.0, form: SdeForm::Marginal };
        let sde = Sampler { kind: SamplerKind::Sde, ..mid };
        let (mut a, mut b) = ([0.3f32, -1.2], [0.3f32, -1.2]);
        integrate_reference(&mid, 7, 3, &mut a, 0..40, v);
        integrate_reference(&sde, 7, 3, &mut b, 0..40, v);
        assert_eq!(a, b);
    }

    #[test]
    fn sde_with_k_zero_is_the_midpoint_step() {
        let (x, v0, vm, t, h) = (0.7f32, -1.3, 0.4, 0.25, 0.01);
        let s = sde_noise_scale(SdeForm::Marginal, 0.0, t, h);
        assert_eq!(sde_update(SdeForm::Marginal, x, v0, vm, t, h, 0.0, s, 1.5), midpoint_update(x, vm, h));
    }

    /// Exact renoising keeps the OT marginal: if x_t = t·x1 + (1−t)·z, then
    /// x_s = (s/t)·x_t + b·ξ = s·x1 + (s/t)(1−t)·z + b·ξ has noise variance (1−s)².
    /// The legacy form `x_s = x_t + (t − s)·ξ` leaves the data coefficient at t instead of s and
    /// the noise variance at (1−t)² + (t−s)² instead of (1−s)²: it is off the OT path.
    #[test]
    fn legacy_renoising_is_off_the_path() {
        let (t, s) = (0.9f32, 0.6f32);
        let (a, b) = renoise_coefficients(RenoiseForm::Legacy, t, s);
        assert_eq!((a, b), (1.0, t - s));
        let var = (a * (1.0 - t)).powi(2) + b * b;
        assert!((var - (1.0 - s).powi(2)).abs() > 0.05, "variance {var} vs {}", (1.0 - s).powi(2));
        assert!((a * t - s).abs() > 0.2);
    }

    #[test]
    fn exact_renoising_restores_the_path_variance() {
        for &(t, s) in &[(0.9f32, 0.8f32), (0.5, 0.1), (0.99, 0.95)] {
            let (a, b) = renoise_coefficients(RenoiseForm::Exact, t, s);
            let var = (a * (1.0 - t)).powi(2) + b * b;
            assert!((var - (1.0 - s).powi(2)).abs() < 1e-6, "t={t} s={s}");
            assert!((a * t - s).abs() < 1e-6);
        }
    }
}
