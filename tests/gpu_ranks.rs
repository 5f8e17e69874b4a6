//! The CUDA rank path (docs/distributed.md, "One GPU per rank"): ranks that integrate and score
//! their shares on the CUDA backend give the single-process CUDA run's result, whatever P.
//! Ranks run as threads ([`ThreadWorld`]); each opens its own backend, as each MPI process does.
//!
//! On the host emulator (no GPU here) every comparison is bitwise. On a GPU the runs start from
//! the same host rows (`Init::Given`), so the SDE noise (drawn on the device in both runs, keyed
//! by the global index) and the model evaluations are the same kernel's; the weighing of a
//! rank runs on the host in f64 where the single process runs it on the device (both IEEE, no
//! contraction: `--fmad=false`), so equality is expected there too. Zeroth-order search draws
//! its candidates on the host across ranks and on the device in one process (CUDA's logf and
//! sincosf differ from glibc's by ≤ 2 ulp), and search over paths renoises on the host across ranks
//! and on the device in one process, so on a GPU their positions are compared within the
//! trajectory tolerance of tests/gpu.rs (1e-4·(1 + |x|)) instead.

use flowsteer::backend::cuda::{self, CudaBackend};
use flowsteer::backend::{Backend, BackendChoice, Init, Layout, RunSpec};
use flowsteer::distributed::comm::{Communicator, ThreadWorld};
use flowsteer::distributed::engine::RankEngine;
use flowsteer::distributed::{fk, paths, search};
use flowsteer::methods::{self, BonConfig, FkConfig, PathsConfig, RunResult, ScheduleSpec, ZerothConfig};
use flowsteer::model::{Activation, Mlp};
use flowsteer::potential::{Potential, PotentialKind};
use flowsteer::resample::ResampleScheme;
use flowsteer::reward::{Reward, RewardOn, Term};
use flowsteer::sampler::{RenoiseForm, Sampler, SamplerKind};
use rand::{Rng, SeedableRng};

/// The backend every rank and the single process run: the GPU, or its host emulator.
fn choice() -> Option<BackendChoice> {
    if cuda::availability().is_ok() {
        return Some(BackendChoice::Cuda);
    }
    match CudaBackend::emulated(1 << 30) {
        Ok(_) => Some(BackendChoice::CudaEmulated),
        Err(e) => {
            assert!(std::env::var_os("FLOWSTEER_CI").is_none(), "CI must run these tests on the emulator: {e:#}");
            println!("SKIPPED: no CUDA device and the host emulator is unusable: {e:#}");
            None
        }
    }
}

fn single(choice: BackendChoice) -> CudaBackend {
    match choice {
        BackendChoice::Cuda => CudaBackend::new().unwrap(),
        _ => CudaBackend::emulated(1 << 30).unwrap(),
    }
}

/// A random MLP, the SDE (so the noise's global keys matter), a smooth reward, λ = 2.
fn spec(sampler: SamplerKind) -> RunSpec {
    RunSpec {
        model: Mlp::init_uniform(2, 16, 2, Activation::Elu, 11),
        sampler: Sampler { steps: 10, kind: sampler, ..Sampler::default() },
        reward: Reward { terms: vec![(1.0, Term::Gaussian { c: vec![1.0, 0.5], sigma: 0.7 })], eps: 1e-3 },
        reward_on: RewardOn::X1Hat,
        potential: Potential { kind: PotentialKind::Max, lambda: 2.0, r_min: -10.0, clamp_weights: None },
        resample: ResampleScheme::Multinomial,
        adaptive_ess: None,
        seed: 5,
    }
}

fn rows(total: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..total * 2).map(|_| rng.random_range(-2.5f32..2.5)).collect()
}

fn bits32(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same_samples(a: &RunResult, b: &RunResult, exact: bool, what: &str) {
    if exact {
        assert_eq!(bits32(&a.positions), bits32(&b.positions), "{what}: samples");
        assert_eq!(bits32(&a.rewards), bits32(&b.rewards), "{what}: rewards");
    } else {
        for (x, y) in a.positions.iter().zip(&b.positions) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + x.abs()), "{what}: samples {x} vs {y}");
        }
    }
}

