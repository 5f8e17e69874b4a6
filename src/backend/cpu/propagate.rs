//! The CPU hot loop: the MLP evaluated for a block of particles at a time, fused into the
//! integrator step (docs/model.md, docs/samplers.md).
//!
//! * Layout: particles are stored as structure of arrays (`x[d·total + i]`). A block of [`BLOCK`]
//!   particles is copied into per-thread scratch that stays in L1, runs every step of the
//!   interval, and is written straight back into its own disjoint slice of `x` (no result copies,
//!   no per-block allocation: the scratch is made once per rayon worker).
//! * Each layer is a `[out × in] · [in × BLOCK]` product done by a register-tiled microkernel
//!   ([`affine`]): 6 output rows × 16 particles = 12 AVX accumulators, the weight broadcast from a
//!   transposed copy (`wt[i·out + o]`, made once per call in [`PackedMlp`]) so that the 6 weights
//!   of a tile are adjacent, and the 16 activations loaded as two 8-wide vectors. The activation
//!   is applied in a separate pass over the `[out × BLOCK]` buffer with branch-free polynomial
//!   `exp`/`expm1` ([`exp_f32`], [`expm1_f32`]) that the compiler vectorises (libm's `expm1f` is a
//!   call per element, and cost more than the whole matrix product).
//! * Two compiled versions of the same code: one with `#[target_feature(enable = "avx2,fma")]`,
//!   chosen at run time when the CPU has both, and a portable one. Both call `f32::mul_add`, so
//!   they round identically (the portable one calls libm's correctly rounded `fmaf`, slowly):
//!   the bits of a result never depend on which version ran.
//! * Blocks are independent and every random number is addressed by (particle, step) (docs/random.md),
//!   so the result does not depend on the number of threads.
//!
//! The same kernels ([`affine`], [`activate`], [`activate_grad`]) serve training (`crate::train`).
//! The element-wise maths (the activations and their polynomial `exp`) is in `cpu/activation.rs`.

use rayon::prelude::*;

pub use super::activation::{activate, activate_grad, activation_f32, activation_grad_f32, exp_f32, expm1_f32};
use crate::model::{Activation, Mlp};
use crate::rng::{Philox, Purpose};
use crate::sampler::{self, Sampler, SamplerKind};

/// Particles per block: a multiple of [`LANES`], small enough that a block's activations
/// (`H × BLOCK` floats, two buffers: 2 × 16 KiB for H = 64) stay in L1 next to a weight tile.
pub const BLOCK: usize = 64;

/// Columns (particles) per register tile: two 8-wide AVX vectors.
pub const LANES: usize = 16;

/// Output rows per register tile: 6 rows × 2 vectors = 12 accumulators, + 2 inputs + 1 broadcast
/// = 15 of the 16 AVX registers.
pub const ROWS: usize = 6;

// ---------------------------------------------------------------------------------------------
// The matrix microkernel.
// ---------------------------------------------------------------------------------------------

/// `y[o·cols + j] = bias[o] + Σ_i wt[i·outputs + o] · x[i·cols + j]` for `o < outputs`,
/// `j < cols` (`cols` a multiple of [`LANES`]; `bias` empty means zero). `wt` is the weight
/// transposed, `[inputs × outputs]`. The sum runs over `i` in order, one fused multiply-add per
/// term, so every element is rounded the same way whatever the tiling.
#[inline(always)]
pub fn affine(wt: &[f32], bias: &[f32], inputs: usize, outputs: usize, x: &[f32], cols: usize, y: &mut [f32]) {
    debug_assert!(cols.is_multiple_of(LANES));
    debug_assert!(wt.len() >= inputs * outputs && x.len() >= inputs * cols && y.len() >= outputs * cols);
    let mut o = 0;
    while o + ROWS <= outputs {
        tile_rows::<ROWS>(wt, bias, inputs, outputs, o, x, cols, y);
        o += ROWS;
    }
    match outputs - o {
        0 => {}
        1 => tile_rows::<1>(wt, bias, inputs, outputs, o, x, cols, y),
        2 => tile_rows::<2>(wt, bias, inputs, outputs, o, x, cols, y),
        3 => tile_rows::<3>(wt, bias, inputs, outputs, o, x, cols, y),
        4 => tile_rows::<4>(wt, bias, inputs, outputs, o, x, cols, y),
        5 => tile_rows::<5>(wt, bias, inputs, outputs, o, x, cols, y),
        _ => unreachable!(),
    }
}

