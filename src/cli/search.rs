//! `flowsteer search bon|zeroth|paths`: the search baselines of SPEC §8, each reporting its NFE
//! so that methods compare with FK steering at equal compute.

use std::path::PathBuf;

use anyhow::bail;

use crate::memory;

use crate::backend::{Backend, Init};
use crate::cli::steer::{check_layout, CommonArgs, Prepared};
use crate::methods::{self, BonConfig, PathsConfig, ZerothConfig};
use crate::potential::{Potential, PotentialKind};
use crate::resample::ResampleScheme;
use crate::sampler::RenoiseForm;
use crate::summary::{self, Outputs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub method: Method,
}

#[derive(clap::Subcommand, Debug)]
pub enum Method {
    /// Best-of-N: N samples, keep the best by reward (--top-k for more).
    Bon(BonArgs),
    /// Zeroth-order search: C cycles of M candidates uniform in a ball around a pivot noise.
    Zeroth(ZerothArgs),
    /// Search over paths: a beam of N states, M renoised copies each, forward Δb, keep the top N.
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
    /// Beam N: states kept each round, per group [default: 256, or the rows of --init divided by
    /// --groups].
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
    /// Renoising form (SPEC §2): exact for the OT path, or the legacy x + (t−s)·ξ.
    #[arg(long, value_enum, default_value_t)]
    pub renoise: RenoiseForm,
    /// Keep the K best of each group at the end.
    #[arg(long, default_value_t = 1)]
    pub top_k: usize,
    /// Starting points: a .npy file of shape [N·G, D].
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
}

/// Search methods weigh nothing: the potential is `bon` and the resampling scheme unused.
fn search_potential() -> Potential {
    Potential { kind: PotentialKind::Bon, ..Potential::default() }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.method {
        Method::Bon(a) => {
            let prep = a.common.prepare(search_potential(), ResampleScheme::default(), None)?;
            let (layout, rows) = prep.layout_and_init(a.particles, 4096, a.groups, a.init.as_deref())?;
            let needs = memory::search_select(prep.memory_side(), prep.spec.model.dim, false, "--particles", layout.groups);
            memory::check(&needs, layout.total() as u64)?;
            let mut backend = prep.engine()?;
            let cfg = BonConfig { layout, top_k: a.top_k };
            let init = rows.as_deref().map_or(Init::Noise, Init::Given);
            let r = methods::best_of_n(&mut backend, &prep.spec, &cfg, init)?;
            let config = serde_json::json!({ "command": "search bon", "particles": layout.n, "groups": a.groups, "top_k": a.top_k,
                "init": a.init.as_ref().map(|p| p.display().to_string()) });
            report(&mut backend, &a.common, &prep, config, &r)
        }
        Method::Zeroth(a) => {
            let layout = check_layout(a.candidates, a.groups, "--candidates")?;
            let prep = a.common.prepare(search_potential(), ResampleScheme::default(), None)?;
            let dim = prep.spec.model.dim;
            let pivot = a.pivot.as_deref().map(|s| parse_pivot(s, dim, a.groups)).transpose()?;
            memory::check(&memory::search_select(prep.memory_side(), dim, false, "--candidates", layout.groups), layout.total() as u64)?;
            let mut backend = prep.engine()?;
            let cfg = ZerothConfig { layout, cycles: a.cycles, radius: a.radius, pivot };
            let r = methods::zeroth_order(&mut backend, &prep.spec, &cfg)?;
            let config = serde_json::json!({ "command": "search zeroth", "candidates": a.candidates, "cycles": a.cycles,
                "radius": a.radius, "pivot": a.pivot, "groups": a.groups });
            report(&mut backend, &a.common, &prep, config, &r)
        }
        Method::Paths(a) => {
            let prep = a.common.prepare(search_potential(), ResampleScheme::default(), None)?;
            let (layout, rows) = prep.layout_and_init(a.particles, 256, a.groups, a.init.as_deref())?;
            let cfg = PathsConfig {
                layout,
                candidates: a.candidates,
                t_start: a.t_start,
                delta_f: a.delta_f,
                delta_b: a.delta_b,
                renoise: a.renoise,
                top_k: a.top_k,
            };
            let grid = cfg.grid(prep.spec.sampler.steps).map_err(anyhow::Error::msg)?;
            let needs = memory::search_paths(prep.memory_side(), prep.spec.model.dim, a.candidates, false, layout.groups);
            memory::check(&needs, layout.total() as u64)?;
            let mut backend = prep.engine()?;
            let init = rows.as_deref().map_or(Init::Noise, Init::Given);
            let r = methods::search_over_paths(&mut backend, &prep.spec, &cfg, init)?;
            let config = serde_json::json!({ "command": "search paths", "particles": layout.n, "groups": a.groups,
                "candidates": a.candidates, "t_start": a.t_start, "delta_f": a.delta_f, "delta_b": a.delta_b,
                "grid_steps": { "start": grid.start, "back": grid.back, "forward": grid.forward },
                "renoise": a.renoise, "top_k": a.top_k, "init": a.init.as_ref().map(|p| p.display().to_string()) });
            report(&mut backend, &a.common, &prep, config, &r)
        }
    }
}

