//! The batch loss of the flow-matching objective and its gradient by hand-written
//! backpropagation (see `crate::train`): chunks of [`CHUNK`] samples as structure of arrays,
//! the CPU hot loop's microkernel for the forward pass, a fixed-order sum over chunks.

use rayon::prelude::*;

use super::{Batch, CHUNK};
use crate::backend::cpu::propagate::{activate, activate_grad, affine, Isa, PackedMlp};
use crate::model::Mlp;

/// Offsets of each layer's weight and bias in the flat gradient / Adam vectors.
#[derive(Clone, Debug)]
struct ParamLayout {
    /// `(weight offset, bias offset)` per layer.
    offsets: Vec<(usize, usize)>,
    len: usize,
}

impl ParamLayout {
    fn new(model: &Mlp) -> Self {
        let mut offsets = Vec::new();
        let mut at = 0;
        for l in &model.layers {
            offsets.push((at, at + l.inputs * l.outputs));
            at += l.inputs * l.outputs + l.outputs;
        }
        Self { offsets, len: at }
    }
}

/// Per-worker buffers for one chunk's forward and backward pass.
struct ChunkScratch {
    /// Layer inputs: `acts[l]` is the input of layer l, `[inputs_l × CHUNK]`.
    acts: Vec<Vec<f32>>,
    /// Pre-activations of the hidden layers, `[H × CHUNK]`.
    pre: Vec<Vec<f32>>,
    /// Output and gradient buffers, `[width × CHUNK]`.
    out: Vec<f32>,
    delta: Vec<f32>,
    delta_prev: Vec<f32>,
}

impl ChunkScratch {
    fn new(model: &Mlp) -> Self {
        let width = model.layers.iter().map(|l| l.inputs.max(l.outputs)).max().unwrap();
        Self {
            acts: model.layers.iter().map(|l| vec![0f32; l.inputs * CHUNK]).collect(),
            pre: model.layers[..model.layers.len() - 1].iter().map(|l| vec![0f32; l.outputs * CHUNK]).collect(),
            out: vec![0f32; model.dim * CHUNK],
            delta: vec![0f32; width * CHUNK],
            delta_prev: vec![0f32; width * CHUNK],
        }
    }
}

/// `g[o·inputs + i] += Σ_j delta[o·cols + j] · a[i·cols + j]` and `gb[o] += Σ_j delta[o·cols + j]`:
/// the weight and bias gradients of one layer over one chunk. Each sum is taken in 8 lanes
/// (`j mod 8`) and the lanes added in order, so the rounding is fixed. (A 2 × 4 tile of
/// `delta` × `a` rows was tried: LLVM left it scalar.)
#[inline(always)]
fn weight_grad(delta: &[f32], a: &[f32], outputs: usize, inputs: usize, cols: usize, g: &mut [f32], gb: &mut [f32]) {
    const W: usize = 8;
    const RI: usize = 4;
    debug_assert!(cols.is_multiple_of(W));
    let hsum = |acc: &[f32; W]| acc.iter().fold(0f32, |s, &v| s + v);
    for o in 0..outputs {
        let d = &delta[o * cols..(o + 1) * cols];
        let mut i = 0;
        while i + RI <= inputs {
            let mut acc = [[0f32; W]; RI];
            for jc in (0..cols).step_by(W) {
                let dv: &[f32; W] = d[jc..jc + W].try_into().unwrap();
                for r in 0..RI {
                    let av: &[f32; W] = a[(i + r) * cols + jc..(i + r) * cols + jc + W].try_into().unwrap();
                    for l in 0..W {
                        acc[r][l] = dv[l].mul_add(av[l], acc[r][l]);
                    }
                }
            }
            for r in 0..RI {
                g[o * inputs + i + r] += hsum(&acc[r]);
            }
            i += RI;
        }
        while i < inputs {
            let mut acc = [0f32; W];
            for jc in (0..cols).step_by(W) {
                for l in 0..W {
                    acc[l] = d[jc + l].mul_add(a[i * cols + jc + l], acc[l]);
                }
            }
            g[o * inputs + i] += hsum(&acc);
            i += 1;
        }
        let mut acc = [0f32; W];
        for jc in (0..cols).step_by(W) {
            for l in 0..W {
                acc[l] += d[jc + l];
            }
        }
        gb[o] += hsum(&acc);
    }
}

