//! Tempering (docs/steering.md "Tempering", `methods::tempering`) on the hidden-target test of
//! tests/steering.rs: the exact OT flow of Gaussian data, whose discrete midpoint map is affine,
//! `x1 = A·x0 + B`, so the model's output law is `N(B, A²I)` and the tilted target of
//! `gaussian(c, 1)` at temperature λ is known in closed form, per coordinate:
//! precision `1/A² + λ`, mean `(B/A² + λ·c)/(1/A² + λ)`.

use std::sync::Arc;

use flowsteer::backend::cpu::field::GaussianOt;
use flowsteer::backend::cpu::CpuBackend;
use flowsteer::backend::{Init, Layout, RunSpec};
use flowsteer::methods::{self, FkConfig, RunResult, ScheduleSpec, Tempering};
use flowsteer::model::{Activation, Mlp};
use flowsteer::potential::{Potential, PotentialKind};
use flowsteer::resample::ResampleScheme;
use flowsteer::reward::{Reward, RewardOn};
use flowsteer::sampler::{Sampler, SamplerKind, SdeForm};

const MU: [f64; 2] = [0.5, -0.3];
const C: [f32; 2] = [1.5, 0.5];
const STEPS: usize = 20;
const LAMBDA: f32 = 8.0;

fn spec() -> RunSpec {
    RunSpec {
        model: Mlp::zeros(2, 1, 1, Activation::Relu),
        sampler: Sampler { kind: SamplerKind::Midpoint, steps: STEPS, k: 0.0, form: SdeForm::Marginal },
        reward: format!("gaussian([{},{}], 1)", C[0], C[1]).parse::<Reward>().unwrap(),
        reward_on: RewardOn::X1Hat,
        potential: Potential { kind: PotentialKind::Rt, lambda: LAMBDA, r_min: 0.0, clamp_weights: None },
        resample: ResampleScheme::Multinomial,
        adaptive_ess: None,
        seed: 11,
    }
}

/// `x1 = A·x0 + B_d` of the midpoint sampler on the Gaussian field, in f64.
fn affine_map() -> (f64, [f64; 2]) {
    let f = GaussianOt { mean: MU.to_vec(), std: 1.0 };
    let h = 1.0 / STEPS as f64;
    let run = |x0: f64, d: usize| {
        let mut x = x0;
        for i in 0..STEPS {
            let t = i as f64 * h;
            let v0 = f.velocity_f64(t, x, d);
            x += h * f.velocity_f64(t + 0.5 * h, x + 0.5 * h * v0, d);
        }
        x
    };
    let b = [run(0.0, 0), run(0.0, 1)];
    (run(1.0, 0) - b[0], b)
}

/// Per group: the self-normalised weighted mean and variance of each coordinate; returned as the
/// mean over groups and its standard error (sd over groups / √G).
fn estimate(r: &RunResult, n: usize, groups: usize) -> ([f64; 4], [f64; 4]) {
    let per: Vec<[f64; 4]> = (0..groups)
        .map(|g| {
            let lw = &r.log_weights[g * n..(g + 1) * n];
            let max = lw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = lw.iter().map(|&l| (l - max).exp()).collect();
            let s: f64 = w.iter().sum();
            let x = &r.positions[2 * g * n..2 * (g + 1) * n];
            let mut out = [0.0; 4];
            for d in 0..2 {
                let m: f64 = x.chunks(2).zip(&w).map(|(p, wi)| wi * p[d] as f64).sum::<f64>() / s;
                let v: f64 = x.chunks(2).zip(&w).map(|(p, wi)| wi * (p[d] as f64 - m).powi(2)).sum::<f64>() / s;
                out[d] = m;
                out[2 + d] = v;
            }
            out
        })
        .collect();
    let mut mean = [0.0; 4];
    let mut se = [0.0; 4];
    for k in 0..4 {
        mean[k] = per.iter().map(|e| e[k]).sum::<f64>() / groups as f64;
        let var = per.iter().map(|e| (e[k] - mean[k]).powi(2)).sum::<f64>() / (groups - 1) as f64;
        se[k] = (var / groups as f64).sqrt();
    }
    (mean, se)
}

fn run(tempering: Tempering, n: usize, groups: usize) -> RunResult {
    let mut b = CpuBackend::with_field(Arc::new(GaussianOt { mean: MU.to_vec(), std: 1.0 }));
    let cfg = FkConfig {
        layout: Layout { n, groups },
        schedule: ScheduleSpec::default(),
        keep_ancestors: false,
        fused: false,
        snapshots: false,
        max_intervals: None,
        final_resample: false,
    };
    methods::steer_tempered(&mut b, &spec(), &cfg, tempering, Init::Noise).unwrap()
}