/// Rows `o0..o0+R` of [`affine`], [`LANES`] columns at a time, accumulators in registers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile_rows<const R: usize>(
    wt: &[f32],
    bias: &[f32],
    inputs: usize,
    outputs: usize,
    o0: usize,
    x: &[f32],
    cols: usize,
    y: &mut [f32],
) {
    let mut j = 0;
    while j < cols {
        let mut acc = [[0f32; LANES]; R];
        if !bias.is_empty() {
            for r in 0..R {
                acc[r] = [bias[o0 + r]; LANES];
            }
        }
        for i in 0..inputs {
            let xi: &[f32; LANES] = x[i * cols + j..i * cols + j + LANES].try_into().unwrap();
            let w: &[f32; R] = wt[i * outputs + o0..i * outputs + o0 + R].try_into().unwrap();
            for r in 0..R {
                for l in 0..LANES {
                    acc[r][l] = w[r].mul_add(xi[l], acc[r][l]);
                }
            }
        }
        for r in 0..R {
            y[(o0 + r) * cols + j..(o0 + r) * cols + j + LANES].copy_from_slice(&acc[r]);
        }
        j += LANES;
    }
}

/// The model's weights laid out for [`affine`]: each layer's weight transposed.
#[derive(Clone, Debug)]
pub struct PackedMlp {
    pub dim: usize,
    pub activation: Activation,
    pub layers: Vec<PackedLayer>,
    /// The widest layer input or output (the scratch rows a block needs).
    pub width: usize,
}

#[derive(Clone, Debug)]
pub struct PackedLayer {
    pub inputs: usize,
    pub outputs: usize,
    /// `wt[i·outputs + o] = W[o][i]`.
    pub wt: Vec<f32>,
    pub bias: Vec<f32>,
}

impl PackedMlp {
    pub fn new(model: &Mlp) -> Self {
        let layers = model
            .layers
            .iter()
            .map(|l| {
                let mut wt = vec![0f32; l.inputs * l.outputs];
                for o in 0..l.outputs {
                    for i in 0..l.inputs {
                        wt[i * l.outputs + o] = l.weight[o * l.inputs + i];
                    }
                }
                PackedLayer { inputs: l.inputs, outputs: l.outputs, wt, bias: l.bias.clone() }
            })
            .collect();
        let width = model.layers.iter().map(|l| l.inputs.max(l.outputs)).max().unwrap();
        Self { dim: model.dim, activation: model.activation, layers, width }
    }
}

/// Scratch for one block: two activation buffers of `width × BLOCK` floats.
pub struct BlockScratch {
    a: Vec<f32>,
    b: Vec<f32>,
}

impl BlockScratch {
    pub fn new(model: &PackedMlp) -> Self {
        Self { a: vec![0.0; model.width * BLOCK], b: vec![0.0; model.width * BLOCK] }
    }
}

/// `v(t, x)` for one block: `x[d·BLOCK + j]` is coordinate `d` of particle `j`, the result goes
/// to `out` (`dim × BLOCK`).
#[inline(always)]
fn velocity_block_body(model: &PackedMlp, t: f32, x: &[f32], out: &mut [f32], scratch: &mut BlockScratch) {
    let dim = model.dim;
    let (mut cur, mut next) = (&mut scratch.a, &mut scratch.b);
    cur[..BLOCK].fill(t);
    cur[BLOCK..(dim + 1) * BLOCK].copy_from_slice(&x[..dim * BLOCK]);
    let last = model.layers.len() - 1;
    for (li, l) in model.layers.iter().enumerate() {
        if li == last {
            affine(&l.wt, &l.bias, l.inputs, l.outputs, cur, BLOCK, &mut out[..l.outputs * BLOCK]);
        } else {
            let y = &mut next[..l.outputs * BLOCK];
            affine(&l.wt, &l.bias, l.inputs, l.outputs, cur, BLOCK, y);
            activate(model.activation, y);
            std::mem::swap(&mut cur, &mut next);
        }
    }
}

