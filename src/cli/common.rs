//! Options and helpers shared by several commands: the model, the sampler, `--backend`
//! resolution, particle counts, `--init` files and the run's output files.
//!
//! Every helper returns an error that names the problem and the fix, so a command can pass it
//! straight to the user.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::backend::cuda::{availability, AUTO_SELECTS_CUDA};
use crate::backend::BackendChoice;
use crate::model::{Mlp, ModelError};
use crate::output::OutputSet;
use crate::sampler::{Sampler, SamplerKind, SdeForm};

/// Where the trained checkerboard model ships (issue 2, `flowsteer train`).
pub const DEFAULT_MODEL: &str = "models/checkerboard.safetensors";

/// `--model PATH`.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// The velocity model: a safetensors file in PyTorch's nn.Sequential layout (see README,
    /// "Model files"); f32, f16 or bf16 tensors, activation from the metadata (default ELU).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
}

impl ModelArgs {
    pub fn load(&self) -> anyhow::Result<Mlp> {
        load_model(&self.model)
    }
}

/// `--sampler`, `--steps`, `--k`, `--sde-form` (SPEC §2).
#[derive(clap::Args, Debug, Clone)]
pub struct SamplerArgs {
    /// Integrator: midpoint (ODE, 2 evaluations per step), euler (ODE, 1), or sde
    /// (Euler–Maruyama with the midpoint drift, 2 evaluations per step).
    #[arg(long, value_enum, default_value_t = SamplerKind::Midpoint)]
    pub sampler: SamplerKind,
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
    /// The validated sampler.
    pub fn sampler(&self) -> anyhow::Result<Sampler> {
        let s = Sampler { kind: self.sampler, steps: self.steps, k: self.k, form: self.sde_form };
        s.validate().map_err(anyhow::Error::msg)?;
        if s.kind != SamplerKind::Sde && (self.k != 0.1 || self.sde_form != SdeForm::Marginal) {
            eprintln!("note: --k and --sde-form apply to --sampler sde only; ignored for {}", self.sampler_name());
        }
        Ok(s)
    }

    fn sampler_name(&self) -> &'static str {
        match self.sampler {
            SamplerKind::Euler => "euler",
            SamplerKind::Midpoint => "midpoint",
            SamplerKind::Sde => "sde",
        }
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

/// The engine a run will use, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedBackend {
    /// `Cpu` or `Cuda`, never `Auto`.
    pub choice: BackendChoice,
    /// What was asked for.
    pub requested: BackendChoice,
    /// Why this engine: the user's choice, or auto's reasoning.
    pub reason: String,
    /// The CUDA device description when `choice` is `Cuda`.
    pub cuda_device: Option<String>,
}

impl BackendArgs {
    /// Resolves `--backend`, printing auto's pick and its reason on stderr.
    pub fn resolve(&self) -> anyhow::Result<ResolvedBackend> {
        self.resolve_announcing(true)
    }

    /// Resolves `--backend`; auto's pick is printed on stderr only when `announce` is set
    /// (`--quiet` runs print nothing but errors).
    pub fn resolve_announcing(&self, announce: bool) -> anyhow::Result<ResolvedBackend> {
        let r = resolve_backend(self.backend, availability(), AUTO_SELECTS_CUDA)?;
        if announce && r.requested == BackendChoice::Auto {
            eprintln!("backend: {} (auto: {})", backend_name(r.choice), r.reason);
        }
        Ok(r)
    }
}

/// `cpu` or `cuda`.
pub fn backend_name(choice: BackendChoice) -> &'static str {
    match choice {
        BackendChoice::Auto => "auto",
        BackendChoice::Cpu => "cpu",
        BackendChoice::Cuda => "cuda",
        BackendChoice::CudaEmulated => "cuda-emulated",
    }
}

/// `--backend` resolution as a pure function of the request, the CUDA probe's answer and
/// whether auto may pick CUDA (so it can be tested without a GPU).
pub fn resolve_backend(
    requested: BackendChoice,
    cuda: Result<String, String>,
    auto_selects_cuda: bool,
) -> anyhow::Result<ResolvedBackend> {
    let cpu = |reason: String| ResolvedBackend { choice: BackendChoice::Cpu, requested, reason, cuda_device: None };
    match requested {
        BackendChoice::Cpu => Ok(cpu("requested with --backend cpu".into())),
        BackendChoice::CudaEmulated => Ok(ResolvedBackend {
            choice: BackendChoice::CudaEmulated,
            requested,
            reason: "requested with --backend cuda-emulated".into(),
            cuda_device: None,
        }),
        BackendChoice::Cuda => match cuda {
            Ok(device) => Ok(ResolvedBackend {
                choice: BackendChoice::Cuda,
                requested,
                reason: "requested with --backend cuda".into(),
                cuda_device: Some(device),
            }),
            // The probe's reasons may already name the way out; say it once.
            Err(why) if why.contains("--backend cpu") => bail!("--backend cuda: no usable CUDA device: {why}"),
            Err(why) => bail!("--backend cuda: no usable CUDA device: {why}. Run with --backend cpu (or auto) instead"),
        },
        BackendChoice::Auto => match cuda {
            Ok(device) if auto_selects_cuda => Ok(ResolvedBackend {
                choice: BackendChoice::Cuda,
                requested,
                reason: format!("found {device}"),
                cuda_device: Some(device),
            }),
            Ok(device) => Ok(cpu(format!(
                "found {device}, but auto does not select the CUDA backend yet; pass --backend cuda to use it"
            ))),
            Err(why) => Ok(cpu(format!("no usable CUDA device: {why}"))),
        },
    }
}

