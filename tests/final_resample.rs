//! The final resampling at t = 1 (docs/outputs.md "Weighted or equally weighted") on the CUDA
//! backend against the CPU backend, in the style of tests/gpu.rs: on the host emulator of the
//! kernels (no GPU) every value must be bitwise the CPU's; on a GPU the mean final reward must
//! agree within 4 standard errors (the tolerances of tests/gpu.rs, whose header derives them).
//!
//! Run on a GPU machine: `cargo test --release --test final_resample -- --nocapture`.

use flowsteer::backend::cpu::CpuBackend;
use flowsteer::backend::cuda::{self, AnyBackend, CudaBackend};
use flowsteer::backend::{Init, Layout, RunSpec};
use flowsteer::methods::{self, FkConfig, ScheduleSpec};
use flowsteer::model::{Activation, Mlp};
use flowsteer::potential::{Potential, PotentialKind};
use flowsteer::resample::ResampleScheme;
use flowsteer::reward::{Reward, RewardOn, Term, DEFAULT_EPS};
use flowsteer::sampler::{Sampler, SamplerKind, SdeForm};

/// The CUDA backend on a GPU, else on the host emulator, else None (skipped, said why).
fn device() -> Option<CudaBackend> {
    match cuda::availability() {
        Err(why) => match CudaBackend::emulated(1 << 30) {
            Ok(b) => {
                println!("no CUDA device ({why}); running on {}", b.device_name);
                Some(b)
            }
            Err(e) => {
                assert!(std::env::var_os("FLOWSTEER_CI").is_none(), "CI must run these tests on the emulator: {e:#}");
                println!("SKIPPED: {why}; and the host emulator is unusable: {e:#}");
                None
            }
        },
        Ok(desc) => {
            println!("device: {desc}");
            Some(CudaBackend::new().expect("a CUDA device is present but the backend failed to start"))
        }
    }
}

fn spec(kind: PotentialKind, scheme: ResampleScheme, adaptive_ess: Option<f32>, seed: u64) -> RunSpec {
    RunSpec {
        model: Mlp::init_uniform(2, 32, 2, Activation::Elu, seed ^ 0x5eed),
        sampler: Sampler { kind: SamplerKind::Sde, steps: 20, k: 0.5, form: SdeForm::Marginal },
        reward: Reward { terms: vec![(1.0, Term::Gaussian { c: vec![1.5, -0.5], sigma: 0.7 })], eps: DEFAULT_EPS },
        reward_on: RewardOn::X1Hat,
        potential: Potential { kind, lambda: 2.0, r_min: -5.0, clamp_weights: None },
        resample: scheme,
        adaptive_ess,
        seed,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn mean_and_se(r: &[f32]) -> (f64, f64) {
    let v: Vec<f64> = r.iter().filter(|x| x.is_finite()).map(|&x| x as f64).collect();
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0).max(1.0);
    (m, (var / v.len() as f64).sqrt())
}

/// FK steering with the final resampling, plain and fused, with and without adaptive
/// resampling (whose threshold must not skip the final draw), for each potential with a terminal
/// correction: the CUDA backend returns what the CPU does, and the result is an equally weighted
/// sample (log-weights 0, the t = 1 row resampled, one ancestry row more).
#[test]
fn final_resampling_matches_cpu() {
    let Some(gpu) = device() else { return };
    let emulated = gpu.is_emulated();
    let mut gpu = AnyBackend::Cuda(gpu);
    let mut cpu = AnyBackend::Cpu(CpuBackend::new());
    let layout = Layout { n: 300, groups: 2 };
    let schedule = ScheduleSpec { t_start: 0.5, t_end: 0.9, count: 2, every: None };
    let cases = [
        (PotentialKind::Rt, ResampleScheme::Multinomial, None, false),
        (PotentialKind::Max, ResampleScheme::Systematic, None, true),
        (PotentialKind::Add, ResampleScheme::Residual, Some(0.5), false),
        (PotentialKind::Is, ResampleScheme::Stratified, None, false),
    ];
    for (seed, (kind, scheme, adaptive, fused)) in cases.into_iter().enumerate() {
        let s = spec(kind, scheme, adaptive, 40 + seed as u64);
        let cfg = FkConfig { layout, schedule, keep_ancestors: true, fused, snapshots: false, max_intervals: None, final_resample: true };
        let rc = methods::steer(&mut cpu, &s, &cfg, Init::Noise).unwrap();
        let rg = methods::steer(&mut gpu, &s, &cfg, Init::Noise).unwrap();
        let ((mc, sc), (mg, sg)) = (mean_and_se(&rc.rewards), mean_and_se(&rg.rewards));
        let last = rc.trace.last().unwrap();
        println!(
            "{kind} {scheme:?} adaptive {adaptive:?} fused {fused}: mean reward CPU {mc:.5} GPU {mg:.5}; final ESS {:.1}, \
             distinct parents {}, distinct ancestors {:?}",
            last.ess, last.distinct_parents, rc.distinct_ancestors
        );
        for r in [&rc, &rg] {
            assert!(r.final_resampled, "{kind}: the final resampling did not run");
            assert!(r.log_weights.iter().all(|&w| w == 0.0), "{kind}: an equally weighted sample has log-weights 0");
            let finals: Vec<_> = r.trace.iter().filter(|t| t.t == 1.0).collect();
            assert_eq!(finals.len(), layout.groups);
            assert!(finals.iter().all(|t| t.resampled && t.distinct_parents >= 1), "{kind}: every group resamples at t = 1, adaptive or not");
            let points = r.schedule.len();
            assert_eq!(r.ancestry.as_ref().unwrap().len(), points, "{kind}: one ancestry row per point (identity where adaptive skipped), the final one included");
            // Distinct ancestors only shrink along the run, and the last row's is the end's.
            for g in 0..layout.groups {
                let rows: Vec<u64> = r.trace.iter().filter(|t| t.group == g).map(|t| t.distinct_ancestors).collect();
                assert!(rows.windows(2).all(|w| w[1] <= w[0]) && *rows.last().unwrap() == r.distinct_ancestors[g], "{kind} group {g}: {rows:?}");
            }
        }
        assert_eq!(rc.nfe, rg.nfe);
        assert!((mc - mg).abs() <= 4.0 * sc.max(sg) + 1e-6, "{kind}: mean rewards differ beyond sampling noise");
        if emulated {
            assert_eq!(bits(&rc.positions), bits(&rg.positions), "{kind}: positions differ from the CPU's");
            assert_eq!(bits(&rc.rewards), bits(&rg.rewards), "{kind}: rewards differ from the CPU's");
            assert_eq!(rc.root_ids, rg.root_ids, "{kind}: root ids differ from the CPU's");
            assert_eq!(rc.ancestry, rg.ancestry, "{kind}: ancestors differ from the CPU's");
            // Reductions in f64 may differ in summation order (tests/gpu.rs); the counts may not.
            let counts = |r: &methods::RunResult| r.trace.iter().map(|t| (t.resampled, t.distinct_parents, t.distinct_ancestors)).collect::<Vec<_>>();
            assert_eq!(counts(&rc), counts(&rg), "{kind}: resampling counts differ from the CPU's");
        }
    }
}
