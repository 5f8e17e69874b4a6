//! Configuration → prepared run: `--backend` resolution, the model, particle counts, `--init`
//! files and the run specification (model, sampler, reward, potential) every method reads.
//!
//! Every helper returns an error that names the problem and the fix, so a command can pass it
//! straight to the user. The option names in the messages are those of the command line; a
//! caller without one sets the configuration field of the same name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::config::CommonConfig;
use crate::backend::cuda::{availability, AnyBackend, AUTO_SELECTS_CUDA};
use crate::backend::{BackendChoice, Layout, RunSpec};
use crate::model::{Mlp, ModelError};
use crate::potential::Potential;
use crate::resample::ResampleScheme;
use crate::reward::Reward;

/// Where the trained checkerboard model ships (issue 2, `flowsteer train`).
pub const DEFAULT_MODEL: &str = "models/checkerboard.safetensors";

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

/// Resolves a backend request against this machine; auto's pick is printed on stderr only when
/// `announce` is set (`--quiet` runs print nothing but errors).
pub fn resolve_backend_announcing(requested: BackendChoice, announce: bool) -> anyhow::Result<ResolvedBackend> {
    let r = resolve_backend(requested, availability(), AUTO_SELECTS_CUDA)?;
    if announce && r.requested == BackendChoice::Auto {
        eprintln!("backend: {} (auto: {})", backend_name(r.choice), r.reason);
    }
    Ok(r)
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
            Err(why) => Ok(cpu(cpu_fallback_reason(&why))),
        },
    }
}

/// Auto's reason for the CPU, said on every run: the probe's first clause only ("no CUDA driver
/// (libcuda.so) found"), without its advice to pass `--backend cpu`, which auto has just done.
/// `flowsteer info` and `--backend cuda` give the whole reason.
pub fn cpu_fallback_reason(why: &str) -> String {
    let first = why.split([':', ';']).next().unwrap_or(why).trim();
    format!("no usable CUDA device: {first}")
}

