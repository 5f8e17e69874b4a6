//! `flowsteer train`: trains the velocity MLP on the 2-D checkerboard (docs/quality.md) with the
//! flow-matching loss of the OT path (docs/samplers.md) and Adam, on all CPU cores, then reports the
//! model's quality (docs/quality.md) and writes it as safetensors (docs/model.md, prefix `net`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::cpu::propagate::Isa;
use crate::backend::BackendChoice;
use crate::model::Activation;
use crate::train::{self, LrSchedule, TrainConfig};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to write the trained model (safetensors, tensors `net.<i>.weight`/`net.<i>.bias`,
    /// the activation in the metadata). Written only when training finishes.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing --out file (otherwise refused, so that a trained model is never
    /// overwritten by accident).
    #[arg(long)]
    pub force: bool,
    /// Adam iterations (the default is what the shipped models/checkerboard.safetensors used:
    /// about 7 minutes on 2 busy cores).
    #[arg(long, default_value_t = 30_000)]
    pub iters: usize,
    /// Samples per iteration (data, noise and time drawn fresh each iteration).
    #[arg(long, default_value_t = 8192)]
    pub batch: usize,
    /// Peak learning rate of Adam (β = 0.9, 0.999, ε = 1e-8).
    #[arg(long, default_value_t = 1e-2)]
    pub lr: f32,
    /// Learning-rate schedule after the warm-up: cosine decays to lr·min-lr-frac, step multiplies
    /// by 0.1 at 50% and 80% of the run, constant keeps lr.
    #[arg(long, value_enum, default_value_t = LrSchedule::Cosine)]
    pub schedule: LrSchedule,
    /// Iterations of linear learning-rate warm-up from 0.
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    /// The decayed learning rate's floor, as a fraction of --lr.
    #[arg(long, default_value_t = 0.01)]
    pub min_lr_frac: f32,
    /// Decay of the exponential moving average of the weights that is saved (0: save the last
    /// iterate instead).
    #[arg(long, default_value_t = 0.0)]
    pub ema: f32,
    /// Width H of every hidden layer.
    #[arg(long, default_value_t = 64)]
    pub hidden: usize,
    /// Number L of hidden layers (the model has L + 1 Linear layers).
    #[arg(long, default_value_t = 3)]
    pub layers: usize,
    /// Activation after every hidden layer: elu, silu, gelu, tanh, relu.
    #[arg(long, default_value = "elu", value_parser = parse_activation)]
    pub activation: Activation,
    /// Seed of the initial weights, the data, the noise and the times. The same seed gives the
    /// same model, bit for bit, whatever the number of threads.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Samples drawn after training to report the quality (on-square fraction and energy
    /// distance to fresh data, docs/quality.md); 0 skips the evaluation.
    #[arg(long, default_value_t = 100_000)]
    pub eval_samples: usize,
    /// Midpoint steps of the evaluation's sampler.
    #[arg(long, default_value_t = 100)]
    pub eval_steps: usize,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where to train: the trainer runs on the CPU (auto and cpu both mean the CPU).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
}

fn parse_activation(s: &str) -> Result<Activation, String> {
    s.parse().map_err(|e: crate::model::ModelError| e.to_string())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if matches!(args.backend, BackendChoice::Cuda | BackendChoice::CudaEmulated) {
        bail!("training runs on the CPU only; use --backend cpu (or auto)");
    }
    let cfg = TrainConfig {
        hidden: args.hidden,
        layers: args.layers,
        activation: args.activation,
        iters: args.iters,
        batch: args.batch,
        lr: args.lr,
        schedule: args.schedule,
        warmup: args.warmup,
        min_lr_frac: args.min_lr_frac,
        ema: args.ema,
        seed: args.seed,
    };
    cfg.validate().map_err(anyhow::Error::msg)?;
    if args.out.is_dir() {
        bail!("--out {} is a directory; give a file name such as {}/checkerboard.safetensors", args.out.display(), args.out.display());
    }
    if args.out.exists() && !args.force {
        bail!("--out {} already exists; pass --force to replace it, or choose another file name", args.out.display());
    }
    if args.eval_samples == 1 {
        bail!("--eval-samples must be 0 (no evaluation) or at least 2 (the energy distance needs two points)");
    }
    if args.eval_samples > 0 && args.eval_steps == 0 {
        bail!("--eval-steps must be at least 1");
    }
    // Refused before any allocation: the batch, and the evaluation's samples (docs/quality.md).
    crate::memory::check(&crate::memory::train(2, cfg.hidden, cfg.layers), cfg.batch as u64)?;
    let mut evaluation = crate::memory::sample(crate::memory::Side::Host, 2, false);
    (evaluation.what, evaluation.option) = ("train's evaluation".into(), "--eval-samples");
    crate::memory::check(&evaluation, args.eval_samples as u64)?;
    let pool = match args.threads {
        Some(0) => bail!("--threads must be at least 1 (or left out for every core)"),
        Some(n) => rayon::ThreadPoolBuilder::new().num_threads(n).build()?,
        None => rayon::ThreadPoolBuilder::new().build()?,
    };
    pool.install(|| run_in_pool(&args, &cfg))
}

