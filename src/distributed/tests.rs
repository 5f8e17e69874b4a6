//! P-invariance of the distributed algorithm, run on [`ThreadWorld`] (no mpirun needed).

use super::comm::{Communicator, ThreadWorld};
use super::engine::RankEngine;
use super::fk;
use crate::backend::{Init, Layout, RunSpec};
use crate::methods::{FkConfig, RunResult, ScheduleSpec};
use crate::model::{Activation, Mlp};
use crate::potential::{Potential, PotentialKind};
use crate::resample::ResampleScheme;
use crate::reward::{Reward, RewardOn, Term};
use crate::sampler::{Sampler, SamplerKind};

/// A random small MLP (so particles move), an SDE sampler (so noise keyed by the global index
/// matters), reward gaussian([1, 0.5], 0.7) with λ = 3.
pub(crate) fn spec(resample: ResampleScheme, adaptive: Option<f32>) -> RunSpec {
    RunSpec {
        model: Mlp::init_uniform(2, 16, 2, Activation::Elu, 7),
        sampler: Sampler { steps: 12, kind: SamplerKind::Sde, ..Sampler::default() },
        reward: Reward { terms: vec![(1.0, Term::Gaussian { c: vec![1.0, 0.5], sigma: 0.7 })], eps: 1e-3 },
        reward_on: RewardOn::X1Hat,
        potential: Potential { kind: PotentialKind::Max, lambda: 3.0, r_min: -10.0, clamp_weights: None },
        resample,
        adaptive_ess: adaptive,
        seed: 42,
    }
}

fn run(p: usize, spec: &RunSpec, layout: Layout) -> RunResult {
    run_final(p, spec, layout, false)
}

/// [`run`], resampling at t = 1 too when `final_resample`.
fn run_final(p: usize, spec: &RunSpec, layout: Layout, final_resample: bool) -> RunResult {
    let cfg = fk_config(layout, final_resample);
    let mut out = ThreadWorld::run(p, |c| fk::steer(c, spec, &cfg, Init::Noise, &RankEngine::Cpu).unwrap().0);
    out.remove(0).expect("rank 0 holds the result")
}

/// Four resampling points between t = 0.2 and 0.9, ancestry kept.
fn fk_config(layout: Layout, final_resample: bool) -> FkConfig {
    FkConfig {
        layout,
        schedule: ScheduleSpec { t_start: 0.2, t_end: 0.9, count: 4, every: None },
        keep_ancestors: true,
        fused: false,
        snapshots: false,
        max_intervals: None,
        final_resample,
    }
}

fn assert_same(a: &RunResult, b: &RunResult, what: &str) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.positions), bits(&b.positions), "{what}: samples");
    let bits64 = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits64(&a.log_weights), bits64(&b.log_weights), "{what}: log-weights");
    assert_eq!(a.ancestry, b.ancestry, "{what}: ancestry");
    assert_eq!(a.root_ids, b.root_ids, "{what}: root ids");
    for (x, y) in a.trace.iter().zip(&b.trace) {
        assert_eq!((x.ess.to_bits(), x.log_z_increment.to_bits()), (y.ess.to_bits(), y.log_z_increment.to_bits()), "{what}: trace");
        assert_eq!((x.resampled, x.distinct_parents, x.nonfinite), (y.resampled, y.distinct_parents, y.nonfinite), "{what}");
        assert_eq!(x.distinct_ancestors, y.distinct_ancestors, "{what}: distinct ancestors");
    }
}

/// Bit-identical samples, log-weights, ancestry, ESS and log Ẑ for P = 1..4, every scheme that
/// runs across ranks, with groups that span ranks (3 groups of 101 over up to 4 ranks) and
/// with adaptive resampling (so some groups skip).
#[test]
fn the_result_does_not_depend_on_the_number_of_ranks() {
    let layout = Layout { n: 101, groups: 3 };
    for scheme in [ResampleScheme::Multinomial, ResampleScheme::Systematic, ResampleScheme::Stratified] {
        for adaptive in [None, Some(0.6)] {
            let sp = spec(scheme, adaptive);
            let one = run(1, &sp, layout);
            assert!(one.ancestry.as_ref().unwrap().len() >= 3);
            for p in 2..=4 {
                assert_same(&one, &run(p, &sp, layout), &format!("{scheme}, adaptive {adaptive:?}, P = {p}"));
            }
            // The final resampling at t = 1 (every group, adaptive or not) across ranks too.
            let one = run_final(1, &sp, layout, true);
            assert!(one.final_resampled && one.log_weights.iter().all(|&w| w == 0.0));
            assert!(one.trace.iter().filter(|t| t.t == 1.0).all(|t| t.resampled));
            assert_same(&one, &run_final(3, &sp, layout, true), &format!("{scheme}, adaptive {adaptive:?}, final resampling, P = 3"));
        }
    }
}

/// One particle per rank at the extreme: N = P.
#[test]
fn one_particle_per_rank_still_agrees() {
    let sp = spec(ResampleScheme::Multinomial, None);
    let layout = Layout { n: 3, groups: 1 };
    assert_same(&run(1, &sp, layout), &run(3, &sp, layout), "N = P = 3");
}

