//! The search baselines (docs/search.md).

use std::sync::Arc;

use flowsteer::backend::cpu::field::GaussianOt;
use flowsteer::backend::cpu::CpuBackend;
use flowsteer::backend::{Backend, Init, Layout, RunSpec, ScoreOn};
use flowsteer::methods::{self, BonConfig, PathsConfig, ZerothConfig};
use flowsteer::model::{Activation, Mlp};
use flowsteer::potential::{Potential, PotentialKind};
use flowsteer::resample::ResampleScheme;
use flowsteer::reward::RewardOn;
use flowsteer::sampler::{RenoiseForm, Sampler, SamplerKind, SdeForm};

const MU: [f64; 2] = [0.5, -0.3];
const S: f64 = 0.8;

fn spec(model: Mlp, steps: usize, reward: &str) -> RunSpec {
    RunSpec {
        model,
        sampler: Sampler { kind: SamplerKind::Midpoint, steps, k: 0.0, form: SdeForm::Marginal },
        reward: reward.parse().unwrap(),
        reward_on: RewardOn::X1Hat,
        potential: Potential { kind: PotentialKind::Bon, ..Potential::default() },
        resample: ResampleScheme::Multinomial,
        adaptive_ess: None,
        seed: 17,
    }
}

fn paths(layout: Layout, renoise: RenoiseForm) -> PathsConfig {
    PathsConfig { layout, candidates: 2, t_start: 0.3, delta_f: 0.1, delta_b: 0.2, renoise, top_k: layout.n }
}

/// Per group, the mean of x_d and of (x_d − μ_d)² over its final particles.
fn group_moments(pos: &[f32], layout: Layout) -> Vec<[f64; 4]> {
    pos.chunks(2 * layout.n)
        .map(|g| {
            let mut m = [0f64; 4];
            for p in g.chunks(2) {
                for d in 0..2 {
                    m[d] += p[d] as f64;
                    m[2 + d] += (p[d] as f64 - MU[d]).powi(2);
                }
            }
            m.map(|v| v / layout.n as f64)
        })
        .collect()
}

/// With a constant reward the search only renoises and integrates, so with the exact
/// renoising (docs/samplers.md) every kept particle is still distributed as the model's samples,
/// N(μ, s²I) for the Gaussian OT field (midpoint error O(h²) ≈ 1e-4 at h = 0.02, far below the
/// tolerance). Ties keep the lowest indices, so the particles of a group share ancestors; the
/// G = 400 groups are independent, so the standard error of the grand mean of a per-group
/// statistic is its sd over groups / sqrt(G), and each check allows 5 of them (4 checks,
/// false alarm < 3e-6). The legacy renoising x + (t−s)·ξ keeps the mean tμ of x_t where the
/// path has sμ, and is shown to miss μ by far more than 5 standard errors (measured 0.87 against
/// 0.5), so the check has power.
#[test]
fn exact_renoising_keeps_the_model_marginal_under_a_constant_reward() {
    let layout = Layout { n: 16, groups: 400 };
    let field = Arc::new(GaussianOt { mean: MU.to_vec(), std: S });
    let sp = spec(Mlp::zeros(2, 1, 1, Activation::Relu), 50, "0*point([0,0])");
    let stats = |form: RenoiseForm| {
        let r = methods::search_over_paths(&mut CpuBackend::with_field(field.clone()), &sp, &paths(layout, form), Init::Noise).unwrap();
        // Grid: start 15, back 5, forward 10: rounds end at 20, 25, ..., 45 (the next, 50, is t = 1).
        assert_eq!(r.schedule, vec![20, 25, 30, 35, 40, 45]);
        let g = group_moments(&r.positions, r.layout);
        let mut out = [(0f64, 0f64); 4];
        for (k, o) in out.iter_mut().enumerate() {
            let mean = g.iter().map(|m| m[k]).sum::<f64>() / g.len() as f64;
            let var = g.iter().map(|m| (m[k] - mean).powi(2)).sum::<f64>() / (g.len() - 1) as f64;
            *o = (mean, (var / g.len() as f64).sqrt());
        }
        out
    };
    let want = [MU[0], MU[1], S * S, S * S];
    let exact = stats(RenoiseForm::Exact);
    for k in 0..4 {
        let (m, se) = exact[k];
        eprintln!("exact: statistic {k}: {m} vs {} (se {se})", want[k]);
        assert!((m - want[k]).abs() <= 5.0 * se, "statistic {k}: {m} vs {} (se {se})", want[k]);
    }
    let legacy = stats(RenoiseForm::Legacy);
    let (m, se) = legacy[0];
    eprintln!("legacy: mean {m} vs {} (se {se})", want[0]);
    assert!((m - want[0]).abs() > 5.0 * se, "legacy renoising should not keep the mean: {m} vs {}", want[0]);
}