/// Loads a model, turning each failure into a message with the fix.
pub fn load_model(path: &Path) -> anyhow::Result<Mlp> {
    match Mlp::load(path) {
        Ok(m) => Ok(m),
        Err(ModelError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            if path == Path::new(DEFAULT_MODEL) {
                bail!(
                    "model file {} not found: run from the repository root, train one with \
                     `flowsteer train --out {DEFAULT_MODEL}`, or pass --model PATH",
                    path.display()
                )
            }
            bail!("model file {} not found; pass --model with the path of a .safetensors file", path.display())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot use model {} (see README, \"Model files\", for the layout flowsteer reads)",
            path.display()
        ))),
    }
}

/// Checks a particle count: at least 1, and at most 2^36 (the particle index of SPEC §3 has 64
/// bits, but a larger population could not be held as `[N, D]` f32 on any machine we target).
pub fn validate_particles(n: usize, option: &str) -> anyhow::Result<usize> {
    if n == 0 {
        bail!("{option} must be at least 1 (got 0)");
    }
    if n > u32::MAX as usize * 16 {
        bail!("{option} {n} is more than one run supports (2^36 = 68,719,476,736); use several runs with different --seed values");
    }
    Ok(n)
}

/// What an `--init` file must hold, for its messages: `name` is the row count's name ("N"; "N·G"
/// where groups stack populations), `count` the count other options fix (`from` names them), and
/// `fix` says how to make a mismatch agree.
pub struct InitRows<'a> {
    pub name: &'a str,
    pub count: Option<usize>,
    pub from: &'a str,
    pub fix: &'a str,
}

impl InitRows<'_> {
    /// `flowsteer sample`: N rows, optionally fixed by `--particles`.
    pub fn particles(count: Option<usize>) -> Self {
        InitRows { name: "N", count, from: "--particles", fix: "drop --particles or make them agree" }
    }

    fn shape(&self, dim: usize) -> String {
        match self.count {
            Some(c) => format!("[{}, D] = [{c}, {dim}]", self.name),
            None => format!("[{}, {dim}]", self.name),
        }
    }
}

/// Starting points from an `--init` file: `[N, D]` float32 or float64 `.npy`.
/// `particles`, when given, must match N. Returns the rows (row-major) and N.
pub fn read_init(path: &Path, dim: usize, particles: Option<usize>) -> anyhow::Result<(Vec<f32>, usize)> {
    read_init_rows(path, dim, &InitRows::particles(particles))
}

/// [`read_init`] with the row count and its messages given by `rows`.
pub fn read_init_rows(path: &Path, dim: usize, rows: &InitRows) -> anyhow::Result<(Vec<f32>, usize)> {
    let arr = crate::npy::read_f32(path).with_context(|| format!("--init {}", path.display()))?;
    let want = rows.shape(dim);
    let (n, d) = match arr.shape.as_slice() {
        [n, d] => (*n, *d),
        other => bail!(
            "--init {}: shape {other:?}, expected {want} (one row of noise per particle): \
             save a 2-D array, e.g. np.save(path, x.reshape(-1, {dim}))",
            path.display()
        ),
    };
    if d != dim {
        bail!("--init {}: shape [{n}, {d}], but the model has D = {dim}: expected {want}", path.display());
    }
    validate_particles(n, "--init rows").with_context(|| format!("--init {} holds no rows", path.display()))?;
    if let Some(c) = rows.count {
        if c != n {
            bail!("{} {c} does not match the {n} rows of --init {} (expected {want}); {}", rows.from, path.display(), rows.fix);
        }
    }
    if let Some(i) = arr.data.iter().position(|v| !v.is_finite()) {
        bail!("--init {}: row {}, column {} is {} (not finite); noise must be finite", path.display(), i / dim, i % dim, arr.data[i]);
    }
    Ok((arr.data, n))
}

/// Stages `DIR/samples.npy` (float32 `[N, D]`) and `DIR/summary.json` in `set` (SPEC §9).
/// Nothing touches the disk until `set.commit()`.
pub fn stage_samples_and_summary<S: serde::Serialize>(
    set: &mut OutputSet,
    dir: &Path,
    rows: &[f32],
    dim: usize,
    summary: &S,
) -> anyhow::Result<()> {
    anyhow::ensure!(dim > 0 && rows.len().is_multiple_of(dim), "samples hold {} values, not a multiple of D = {dim}", rows.len());
    set.add(dir.join("samples.npy"), crate::npy::to_bytes(&[rows.len() / dim, dim], rows));
    let mut json = serde_json::to_vec_pretty(summary).context("serialising summary.json")?;
    json.push(b'\n');
    set.add(dir.join("summary.json"), json);
    Ok(())
}