/// Adaptive tempering reaches the closed-form tilted target (each of the four statistics within
/// 5 standard errors of the group means: normal tail 6e-7 each) and keeps more than twice the distinct
/// ancestors than the constant λ = 8, which selects with the full λ at each of its five points.
/// The increments λ_k sum to at most λ, the final point uses λ, and the trace reports them.
#[test]
fn adaptive_tempering_reaches_the_target_with_more_ancestors() {
    let (n, groups) = (1000, 24);
    let (a, bvec) = affine_map();
    let prec = 1.0 / (a * a) + LAMBDA as f64;
    let want = [
        (bvec[0] / (a * a) + LAMBDA as f64 * C[0] as f64) / prec,
        (bvec[1] / (a * a) + LAMBDA as f64 * C[1] as f64) / prec,
        1.0 / prec,
        1.0 / prec,
    ];
    let adaptive = run(Tempering::Adaptive { target_ess: 0.5 }, n, groups);
    let fixed = run(Tempering::Constant, n, groups);
    let (est, se) = estimate(&adaptive, n, groups);
    let (fest, fse) = estimate(&fixed, n, groups);
    for k in 0..4 {
        eprintln!("stat {k}: adaptive {:.4} ± {:.4}, constant {:.4} ± {:.4}, target {:.4}", est[k], se[k], fest[k], fse[k], want[k]);
        assert!((est[k] - want[k]).abs() <= 5.0 * se[k] + 1e-9, "adaptive stat {k}: {} vs target {} (se {})", est[k], want[k], se[k]);
    }
    let mean_distinct = |r: &RunResult| r.distinct_ancestors.iter().sum::<u64>() as f64 / groups as f64;
    let (da, df) = (mean_distinct(&adaptive), mean_distinct(&fixed));
    eprintln!("distinct ancestors per group: adaptive {da:.1}, constant {df:.1}");
    assert!(da >= 2.0 * df, "adaptive tempering keeps {da} distinct ancestors per group, constant λ {df}");
    let lambdas: Vec<f64> = adaptive.trace.iter().filter(|t| t.group == 0).map(|t| t.lambda).collect();
    eprintln!("adaptive λ per point: {lambdas:?}");
    let (last, increments) = lambdas.split_last().unwrap();
    assert_eq!(*last, LAMBDA as f64);
    assert!(increments.iter().all(|&l| l >= 0.0) && increments.iter().sum::<f64>() <= LAMBDA as f64 * (1.0 + 1e-6), "{lambdas:?}");
    assert!(lambdas[0] < LAMBDA as f64, "the first point must temper: {lambdas:?}");
    let final_ess = |r: &RunResult| r.trace.iter().filter(|t| t.lambda == LAMBDA as f64 && t.index + 1 == lambdas.len()).map(|t| t.ess).sum::<f64>() / groups as f64;
    eprintln!("final ESS: adaptive {:.0}, constant {:.0}", final_ess(&adaptive), final_ess(&fixed));
    // Every intermediate point that tempered below λ kept the ESS target (≥ N/2 in every group).
    for t in adaptive.trace.iter().filter(|t| t.lambda > 0.0 && t.index + 1 < lambdas.len()) {
        // (λ_k is rounded to f32 after the bisection: allow a relative 1e-4 below the target.)
        assert!(t.ess >= 0.5 * n as f64 * (1.0 - 1e-4), "{t:?}");
    }
    assert!(methods::trace_csv(&adaptive.trace).lines().next().unwrap().ends_with(",lambda"));
}

/// Fixed schedules keep the target too (the terminal correction divides out whatever λ_k gave).
#[test]
fn linear_and_geometric_schedules_keep_the_target() {
    let (n, groups) = (1000, 24);
    let (a, bvec) = affine_map();
    let prec = 1.0 / (a * a) + LAMBDA as f64;
    for tempering in [Tempering::Linear, Tempering::Geometric] {
        let r = run(tempering, n, groups);
        let (est, se) = estimate(&r, n, groups);
        for d in 0..2 {
            let want = (bvec[d] / (a * a) + LAMBDA as f64 * C[d] as f64) / prec;
            eprintln!("{tempering:?} mean {d}: {:.4} ± {:.4} vs {want:.4}", est[d], se[d]);
            assert!((est[d] - want).abs() <= 5.0 * se[d], "{tempering:?}: mean {d} {} vs {want}", est[d]);
        }
        let lambdas: Vec<f64> = r.trace.iter().filter(|t| t.group == 0).map(|t| t.lambda).collect();
        assert_eq!(*lambdas.last().unwrap(), LAMBDA as f64);
        assert!(lambdas[0] < lambdas[1], "{lambdas:?}");
    }
}