/// Per-worker buffers for integrating one block.
struct StepScratch {
    x: Vec<f32>,
    v0: Vec<f32>,
    probe: Vec<f32>,
    vm: Vec<f32>,
    xi: Vec<f32>,
    mlp: BlockScratch,
}

impl StepScratch {
    fn new(model: &PackedMlp) -> Self {
        let n = model.dim * BLOCK;
        Self {
            x: vec![0.0; n],
            v0: vec![0.0; n],
            probe: vec![0.0; n],
            vm: vec![0.0; n],
            xi: vec![0.0; model.dim],
            mlp: BlockScratch::new(model),
        }
    }
}

/// One step of the sampler for one block (docs/samplers.md); lanes `len..BLOCK` are padding.
#[inline(always)]
fn integrate_step_body(model: &PackedMlp, sampler: &Sampler, rng: &Philox, s: &mut StepScratch, step: usize, first: u64, len: usize) {
    let dim = model.dim;
    let t = sampler.time(step);
    let h = sampler.h();
    velocity_block_body(model, t, &s.x, &mut s.v0, &mut s.mlp);
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
            velocity_block_body(model, t + 0.5 * h, &s.probe, &mut s.vm, &mut s.mlp);
            if sampler.kind == SamplerKind::Midpoint {
                for (x, v) in s.x.iter_mut().zip(&s.vm) {
                    *x = sampler::midpoint_update(*x, *v, h);
                }
            } else {
                let scale = sampler::sde_noise_scale(sampler.form, sampler.k, t, h);
                for j in 0..len {
                    rng.normal_vector(first + j as u64, step as u32, Purpose::SdeNoise, &mut s.xi);
                    for d in 0..dim {
                        let k = d * BLOCK + j;
                        s.x[k] = sampler::sde_update(sampler.form, s.x[k], s.v0[k], s.vm[k], t, h, sampler.k, scale, s.xi[d]);
                    }
                }
            }
        }
    }
}

/// Loads a block from the SoA rows (padding lanes set to 0), integrates `steps`, stores it back.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block_body(
    model: &PackedMlp,
    sampler: &Sampler,
    rng: &Philox,
    s: &mut StepScratch,
    rows: &mut [&mut [f32]],
    first: u64,
    steps: std::ops::Range<usize>,
) {
    let len = rows[0].len();
    for (d, row) in rows.iter().enumerate() {
        s.x[d * BLOCK..d * BLOCK + len].copy_from_slice(row);
        s.x[d * BLOCK + len..(d + 1) * BLOCK].fill(0.0);
    }
    for step in steps {
        integrate_step_body(model, sampler, rng, s, step, first, len);
    }
    for (d, row) in rows.iter_mut().enumerate() {
        row.copy_from_slice(&s.x[d * BLOCK..d * BLOCK + len]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx2(
    model: &PackedMlp,
    sampler: &Sampler,
    rng: &Philox,
    s: &mut StepScratch,
    rows: &mut [&mut [f32]],
    first: u64,
    steps: std::ops::Range<usize>,
) {
    block_body(model, sampler, rng, s, rows, first, steps)
}

fn block_portable(
    model: &PackedMlp,
    sampler: &Sampler,
    rng: &Philox,
    s: &mut StepScratch,
    rows: &mut [&mut [f32]],
    first: u64,
    steps: std::ops::Range<usize>,
) {
    block_body(model, sampler, rng, s, rows, first, steps)
}

/// Which compiled version of the kernels runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX2 + FMA, 8-wide.
    Avx2Fma,
    /// Whatever the build's baseline target allows (SSE2 on plain x86_64).
    Portable,
}

impl Isa {
    /// The best version this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Isa::Avx2Fma;
        }
        Isa::Portable
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx2Fma => "avx2+fma",
            Isa::Portable => "portable",
        }
    }
}

