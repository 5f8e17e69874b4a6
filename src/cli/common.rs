//! Options shared by several commands: the model, the sampler and `--backend`. They parse into
//! the run layer's plain configuration (`crate::run::config`); checking and running are the run
//! layer's.

use std::path::PathBuf;

use crate::backend::BackendChoice;
use crate::run::DEFAULT_MODEL;
use crate::sampler::{Sampler, SamplerKind, SdeForm};

/// `--model PATH`.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// The velocity model: a safetensors file in PyTorch's nn.Sequential layout (see README,
    /// "Model files"); f32, f16 or bf16 tensors, activation from the metadata (default ELU).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
}

/// `--sampler`, `--steps`, `--k`, `--sde-form` (docs/samplers.md).
#[derive(clap::Args, Debug, Clone)]
pub struct SamplerArgs {
    /// Integrator: midpoint (ODE, 2 evaluations per step), euler (ODE, 1), or sde
    /// (Euler–Maruyama with the midpoint drift, 2 evaluations per step). steer defaults to sde, whose
    /// resampled copies diverge again (docs/steering.md); sample and search to midpoint.
    #[arg(long, value_enum)]
    pub sampler: Option<SamplerKind>,
    /// Number of uniform time steps from t = 0 (noise) to t = 1 (data).
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Diffusion scale k ≥ 0 of the sde sampler, ω_t = k·(1−t); k = 0 is the midpoint ODE.
    #[arg(long, default_value_t = 0.1)]
    pub k: f32,
    /// SDE form: marginal (keeps the model's marginals) or legacy (the 2025 tutorial's form,
    /// which does not; only to reproduce its figures).
    #[arg(long, value_enum, default_value_t = SdeForm::Marginal)]
    pub sde_form: SdeForm,
}

impl SamplerArgs {
    /// The sampler asked for, `default` when `--sampler` is not given (the run layer validates
    /// it); notes on stderr when `--k` or `--sde-form` were given to a sampler that ignores them.
    pub fn sampler(&self, default: SamplerKind) -> Sampler {
        let s = Sampler { kind: self.sampler.unwrap_or(default), steps: self.steps, k: self.k, form: self.sde_form };
        if s.kind != SamplerKind::Sde && s.validate().is_ok() && (self.k != 0.1 || self.sde_form != SdeForm::Marginal) {
            eprintln!("note: --k and --sde-form apply to --sampler sde only; ignored for {}", sampler_name(s.kind));
        }
        s
    }
}

/// The `--sampler` value of `kind`.
pub fn sampler_name(kind: SamplerKind) -> &'static str {
    match kind {
        SamplerKind::Euler => "euler",
        SamplerKind::Midpoint => "midpoint",
        SamplerKind::Sde => "sde",
    }
}

/// `--backend auto|cpu|cuda`.
#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// Engine: auto picks CUDA when a usable GPU exists and the CUDA backend is enabled for
    /// automatic use, else the CPU (and says why on stderr); cuda fails with the reason when no
    /// GPU can be used.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// CUDA backend: launch every kernel plainly instead of replaying each resampling interval
    /// as a captured CUDA graph (for comparison and per-kernel profiling).
    #[arg(long)]
    pub no_graph: bool,
}
