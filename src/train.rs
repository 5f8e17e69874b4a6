//! Training the velocity MLP with the flow-matching loss of the OT path (docs/samplers.md), Adam, on all
//! CPU cores.
//!
//! Each iteration draws a batch of data `x1` (the checkerboard, docs/quality.md), noise `x0 ~ N(0, I)`
//! and times `t ~ U(0, 1)`, forms `x_t = t·x1 + (1−t)·x0`, and minimises the mean squared error
//! between `v(t, x_t)` and `x1 − x0` (mean over the batch and the D coordinates, as PyTorch's
//! `F.mse_loss`). The gradient is hand-written backpropagation over chunks of [`CHUNK`] samples
//! laid out as structure of arrays (`[features × CHUNK]`), with the CPU hot loop's matrix
//! microkernel ([`propagate::affine`]) for the forward pass and the backward pass through the
//! activations, and a register-tiled reduction for the weight gradients.
//!
//! Determinism: every random number is addressed by (iteration, sample) (Philox, docs/random.md, keys
//! derived from the seed), the batch is cut into the same chunks whatever the number of threads,
//! and the chunks' gradients are summed in chunk order. The same seed gives the same bits on 1 or
//! 64 threads (and from either compiled version of the kernels, which round identically).
//!
//! The backpropagation is in `train/gradient.rs`; this file holds the data, the optimiser and
//! the loop.

use std::f64::consts::PI;

mod gradient;

pub use gradient::Gradients;
use crate::backend::cpu::propagate;
use crate::checkerboard;
use crate::model::{Activation, Mlp};
use crate::rng::{Philox, Purpose};
use crate::sampler::{Sampler, SamplerKind};

/// Samples per chunk: the unit of parallel work and of the fixed-order gradient sum. A multiple
/// of the kernels' lane count; `H × CHUNK` floats (64 KiB for H = 64) per stored activation stays in L2.
pub const CHUNK: usize = 256;

/// How the learning rate moves over the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// The same rate throughout.
    Constant,
    /// Half a cosine from `lr` down to `lr·min_lr_frac` (after the warm-up).
    #[default]
    Cosine,
    /// `lr` until 50% of the iterations, then ×0.1, then ×0.01 from 80% (floored at `lr·min_lr_frac`).
    Step,
}

/// Everything a training run depends on.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainConfig {
    pub hidden: usize,
    pub layers: usize,
    pub activation: Activation,
    pub iters: usize,
    pub batch: usize,
    pub lr: f32,
    pub schedule: LrSchedule,
    /// Iterations of linear warm-up from 0 to `lr` at the start.
    pub warmup: usize,
    /// The floor of the decayed learning rate, as a fraction of `lr`.
    pub min_lr_frac: f32,
    /// Decay of an exponential moving average of the weights, which is the model returned
    /// (0 disables it and returns the last iterate). The average starts at the first iteration
    /// with the bias correction of Adam's moments, so early weights do not linger.
    pub ema: f32,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            hidden: 64,
            layers: 3,
            activation: Activation::Elu,
            iters: 30_000,
            batch: 8192,
            lr: 1e-2,
            schedule: LrSchedule::Cosine,
            warmup: 200,
            min_lr_frac: 0.01,
            ema: 0.0,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Checks the values a user can get wrong; each message names the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.iters == 0 {
            return Err("--iters must be at least 1".into());
        }
        if self.batch == 0 {
            return Err("--batch must be at least 1".into());
        }
        if self.hidden == 0 || self.layers == 0 {
            return Err("--hidden and --layers must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("--lr must be a finite number > 0, got {}", self.lr));
        }
        if !(self.min_lr_frac.is_finite() && (0.0..=1.0).contains(&self.min_lr_frac)) {
            return Err(format!("--min-lr-frac must be in [0, 1], got {}", self.min_lr_frac));
        }
        if !(self.ema.is_finite() && (0.0..1.0).contains(&self.ema)) {
            return Err(format!("--ema must be in [0, 1) (0 turns the average off), got {}", self.ema));
        }
        if self.iters >= (1 << 32) {
            return Err("--iters must be below 2^32 (the random-number counter holds the iteration in 32 bits)".into());
        }
        Ok(())
    }

    /// The learning rate of iteration `it` (0-based).
    pub fn lr_at(&self, it: usize) -> f32 {
        let lr = self.lr as f64;
        if it < self.warmup {
            return (lr * (it + 1) as f64 / self.warmup as f64) as f32;
        }
        let floor = lr * self.min_lr_frac as f64;
        let span = self.iters.saturating_sub(self.warmup).max(1) as f64;
        let progress = (it - self.warmup) as f64 / span;
        let value = match self.schedule {
            LrSchedule::Constant => lr,
            LrSchedule::Cosine => floor + 0.5 * (lr - floor) * (1.0 + (PI * progress).cos()),
            LrSchedule::Step => {
                let f = if progress < 0.5 {
                    1.0
                } else if progress < 0.8 {
                    0.1
                } else {
                    0.01
                };
                (lr * f).max(floor)
            }
        };
        value as f32
    }
}

