//! `flowsteer sample`: run the model's sampler (docs/samplers.md) on N particles and write
//! `samples.npy` and `summary.json` (docs/outputs.md), with the checkerboard quality measures of docs/quality.md
//! when the model is 2-D. The run itself is `crate::run::sample`.

use std::path::PathBuf;

use super::common::{BackendArgs, ModelArgs, SamplerArgs};
use crate::run::SampleConfig;

pub use crate::run::sample::{sampling_spec, DEFAULT_PARTICLES};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampler: SamplerArgs,
    /// Number of particles N [default: 10000, or the rows of --init].
    #[arg(long)]
    pub particles: Option<usize>,
    /// Seed of the initial noise and of the SDE noise (Philox, docs/random.md): the same seed gives the
    /// same samples bit for bit on the same backend, whatever the number of threads.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Start from this noise instead of drawing it: a .npy file of float32 or float64, shape [N, D].
    #[arg(long, value_name = "NOISE.npy")]
    pub init: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Output directory: samples.npy (float32 [N, D]) and summary.json are written there, whole
    /// or not at all.
    #[arg(long, value_name = "DIR", default_value = "runs/sample")]
    pub out: PathBuf,
    /// Replace a non-empty --out directory whole (its old files are deleted); without it such a
    /// directory is refused, so that two runs never mix their files.
    #[arg(long)]
    pub force: bool,
}

impl Args {
    /// The run layer's configuration of a sampling run.
    pub fn config(&self) -> SampleConfig {
        SampleConfig {
            model: self.model.model.clone(),
            sampler: self.sampler.sampler(crate::sampler::SamplerKind::Midpoint),
            particles: self.particles,
            seed: self.seed,
            init: self.init.clone(),
            backend: self.backend.backend,
            out: self.out.clone(),
            force: self.force,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Under mpirun/srun only rank 0 gets an outcome (docs/distributed.md).
    crate::run::sample::sample_ranked(&args.config())?.map_or(Ok(()), |o| o.report())
}