#[test]
fn steering_on_cuda_ranks_equals_the_single_process_cuda_run_for_every_p() {
    let Some(choice) = choice() else { return };
    let sp = spec(SamplerKind::Sde);
    let layout = Layout { n: 150, groups: 2 };
    let cfg = FkConfig {
        layout,
        schedule: ScheduleSpec { t_start: 0.2, t_end: 0.9, count: 3, every: None },
        keep_ancestors: true,
        fused: false,
        snapshots: false,
        max_intervals: None,
        final_resample: false,
    };
    let start = rows(layout.total(), 1);
    let one = methods::steer(&mut single(choice), &sp, &cfg, Init::Given(&start)).unwrap();
    assert!(one.ancestry.as_ref().unwrap().len() >= 3);
    for p in 1..=3 {
        let mut out = ThreadWorld::run(p, |c| {
            let engine = RankEngine::open(choice, c).unwrap();
            assert!(matches!(engine, RankEngine::Cuda(_)), "rank {} must run the CUDA backend", c.rank());
            fk::steer(c, &sp, &cfg, Init::Given(&start), &engine).unwrap().0
        });
        let ranks = out.remove(0).expect("rank 0 holds the result");
        let what = format!("P = {p}");
        assert_same_samples(&one, &ranks, true, &what);
        assert_eq!(one.ancestry, ranks.ancestry, "{what}: ancestry");
        assert_eq!(one.root_ids, ranks.root_ids, "{what}: root ids");
        let bits64 = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits64(&one.log_weights), bits64(&ranks.log_weights), "{what}: log-weights");
        for (a, b) in one.trace.iter().zip(&ranks.trace) {
            // The ESS and log Ẑ come from other sums (f64 on the device, fixed point across ranks).
            assert!((a.ess - b.ess).abs() <= 1e-9 * a.ess, "{what}: ESS {} vs {}", a.ess, b.ess);
            assert!((a.log_z_increment - b.log_z_increment).abs() <= 1e-9, "{what}: log Ẑ increment");
        }
    }
}

/// A rank's share integrates with the noise of its global indices: a share of the second half
/// run alone equals the second half of the whole population, and the group operations, which
/// a share's cut groups would get wrong, are refused.
#[test]
fn a_share_is_integrated_as_its_part_of_the_whole_population_and_refuses_group_operations() {
    let Some(choice) = choice() else { return };
    let sp = spec(SamplerKind::Sde);
    let start = rows(64, 2);
    let mut b = single(choice);
    let mut whole = b.init(&sp, Layout { n: 64, groups: 1 }, Init::Given(&start)).unwrap();
    b.propagate(&sp, &mut whole, 0..10).unwrap();
    let whole = b.read_positions(&whole).unwrap();
    let mut share = b.init_share(&sp, &start[40 * 2..], 40).unwrap();
    b.propagate(&sp, &mut share, 0..10).unwrap();
    assert_eq!(bits32(&b.read_positions(&share).unwrap()), bits32(&whole[40 * 2..]), "the share's noise must be keyed by global index");
    let at = flowsteer::backend::WeighAt { step: 10, index: 0, is_final: true };
    let err = b.weigh(&sp, &mut share, at).unwrap_err().to_string();
    assert!(err.contains("MPI rank's share"), "{err}");
    assert!(b.resample(&sp, &mut share, 10, false).is_err());
}

#[test]
fn search_on_cuda_ranks_equals_the_single_process_cuda_search() {
    let Some(choice) = choice() else { return };
    let exact = choice == BackendChoice::CudaEmulated;
    let sp = spec(SamplerKind::Midpoint);
    // Best-of-N: 3 groups of 90 spanning ranks, top 4 per group.
    let layout = Layout { n: 90, groups: 3 };
    let start = rows(layout.total(), 3);
    let one = methods::best_of_n(&mut single(choice), &sp, &BonConfig { layout, top_k: 4 }, Init::Given(&start)).unwrap();
    // Zeroth-order search: 2 groups, 40 candidates per cycle, 3 cycles.
    let z = ZerothConfig { layout: Layout { n: 40, groups: 2 }, cycles: 3, radius: 0.5, pivot: None };
    let one_z = methods::zeroth_order(&mut single(choice), &sp, &z).unwrap();
    // Search over paths: 2 groups of a beam of 20, 3 copies per state, on the SDE.
    let sde = spec(SamplerKind::Sde);
    let beam = Layout { n: 20, groups: 2 };
    let paths_cfg = PathsConfig { layout: beam, candidates: 3, t_start: 0.2, delta_f: 0.2, delta_b: 0.3, renoise: RenoiseForm::Exact, top_k: 2 };
    let beam_start = rows(beam.total(), 4);
    let one_p = methods::search_over_paths(&mut single(choice), &sde, &paths_cfg, Init::Given(&beam_start)).unwrap();
    for p in 1..=3 {
        let mut out = ThreadWorld::run(p, |c| {
            let engine = RankEngine::open(choice, c).unwrap();
            let bon = search::best_of_n(c, &sp, layout, 4, Init::Given(&start), &engine).unwrap().0;
            let zeroth = search::zeroth_order(c, &sp, &z, &engine).unwrap().0;
            let paths = paths::search_over_paths(c, &sde, &paths_cfg, Init::Given(&beam_start), &engine).unwrap().0;
            (bon, zeroth, paths)
        });
        let (bon, zeroth, paths) = out.remove(0);
        assert_same_samples(&one, &bon.unwrap(), true, &format!("best-of-N, P = {p}"));
        assert_same_samples(&one_z, &zeroth.unwrap(), exact, &format!("zeroth-order, P = {p}"));
        assert_same_samples(&one_p, &paths.unwrap(), exact, &format!("search over paths, P = {p}"));
    }
}
