//! Velocity fields other than the model, for tests whose answers are known in closed form.
//!
//! The statistical tests of FK steering need a flow whose output law is known exactly: data
//! `N(μ, s²I)` has the OT velocity `v(t, x) = μ + a(t)·(x − tμ)` (derivation at
//! [`GaussianOt`]), which is affine in x but not in t, so no finite MLP represents it exactly
//! (a ReLU MLP is piecewise linear in (t, x) jointly; `a(t)·x` is a product). Rather than a
//! second backend, the CPU backend takes an optional field; [`propagate_field`] is a scalar
//! integrator with the same formulas (`crate::sampler`) and the same Philox addresses as the
//! blocked hot loop, and a test checks the two agree on an MLP.

use std::ops::Range;

use rayon::prelude::*;

use crate::model::Mlp;
use crate::rng::{Philox, Purpose};
use crate::sampler::{self, Sampler, SamplerKind};

/// `v(t, x)` for one particle (`x` and `out` have D entries).
pub trait VelocityField: Send + Sync + std::fmt::Debug {
    fn velocity(&self, t: f32, x: &[f32], out: &mut [f32]);
}

/// The model through its f64 reference forward pass (for checking [`propagate_field`]).
impl VelocityField for Mlp {
    fn velocity(&self, t: f32, x: &[f32], out: &mut [f32]) {
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let mut o = vec![0f64; out.len()];
        self.velocity_f64(t as f64, &x64, &mut o);
        for (a, b) in out.iter_mut().zip(o) {
            *a = b as f32;
        }
    }
}

/// The exact OT velocity of data `N(μ, s²I)` (docs/samplers.md's path `x_t = t·x1 + (1−t)·x0`).
///
/// `x_t ~ N(tμ, σ_t²I)` with `σ_t² = t²s² + (1−t)²`, and per coordinate
/// `Cov(x1 − x0, x_t) = t·s² − (1−t)`. Jointly Gaussian, so
/// `E[x1 − x0 | x_t = x] = μ + a(t)·(x − tμ)` with `a(t) = (t·s² − (1−t)) / σ_t²`.
/// The ODE then carries `N(0, I)` at t = 0 to `N(μ, s²I)` at t = 1.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianOt {
    pub mean: Vec<f64>,
    pub std: f64,
}

impl GaussianOt {
    /// `a(t)`.
    pub fn slope(&self, t: f64) -> f64 {
        let s2 = self.std * self.std;
        (t * s2 - (1.0 - t)) / (t * t * s2 + (1.0 - t) * (1.0 - t))
    }

    /// `v(t, x)` in f64, coordinate `d`.
    pub fn velocity_f64(&self, t: f64, x: f64, d: usize) -> f64 {
        self.mean[d] + self.slope(t) * (x - t * self.mean[d])
    }
}

impl VelocityField for GaussianOt {
    fn velocity(&self, t: f32, x: &[f32], out: &mut [f32]) {
        for d in 0..x.len() {
            out[d] = self.velocity_f64(t as f64, x[d] as f64, d) as f32;
        }
    }
}

/// `v(t, x)` for every particle (SoA in and out).
pub fn velocities_field(field: &dyn VelocityField, dim: usize, t: f32, x: &[f32], total: usize) -> Vec<f32> {
    let rows: Vec<Vec<f32>> = (0..total)
        .into_par_iter()
        .map(|i| {
            let xi: Vec<f32> = (0..dim).map(|d| x[d * total + i]).collect();
            let mut v = vec![0f32; dim];
            field.velocity(t, &xi, &mut v);
            v
        })
        .collect();
    let mut v = vec![0f32; dim * total];
    for (i, row) in rows.iter().enumerate() {
        for d in 0..dim {
            v[d * total + i] = row[d];
        }
    }
    v
}