/// Keys of the training streams: mixed into the seed so that they differ from each other and
/// from the sampling streams drawn with the same seed (docs/random.md's counter layout is kept:
/// particle = sample index within the batch, step = iteration).
const NOISE_KEY_TAG: u64 = 0x7EA1_0000_0000_0001;
const TIME_KEY_TAG: u64 = 0x7EA1_0000_0000_0002;

/// The seed of the data drawn at iteration `it` (splitmix64 of seed and iteration).
fn data_seed(seed: u64, it: usize) -> u64 {
    let mut z = seed ^ 0x7EA1_DA7A_0000_0000 ^ (it as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One training batch, SoA: `x1[d·n + j]`, `x0[d·n + j]`, `t[j]`.
pub struct Batch {
    pub n: usize,
    pub dim: usize,
    pub x1: Vec<f32>,
    pub x0: Vec<f32>,
    pub t: Vec<f32>,
}

impl Batch {
    /// The batch of iteration `it`: checkerboard data, normal noise, uniform times.
    pub fn draw(seed: u64, it: usize, n: usize) -> Self {
        let dim = 2;
        let rows = checkerboard::sample_checkerboard(n, data_seed(seed, it));
        let noise = Philox::new(seed ^ NOISE_KEY_TAG);
        let times = Philox::new(seed ^ TIME_KEY_TAG);
        let mut x1 = vec![0f32; dim * n];
        let mut x0 = vec![0f32; dim * n];
        let mut t = vec![0f32; n];
        let mut z = [0f32; 2];
        for j in 0..n {
            noise.normal_vector(j as u64, it as u32, Purpose::InitialNoise, &mut z);
            for d in 0..dim {
                x1[d * n + j] = rows[j * dim + d];
                x0[d * n + j] = z[d];
            }
            // (0, 1] uniform → [0, 1): t = 1 − u.
            t[j] = 1.0 - times.uniform(j as u64, it as u32, Purpose::InitialNoise, 0);
        }
        Self { n, dim, x1, x0, t }
    }
}

/// Adam (Kingma & Ba), as `torch.optim.Adam` with its defaults β = (0.9, 0.999), ε = 1e-8.
pub struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    step: i32,
}

impl Adam {
    const B1: f32 = 0.9;
    const B2: f32 = 0.999;
    const EPS: f32 = 1e-8;

    pub fn new(params: usize) -> Self {
        Self { m: vec![0.0; params], v: vec![0.0; params], step: 0 }
    }

    /// One update of `model` from the flat gradient `grad`.
    pub fn update(&mut self, model: &mut Mlp, grad: &[f32], lr: f32) {
        self.step += 1;
        let c1 = 1.0 - Self::B1.powi(self.step);
        let c2 = 1.0 - Self::B2.powi(self.step);
        let step_size = lr / c1;
        let c2_sqrt = c2.sqrt();
        let mut at = 0;
        for l in &mut model.layers {
            for p in l.weight.iter_mut().chain(l.bias.iter_mut()) {
                let g = grad[at];
                let m = &mut self.m[at];
                let v = &mut self.v[at];
                *m = Self::B1 * *m + (1.0 - Self::B1) * g;
                *v = Self::B2 * *v + (1.0 - Self::B2) * g * g;
                *p -= step_size * *m / ((*v).sqrt() / c2_sqrt + Self::EPS);
                at += 1;
            }
        }
    }
}

/// What a training run reports at each iteration.
pub struct Progress {
    pub iter: usize,
    pub loss: f64,
    pub lr: f32,
}

/// Trains a model from `cfg` and returns it with the loss of every iteration.
/// `report` is called after every iteration (progress bars, logs). Stops at the first
/// non-finite loss: every later iteration would only spread the NaN through the weights.
pub fn train(cfg: &TrainConfig, mut report: impl FnMut(&Progress)) -> anyhow::Result<(Mlp, Vec<f64>)> {
    let mut model = Mlp::init_uniform(2, cfg.hidden, cfg.layers, cfg.activation, cfg.seed);
    let mut grads = Gradients::new(&model, cfg.batch);
    let mut adam = Adam::new(grads.len());
    let mut g = vec![0f32; grads.len()];
    let mut losses = Vec::with_capacity(cfg.iters);
    // The weight average, unnormalised: avg_k = ema·avg_{k−1} + (1 − ema)·w_k, divided by
    // 1 − ema^k when read (the same bias correction as Adam's moments).
    let mut average = (cfg.ema > 0.0).then(|| Mlp::zeros(2, cfg.hidden, cfg.layers, cfg.activation));
    for it in 0..cfg.iters {
        let batch = Batch::draw(cfg.seed, it, cfg.batch);
        let loss = grads.compute(&model, &batch, &mut g);
        let lr = cfg.lr_at(it);
        if !loss.is_finite() {
            anyhow::bail!(
                "training stopped at iteration {} of {}: the loss became {} (learning rate {}); the weights diverged, \
                 so nothing was written. Try a smaller --lr (now {}) or a longer --warmup",
                it + 1,
                cfg.iters,
                crate::format::number(loss),
                crate::format::number(lr as f64),
                crate::format::number(cfg.lr as f64)
            );
        }
        adam.update(&mut model, &g, lr);
        if let Some(avg) = &mut average {
            for (la, lm) in avg.layers.iter_mut().zip(&model.layers) {
                for (a, &w) in la.weight.iter_mut().zip(&lm.weight).chain(la.bias.iter_mut().zip(&lm.bias)) {
                    *a = cfg.ema * *a + (1.0 - cfg.ema) * w;
                }
            }
        }
        losses.push(loss);
        report(&Progress { iter: it, loss, lr });
    }
    if let Some(mut avg) = average {
        let correction = 1.0 - (cfg.ema as f64).powi(cfg.iters.min(i32::MAX as usize) as i32);
        for l in &mut avg.layers {
            for a in l.weight.iter_mut().chain(l.bias.iter_mut()) {
                *a = (*a as f64 / correction) as f32;
            }
        }
        return Ok((avg, losses));
    }
    Ok((model, losses))
}

/// The quality of a 2-D model (docs/quality.md): samples drawn from noise with the midpoint ODE.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Quality {
    pub samples: usize,
    pub steps: usize,
    pub on_square_fraction: f64,
    pub energy_distance: f64,
    pub energy_distance_std_error: f64,
}

