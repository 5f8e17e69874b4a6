//! Every variant of the propagate kernel (kernels/propagate.cu: particles per thread × threads
//! per block, chosen with FLOWSTEER_PROPAGATE) against the CPU backend, on the host emulator (or
//! a GPU where there is one). On the emulator the comparison is bitwise: each variant runs, per
//! particle, the CPU's operations in the CPU's order (see tests/gpu.rs for why that makes the
//! results identical), so a variant that reorders one sum or mixes two particles' activations
//! fails here. On a GPU Box–Muller differs by a few ulp: tests/gpu.rs's tolerance applies.
//!
//! Sizes: 1, a block's worth ± 1 for the 2 × 128 variant (255, 257: threads whose second particle
//! is past the end), and 1,300 (6 blocks of 2 × 128 or 256 with the emulator's 2 resident blocks:
//! the persistent grid-stride loop runs three times per block).
//!
//! Its own test binary because the variant is chosen through the environment.

use flowsteer::backend::cpu::CpuBackend;
use flowsteer::backend::cuda::modules::{PropagateVariant, PROPAGATE_VARIANT_ENV};
use flowsteer::backend::cuda::{self, CudaBackend};
use flowsteer::backend::{Backend, Init, Layout, RunSpec};
use flowsteer::model::{Activation, Mlp};
use flowsteer::potential::{Potential, PotentialKind};
use flowsteer::resample::ResampleScheme;
use flowsteer::reward::{Reward, RewardOn, Term, DEFAULT_EPS};
use flowsteer::sampler::{Sampler, SamplerKind, SdeForm};

const TRAJ_TOL: f32 = 1e-4; // tests/gpu.rs derives it (Box–Muller ulps through 20 steps)

fn spec(kind: SamplerKind, hidden: usize, seed: u64) -> RunSpec {
    RunSpec {
        model: Mlp::init_uniform(2, hidden, 3, Activation::Elu, seed ^ 0x5eed),
        sampler: Sampler { kind, steps: 12, k: 0.5, form: SdeForm::Marginal },
        reward: Reward { terms: vec![(1.0, Term::Point { c: vec![0.5, 0.5] })], eps: DEFAULT_EPS },
        reward_on: RewardOn::X1Hat,
        potential: Potential { kind: PotentialKind::Max, lambda: 1.0, r_min: -5.0, clamp_weights: None },
        resample: ResampleScheme::Multinomial,
        adaptive_ess: None,
        seed,
    }
}

fn backend(variant: PropagateVariant) -> Option<CudaBackend> {
    std::env::set_var(PROPAGATE_VARIANT_ENV, variant.name());
    match cuda::availability() {
        Ok(_) => Some(CudaBackend::new().expect("a CUDA device is present but the backend failed to start")),
        Err(why) => match CudaBackend::emulated(1 << 30) {
            Ok(b) => Some(b),
            Err(e) => {
                assert!(std::env::var_os("FLOWSTEER_CI").is_none(), "CI must run these tests on the emulator: {e:#}");
                println!("SKIPPED propagate variants: {why}; and the host emulator is unusable: {e:#}");
                None
            }
        },
    }
}

#[test]
fn every_propagate_variant_matches_the_cpu() {
    let mut cpu = CpuBackend::new();
    for variant in PropagateVariant::ALL {
        let Some(mut gpu) = backend(variant) else { return };
        let tol = if gpu.is_emulated() { 0.0 } else { TRAJ_TOL };
        // H = 64 (float4 rows) and H = 30 (kernels/mlp.cuh's scalar path).
        for (kind, hidden, seed, sizes) in
            [(SamplerKind::Midpoint, 64, 11, &[1, 255, 257, 1300][..]), (SamplerKind::Sde, 64, 12, &[1, 255, 257, 1300]), (SamplerKind::Sde, 30, 13, &[257, 1300])]
        {
            let s = spec(kind, hidden, seed);
            for &n in sizes {
                let layout = Layout { n, groups: 1 };
                let mut pc = cpu.init(&s, layout, Init::Noise).unwrap();
                let mut pg = gpu.init(&s, layout, Init::Noise).unwrap();
                let x0 = cpu.read_positions(&pc).unwrap();
                cpu.propagate(&s, &mut pc, 0..12).unwrap();
                gpu.propagate(&s, &mut pg, 0..12).unwrap();
                let (xc, xg) = (cpu.read_positions(&pc).unwrap(), gpu.read_positions(&pg).unwrap());
                assert!(xc.iter().zip(&x0).any(|(a, b)| a != b), "the CPU trajectory did not move: the comparison would mean nothing");
                let worst = xc
                    .iter()
                    .zip(&xg)
                    .enumerate()
                    .find(|(_, (c, g))| c.to_bits() != g.to_bits() && (*c - *g).abs() > tol * (1.0 + c.abs()));
                println!("propagate variant {} {kind:?} H={hidden} n={n}: {}", variant.name(), if worst.is_none() { "equal" } else { "DIFFERS" });
                if let Some((i, (c, g))) = worst {
                    panic!("variant {} {kind:?} n = {n}: coordinate {i} is {g} on the CUDA backend, {c} on the CPU", variant.name());
                }
            }
        }
    }
    std::env::remove_var(PROPAGATE_VARIANT_ENV);
}

#[test]
fn a_malformed_variant_is_refused_with_the_fix() {
    let e = PropagateVariant::parse("3y100").unwrap_err();
    assert!(e.contains(PROPAGATE_VARIANT_ENV) && e.contains("2x128"), "{e}");
    assert!(PropagateVariant::parse("2x100").is_err(), "a block must be whole warps");
    assert_eq!(PropagateVariant::parse("2x128"), Ok(PropagateVariant::TWO));
    let wide = flowsteer::model::MlpShape { dim: 2, hidden: 128, hidden_layers: 2, activation: Activation::Elu };
    assert!(!PropagateVariant::TWO.supports(&wide) && PropagateVariant::ONE.supports(&wide));
}