/// The distributed rule picks the ancestors the single-process reference (crate::resample) picks
/// wherever the two prefix sums do not straddle a point: the fixed-point weights differ from the
/// f64 ones by < 2^-64 relative, so for 2,000 particles a disagreement has probability ~10^-13.
/// Checked on the whole run: the same seed gives the same samples as the CPU backend.
#[test]
fn it_resamples_as_the_single_process_cpu_backend_does() {
    use crate::backend::cpu::CpuBackend;
    let cases = [ResampleScheme::Multinomial, ResampleScheme::Systematic, ResampleScheme::Stratified].into_iter().flat_map(|s| [(s, false), (s, true)]);
    for (scheme, final_resample) in cases {
        let sp = spec(scheme, None);
        let layout = Layout { n: 1000, groups: 2 };
        let cfg = fk_config(layout, final_resample);
        let single = crate::methods::steer(&mut CpuBackend::new(), &sp, &cfg, Init::Noise).unwrap();
        let two = run_final(2, &sp, layout, final_resample);
        assert_eq!(single.root_ids, two.root_ids, "{scheme}, final resampling {final_resample}");
        assert_eq!(single.trace.iter().map(|t| t.distinct_ancestors).collect::<Vec<_>>(), two.trace.iter().map(|t| t.distinct_ancestors).collect::<Vec<_>>());
        assert_eq!(single.ancestry, two.ancestry, "{scheme}");
        assert_eq!(single.positions, two.positions, "{scheme}");
        for (a, b) in single.trace.iter().zip(&two.trace) {
            // The ESS and log Ẑ come from other sums (f64 left to right there, fixed point here).
            assert!((a.ess - b.ess).abs() <= 1e-9 * a.ess, "{scheme}: ESS {} vs {}", a.ess, b.ess);
            assert!((a.log_z_increment - b.log_z_increment).abs() <= 1e-9, "{scheme}");
        }
    }
}

/// A reward that reads t is scored at each resampling step's own time, as the CPU backend
/// scores it (a rank used to score every step at t = 1, so the weights differed).
#[test]
fn a_reward_that_reads_t_is_scored_at_each_steps_time() {
    use crate::backend::cpu::CpuBackend;
    let mut sp = spec(ResampleScheme::Multinomial, None);
    sp.reward = "-(x[0] - 2*t)^2".parse().unwrap();
    let layout = Layout { n: 300, groups: 1 };
    let cfg = fk_config(layout, false);
    let single = crate::methods::steer(&mut CpuBackend::new(), &sp, &cfg, Init::Noise).unwrap();
    let two = run_final(2, &sp, layout, false);
    assert_eq!(single.ancestry, two.ancestry);
    assert_eq!(single.positions, two.positions);
    let (a, b): (Vec<f64>, Vec<f64>) = single.trace.iter().zip(&two.trace).map(|(a, b)| (a.mean_reward, b.mean_reward)).unzip();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "mean rewards per step: {a:?} vs {b:?}");
    }
}

#[test]
fn fewer_particles_than_ranks_and_residual_are_refused_clearly() {
    let sp = spec(ResampleScheme::Multinomial, None);
    let cfg = FkConfig { keep_ancestors: false, ..fk_config(Layout { n: 2, groups: 1 }, false) };
    let errs = ThreadWorld::run(3, |c| fk::steer(c, &sp, &cfg, Init::Noise, &RankEngine::Cpu).err().map(|e| e.to_string()));
    assert!(errs.iter().all(|e| e.as_ref().is_some_and(|e| e.contains("2 particles cannot be shared by 3 MPI ranks"))), "{errs:?}");
    let sp = spec(ResampleScheme::Residual, None);
    let cfg = FkConfig { layout: Layout { n: 8, groups: 1 }, ..cfg };
    let errs = ThreadWorld::run(2, |c| fk::steer(c, &sp, &cfg, Init::Noise, &RankEngine::Cpu).err().map(|e| e.to_string()));
    assert!(errs.iter().all(|e| e.as_ref().is_some_and(|e| e.contains("--resample residual"))), "{errs:?}");
}

/// A configuration that differs on one rank is named in the same error on every rank.
#[test]
fn a_rank_with_other_arguments_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.bin");
    std::fs::write(&model, b"model").unwrap();
    let errs = ThreadWorld::run(3, |c| {
        let args: Vec<String> = vec!["steer".into(), if c.rank() == 2 { "--seed=1".into() } else { "--seed=0".into() }];
        super::driver::check_same_configuration(c, &args, &model).err().map(|e| e.to_string())
    });
    for e in errs {
        assert!(e.as_ref().is_some_and(|e| e.contains("MPI rank(s) 2 run a different command line")), "{e:?}");
    }
}

/// A rank's local failure becomes the same error, naming it, on every rank.
#[test]
fn a_failing_rank_is_named_on_every_rank() {
    let errs = ThreadWorld::run(3, |c| {
        let local = if c.rank() == 1 { Err(anyhow::anyhow!("model file missing")) } else { Ok(()) };
        super::driver::agree(c, local).err().map(|e| e.to_string())
    });
    assert!(errs.iter().all(|e| e.as_deref() == Some("MPI rank 1: model file missing")), "{errs:?}");
}