/// Forward and backward pass of one chunk (samples `start..start+len` of the batch, `len ≤
/// CHUNK`; the remaining lanes are padding with zero loss gradient). Adds the chunk's gradient of
/// the *batch* loss to `grad` (zeroed by the caller) and returns its sum of squared errors (f64).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn chunk_body(
    model: &Mlp,
    packed: &PackedMlp,
    layout: &ParamLayout,
    batch: &Batch,
    start: usize,
    len: usize,
    s: &mut ChunkScratch,
    grad: &mut [f32],
) -> f64 {
    let (dim, n) = (batch.dim, batch.n);
    let last = model.layers.len() - 1;
    // Inputs [t, x_t] and the target u = x1 − x0.
    {
        let a0 = &mut s.acts[0];
        a0.fill(0.0);
        a0[..len].copy_from_slice(&batch.t[start..start + len]);
        for d in 0..dim {
            for j in 0..len {
                let (x1, x0, t) = (batch.x1[d * n + start + j], batch.x0[d * n + start + j], batch.t[start + j]);
                a0[(d + 1) * CHUNK + j] = t.mul_add(x1, (1.0 - t) * x0);
            }
        }
    }
    // Forward, keeping every layer's input and pre-activation.
    for (li, l) in packed.layers.iter().enumerate() {
        if li == last {
            affine(&l.wt, &l.bias, l.inputs, l.outputs, &s.acts[li], CHUNK, &mut s.out);
        } else {
            let (lower, upper) = s.acts.split_at_mut(li + 1);
            let pre = &mut s.pre[li];
            affine(&l.wt, &l.bias, l.inputs, l.outputs, &lower[li], CHUNK, pre);
            let next = &mut upper[0];
            next.copy_from_slice(pre);
            activate(packed.activation, next);
        }
    }
    // Loss and its gradient: L = Σ (v − u)² / (n·D), dL/dv = 2(v − u)/(n·D).
    let scale = 2.0 / (n * dim) as f32;
    let mut sse = 0f64;
    s.delta[..dim * CHUNK].fill(0.0);
    for d in 0..dim {
        for j in 0..len {
            let u = batch.x1[d * n + start + j] - batch.x0[d * n + start + j];
            let e = s.out[d * CHUNK + j] - u;
            sse += (e as f64) * (e as f64);
            s.delta[d * CHUNK + j] = scale * e;
        }
    }
    // Backward: layer l's gradients from its delta and input, then the delta of its input.
    for li in (0..=last).rev() {
        let l = &model.layers[li];
        let (wo, bo) = layout.offsets[li];
        let (gw, rest) = grad[wo..].split_at_mut(l.inputs * l.outputs);
        weight_grad(&s.delta, &s.acts[li], l.outputs, l.inputs, CHUNK, gw, &mut rest[..l.outputs]);
        debug_assert_eq!(bo, wo + l.inputs * l.outputs);
        if li > 0 {
            // δ_in[i][j] = Σ_o W[o][i] δ[o][j], then × act'(pre): W row-major is the
            // "transposed weight" of this product.
            affine(&l.weight, &[], l.outputs, l.inputs, &s.delta, CHUNK, &mut s.delta_prev);
            activate_grad(packed.activation, &s.pre[li - 1], &mut s.delta_prev[..l.inputs * CHUNK]);
            std::mem::swap(&mut s.delta, &mut s.delta_prev);
        }
    }
    sse
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn chunk_avx2(
    model: &Mlp,
    packed: &PackedMlp,
    layout: &ParamLayout,
    batch: &Batch,
    start: usize,
    len: usize,
    s: &mut ChunkScratch,
    grad: &mut [f32],
) -> f64 {
    chunk_body(model, packed, layout, batch, start, len, s, grad)
}

/// The gradient engine: per-chunk gradient buffers, reused across iterations.
pub struct Gradients {
    isa: Isa,
    layout: ParamLayout,
    chunks: Vec<Vec<f32>>,
    sse: Vec<f64>,
}

impl Gradients {
    pub fn new(model: &Mlp, batch: usize) -> Self {
        let layout = ParamLayout::new(model);
        let n_chunks = batch.div_ceil(CHUNK);
        Self { isa: Isa::detect(), chunks: vec![vec![0f32; layout.len]; n_chunks], sse: vec![0.0; n_chunks], layout }
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.layout.len
    }

    pub fn is_empty(&self) -> bool {
        self.layout.len == 0
    }

    /// The batch loss and its gradient (flat, layer by layer: weight `[out × in]`, then bias).
    pub fn compute(&mut self, model: &Mlp, batch: &Batch, grad: &mut [f32]) -> f64 {
        assert_eq!(grad.len(), self.layout.len);
        assert_eq!(self.chunks.len(), batch.n.div_ceil(CHUNK), "Gradients was made for another batch size");
        let packed = PackedMlp::new(model);
        let (isa, layout) = (self.isa, &self.layout);
        self.chunks.par_iter_mut().zip(self.sse.par_iter_mut()).enumerate().for_each_init(
            || ChunkScratch::new(model),
            |s, (c, (g, sse))| {
                g.fill(0.0);
                let start = c * CHUNK;
                let len = CHUNK.min(batch.n - start);
                *sse = match isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: Isa::detect chose Avx2Fma only on a CPU with AVX2 and FMA.
                    Isa::Avx2Fma => unsafe { chunk_avx2(model, &packed, layout, batch, start, len, s, g) },
                    _ => chunk_body(model, &packed, layout, batch, start, len, s, g),
                };
            },
        );
        // The fixed-order sum that makes the result independent of the thread count.
        grad.copy_from_slice(&self.chunks[0]);
        for c in &self.chunks[1..] {
            for (a, b) in grad.iter_mut().zip(c) {
                *a += b;
            }
        }
        self.sse.iter().sum::<f64>() / (batch.n * batch.dim) as f64
    }
}