/// Loads a model, turning each failure into a message with the fix.
pub fn load_model(path: &Path) -> anyhow::Result<Mlp> {
    match Mlp::load(path) {
        Ok(m) => Ok(m),
        Err(ModelError::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
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

/// The SHA-256 of a file, hex: what `summary.json` and `sweep.json` record of the model.
pub fn file_sha256(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// Checks a particle count: at least 1, and at most 2^36 (the particle index of docs/random.md has 64
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

/// Checks N and G, and that N·G is a population one run supports.
pub fn check_layout(particles: usize, groups: usize, what: &str) -> anyhow::Result<Layout> {
    validate_particles(particles, what)?;
    validate_particles(groups, "--groups")?;
    let total = particles.saturating_mul(groups);
    validate_particles(total, &format!("{what} × --groups ="))?;
    Ok(Layout { n: particles, groups })
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

/// Everything resolved from a [`CommonConfig`] before any work starts.
pub struct Prepared {
    pub spec: RunSpec,
    pub model_path: PathBuf,
    /// The engine the backend request resolved to, and why.
    pub backend: ResolvedBackend,
    /// `--no-graph`: plain kernel launches on the CUDA backend.
    pub no_graph: bool,
}

impl Prepared {
    /// Resolves the backend, loads the model, parses the reward, checks the sampler and the
    /// output directory; `potential` and `resample` complete the run's specification.
    pub fn new(common: &CommonConfig, potential: Potential, resample: ResampleScheme, adaptive_ess: Option<f32>) -> anyhow::Result<Prepared> {
        let reward: Reward = common.reward.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        let sampler = common.sampler;
        sampler.validate().map_err(anyhow::Error::msg)?;
        potential.validate().map_err(anyhow::Error::msg)?;
        if let Some(tau) = adaptive_ess {
            if !(tau.is_finite() && tau > 0.0 && tau <= 1.0) {
                bail!("--adaptive-ess τ must lie in (0, 1], got {tau}; e.g. --adaptive-ess 0.5");
            }
        }
        if common.plot && common.out.is_none() {
            bail!("--plot writes plot.png into the output directory; give --out DIR");
        }
        if let Some(out) = &common.out {
            crate::output::prepare_out_dir(out, common.force)?;
        }
        let backend = resolve_backend_announcing(common.backend, !common.quiet)?;
        let model = load_model(&common.model)?;
        reward.checks_dim(model.dim).map_err(|e| anyhow::anyhow!("--reward {:?}: {e}", common.reward))?;
        let reward = match &common.reward_cmd {
            None => reward,
            // Started last, once every other option is known to be good.
            Some(cmd) => {
                if !(common.reward_timeout.is_finite() && common.reward_timeout > 0.0) {
                    bail!("--reward-timeout must be a number of seconds > 0, got {}", common.reward_timeout);
                }
                let timeout = std::time::Duration::from_secs_f64(common.reward_timeout);
                Reward::from_command(crate::reward::command::RewardCommand::start(cmd, timeout)?)
            }
        };
        let spec = RunSpec { model, sampler, reward, reward_on: common.reward_on, potential, resample, adaptive_ess, seed: common.seed };
        Ok(Prepared { spec, model_path: common.model.clone(), backend, no_graph: common.no_graph })
    }

    /// The engine to run on: the CPU, or the CUDA backend (issue 4).
    pub fn engine(&self) -> anyhow::Result<AnyBackend> {
        let mut b = AnyBackend::resolve(self.backend.choice)?;
        if let AnyBackend::Cuda(c) = &mut b {
            c.use_graph &= !self.no_graph;
            c.check_model(&self.spec.model).with_context(|| format!("model file {}", self.model_path.display()))?;
        }
        Ok(b)
    }

    /// Where the particles live, for the memory estimate (`crate::memory`): the CPU and the
    /// emulator hold them in host memory.
    pub fn memory_side(&self) -> crate::memory::Side {
        match self.backend.choice {
            BackendChoice::Cuda => crate::memory::Side::Device,
            _ => crate::memory::Side::Host,
        }
    }

    /// The layout of a run with `--particles` (None: `default`, or the rows of `--init` divided
    /// by G) and `--groups`, with the `--init` rows when given (issue 13, item 5).
    pub fn layout_and_init(&self, particles: Option<usize>, default: usize, groups: usize, init: Option<&Path>) -> anyhow::Result<(Layout, Option<Vec<f32>>)> {
        let Some(path) = init else {
            return Ok((check_layout(particles.unwrap_or(default), groups, "--particles")?, None));
        };
        validate_particles(groups, "--groups")?;
        let rows = match particles {
            Some(n) => InitRows { name: "N·G", count: Some(n.saturating_mul(groups)), from: "--particles × --groups =", fix: "set --particles and --groups to match the file, or leave --particles out" },
            None => InitRows { name: "N·G", count: None, from: "", fix: "" },
        };
        let (data, total) = read_init_rows(path, self.spec.model.dim, &rows)?;
        if total % groups != 0 {
            bail!(
                "--init {} holds {total} rows, not a multiple of --groups {groups}: with groups the file holds N·G rows, N particles per group; give a file of {} or {} rows, or another --groups",
                path.display(),
                total / groups * groups,
                (total / groups + 1) * groups
            );
        }
        Ok((check_layout(total / groups, groups, "--particles")?, Some(data)))
    }

    /// Reads `--init` for `total` = N·G particles, as `[N·G, D]`.
    pub fn read_init(&self, path: &Path, total: usize) -> anyhow::Result<Vec<f32>> {
        let rows = InitRows { name: "N·G", count: Some(total), from: "--particles × --groups =", fix: "set --particles and --groups to match the file" };
        Ok(read_init_rows(path, self.spec.model.dim, &rows)?.0)
    }
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
        // Said on every run, so short: the cause, not the probe's advice.
        let why = "no CUDA driver (libcuda.so) found: this machine has no NVIDIA GPU driver; use --backend cpu";
        let r = resolve_backend(BackendChoice::Auto, Err(why.into()), true).unwrap();
        assert_eq!(r.reason, "no usable CUDA device: no CUDA driver (libcuda.so) found");
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
}