/// Samples `n` points from `N(0, I)` noise (Philox key `seed`, purpose InitialNoise) with
/// `steps` midpoint steps and judges them against `n` fresh data points.
pub fn evaluate(model: &Mlp, n: usize, steps: usize, seed: u64) -> Quality {
    assert_eq!(model.dim, 2, "the checkerboard quality measures are for 2-D models");
    let mut x = crate::backend::cpu::initial_noise(seed, 2, n);
    let sampler = Sampler { kind: SamplerKind::Midpoint, steps, ..Default::default() };
    propagate::propagate(model, &sampler, seed, &mut x, n, 0, 0..steps);
    let rows: Vec<f32> = (0..n).flat_map(|i| [x[i], x[n + i]]).collect();
    let data = checkerboard::sample_checkerboard(n, seed.wrapping_add(0xE7A1));
    let ed = checkerboard::energy_distance_blocks(&rows, &data, 2);
    Quality {
        samples: n,
        steps,
        on_square_fraction: checkerboard::on_square_fraction(&rows),
        energy_distance: ed.value,
        energy_distance_std_error: ed.std_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f64 batch loss of `model`, from the f64 reference forward pass.
    #[allow(clippy::needless_range_loop)]
    fn loss_f64(model: &Mlp, b: &Batch) -> f64 {
        let mut sse = 0f64;
        for j in 0..b.n {
            let t = b.t[j] as f64;
            let xt: Vec<f64> = (0..b.dim).map(|d| t * b.x1[d * b.n + j] as f64 + (1.0 - t) * b.x0[d * b.n + j] as f64).collect();
            let mut v = vec![0f64; b.dim];
            model.velocity_f64(t, &xt, &mut v);
            for d in 0..b.dim {
                let e = v[d] - (b.x1[d * b.n + j] as f64 - b.x0[d * b.n + j] as f64);
                sse += e * e;
            }
        }
        sse / (b.n * b.dim) as f64
    }

    /// Backprop against central finite differences of the f64 loss, for every parameter of a
    /// small model, each smooth activation, and a batch that spans two chunks with padding.
    ///
    /// Tolerance: the difference step is ε = 2^-10 applied to an f32 weight, and the actual
    /// step (w ± ε rounded to f32) is the denominator, so the f64 difference quotient has only its
    /// truncation error ε²/6·|L'''| ≈ 2e-7·|L'''| (L''' is O(1) for unit-scale weights and
    /// inputs). The f32 gradient sums ~n·H ≈ 5,000 products per weight: its relative error is
    /// ~sqrt(5000)·2^-24 ≈ 4e-6 of the sum of absolute terms. Both are under
    /// 1e-4·(|g| + rms(g)), which a wrong sign, a missing term or a wrong layer offset exceeds by
    /// orders of magnitude. ReLU is left out: its kink makes finite differences meaningless.
    #[test]
    fn backprop_matches_finite_differences() {
        for act in [Activation::Elu, Activation::Silu, Activation::Gelu, Activation::Tanh] {
            let mut model = Mlp::init_uniform(2, 10, 2, act, 3);
            let batch = Batch::draw(5, 0, CHUNK + 37);
            let mut grads = Gradients::new(&model, batch.n);
            let mut g = vec![0f32; grads.len()];
            let loss = grads.compute(&model, &batch, &mut g);
            let l64 = loss_f64(&model, &batch);
            assert!((loss - l64).abs() < 1e-5 * l64, "{act}: loss {loss} vs f64 {l64}");
            let rms = (g.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / g.len() as f64).sqrt();
            let mut at = 0;
            for li in 0..model.layers.len() {
                let count = model.layers[li].weight.len() + model.layers[li].bias.len();
                for k in 0..count {
                    let get = |m: &mut Mlp| -> *mut f32 {
                        let l = &mut m.layers[li];
                        if k < l.weight.len() {
                            &mut l.weight[k]
                        } else {
                            &mut l.bias[k - l.weight.len()]
                        }
                    };
                    let p = get(&mut model);
                    // SAFETY: p points into `model`, which is not moved while it is used.
                    let w = unsafe { *p };
                    let eps = 2f32.powi(-10);
                    let (hi, lo) = (w + eps, w - eps);
                    unsafe { *p = hi };
                    let lp = loss_f64(&model, &batch);
                    unsafe { *p = lo };
                    let lm = loss_f64(&model, &batch);
                    unsafe { *p = w };
                    let fd = (lp - lm) / (hi as f64 - lo as f64);
                    let got = g[at] as f64;
                    assert!(
                        (got - fd).abs() <= 1e-4 * (fd.abs() + rms),
                        "{act}: layer {li} parameter {k}: backprop {got}, finite differences {fd}"
                    );
                    at += 1;
                }
            }
        }
    }

    /// A few hundred Adam steps on a small problem cut the loss well below where it started.
    /// At initialisation the output is ~0, so the loss is E|x1 − x0|²/D = (E|x1|² + E|x0|²)/2 =
    /// (6 + 2)/2 = 4 (each data coordinate is uniform on [−3, 3), variance 3); the first batch of
    /// 512 estimates it to a few percent. Most of the rest is the irreducible variance of
    /// x1 − x0 given x_t (the conditional-mean field keeps it), so a correct trainer measured
    /// 4.0 → 2.76 here; a gradient of the wrong sign or scale stays at or above the start, and
    /// 0.8 of the start sits between the two.
    #[test]
    fn a_few_hundred_iterations_reduce_the_loss() {
        let cfg = TrainConfig { hidden: 16, layers: 2, iters: 300, batch: 512, warmup: 10, ..Default::default() };
        let (_, losses) = train(&cfg, |_| {}).unwrap();
        let first = losses[0];
        let last = losses[280..].iter().sum::<f64>() / 20.0;
        eprintln!("loss {first} -> {last}");
        assert!((3.5..4.5).contains(&first), "the untrained loss should be ≈ 4, got {first}");
        assert!(last < 0.8 * first, "loss went from {first} to {last}");
    }

    /// A diverging run stops at its first non-finite loss instead of training on NaN weights.
    #[test]
    fn training_stops_at_the_first_nan_loss() {
        let cfg = TrainConfig { hidden: 8, layers: 1, iters: 50, batch: 64, warmup: 0, lr: 1e30, ..Default::default() };
        let mut seen = Vec::new();
        let err = train(&cfg, |p| seen.push(p.loss)).unwrap_err().to_string();
        assert!(!seen.is_empty() && seen.len() < 50 && seen.iter().all(|l| l.is_finite()), "{seen:?}");
        assert!(err.contains(&format!("stopped at iteration {} of 50", seen.len() + 1)) && err.contains("smaller --lr"), "{err}");
    }

    /// The same seed gives the same bits on 1 and 2 threads.
    #[test]
    fn training_is_deterministic_across_thread_counts() {
        let cfg = TrainConfig { hidden: 16, layers: 2, iters: 5, batch: 3 * CHUNK + 5, ..Default::default() };
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| train(&cfg, |_| {}).unwrap())
        };
        let (m1, l1) = run(1);
        let (m2, l2) = run(2);
        assert_eq!(m1, m2);
        assert_eq!(l1, l2);
        let (m3, _) = train(&TrainConfig { seed: 1, ..cfg.clone() }, |_| {}).unwrap();
        assert_ne!(m1, m3, "the seed must matter");
    }

    #[test]
    fn learning_rate_schedules() {
        let cfg = TrainConfig { iters: 1100, warmup: 100, lr: 1.0, min_lr_frac: 0.01, ..Default::default() };
        assert!((cfg.lr_at(0) - 0.01).abs() < 1e-6);
        assert!((cfg.lr_at(99) - 1.0).abs() < 1e-6);
        assert!((cfg.lr_at(100) - 1.0).abs() < 1e-6);
        assert!((cfg.lr_at(600) - 0.505).abs() < 1e-6); // half-way: (1 + 0.01)/2
        assert!((cfg.lr_at(1099) - 0.01).abs() < 1e-3);
        let step = TrainConfig { schedule: LrSchedule::Step, ..cfg.clone() };
        assert_eq!(step.lr_at(500), 1.0);
        assert!((step.lr_at(700) - 0.1).abs() < 1e-6);
        assert!((step.lr_at(1000) - 0.01).abs() < 1e-6);
        let constant = TrainConfig { schedule: LrSchedule::Constant, ..cfg };
        assert_eq!(constant.lr_at(1099), 1.0);
    }
}
