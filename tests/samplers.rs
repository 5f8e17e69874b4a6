//! The samplers of docs/samplers.md against exact solutions, the CPU hot loop against the one-particle
//! reference integrator, the marginal SDE against the ODE in distribution, and determinism
//! across thread counts.

#![allow(clippy::needless_range_loop)] // index loops mirror the formulas' subscripts

use flowsteer::backend::cpu::CpuBackend;
use flowsteer::backend::{Backend, Init, Layout};
use flowsteer::checkerboard::energy_distance_blocks;
use flowsteer::cli::sample::sampling_spec;
use flowsteer::model::{Activation, Linear, Mlp};
use flowsteer::rng::{Philox, Purpose};
use flowsteer::sampler::{integrate_reference, Sampler, SamplerKind, SdeForm};
use rayon::prelude::*;

fn sampler(kind: SamplerKind, steps: usize, k: f32, form: SdeForm) -> Sampler {
    Sampler { kind, steps, k, form }
}

/// Runs every step of `sampler` on the CPU backend from `init` (row-major), in chunks of
/// `chunk` steps; returns the final rows.
fn run_cpu(model: &Mlp, sampler: Sampler, seed: u64, n: usize, init: Option<&[f32]>, chunk: usize) -> Vec<f32> {
    let spec = sampling_spec(model.clone(), sampler, seed);
    let mut be = CpuBackend::new();
    let mut p = be.init(&spec, Layout { n, groups: 1 }, init.map_or(Init::Noise, Init::Given)).unwrap();
    let mut s = 0;
    while s < sampler.steps {
        let e = (s + chunk).min(sampler.steps);
        be.propagate(&spec, &mut p, s..e).unwrap();
        s = e;
    }
    be.read_positions(&p).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. A linear velocity field, written exactly as a ReLU MLP, against its closed-form flow.

/// `v(t, x) = a·t + A·x + b` with `A = αI + ωJ` (a spiral sink, J the 90° rotation).
struct LinearField {
    alpha: f64,
    omega: f64,
    a: [f64; 2],
    b: [f64; 2],
}

impl LinearField {
    /// The field as an MLP, exact up to f32 rounding of `M·u`: layer 0 maps `u = [t, x]` to
    /// `[u, −u]` through ReLU, layer 1 is the identity on those non-negative values (ReLU
    /// keeps them), and the output layer computes `M·relu(u) − M·relu(−u) + b = M·u + b` with
    /// `M = [a | A]`: for each input one of the two products is an exact zero.
    fn mlp(&self) -> Mlp {
        let m = [[self.a[0], self.alpha, -self.omega], [self.a[1], self.omega, self.alpha]];
        let mut l0 = Linear::zeros(3, 6);
        for i in 0..3 {
            l0.weight[i * 3 + i] = 1.0;
            l0.weight[(i + 3) * 3 + i] = -1.0;
        }
        let mut l1 = Linear::zeros(6, 6);
        for i in 0..6 {
            l1.weight[i * 6 + i] = 1.0;
        }
        let mut l2 = Linear::zeros(6, 2);
        for d in 0..2 {
            for i in 0..3 {
                l2.weight[d * 6 + i] = m[d][i] as f32;
                l2.weight[d * 6 + i + 3] = -m[d][i] as f32;
            }
            l2.bias[d] = self.b[d] as f32;
        }
        Mlp { dim: 2, activation: Activation::Relu, layers: vec![l0, l1, l2] }
    }

    /// The exact flow from `x0` at t = 0 to t = 1: with `p = −A⁻¹a`, `q = A⁻¹(p − b)`,
    /// `x(t) = e^{At}(x0 − q) + p·t + q` (check: `x' = A·e^{At}(x0 − q) + p = A·x + a·t + b`),
    /// and `e^{At} = e^{αt}·R(ωt)`, `A⁻¹ = (αI − ωJ)/(α² + ω²)`.
    fn exact_at_1(&self, x0: [f64; 2]) -> [f64; 2] {
        let (al, om) = (self.alpha, self.omega);
        let inv = |v: [f64; 2]| {
            let s = al * al + om * om;
            [(al * v[0] + om * v[1]) / s, (-om * v[0] + al * v[1]) / s]
        };
        let p = inv([-self.a[0], -self.a[1]]);
        let q = inv([p[0] - self.b[0], p[1] - self.b[1]]);
        let (c, s, g) = (om.cos(), om.sin(), al.exp());
        let y = [x0[0] - q[0], x0[1] - q[1]];
        [g * (c * y[0] - s * y[1]) + p[0] + q[0], g * (s * y[0] + c * y[1]) + p[1] + q[1]]
    }
}

/// Midpoint's global error is O(h²) and Euler's O(h), measured through the CPU hot loop.
///
/// With `e(n) = C·h^p·(1 + c·h + …)`, the observed order `log2(e(n)/e(2n))` is
/// `p + log2((1 + c·h)/(1 + c·h/2)) ≈ p + c·h/(2 ln 2)`. The next-order coefficient is of the
/// order of the field's norm, |c| ≲ ‖A‖ ≈ 2.2 (as in the scalar case, where it is ¾|λ| for
/// midpoint, see `sampler::tests`), so at h ≤ 1/16 the deviation is ≤ 0.1; f32 rounding adds at
/// most n·2^-23·|x| ≈ 8e-6 against errors ≥ 4e-4 (a 2% change of e, 0.03 in the order). The
/// bound 0.15 covers both.
#[test]
fn linear_field_errors_have_the_right_order() {
    let field = LinearField { alpha: -1.0, omega: 2.0, a: [0.5, -0.3], b: [0.2, 0.1] };
    let model = field.mlp();
    // 37 particles: a full block of 32 and a partial one.
    let n = 37;
    let init: Vec<f32> = (0..2 * n).map(|i| ((i * 29 % 17) as f32 / 8.0) - 1.0).collect();
    for (kind, order) in [(SamplerKind::Midpoint, 2.0), (SamplerKind::Euler, 1.0)] {
        let errors: Vec<f64> = [16usize, 32, 64]
            .iter()
            .map(|&steps| {
                let out = run_cpu(&model, sampler(kind, steps, 0.0, SdeForm::Marginal), 0, n, Some(&init), steps);
                (0..n)
                    .map(|i| {
                        let want = field.exact_at_1([init[2 * i] as f64, init[2 * i + 1] as f64]);
                        ((out[2 * i] as f64 - want[0]).powi(2) + (out[2 * i + 1] as f64 - want[1]).powi(2)).sqrt()
                    })
                    .sum::<f64>()
            })
            .collect();
        for w in errors.windows(2) {
            let observed = (w[0] / w[1]).log2();
            eprintln!("{kind:?}: errors {:.3e} -> {:.3e}, observed order {observed:.3}", w[0], w[1]);
            assert!((observed - order).abs() < 0.15, "{kind:?}: observed order {observed}, expected {order}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. The blocked hot loop against the one-particle reference integrator.

/// Every sampler, sizes around the block of 32, steps split in uneven chunks: the CPU backend
/// (which draws the initial noise itself) agrees with `integrate_reference` fed the f64 forward
/// pass and the same Philox draws. The only difference is the forward pass's rounding (f32
/// against f64, ≤ 1e-5·(1 + |v|) per evaluation, see `propagate`'s unit test), which a step
/// scales by h and the flow's Lipschitz constant (≈ 1 for this init, so ≤ e over [0, 1])
/// carries along: ≤ 1e-5·(1 + |v|)·e ≈ 1e-4 for |v| ≲ 3, the bound used.
#[test]
fn hot_loop_matches_the_reference_integrator() {
    let seed = 77;
    for (i, (kind, k, form)) in [
        (SamplerKind::Euler, 0.0, SdeForm::Marginal),
        (SamplerKind::Midpoint, 0.0, SdeForm::Marginal),
        (SamplerKind::Sde, 1.0, SdeForm::Marginal),
        (SamplerKind::Sde, 1.0, SdeForm::Legacy),
    ]
    .into_iter()
    .enumerate()
    {
        let act = [Activation::Elu, Activation::Tanh, Activation::Silu, Activation::Gelu][i];
        let model = Mlp::init_uniform(2, 16, 2, act, 5 + i as u64);
        let s = sampler(kind, 20, k, form);
        for n in [1usize, 31, 32, 33, 100] {
            let got = run_cpu(&model, s, seed, n, None, 7);
            let rng = Philox::new(seed);
            for p in 0..n {
                let mut x = [0f32; 2];
                rng.normal_vector(p as u64, 0, Purpose::InitialNoise, &mut x);
                integrate_reference(&s, seed, p as u64, &mut x, 0..20, |t, x, v| {
                    let mut out = [0f64; 2];
                    model.velocity_f64(t as f64, &[x[0] as f64, x[1] as f64], &mut out);
                    v[0] = out[0] as f32;
                    v[1] = out[1] as f32;
                });
                for d in 0..2 {
                    let diff = (got[2 * p + d] - x[d]).abs();
                    assert!(diff <= 1e-4, "{kind:?} {form:?} n={n} particle {p}: {} vs reference {}", got[2 * p + d], x[d]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. The marginal SDE keeps the ODE's final distribution; the legacy form does not.

/// Data: an equal mixture of N(μ_1, s²I) and N(μ_2, s²I). Along the OT path
/// `x_t = t·x1 + (1−t)·x0`, given component j, `x_t ~ N(t·μ_j, σ_t²I)` with
/// `σ_t² = t²s² + (1−t)²`, and `E[x1 − x0 | x_t = x, j] = μ_j + ((t·s² − (1−t))/σ_t²)·(x − t·μ_j)`
/// (Gaussian conditioning: Cov(x1 − x0, x_t) = t·s² − (1−t)). The exact marginal velocity
/// averages these with the posterior weights `w_j ∝ exp(−|x − t·μ_j|²/(2σ_t²))` (equal σ_t,
/// so the normalisers cancel). This `v` is the true OT-path velocity of the data, so the score
/// identity `s = (t·v − x)/(1−t)` the marginal SDE relies on holds exactly.
const MU: [[f32; 2]; 2] = [[-1.5, 0.0], [1.5, 0.5]];
const S: f32 = 0.4;

fn mixture_velocity(t: f32, x: &[f32], v: &mut [f32]) {
    let (t, s2) = (t as f64, (S * S) as f64);
    let var = t * t * s2 + (1.0 - t) * (1.0 - t);
    let c = (t * s2 - (1.0 - t)) / var;
    let logits = MU.map(|m| -((x[0] as f64 - t * m[0] as f64).powi(2) + (x[1] as f64 - t * m[1] as f64).powi(2)) / (2.0 * var));
    let top = logits[0].max(logits[1]);
    let w = logits.map(|l| (l - top).exp());
    let total = w[0] + w[1];
    for d in 0..2 {
        v[d] = (0..2)
            .map(|j| w[j] / total * (MU[j][d] as f64 + c * (x[d] as f64 - t * MU[j][d] as f64)))
            .sum::<f64>() as f32;
    }
}

fn sample_mixture_flow(s: Sampler, seed: u64, n: usize) -> Vec<f32> {
    let rng = Philox::new(seed);
    (0..n)
        .into_par_iter()
        .flat_map_iter(|p| {
            let mut x = [0f32; 2];
            rng.normal_vector(p as u64, 0, Purpose::InitialNoise, &mut x);
            integrate_reference(&s, seed, p as u64, &mut x, 0..s.steps, mixture_velocity);
            x
        })
        .collect()
}

fn sample_mixture_data(seed: u64, n: usize) -> Vec<f32> {
    let rng = Philox::new(seed);
    (0..n)
        .flat_map(|p| {
            let z = rng.normals4(p as u64, 0, Purpose::InitialNoise, 0);
            let j = (rng.uniform(p as u64, 0, Purpose::InitialNoise, 1) > 0.5) as usize;
            [MU[j][0] + S * z[0], MU[j][1] + S * z[1]]
        })
        .collect()
}

/// The test statistic is the block energy distance (`checkerboard::energy_distance_blocks`,
/// unbiased, 40 independent blocks of 1,000 at N = 40,000) with its standard error SE measured
/// from the blocks. Under the null (same law) the estimate is a mean of 40 i.i.d. block values
/// with mean 0, so it is ≈ N(0, SE²) and exceeds 5·SE with probability < 3·10^-7. The null SE
/// is taken from the comparison of the ODE with exact data, where the null holds up to the
/// midpoint's discretisation error (O(h²) = 1e-4 in position, an energy distance of order its
/// square, negligible). The SDE's own discretisation error (Euler–Maruyama, weak order 1,
/// h = 1/200) shifts moments by ≲ 1%; the energy distance is quadratic in such a shift (for
/// a 1% scale error of an N(0, σ²) it is ≈ 0.28·σ·10^-4), far below SE. The legacy form's
/// error is not small: its drift pushes along x̂0 = x − t·v instead of against it, widening every
/// mode; its energy distance must exceed the same 5·SE bound (measured: 0.055, ≈ 19× it).
#[test]
fn marginal_sde_keeps_the_ode_law_and_legacy_does_not() {
    let n = 40_000;
    let steps = 200;
    let ode = sample_mixture_flow(sampler(SamplerKind::Midpoint, steps, 0.0, SdeForm::Marginal), 1, n);
    let data = sample_mixture_data(2, n);
    let null = energy_distance_blocks(&ode, &data, 2);
    let bound = 5.0 * null.std_error;
    eprintln!("ODE vs exact data: {null:?}; bound 5·SE = {bound:.2e}");
    assert!(null.value.abs() < bound, "the midpoint ODE does not reproduce the data: {null:?}");

    let marginal = sample_mixture_flow(sampler(SamplerKind::Sde, steps, 1.0, SdeForm::Marginal), 3, n);
    let e = energy_distance_blocks(&marginal, &ode, 2);
    eprintln!("marginal SDE (k = 1) vs ODE: {e:?}");
    assert!(e.value.abs() < bound, "the marginal SDE changed the final law: {e:?}, bound {bound:.2e}");

    let legacy = sample_mixture_flow(sampler(SamplerKind::Sde, steps, 1.0, SdeForm::Legacy), 4, n);
    let e = energy_distance_blocks(&legacy, &ode, 2);
    eprintln!("legacy SDE (k = 1) vs ODE: {e:?}");
    assert!(e.value > bound, "the legacy SDE was expected to change the final law: {e:?}, bound {bound:.2e}");
}

// ---------------------------------------------------------------------------------------------
// 4. Determinism.

/// Same seed ⇒ the same bits, whatever the number of threads (every draw is addressed by
/// particle and step, docs/random.md, and blocks never share state). The stochastic sampler is used so
/// that the noise's addressing is covered, with a size that is not a multiple of the block.
#[test]
fn same_seed_gives_the_same_bits_on_1_2_and_3_threads() {
    let model = Mlp::init_uniform(2, 32, 2, Activation::Elu, 3);
    let s = sampler(SamplerKind::Sde, 25, 0.5, SdeForm::Marginal);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| run_cpu(&model, s, 42, 1000, None, 25))
    };
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let one = bits(run(1));
    assert_eq!(one, bits(run(2)));
    assert_eq!(one, bits(run(3)));
    // And a different seed gives different samples (the test could not pass by ignoring it).
    let other = {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        bits(pool.install(|| run_cpu(&model, s, 43, 1000, None, 25)))
    };
    assert_ne!(one, other);
}
