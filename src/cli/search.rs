//! `flowsteer search bon|zeroth|paths`: the search baselines of docs/search.md, each reporting its NFE
//! so that methods compare with FK steering at equal compute.

use std::path::PathBuf;

use super::steer::CommonArgs;
use crate::run::{SearchConfig, SearchMethod};
use crate::sampler::RenoiseForm;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub method: Method,
}

#[derive(clap::Subcommand, Debug)]
pub enum Method {
    /// Best-of-N: N samples, keep the best by reward (--top-k for more).
    #[command(mut_arg("sampler", |a| a.default_value("midpoint")))]
    Bon(BonArgs),
    /// Zeroth-order search: C cycles of M candidates uniform in a ball around a pivot noise.
    #[command(mut_arg("sampler", |a| a.default_value("midpoint")))]
    Zeroth(ZerothArgs),
    /// Search over paths: a beam of N states, M renoised copies each, forward Δb, keep the top N.
    #[command(mut_arg("sampler", |a| a.default_value("midpoint")))]
    Paths(PathsArgs),
}

#[derive(clap::Args, Debug)]
pub struct BonArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Samples per group N [default: 4096, or the rows of --init divided by --groups].
    #[arg(long)]
    pub particles: Option<usize>,
    /// Independent searches run side by side.
    #[arg(long, default_value_t = 1)]
    pub groups: usize,
    /// Keep the K best of each group.
    #[arg(long, default_value_t = 1)]
    pub top_k: usize,
    /// Starting points: a .npy file of shape [N·G, D].
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ZerothArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Candidates per cycle M.
    #[arg(long, default_value_t = 16)]
    pub candidates: usize,
    /// Cycles C (cost M·C·steps evaluations per group).
    #[arg(long, default_value_t = 8)]
    pub cycles: usize,
    /// Radius ρ of the ball the candidates are drawn in.
    #[arg(long, default_value_t = 0.5)]
    pub radius: f32,
    /// The starting pivot noise: D comma-separated numbers (e.g. 0.1,-0.3), or a .npy file of
    /// shape [D] or [G, D]. Default: a standard normal draw per group.
    #[arg(long, allow_hyphen_values = true)]
    pub pivot: Option<String>,
    /// Independent searches run side by side.
    #[arg(long, default_value_t = 1)]
    pub groups: usize,
}

#[derive(clap::Args, Debug)]
pub struct PathsArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Beam N: states kept each round, per group [default: 256, or the rows of --init divided
    /// by --groups].
    #[arg(long)]
    pub particles: Option<usize>,
    /// Independent searches run side by side.
    #[arg(long, default_value_t = 1)]
    pub groups: usize,
    /// Copies M of each state per round.
    #[arg(long, default_value_t = 4)]
    pub candidates: usize,
    /// Time the beam is first integrated to.
    #[arg(long, default_value_t = 0.3, allow_hyphen_values = true)]
    pub t_start: f64,
    /// Backward renoising span Δf (rounded to whole grid steps; needs Δf > h).
    #[arg(long, default_value_t = 0.1, allow_hyphen_values = true)]
    pub delta_f: f64,
    /// Forward span Δb (rounded to whole grid steps; needs Δb > Δf).
    #[arg(long, default_value_t = 0.2, allow_hyphen_values = true)]
    pub delta_b: f64,
    /// Renoising form (docs/samplers.md): exact for the OT path, or the legacy x + (t−s)·ξ.
    #[arg(long, value_enum, default_value_t)]
    pub renoise: RenoiseForm,
    /// Keep the K best of each group at the end.
    #[arg(long, default_value_t = 1)]
    pub top_k: usize,
    /// Starting points: a .npy file of shape [N·G, D].
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
}

impl Args {
    /// The run layer's configuration of a search run.
    pub fn config(&self) -> SearchConfig {
        match &self.method {
            Method::Bon(a) => SearchConfig {
                common: a.common.config(),
                groups: a.groups,
                method: SearchMethod::Bon { particles: a.particles, top_k: a.top_k, init: a.init.clone() },
            },
            Method::Zeroth(a) => SearchConfig {
                common: a.common.config(),
                groups: a.groups,
                method: SearchMethod::Zeroth { candidates: a.candidates, cycles: a.cycles, radius: a.radius, pivot: a.pivot.clone() },
            },
            Method::Paths(a) => SearchConfig {
                common: a.common.config(),
                groups: a.groups,
                method: SearchMethod::Paths {
                    particles: a.particles,
                    candidates: a.candidates,
                    t_start: a.t_start,
                    delta_f: a.delta_f,
                    delta_b: a.delta_b,
                    renoise: a.renoise,
                    top_k: a.top_k,
                    init: a.init.clone(),
                },
            },
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match crate::distributed::driver::world() {
        // Under mpirun/srun: every search across the ranks (docs/distributed.md).
        Some(w) => crate::distributed::search::search(&*w, &args.config())?.map_or(Ok(()), |o| o.report()),
        None => crate::run::search(&args.config())?.report(),
    }
}