/// Integrates grid steps `steps` for every particle (SoA), one particle at a time, with the
/// formulas and random-number addresses of `propagate::propagate` (same arguments; D is
/// `x.len() / total`).
pub fn propagate_field(field: &dyn VelocityField, sampler: &Sampler, seed: u64, x: &mut [f32], total: usize, first_index: u64, steps: Range<usize>) {
    let dim = x.len() / total.max(1);
    let rng = Philox::new(seed);
    let h = sampler.h();
    let rows: Vec<Vec<f32>> = (0..total)
        .into_par_iter()
        .map(|i| {
            let mut xi: Vec<f32> = (0..dim).map(|d| x[d * total + i]).collect();
            let (mut v0, mut vm, mut probe, mut xi_noise) = (vec![0f32; dim], vec![0f32; dim], vec![0f32; dim], vec![0f32; dim]);
            for step in steps.clone() {
                let t = sampler.time(step);
                field.velocity(t, &xi, &mut v0);
                match sampler.kind {
                    SamplerKind::Euler => {
                        for d in 0..dim {
                            xi[d] = sampler::euler_update(xi[d], v0[d], h);
                        }
                    }
                    SamplerKind::Midpoint | SamplerKind::Sde => {
                        for d in 0..dim {
                            probe[d] = sampler::midpoint_probe(xi[d], v0[d], h);
                        }
                        field.velocity(t + 0.5 * h, &probe, &mut vm);
                        if sampler.kind == SamplerKind::Midpoint {
                            for d in 0..dim {
                                xi[d] = sampler::midpoint_update(xi[d], vm[d], h);
                            }
                        } else {
                            let scale = sampler::sde_noise_scale(sampler.form, sampler.k, t, h);
                            rng.normal_vector(first_index + i as u64, step as u32, Purpose::SdeNoise, &mut xi_noise);
                            for d in 0..dim {
                                xi[d] = sampler::sde_update(sampler.form, xi[d], v0[d], vm[d], t, h, sampler.k, scale, xi_noise[d]);
                            }
                        }
                    }
                }
            }
            xi
        })
        .collect();
    for (i, row) in rows.iter().enumerate() {
        for d in 0..dim {
            x[d * total + i] = row[d];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::propagate;
    use crate::model::Activation;
    use crate::sampler::SdeForm;

    /// The scalar integrator and the blocked hot loop take the same steps with the same noise:
    /// agreement to f32 rounding of the forward pass (1e-5 relative per evaluation, see
    /// `block_forward_matches_f64_reference`), accumulated over 10 steps of size 0.1 → 1e-4.
    #[test]
    fn scalar_integrator_matches_the_hot_loop() {
        let m = Mlp::init_uniform(2, 16, 2, Activation::Elu, 4);
        for kind in [SamplerKind::Euler, SamplerKind::Midpoint, SamplerKind::Sde] {
            let s = Sampler { kind, steps: 10, k: 0.5, form: SdeForm::Marginal };
            let total = 70;
            let x0: Vec<f32> = (0..2 * total).map(|i| ((i * 29 % 53) as f32 / 20.0) - 1.3).collect();
            let (mut a, mut b) = (x0.clone(), x0.clone());
            propagate::propagate(&m, &s, 3, &mut a, total, 5, 0..10);
            propagate_field(&m, &s, 3, &mut b, total, 5, 0..10);
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{kind:?}: {p} vs {q}");
            }
        }
    }

    /// The Gaussian field carries N(0, 1) to N(μ, s²): its ODE flow is x_t = t·x1 + (1−t)·x0
    /// along straight lines, so the particle starting at x0 = z ends (up to the integrator's
    /// O(h²) error) at μ + s·z.
    #[test]
    fn gaussian_ot_flow_maps_noise_to_data() {
        let f = GaussianOt { mean: vec![1.5, -0.5], std: 0.5 };
        let s = Sampler { kind: SamplerKind::Midpoint, steps: 200, k: 0.0, form: SdeForm::Marginal };
        let mut x = vec![0.3f32, -1.0, 2.0, 0.7];
        propagate_field(&f, &s, 0, &mut x, 2, 0, 0..200);
        let want = [1.5 + 0.5 * 0.3, 1.5 - 0.5, -0.5 + 0.5 * 2.0, -0.5 + 0.5 * 0.7];
        for (got, w) in x.iter().zip(want) {
            assert!((*got as f64 - w).abs() < 1e-3, "{got} vs {w}");
        }
    }
}