fn run_in_pool(args: &Args, cfg: &TrainConfig) -> anyhow::Result<()> {
    eprintln!(
        "training D = 2, H = {}, L = {}, {} on the checkerboard: {} iterations of batch {}, Adam lr {} ({:?}, warm-up {}), seed {}, {} threads, {} kernels",
        cfg.hidden,
        cfg.layers,
        cfg.activation,
        cfg.iters,
        cfg.batch,
        cfg.lr,
        cfg.schedule,
        cfg.warmup,
        cfg.seed,
        rayon::current_num_threads(),
        Isa::detect().name()
    );
    let bar = ProgressBar::new(cfg.iters as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} [{elapsed_precise} < {eta_precise}] {per_sec} {msg}")
            .expect("valid template"),
    );
    let started = Instant::now();
    let mut smoothed = f64::NAN;
    let result = train::train(cfg, |p| {
        smoothed = if smoothed.is_nan() { p.loss } else { 0.98 * smoothed + 0.02 * p.loss };
        if p.iter % 10 == 0 || p.iter + 1 == cfg.iters {
            bar.set_message(format!("smoothed loss {smoothed:.4} lr {:.2e}", p.lr));
            bar.set_position(p.iter as u64 + 1);
        }
        // Without a terminal the bar is hidden: log a line every 10% instead.
        let tenth = cfg.iters.div_ceil(10);
        if bar.is_hidden() && (p.iter + 1) % tenth == 0 {
            eprintln!(
                "iteration {}/{}: smoothed loss {smoothed:.4} (running mean over ~50 iterations), lr {:.2e}, {:.0} s",
                p.iter + 1,
                cfg.iters,
                p.lr,
                started.elapsed().as_secs_f64()
            );
        }
    });
    bar.finish();
    let (model, losses) = result?;
    let train_secs = started.elapsed().as_secs_f64();
    let tail = losses.len().min(100);
    let final_loss = losses[losses.len() - tail..].iter().sum::<f64>() / tail as f64;
    if !final_loss.is_finite() {
        bail!("training diverged (loss {final_loss}); try a smaller --lr");
    }
    eprintln!("trained in {train_secs:.1} s; mean loss of the last {tail} iterations {final_loss:.5}");
    if args.eval_samples > 0 {
        let started = Instant::now();
        let q = train::evaluate(&model, args.eval_samples, args.eval_steps, cfg.seed.wrapping_add(1));
        eprintln!(
            "quality ({} samples, {} midpoint steps, {:.1} s): on-square fraction {:.4}, energy distance {}",
            q.samples,
            q.steps,
            started.elapsed().as_secs_f64(),
            q.on_square_fraction,
            crate::checkerboard::energy_distance_text(q.energy_distance, q.energy_distance_std_error)
        );
    }
    model.save(&args.out, "net").with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mlp;

    fn args(out: PathBuf) -> Args {
        Args {
            out,
            force: false,
            iters: 20,
            batch: 300,
            lr: 1e-2,
            schedule: LrSchedule::Cosine,
            warmup: 5,
            min_lr_frac: 0.01,
            ema: 0.9,
            hidden: 8,
            layers: 2,
            activation: Activation::Silu,
            seed: 3,
            eval_samples: 200,
            eval_steps: 5,
            threads: Some(2),
            backend: BackendChoice::Cpu,
        }
    }

    /// A tiny run writes a model of the asked shape that loads back with its activation, and the
    /// same seed writes the same bytes on 1 and 2 threads.
    #[test]
    fn writes_a_loadable_model_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
        run(args(a.clone())).unwrap();
        run(Args { threads: Some(1), ..args(b.clone()) }).unwrap();
        let m = Mlp::load(&a).unwrap();
        assert_eq!((m.dim, m.hidden(), m.hidden_layers(), m.activation), (2, 8, 2, Activation::Silu));
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    }

    /// Bad options fail before any training, name the option, and write nothing.
    #[test]
    fn bad_options_are_clear_errors_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.safetensors");
        let cases: [(Args, &str); 6] = [
            (Args { iters: 0, ..args(out.clone()) }, "--iters"),
            (Args { batch: 0, ..args(out.clone()) }, "--batch"),
            (Args { lr: -1.0, ..args(out.clone()) }, "--lr"),
            (Args { eval_samples: 1, ..args(out.clone()) }, "--eval-samples"),
            (Args { backend: BackendChoice::Cuda, ..args(out.clone()) }, "CPU only"),
            (args(dir.path().to_path_buf()), "is a directory"),
        ];
        for (a, want) in cases {
            let err = format!("{:#}", run(a).unwrap_err());
            assert!(err.contains(want), "error `{err}` should mention `{want}`");
        }
        assert!(!out.exists());
    }

    /// An existing --out file is refused (untouched) unless --force, which replaces it.
    #[test]
    fn an_existing_out_file_is_refused_unless_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.safetensors");
        std::fs::write(&out, b"an older model").unwrap();
        let err = format!("{:#}", run(args(out.clone())).unwrap_err());
        assert!(err.contains("already exists") && err.contains("--force"), "{err}");
        assert_eq!(std::fs::read(&out).unwrap(), b"an older model");
        run(Args { force: true, ..args(out.clone()) }).unwrap();
        assert!(Mlp::load(&out).is_ok());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["m.safetensors"], "no temporaries");
    }
}
