//! Reward expressions on the CUDA backend against the CPU backend, operator by operator
//! (docs/writing-a-reward.md). On the host emulator (no GPU, kernels/emulator.hpp) both sides
//! run the same IEEE f32 operations in the same order with glibc's expf/logf/powf/sinf/cosf/
//! tanhf, so every reward must be bitwise equal (NaN = NaN). On a GPU the device libm differs by
//! at most 2 ulp per call and an expression chains at most ~12 of them into a sum of terms of
//! size ≤ 50: we allow 1e-5·(1 + |r|).

use flowsteer::backend::cpu::CpuBackend;
use flowsteer::backend::cuda::{self, CudaBackend};
use flowsteer::backend::{Backend, Init, Layout, RunSpec, ScoreOn, WeighAt};
use flowsteer::model::{Activation, Mlp};
use flowsteer::potential::{Potential, PotentialKind};
use flowsteer::resample::ResampleScheme;
use flowsteer::reward::{Reward, RewardOn};
use flowsteer::sampler::{Sampler, SamplerKind, SdeForm};
use rand::{Rng, SeedableRng};

/// Every operator and function of the grammar appears in one of these.
const EXPRESSIONS: [&str; 3] = [
    // arithmetic, powers, comparisons, where, t, division by zero (x[1] = 0 below)
    "where(x[0] > t, x[0] / x[1], x[1] ^ 2) + (x[0] >= 0) - (x[1] < 0.5) * (x[0] <= x[1]) + (x[0] == x[1]) - (x[0] != 0.25) + -x[0] ** 3",
    // the functions
    "abs(x[0]) + sqrt(x[1]) + exp(-x[0]) + log(x[1]) + min(x[0], x[1], 0.5) + max(x) + clamp(x[0], -1, 1) + sin(x[1]) + cos(x[0]) + tanh(x[1])",
    // vectors, norm, dot and the built-in shapes inside an expression
    "-norm(x - [2, 0.5]) + 0.5*obstacle([1,0], 0.4, 0.5, 1.0) + dot(x, [1, -2]) * t + point([1,1]) - line(0, 0.5) + gaussian([0,1], 0.7) + min(2 * x - 1)",
];

fn device() -> Option<CudaBackend> {
    match cuda::availability() {
        Err(why) => match CudaBackend::emulated(1 << 30) {
            Ok(b) => Some(b),
            Err(e) => {
                assert!(std::env::var_os("FLOWSTEER_CI").is_none(), "CI must run these tests on the emulator: {e:#}");
                println!("SKIPPED: {why}; and the host emulator is unusable: {e:#}");
                None
            }
        },
        Ok(_) => Some(CudaBackend::new().expect("a CUDA device is present but the backend failed to start")),
    }
}

fn spec(reward: &str) -> RunSpec {
    let reward: Reward = reward.parse().unwrap();
    reward.checks_dim(2).unwrap();
    RunSpec {
        model: Mlp::init_uniform(2, 16, 2, Activation::Elu, 4),
        sampler: Sampler { kind: SamplerKind::Euler, steps: 8, k: 0.0, form: SdeForm::Marginal },
        reward,
        reward_on: RewardOn::X1Hat,
        potential: Potential { kind: PotentialKind::Rt, lambda: 0.5, r_min: 0.0, clamp_weights: None },
        resample: ResampleScheme::Multinomial,
        adaptive_ess: None,
        seed: 9,
    }
}

fn agree<T: Copy + Into<f64>>(gpu: &CudaBackend, a: &[T], b: &[T]) -> bool {
    a.iter().zip(b).all(|(&x, &y)| {
        let (x, y): (f64, f64) = (x.into(), y.into());
        x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()) || (!gpu.is_emulated() && (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
    })
}

#[test]
fn every_operator_matches_the_cpu() {
    let Some(mut gpu) = device() else { return };
    let mut cpu = CpuBackend::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let layout = Layout { n: 67, groups: 2 };
    let mut pts: Vec<f32> = (0..layout.total() * 2).map(|_| rng.random_range(-2.5f32..2.5)).collect();
    // Edge cases: x[1] = 0 (division by zero, log 0), x[0] = x[1], x[0] = 0.25 exactly.
    pts[1] = 0.0;
    pts[3] = pts[2];
    pts[4] = 0.25;
    for e in EXPRESSIONS {
        let s = spec(e);
        let mut pc = cpu.init(&s, layout, Init::Given(&pts)).unwrap();
        let mut pg = gpu.init(&s, layout, Init::Given(&pts)).unwrap();
        for on in [ScoreOn::Sample, ScoreOn::Intermediate { step: 3 }] {
            let (a, b) = (cpu.score(&s, &mut pc, on).unwrap(), gpu.score(&s, &mut pg, on).unwrap());
            assert!(a.iter().any(|v| v.is_finite()));
            assert!(agree(&gpu, &b, &a), "{e} {on:?}: device {b:?}\ncpu {a:?}");
        }
        // Weighing reads t from the interval parameters: the same log-weights and NaN counts.
        let at = WeighAt { step: 3, index: 0, is_final: false };
        let (wc, wg) = (cpu.weigh(&s, &mut pc, at).unwrap(), gpu.weigh(&s, &mut pg, at).unwrap());
        assert_eq!(wc.iter().map(|w| w.nonfinite).collect::<Vec<_>>(), wg.iter().map(|w| w.nonfinite).collect::<Vec<_>>(), "{e}");
        let (lc, lg) = (cpu.read_log_weights(&pc).unwrap(), gpu.read_log_weights(&pg).unwrap());
        assert!(agree(&gpu, &lg, &lc), "{e}: log-weights differ");
        println!("{e}: equal on {} particles", layout.total());
    }
}