/// Prints the summary and writes the outputs of a search run.
fn report<B: Backend>(
    backend: &mut B,
    common: &CommonArgs,
    prep: &Prepared,
    config: serde_json::Value,
    r: &methods::RunResult,
) -> anyhow::Result<()> {
    let info = backend.info();
    // All final samples non-finite: an error naming the cause, nothing written (issue 13, item 4).
    if let Some(warning) = crate::finite::check_final_samples(&r.positions, r.dim, &prep.spec.model, &prep.spec.sampler)? {
        eprintln!("{warning}");
    }
    if !common.quiet {
        println!("flowsteer search {}: towards {} (larger is better); {} backend on {}", r.method, prep.spec.reward, info.backend, info.device);
        if !r.schedule.is_empty() && r.method == "paths" {
            println!("  rounds end at grid steps {:?}", r.schedule);
        }
        print!("{}", summary::human_summary(&prep.spec, r, None));
    }
    if let Some(dir) = &common.out {
        summary::write_outputs(dir, prep, common, config, &info, r, None, Outputs { ancestry: false, plot: common.plot })?;
    }
    Ok(())
}

/// `--pivot`: D comma-separated numbers (the same pivot for every group), or a .npy file of
/// shape [D] or [G, D].
pub fn parse_pivot(s: &str, dim: usize, groups: usize) -> anyhow::Result<Vec<f32>> {
    let one: Vec<f32> = if s.ends_with(".npy") {
        let a = crate::npy::read_f32(std::path::Path::new(s))?;
        if a.shape == [groups, dim] {
            check_finite(&a.data)?;
            return Ok(a.data);
        }
        if a.shape != [dim] {
            bail!("--pivot {s} holds an array of shape {:?}; expected [D] = [{dim}] or [G, D] = [{groups}, {dim}]", a.shape);
        }
        a.data
    } else {
        let v: Result<Vec<f32>, _> = s.split(',').map(|p| p.trim().parse::<f32>()).collect();
        let v = v.map_err(|_| anyhow::anyhow!("--pivot {s:?} is neither a .npy file nor comma-separated numbers like 0.1,-0.3"))?;
        if v.len() != dim {
            bail!("--pivot has {} numbers but the model's data dimension is D = {dim}; give {dim}", v.len());
        }
        v
    };
    check_finite(&one)?;
    Ok(one.iter().copied().cycle().take(dim * groups).collect())
}

fn check_finite(v: &[f32]) -> anyhow::Result<()> {
    if v.iter().any(|x| !x.is_finite()) {
        bail!("--pivot holds a non-finite value; give finite numbers");
    }
    Ok(())
}
