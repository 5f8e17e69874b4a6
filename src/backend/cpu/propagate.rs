//! The CPU hot loop: the MLP evaluated for a block of particles at a time, fused into the
//! integrator step (SPEC §1–2).
//!
//! Particles are stored as structure of arrays (`x[d·total + i]`). A block of [`BLOCK`] particles
//! is copied into a small scratch that stays in L1, runs every step of the interval, and is
//! written back; each layer is a `[out × in] · [in × BLOCK]` product whose inner loop runs over
//! the block, which the compiler vectorises. Blocks are independent, so rayon spreads them over
//! all cores, and since every random number is addressed by (particle, step) (SPEC §3) the
//! result does not depend on the number of threads.

use rayon::prelude::*;

use crate::model::Mlp;
use crate::rng::{Philox, Purpose};
use crate::sampler::{self, Sampler, SamplerKind};

/// Particles per block: a multiple of the vector width, small enough that a block's
/// activations (`H × BLOCK` floats, two buffers) stay in L1.
pub const BLOCK: usize = 32;

/// Scratch for one block: two activation buffers of `max_width × BLOCK` floats.
pub struct BlockScratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl BlockScratch {
    pub fn new(model: &Mlp) -> Self {
        let width = model.layers.iter().map(|l| l.inputs.max(l.outputs)).max().unwrap();
        Self { a: vec![0.0; width * BLOCK], b: vec![0.0; width * BLOCK] }
    }
}

/// `v(t, x)` for `len ≤ BLOCK` particles: `x[d][j]` is coordinate `d` of particle `j`
/// (`x` is `dim × BLOCK`), and the result goes to `out` (`dim × BLOCK`).
pub fn velocity_block(model: &Mlp, t: f32, x: &[f32], out: &mut [f32], scratch: &mut BlockScratch) {
    let dim = model.dim;
    let (mut cur, mut next) = (&mut scratch.a, &mut scratch.b);
    cur[..BLOCK].fill(t);
    cur[BLOCK..(dim + 1) * BLOCK].copy_from_slice(&x[..dim * BLOCK]);
    let last = model.layers.len() - 1;
    for (li, layer) in model.layers.iter().enumerate() {
        let target: &mut [f32] = if li == last { &mut out[..layer.outputs * BLOCK] } else { &mut next[..layer.outputs * BLOCK] };
        for o in 0..layer.outputs {
            let row = &layer.weight[o * layer.inputs..(o + 1) * layer.inputs];
            let mut acc = [layer.bias[o]; BLOCK];
            for (i, &w) in row.iter().enumerate() {
                let input: &[f32; BLOCK] = cur[i * BLOCK..(i + 1) * BLOCK].try_into().unwrap();
                for j in 0..BLOCK {
                    acc[j] = w.mul_add(input[j], acc[j]);
                }
            }
            let dst = &mut target[o * BLOCK..(o + 1) * BLOCK];
            if li == last {
                dst.copy_from_slice(&acc);
            } else {
                let act = model.activation;
                for j in 0..BLOCK {
                    dst[j] = act.apply(acc[j]);
                }
            }
        }
        if li != last {
            std::mem::swap(&mut cur, &mut next);
        }
    }
}

/// Per-block buffers for one integrator step.
struct StepScratch {
    x: Vec<f32>,
    v0: Vec<f32>,
    probe: Vec<f32>,
    vm: Vec<f32>,
    mlp: BlockScratch,
}

/// Integrates grid steps `steps` for every particle of `x` (SoA, `dim × total`).
/// `first_index` is the global index of particle 0 of `x` (its random-number counter).
pub fn propagate(model: &Mlp, sampler: &Sampler, seed: u64, x: &mut [f32], total: usize, first_index: u64, steps: std::ops::Range<usize>) {
    let dim = model.dim;
    assert_eq!(x.len(), dim * total);
    let rng = Philox::new(seed);
    let blocks = total.div_ceil(BLOCK);
    // Each block gathers its coordinates from the SoA rows, integrates, and scatters back.
    let results: Vec<(usize, Vec<f32>)> = (0..blocks)
        .into_par_iter()
        .map_init(
            || StepScratch {
                x: vec![0.0; dim * BLOCK],
                v0: vec![0.0; dim * BLOCK],
                probe: vec![0.0; dim * BLOCK],
                vm: vec![0.0; dim * BLOCK],
                mlp: BlockScratch::new(model),
            },
            |s, b| {
                let start = b * BLOCK;
                let len = BLOCK.min(total - start);
                for d in 0..dim {
                    s.x[d * BLOCK..d * BLOCK + len].copy_from_slice(&x[d * total + start..d * total + start + len]);
                    s.x[d * BLOCK + len..(d + 1) * BLOCK].fill(0.0);
                }
                for step in steps.clone() {
                    integrate_step(model, sampler, &rng, s, step, first_index + start as u64, len);
                }
                (b, s.x.clone())
            },
        )
        .collect();
    for (b, bx) in results {
        let start = b * BLOCK;
        let len = BLOCK.min(total - start);
        for d in 0..dim {
            x[d * total + start..d * total + start + len].copy_from_slice(&bx[d * BLOCK..d * BLOCK + len]);
        }
    }
}