/// Integrates grid steps `steps` for every particle of `x` (SoA, `dim × total`).
/// `first_index` is the global index of particle 0 of `x` (its random-number counter).
pub fn propagate(model: &Mlp, sampler: &Sampler, seed: u64, x: &mut [f32], total: usize, first_index: u64, steps: std::ops::Range<usize>) {
    propagate_with(Isa::detect(), &PackedMlp::new(model), sampler, seed, x, total, first_index, steps)
}

/// [`propagate`] with the weights already packed and the kernel version chosen (benches, tests).
#[allow(clippy::too_many_arguments)]
pub fn propagate_with(
    isa: Isa,
    model: &PackedMlp,
    sampler: &Sampler,
    seed: u64,
    x: &mut [f32],
    total: usize,
    first_index: u64,
    steps: std::ops::Range<usize>,
) {
    let dim = model.dim;
    assert_eq!(x.len(), dim * total);
    if total == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    assert!(
        isa == Isa::Portable || (std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")),
        "the avx2+fma kernels need a CPU with AVX2 and FMA"
    );
    let rng = Philox::new(seed);
    // Split every coordinate row into BLOCK-sized chunks; block b owns chunk b of each row.
    let mut rows: Vec<std::slice::ChunksMut<'_, f32>> = x.chunks_mut(total).map(|r| r.chunks_mut(BLOCK)).collect();
    let blocks: Vec<Vec<&mut [f32]>> = (0..total.div_ceil(BLOCK)).map(|_| rows.iter_mut().map(|r| r.next().unwrap()).collect()).collect();
    blocks.into_par_iter().enumerate().for_each_init(
        || StepScratch::new(model),
        |s, (b, mut block_rows)| {
            let first = first_index + (b * BLOCK) as u64;
            match isa {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: Avx2Fma is only chosen when the CPU has AVX2 and FMA (asserted above).
                Isa::Avx2Fma => unsafe { block_avx2(model, sampler, &rng, s, &mut block_rows, first, steps.clone()) },
                _ => block_portable(model, sampler, &rng, s, &mut block_rows, first, steps.clone()),
            }
        },
    );
}

#[inline(always)]
fn velocities_body(model: &PackedMlp, t: f32, s: &mut StepScratch, x_rows: &[&[f32]], v_rows: &mut [&mut [f32]]) {
    let len = x_rows[0].len();
    for (d, row) in x_rows.iter().enumerate() {
        s.x[d * BLOCK..d * BLOCK + len].copy_from_slice(row);
        s.x[d * BLOCK + len..(d + 1) * BLOCK].fill(0.0);
    }
    velocity_block_body(model, t, &s.x, &mut s.v0, &mut s.mlp);
    for (d, row) in v_rows.iter_mut().enumerate() {
        row.copy_from_slice(&s.v0[d * BLOCK..d * BLOCK + len]);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn velocities_avx2(model: &PackedMlp, t: f32, s: &mut StepScratch, x_rows: &[&[f32]], v_rows: &mut [&mut [f32]]) {
    velocities_body(model, t, s, x_rows, v_rows)
}

/// `v(t, x)` for every particle at time `t` (SoA in and out), e.g. for x̂1.
pub fn velocities(model: &Mlp, t: f32, x: &[f32], total: usize) -> Vec<f32> {
    velocities_with(Isa::detect(), &PackedMlp::new(model), t, x, total)
}

/// [`velocities`] with packed weights and a chosen kernel version.
pub fn velocities_with(isa: Isa, model: &PackedMlp, t: f32, x: &[f32], total: usize) -> Vec<f32> {
    let dim = model.dim;
    assert_eq!(x.len(), dim * total);
    let mut v = vec![0f32; dim * total];
    if total == 0 {
        return v;
    }
    let x_blocks: Vec<Vec<&[f32]>> = {
        let mut rows: Vec<_> = x.chunks(total).map(|r| r.chunks(BLOCK)).collect();
        (0..total.div_ceil(BLOCK)).map(|_| rows.iter_mut().map(|r| r.next().unwrap()).collect()).collect()
    };
    let v_blocks: Vec<Vec<&mut [f32]>> = {
        let mut rows: Vec<_> = v.chunks_mut(total).map(|r| r.chunks_mut(BLOCK)).collect();
        (0..total.div_ceil(BLOCK)).map(|_| rows.iter_mut().map(|r| r.next().unwrap()).collect()).collect()
    };
    x_blocks.into_par_iter().zip(v_blocks).for_each_init(
        || StepScratch::new(model),
        |s, (xr, mut vr)| match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Avx2Fma is only chosen by Isa::detect on a CPU with AVX2 and FMA.
            Isa::Avx2Fma => unsafe { velocities_avx2(model, t, s, &xr, &mut vr) },
            _ => velocities_body(model, t, s, &xr, &mut vr),
        },
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SdeForm;

    fn isas() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        if Isa::detect() == Isa::Avx2Fma {
            v.push(Isa::Avx2Fma);
        }
        v
    }

    /// The tiled product against a plain triple loop in f64, for shapes that exercise every
    /// remainder tile (outputs 1..=13) and inputs 1..=5.
    #[test]
    fn affine_matches_plain_product() {
        for outputs in 1..=13 {
            for inputs in 1..=5 {
                let cols = 2 * LANES;
                let wt: Vec<f32> = (0..inputs * outputs).map(|k| ((k * 7919 % 113) as f32 / 56.0) - 1.0).collect();
                let bias: Vec<f32> = (0..outputs).map(|k| k as f32 * 0.1 - 0.3).collect();
                let x: Vec<f32> = (0..inputs * cols).map(|k| ((k * 104_729 % 97) as f32 / 48.0) - 1.0).collect();
                let mut y = vec![0f32; outputs * cols];
                affine(&wt, &bias, inputs, outputs, &x, cols, &mut y);
                for o in 0..outputs {
                    for j in 0..cols {
                        let want: f64 =
                            bias[o] as f64 + (0..inputs).map(|i| wt[i * outputs + o] as f64 * x[i * cols + j] as f64).sum::<f64>();
                        assert!((y[o * cols + j] as f64 - want).abs() < 1e-5, "{outputs}x{inputs} ({o},{j})");
                    }
                }
            }
        }
    }

    /// The blocked f32 forward pass agrees with the f64 reference to f32 rounding:
    /// |Δ| ≤ 1e-5·(1 + |v|) for unit-scale weights and inputs (about 2^-17, a few hundred ulps
    /// of headroom over the ~64-term dot products), for particle counts around the block size.
    #[test]
    fn velocities_match_f64_reference() {
        for act in Activation::ALL {
            let m = Mlp::init_uniform(3, 24, 3, act, 9);
            let packed = PackedMlp::new(&m);
            for total in [1usize, 31, 32, 33, 65, 1025] {
                let x: Vec<f32> = (0..3 * total).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
                let mut first: Option<Vec<f32>> = None;
                for isa in isas() {
                    let v = velocities_with(isa, &packed, 0.3, &x, total);
                    for j in 0..total {
                        let xj: Vec<f64> = (0..3).map(|d| x[d * total + j] as f64).collect();
                        let mut want = [0f64; 3];
                        m.velocity_f64(0.3, &xj, &mut want);
                        for d in 0..3 {
                            let got = v[d * total + j] as f64;
                            assert!((got - want[d]).abs() <= 1e-5 * (1.0 + want[d].abs()), "{act} n={total}: {got} vs {}", want[d]);
                        }
                    }
                    // Every compiled version rounds the same way.
                    match &first {
                        None => first = Some(v),
                        Some(f) => assert_eq!(f, &v, "{act}: {isa:?} differs from the portable kernels"),
                    }
                }
            }
        }
    }

    /// One plain f64 step of a sampler for one particle, from the f64 model and the same noise.
    fn step_f64(m: &Mlp, s: &Sampler, x: &mut [f64], step: usize, xi: &[f32]) {
        let d = m.dim;
        let t = s.time(step) as f64;
        let h = s.h() as f64;
        let mut v0 = vec![0f64; d];
        m.velocity_f64(t, x, &mut v0);
        if s.kind == SamplerKind::Euler {
            for k in 0..d {
                x[k] += h * v0[k];
            }
            return;
        }
        let probe: Vec<f64> = (0..d).map(|k| x[k] + 0.5 * h * v0[k]).collect();
        let mut vm = vec![0f64; d];
        m.velocity_f64(t + 0.5 * h, &probe, &mut vm);
        let k_ = s.k as f64;
        for k in 0..d {
            x[k] = match (s.kind, s.form) {
                (SamplerKind::Midpoint, _) => x[k] + h * vm[k],
                (_, SdeForm::Marginal) => {
                    x[k] + h * (vm[k] + 0.5 * k_ * (t * v0[k] - x[k])) + (k_ * (1.0 - t) * h).sqrt() * xi[k] as f64
                }
                (_, SdeForm::Legacy) => x[k] + h * (vm[k] - 0.5 * k_ * (t * vm[k] - x[k])) + h * (k_ * (1.0 - t)).sqrt() * xi[k] as f64,
            };
        }
    }

    /// Every sampler, particle counts around the block size: the hot loop follows the f64
    /// reference with the same noise over 5 steps to |Δ| ≤ 1e-5·(1 + |x|) (the per-evaluation
    /// bound above, times a handful of steps of size h = 0.1 whose Lipschitz growth is < 2), and
    /// gives the same bits for 1 and 2 threads and for every compiled version.
    #[test]
    fn propagate_matches_f64_reference_for_every_sampler() {
        let m = Mlp::init_uniform(2, 16, 2, Activation::Elu, 4);
        let packed = PackedMlp::new(&m);
        let samplers = [
            Sampler { kind: SamplerKind::Euler, steps: 10, ..Default::default() },
            Sampler { kind: SamplerKind::Midpoint, steps: 10, ..Default::default() },
            Sampler { kind: SamplerKind::Sde, steps: 10, k: 0.5, form: SdeForm::Marginal },
            Sampler { kind: SamplerKind::Sde, steps: 10, k: 0.5, form: SdeForm::Legacy },
        ];
        let rng = Philox::new(77);
        for s in samplers {
            for total in [1usize, 31, 32, 33, 1025] {
                let x0: Vec<f32> = (0..2 * total).map(|i| ((i * 37 % 101) as f32 / 30.0) - 1.6).collect();
                let mut results = Vec::new();
                for isa in isas() {
                    for threads in [1, 2] {
                        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                        let mut x = x0.clone();
                        pool.install(|| propagate_with(isa, &packed, &s, 77, &mut x, total, 3, 2..7));
                        results.push(x);
                    }
                }
                assert!(results.iter().all(|r| r == &results[0]), "{s}: results depend on threads or kernels");
                let x = &results[0];
                for j in 0..total {
                    let mut xr: Vec<f64> = (0..2).map(|d| x0[d * total + j] as f64).collect();
                    for step in 2..7 {
                        let mut xi = [0f32; 2];
                        rng.normal_vector(3 + j as u64, step as u32, Purpose::SdeNoise, &mut xi);
                        step_f64(&m, &s, &mut xr, step, &xi);
                    }
                    for d in 0..2 {
                        let got = x[d * total + j] as f64;
                        assert!((got - xr[d]).abs() <= 1e-5 * (1.0 + xr[d].abs()), "{s} n={total} j={j}: {got} vs {}", xr[d]);
                    }
                }
            }
        }
    }
}