/// Checks, before any work, that `--out DIR` can be made (so a long run does not fail at the
/// end): it must be a directory or not exist, and its nearest existing ancestor a directory.
/// Nothing is created here; the directory appears when the outputs are committed.
pub fn prepare_out_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("--out {} is a file; pass a directory (it is created if missing)", dir.display());
    }
    let mut ancestor = dir.parent();
    while let Some(a) = ancestor {
        if a.as_os_str().is_empty() || a.is_dir() {
            break;
        }
        if a.exists() {
            bail!("--out {}: {} is a file, so the directory cannot be created; pick another path", dir.display(), a.display());
        }
        ancestor = a.parent();
    }
    Ok(())
}

/// Commits a staged output set, saying which files were written.
pub fn commit_outputs(set: OutputSet) -> anyhow::Result<Vec<PathBuf>> {
    commit_outputs_announcing(set, true)
}

/// Commits a staged output set; lists the files written on stderr only when `announce` is set.
pub fn commit_outputs_announcing(set: OutputSet, announce: bool) -> anyhow::Result<Vec<PathBuf>> {
    let written = set.commit().context("writing the output files")?;
    if announce {
        for p in &written {
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(written)
}

/// Stages and writes `samples.npy` and `summary.json` in one go.
pub fn write_samples_and_summary<S: serde::Serialize>(dir: &Path, rows: &[f32], dim: usize, summary: &S) -> anyhow::Result<Vec<PathBuf>> {
    let mut set = OutputSet::default();
    stage_samples_and_summary(&mut set, dir, rows, dim, summary)?;
    commit_outputs(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_without_a_device_is_an_error_with_the_reason() {
        let e = resolve_backend(BackendChoice::Cuda, Err("libcuda.so not found".into()), true).unwrap_err().to_string();
        assert!(e.contains("libcuda.so not found") && e.contains("--backend cpu"), "{e}");
        let ok = resolve_backend(BackendChoice::Cuda, Ok("H100".into()), false).unwrap();
        assert_eq!(ok.choice, BackendChoice::Cuda);
    }

    #[test]
    fn auto_picks_cuda_only_when_usable_and_enabled() {
        let r = resolve_backend(BackendChoice::Auto, Ok("H100".into()), true).unwrap();
        assert_eq!((r.choice, r.cuda_device.as_deref()), (BackendChoice::Cuda, Some("H100")));
        let r = resolve_backend(BackendChoice::Auto, Ok("H100".into()), false).unwrap();
        assert_eq!(r.choice, BackendChoice::Cpu);
        assert!(r.reason.contains("--backend cuda"));
        let r = resolve_backend(BackendChoice::Auto, Err("no driver".into()), true).unwrap();
        assert_eq!(r.choice, BackendChoice::Cpu);
        assert!(r.reason.contains("no driver"));
        assert_eq!(resolve_backend(BackendChoice::Cpu, Ok("H100".into()), true).unwrap().choice, BackendChoice::Cpu);
    }

    #[test]
    fn zero_particles_is_an_error() {
        assert!(validate_particles(0, "--particles").unwrap_err().to_string().contains("at least 1"));
        assert_eq!(validate_particles(5, "--particles").unwrap(), 5);
    }

    #[test]
    fn missing_default_model_says_how_to_train_one() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_model(&dir.path().join("nope.safetensors")).unwrap_err().to_string();
        assert!(e.contains("not found") && e.contains("--model"), "{e}");
    }

    #[test]
    fn init_files_are_checked_for_shape_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("noise.npy");
        std::fs::write(&p, crate::npy::to_bytes(&[3, 2], &[0f64, 1.0, 2.0, 3.0, 4.0, 5.0])).unwrap();
        let (rows, n) = read_init(&p, 2, None).unwrap();
        assert_eq!((n, rows.len()), (3, 6));
        assert!(read_init(&p, 2, Some(3)).is_ok());
        assert!(read_init(&p, 2, Some(4)).unwrap_err().to_string().contains("does not match"));
        assert!(read_init(&p, 3, None).unwrap_err().to_string().contains("expected [N, 3]"));
        std::fs::write(&p, crate::npy::to_bytes(&[6], &[0f32; 6])).unwrap();
        assert!(read_init(&p, 2, None).unwrap_err().to_string().contains("expected [N, 2]"));
        std::fs::write(&p, crate::npy::to_bytes(&[1, 2], &[0f32, f32::NAN])).unwrap();
        assert!(read_init(&p, 2, None).unwrap_err().to_string().contains("not finite"));
    }

    #[test]
    fn outputs_are_staged_then_written_together() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let mut set = OutputSet::default();
        stage_samples_and_summary(&mut set, &out, &[1.0, 2.0, 3.0, 4.0], 2, &serde_json::json!({"a": 1})).unwrap();
        assert!(!out.join("samples.npy").exists(), "nothing on disk before commit");
        commit_outputs(set).unwrap();
        let arr = crate::npy::read_f32(&out.join("samples.npy")).unwrap();
        assert_eq!(arr.shape, vec![2, 2]);
        let j: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(j["a"], 1);
    }
}