#[test]
fn best_of_n_keeps_the_best_and_counts_its_evaluations() {
    let model = Mlp::init_uniform(2, 16, 2, Activation::Elu, 2);
    let sp = spec(model, 8, "point([1,0.5])");
    let layout = Layout { n: 300, groups: 2 };
    let mut b = CpuBackend::new();
    let r = methods::best_of_n(&mut b, &sp, &BonConfig { layout, top_k: 3 }, Init::Noise).unwrap();
    // The same samples scored directly.
    let mut p = b.init(&sp, layout, Init::Noise).unwrap();
    b.propagate(&sp, &mut p, 0..8).unwrap();
    let all = b.score(&sp, &mut p, ScoreOn::Sample).unwrap();
    for g in 0..2 {
        let mut s: Vec<f32> = all[g * 300..(g + 1) * 300].to_vec();
        s.sort_by(|a, b| b.partial_cmp(a).unwrap());
        assert_eq!(&r.rewards[g * 3..(g + 1) * 3], &s[..3]);
    }
    assert_eq!(r.layout, Layout { n: 3, groups: 2 });
    assert_eq!(r.nfe, 600 * 8 * 2);
}

#[test]
fn zeroth_order_search_never_gets_worse_and_counts_its_evaluations() {
    let model = Mlp::init_uniform(2, 16, 2, Activation::Elu, 3);
    let sp = spec(model, 6, "gaussian([1,-1], 0.5)");
    let cfg = ZerothConfig { layout: Layout { n: 12, groups: 3 }, cycles: 5, radius: 0.7, pivot: None };
    let r = methods::zeroth_order(&mut CpuBackend::new(), &sp, &cfg).unwrap();
    for g in 0..3 {
        let best: Vec<f64> = r.trace.iter().filter(|t| t.group == g).map(|t| t.best_reward).collect();
        assert_eq!(best.len(), 5);
        assert!(best.windows(2).all(|w| w[1] >= w[0]), "group {g}: {best:?}");
        assert_eq!(r.rewards[g] as f64, best[4]);
    }
    assert_eq!(r.nfe, 5 * 12 * 3 * 6 * 2);
    assert_eq!(r.layout, Layout { n: 1, groups: 3 });
    let bad = ZerothConfig { pivot: Some(vec![0.0; 5]), ..cfg };
    assert!(methods::zeroth_order(&mut CpuBackend::new(), &sp, &bad).unwrap_err().to_string().contains("pivot"));
}

#[test]
fn search_over_paths_counts_its_evaluations() {
    let model = Mlp::init_uniform(2, 8, 1, Activation::Tanh, 4);
    let sp = spec(model, 20, "line(0, 1)");
    let layout = Layout { n: 5, groups: 2 };
    let cfg = PathsConfig { candidates: 3, t_start: 0.5, delta_f: 0.1, delta_b: 0.25, top_k: 2, ..paths(layout, RenoiseForm::Exact) };
    // Grid: start 10, back 2, forward 5; rounds end at 13, 16, 19; then 19 → 20.
    let r = methods::search_over_paths(&mut CpuBackend::new(), &sp, &cfg, Init::Noise).unwrap();
    assert_eq!(r.schedule, vec![13, 16, 19]);
    let (n, wide, e) = (10u64, 30u64, 2u64);
    let want = n * 10 * e + 3 * (wide * 5 * e + wide) + n * e;
    assert_eq!(r.nfe, want);
    assert_eq!(r.layout, Layout { n: 2, groups: 2 });
    assert!(r.rewards[0] >= r.rewards[1]);
}

#[test]
fn search_over_paths_rejects_bad_spans() {
    let base = paths(Layout { n: 4, groups: 1 }, RenoiseForm::Exact);
    let bad = [
        (PathsConfig { delta_b: 0.1, ..base.clone() }, "must exceed --delta-f"),
        (PathsConfig { delta_b: 0.05, ..base.clone() }, "must exceed --delta-f"),
        (PathsConfig { delta_f: 0.01, ..base.clone() }, "Δf > h"),
        (PathsConfig { t_start: 0.05, ..base.clone() }, "--t-start"),
        (PathsConfig { delta_f: f64::NAN, ..base.clone() }, "finite"),
        // 0.9 − 0.1 + 0.2 = 1.0: the first round would end at t = 1, so no round would run.
        (PathsConfig { t_start: 0.9, ..base.clone() }, "no search round fits: the first would end at t = 1 ≥ 1"),
        (PathsConfig { t_start: 0.5, delta_b: 0.7, ..base.clone() }, "e.g. --t-start 0.39"),
    ];
    for (cfg, want) in bad {
        let e = cfg.grid(100).unwrap_err();
        assert!(e.contains(want), "{e}");
    }
    assert!(base.grid(100).is_ok());
    // One round still fits just below the limit.
    assert!(PathsConfig { t_start: 0.89, ..base.clone() }.grid(100).is_ok());
}