/// One step of the sampler for one block (SPEC §2).
fn integrate_step(model: &Mlp, sampler: &Sampler, rng: &Philox, s: &mut StepScratch, step: usize, first: u64, len: usize) {
    let dim = model.dim;
    let t = sampler.time(step);
    let h = sampler.h();
    velocity_block(model, t, &s.x, &mut s.v0, &mut s.mlp);
    match sampler.kind {
        SamplerKind::Euler => {
            for (x, v) in s.x.iter_mut().zip(&s.v0) {
                *x = sampler::euler_update(*x, *v, h);
            }
        }
        SamplerKind::Midpoint | SamplerKind::Sde => {
            for ((p, x), v) in s.probe.iter_mut().zip(&s.x).zip(&s.v0) {
                *p = sampler::midpoint_probe(*x, *v, h);
            }
            velocity_block(model, t + 0.5 * h, &s.probe, &mut s.vm, &mut s.mlp);
            if sampler.kind == SamplerKind::Midpoint {
                for (x, v) in s.x.iter_mut().zip(&s.vm) {
                    *x = sampler::midpoint_update(*x, *v, h);
                }
            } else {
                let scale = sampler::sde_noise_scale(sampler.form, sampler.k, t, h);
                let mut xi = vec![0f32; dim];
                for j in 0..len {
                    rng.normal_vector(first + j as u64, step as u32, Purpose::SdeNoise, &mut xi);
                    for d in 0..dim {
                        let k = d * BLOCK + j;
                        s.x[k] = sampler::sde_update(sampler.form, s.x[k], s.v0[k], s.vm[k], t, h, sampler.k, scale, xi[d]);
                    }
                }
            }
        }
    }
}

/// `v(t, x)` for every particle at grid time `t` (SoA in and out), e.g. for x̂1.
pub fn velocities(model: &Mlp, t: f32, x: &[f32], total: usize) -> Vec<f32> {
    let dim = model.dim;
    let blocks = total.div_ceil(BLOCK);
    let parts: Vec<Vec<f32>> = (0..blocks)
        .into_par_iter()
        .map_init(
            || (vec![0f32; dim * BLOCK], vec![0f32; dim * BLOCK], BlockScratch::new(model)),
            |(bx, bv, scratch), b| {
                let start = b * BLOCK;
                let len = BLOCK.min(total - start);
                for d in 0..dim {
                    bx[d * BLOCK..d * BLOCK + len].copy_from_slice(&x[d * total + start..d * total + start + len]);
                    bx[d * BLOCK + len..(d + 1) * BLOCK].fill(0.0);
                }
                velocity_block(model, t, bx, bv, scratch);
                bv.clone()
            },
        )
        .collect();
    let mut v = vec![0f32; dim * total];
    for (b, bv) in parts.iter().enumerate() {
        let start = b * BLOCK;
        let len = BLOCK.min(total - start);
        for d in 0..dim {
            v[d * total + start..d * total + start + len].copy_from_slice(&bv[d * BLOCK..d * BLOCK + len]);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Activation;

    /// The blocked f32 forward pass agrees with the f64 reference to f32 rounding:
    /// |Δ| ≤ 1e-5·(1 + |v|) for unit-scale weights and inputs (about 2^-17, a few hundred ulps
    /// of headroom over the ~64-term dot products).
    #[test]
    fn block_forward_matches_f64_reference() {
        for act in Activation::ALL {
            let m = Mlp::init_uniform(3, 24, 3, act, 9);
            let mut x = vec![0f32; 3 * BLOCK];
            for (i, v) in x.iter_mut().enumerate() {
                *v = ((i * 37 % 101) as f32 / 50.0) - 1.0;
            }
            let mut out = vec![0f32; 3 * BLOCK];
            velocity_block(&m, 0.3, &x, &mut out, &mut BlockScratch::new(&m));
            for j in 0..BLOCK {
                let xj: Vec<f64> = (0..3).map(|d| x[d * BLOCK + j] as f64).collect();
                let mut want = [0f64; 3];
                m.velocity_f64(0.3, &xj, &mut want);
                for d in 0..3 {
                    let got = out[d * BLOCK + j] as f64;
                    assert!((got - want[d]).abs() <= 1e-5 * (1.0 + want[d].abs()), "{act}: {got} vs {}", want[d]);
                }
            }
        }
    }
}
