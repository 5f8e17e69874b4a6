//! What one rank does under `mpirun`/`srun` (docs/distributed.md): find out whether it was
//! launched as one of several processes, check that every rank runs the same configuration, run
//! its share, and let rank 0 alone print and write the files of a single-process run. Errors name
//! the rank; one that only some ranks meet ends the whole job (`MPI_Abort`).
//!
//! Without a launcher (no `OMPI_COMM_WORLD_SIZE`, `PMI_SIZE` or `PMIX_RANK` in the environment)
//! nothing here runs and flowsteer behaves exactly as a single process.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use super::comm::{decode_f32s, Bytes, Communicator};
use super::fk::{self, gather_concat, CommReport};
use super::engine::RankEngine;
use super::population::Population;
use crate::backend::{Init, Layout, RunSpec};
use crate::methods::{self, FkConfig};
use crate::run::{Outcome, Prepared, SteerConfig};
use crate::potential::{Potential, PotentialKind};
use crate::summary::{self, Baseline, Outputs};

type Shared = Arc<dyn Communicator + Send + Sync>;

static WORLD: Mutex<Option<Shared>> = Mutex::new(None);
#[cfg(feature = "mpi")]
static MPI: Mutex<Option<Arc<super::mpi::MpiComm>>> = Mutex::new(None);

/// The number of processes a launcher started, when one did (0: launched, size unknown).
pub fn launched_size() -> Option<usize> {
    let var = |k: &str| std::env::var(k).ok();
    if let Some(s) = var("OMPI_COMM_WORLD_SIZE").or_else(|| var("PMI_SIZE")) {
        return Some(s.parse().unwrap_or(0));
    }
    var("PMIX_RANK").map(|_| 0)
}

/// Joins the launcher's world, when there is one. Called once by `main` before anything else.
pub fn start() -> anyhow::Result<()> {
    let Some(size) = launched_size() else { return Ok(()) };
    #[cfg(feature = "mpi")]
    {
        let _ = size;
        let comm = Arc::new(super::mpi::MpiComm::init().context("MPI was already initialised")?);
        *MPI.lock().unwrap() = Some(comm.clone());
        *WORLD.lock().unwrap() = Some(comm);
        Ok(())
    }
    #[cfg(not(feature = "mpi"))]
    {
        if size > 1 {
            bail!(
                "started by mpirun/srun as one of {size} processes, but this flowsteer was built without MPI, so each \
                 process would run the whole job alone; rebuild with `cargo build --release --features mpi` (needs an MPI \
                 library, e.g. Debian's libopenmpi-dev) or run it without mpirun"
            );
        }
        Ok(())
    }
}

/// The world this process runs in, when launched by MPI.
pub fn world() -> Option<Shared> {
    WORLD.lock().unwrap().clone()
}

/// Leaves the world (`MPI_Finalize`). Called once by `main` at the end.
pub fn finish() {
    WORLD.lock().unwrap().take();
    #[cfg(feature = "mpi")]
    MPI.lock().unwrap().take();
}

/// An error every rank meets identically (it came out of a collective check): only rank 0
/// prints it, and the job ends without `MPI_Abort`.
#[derive(Debug)]
pub struct Collective(pub String);

impl std::fmt::Display for Collective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Collective {}

/// Under mpirun/srun with several ranks, refuses the commands that do not run across ranks yet
/// (each rank would run the whole job alone and write the same files).
pub fn refuse_unless_distributed(command: &str) -> anyhow::Result<()> {
    let Some(w) = world() else { return Ok(()) };
    if w.size() > 1 && !matches!(command, "steer" | "sample" | "info" | "search bon" | "search zeroth" | "search paths" | "sweep") {
        let e = format!("`flowsteer {command}` does not run across MPI ranks yet (steer, sample, search bon, zeroth and paths, and sweep do); run it without mpirun");
        return Err(Collective(e).into());
    }
    Ok(())
}

/// Reports `e` and ends this process (and, for an error of this rank alone, the whole job).
pub fn fail(e: &anyhow::Error) -> std::process::ExitCode {
    let Some(w) = world() else {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    };
    let (rank, size) = (w.rank(), w.size());
    if e.downcast_ref::<Collective>().is_some() {
        if rank == 0 {
            eprintln!("error: {e:#}");
        }
        drop(w);
        finish();
        return std::process::ExitCode::FAILURE;
    }
    eprintln!("error on MPI rank {rank} of {size}: {e:#}");
    #[cfg(feature = "mpi")]
    if size > 1 {
        if let Some(m) = MPI.lock().unwrap().clone() {
            m.abort(1);
        }
    }
    drop(w);
    finish();
    std::process::ExitCode::FAILURE
}

/// Every rank's local result → the same result on every rank: Ok only if all succeeded, else a
/// [`Collective`] error naming the first rank that failed and its message. An error that is
/// already [`Collective`] (every rank holds it) is returned as it is, without a collective.
pub fn agree(comm: &dyn Communicator, local: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = &local {
        if e.downcast_ref::<Collective>().is_some() {
            return local;
        }
    }
    let mine = match &local {
        Ok(()) => Vec::new(),
        Err(e) => format!("{e:#}").into_bytes(),
    };
    for (r, msg) in comm.all_gather(&mine).into_iter().enumerate() {
        if !msg.is_empty() {
            let msg = String::from_utf8_lossy(&msg);
            return Err(Collective(if comm.size() > 1 { format!("MPI rank {r}: {msg}") } else { msg.into_owned() }).into());
        }
    }
    Ok(())
}

/// [`agree`] for a step that yields a value: a failure on any rank (a reward program that exits,
/// a GPU error) becomes the same error on every rank before anyone enters the next collective,
/// which a failed rank would never join.
pub fn agreed<T>(comm: &dyn Communicator, local: anyhow::Result<T>) -> anyhow::Result<T> {
    match local {
        Ok(v) => agree(comm, Ok(())).map(|()| v),
        Err(e) => agree(comm, Err(e)).map(|()| unreachable!("an error is never agreed to Ok")),
    }
}

/// Rank 0's SHA-256 of the command line and the model file against every rank's own: the
/// ranks that differ are named in a [`Collective`] error.
pub fn check_same_configuration(comm: &dyn Communicator, args: &[String], model: &std::path::Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(model).with_context(|| format!("reading the model file {}", model.display()))?;
    let mut h = Sha256::new();
    for a in args {
        h.update(a.as_bytes());
        h.update([0]);
    }
    h.update(Sha256::digest(&bytes));
    let mine = h.finalize().to_vec();
    let mut root = mine.clone();
    comm.broadcast(0, &mut root);
    let differ: Vec<String> = comm
        .all_gather(&[(mine != root) as u8])
        .iter()
        .enumerate()
        .filter(|(_, f)| f[0] == 1)
        .map(|(r, _)| r.to_string())
        .collect();
    if !differ.is_empty() {
        return Err(Collective(format!(
            "MPI rank(s) {} run a different command line or model file than rank 0; start every rank with the same \
             arguments and the same model file",
            differ.join(", ")
        ))
        .into());
    }
    Ok(())
}

/// The unsteered run of the same starting points, across ranks (rank 0 gets it).
pub fn baseline(comm: &dyn Communicator, spec: &RunSpec, layout: Layout, init: Init<'_>, engine: &RankEngine) -> anyhow::Result<Option<Baseline>> {
    let share = baseline_share(comm, spec, layout, init, engine)?;
    let rewards = gather_concat(comm, &Bytes::f32s(&share.rewards));
    let positions = gather_concat(comm, &Bytes::f32s(&share.positions));
    Ok(rewards.map(|r| Baseline { rewards: decode_f32s(&r), positions: decode_f32s(&positions.unwrap()) }))
}

/// This rank's share of the unsteered run of the same starting points (rewards, rows).
pub fn baseline_share(comm: &dyn Communicator, spec: &RunSpec, layout: Layout, init: Init<'_>, engine: &RankEngine) -> anyhow::Result<Baseline> {
    let mut plain = spec.clone();
    plain.potential = Potential { kind: PotentialKind::Is, ..spec.potential };
    let mut pop = Population::new(&plain, layout, comm, init, engine)?;
    agreed(comm, pop.propagate(&plain, 0..plain.sampler.steps))?;
    Ok(Baseline { rewards: agreed(comm, pop.rewards(&plain, plain.sampler.steps, true))?, positions: pop.rows() })
}

/// How a distributed run leaves its per-particle arrays (docs/distributed.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputForm {
    /// Rank 0 gathers them and writes the files of a single-process run.
    #[default]
    Gathered,
    /// Each rank writes its share, rank 0 a manifest (`--shard-outputs`, [`super::shards`]).
    Sharded,
}

/// `flowsteer steer` on every rank of `comm` (the run layer's `run::steer` for one population
/// across ranks): `Some(outcome)` on rank 0, which reports it as a single process would. With
/// [`OutputForm::Sharded`] the run reports and writes its files itself and returns None.
pub fn steer(comm: &dyn Communicator, cfg: &SteerConfig, form: OutputForm) -> anyhow::Result<Option<Outcome>> {
    let mut common = cfg.common.clone();
    let out = common.out.clone();
    if comm.rank() != 0 {
        // Rank 0 alone prints and writes.
        common.quiet = true;
        common.out = None;
    }
    let argv: Vec<String> = std::env::args().collect();
    let prepared = (|| {
        if cfg.profile.is_some() {
            bail!("--profile does not run across MPI ranks; profile one process");
        }
        if cfg.tempering != crate::methods::Tempering::Constant {
            bail!("--lambda-schedule other than constant does not run across MPI ranks yet; run it in one process");
        }
        cfg.schedule.validate().map_err(anyhow::Error::msg)?;
        if cfg.ancestry && out.is_none() {
            bail!("--ancestry writes ancestry.npy into the output directory; give --out DIR");
        }
        if form == OutputForm::Sharded {
            if out.is_none() {
                bail!("--shard-outputs writes one file per rank into the output directory; give --out DIR");
            }
            if common.plot {
                bail!("--plot draws every particle in one process, which --shard-outputs avoids; drop --plot, or --shard-outputs");
            }
        }
        let prep = Prepared::new(&common, cfg.potential, cfg.resample, cfg.adaptive_ess)?;
        let engine = RankEngine::open(prep.backend.choice, comm)?;
        engine.check_model(&prep.spec.model).with_context(|| format!("model file {}", prep.model_path.display()))?;
        let (layout, init_rows) =
            prep.layout_and_init(cfg.particles, crate::run::steer::DEFAULT_PARTICLES, cfg.groups, cfg.init.as_deref())?;
        if form == OutputForm::Gathered && comm.rank() == 0 {
            // Rank 0 alone gathers every particle: refused before any work when they cannot fit.
            let rows = if cfg.ancestry { methods::fk::resolve_schedule(&prep.spec, &cfg.schedule).map_or(0, |s| s.steps.len()) } else { 0 };
            let per = super::shards::gathered_bytes_per_particle(prep.spec.model.dim, cfg.baseline, rows);
            super::shards::check_gather_fits(layout.total(), per, crate::memory::available().as_ref())?;
        }
        Ok((prep, layout, init_rows, engine))
    })();
    let (prep, layout, init_rows, engine) = agreed(comm, prepared)?;
    check_same_configuration(comm, &argv, &prep.model_path)?;
    let schedule = cfg.schedule;
    let fk_cfg = FkConfig { layout, schedule, keep_ancestors: cfg.ancestry, fused: false, snapshots: common.plot, max_intervals: None, final_resample: cfg.final_resample };
    let resolved = methods::fk::resolve_schedule(&prep.spec, &schedule).map_err(anyhow::Error::msg)?;
    let info = engine.info();
    if !common.quiet {
        let spec = &prep.spec;
        let groups = if layout.groups > 1 { format!(" × {} groups", layout.groups) } else { String::new() };
        println!("flowsteer steer: FK steering towards {} (larger is better), potential {}, λ = {}", spec.reward, spec.potential.kind, spec.potential.lambda);
        let setup = format!(
            "{} particles{groups} on {} MPI ranks, sampler {}, seed {}; model {}; {} backend on {} per rank",
            layout.n,
            comm.size(),
            spec.sampler,
            spec.seed,
            prep.model_path.display(),
            info.backend,
            info.device
        );
        println!("{}", summary::wrap(&setup));
        println!("  resampling at grid steps {resolved}");
    }
    if let (Some(w), false) = (crate::run::steer::ode_resampling_warning(&prep.spec), common.quiet) {
        eprintln!("{w}");
    }
    let init = init_rows.as_deref().map_or(Init::Noise, Init::Given);
    if form == OutputForm::Sharded {
        super::shards::steer(comm, cfg, prep, info, &fk_cfg, init, &common, &engine).map(|()| None)
    } else {
        steer_gathered(comm, cfg, prep, info, &fk_cfg, init, common, &engine)
    }
}

/// [`steer`] with the arrays gathered on rank 0.
fn steer_gathered(
    comm: &dyn Communicator,
    cfg: &SteerConfig,
    prep: Prepared,
    info: crate::backend::BackendInfo,
    fk_cfg: &FkConfig,
    init: Init<'_>,
    common: crate::run::CommonConfig,
    engine: &RankEngine,
) -> anyhow::Result<Option<Outcome>> {
    let layout = fk_cfg.layout;
    let (result, report) = agreed(comm, fk::steer(comm, &prep.spec, fk_cfg, init, engine))?;
    let baseline = if cfg.baseline { baseline(comm, &prep.spec, layout, init, engine)? } else { None };
    let Some(result) = result else { return Ok(None) };
    if !common.quiet {
        eprintln!("{}", comm_line(&report));
    }
    let config = steer_config_json(cfg, &prep, layout, &report);
    Ok(Some(Outcome {
        prepared: prep,
        info,
        result,
        baseline,
        config,
        files: Outputs { ancestry: cfg.ancestry, plot: common.plot },
        out: common.out,
        force: common.force,
        quiet: common.quiet,
        profiled: false,
    }))
}

/// `config.run` of a distributed steering run's summary.json.
pub fn steer_config_json(cfg: &SteerConfig, prep: &Prepared, layout: Layout, report: &CommReport) -> serde_json::Value {
    let schedule = cfg.schedule;
    serde_json::json!({
        "command": "steer",
        "particles": layout.n,
        "groups": layout.groups,
        "potential": prep.spec.potential,
        "resample": prep.spec.resample,
        "resample_count": schedule.count,
        "resample_every": schedule.every,
        "t_start": schedule.t_start,
        "t_end": schedule.t_end,
        "adaptive_ess": cfg.adaptive_ess,
        "init": cfg.init.as_ref().map(|p| p.display().to_string()),
        "fused": false,
        "final_resample": cfg.final_resample,
        "clamp_weights": cfg.potential.clamp_weights,
        "mpi": report,
    })
}

/// The summary's line on communication against compute.
pub fn comm_line(r: &CommReport) -> String {
    format!(
        "  MPI: {} ranks; rank 0 spent {:.3} s in communication and {:.3} s computing; {:.0} bytes moved per resampling ({} resamplings, {} bytes in all)",
        r.ranks, r.comm_seconds, r.compute_seconds, r.bytes_per_resampling, r.resamplings, r.bytes_total
    )
}

/// `flowsteer sample` across ranks: each rank integrates its share on the engine of `choice`
/// (super::engine); rank 0 gets every sample, `[n, D]` in global order (the same bits as one
/// process of that engine: every draw is keyed by the global index) and the engine's
/// description. `None` on the other ranks, which then stop.
pub fn sample_rows(
    comm: &dyn Communicator,
    spec: &RunSpec,
    n: usize,
    init: Option<&[f32]>,
    model: &std::path::Path,
    times: &mut crate::run::sample::PhaseTimes,
    choice: crate::backend::BackendChoice,
) -> anyhow::Result<Option<(Vec<f32>, crate::backend::BackendInfo)>> {
    let local = (|| {
        if n < comm.size() {
            bail!("{n} particles cannot be shared by {} MPI ranks: give at least one particle per rank (--particles ≥ {})", comm.size(), comm.size());
        }
        let engine = RankEngine::open(choice, comm)?;
        engine.check_model(&spec.model).with_context(|| format!("model file {}", model.display()))?;
        Ok(engine)
    })();
    let engine = agreed(comm, local)?;
    check_same_configuration(comm, &std::env::args().collect::<Vec<_>>(), model)?;
    let clock = std::time::Instant::now();
    let mut pop = Population::new(spec, Layout { n, groups: 1 }, comm, init.map_or(Init::Noise, Init::Given), &engine)?;
    times.init = clock.elapsed().as_secs_f64();
    let clock = std::time::Instant::now();
    agreed(comm, pop.propagate(spec, 0..spec.sampler.steps))?;
    let rows = gather_concat(comm, &Bytes::f32s(&pop.rows()));
    times.propagate = clock.elapsed().as_secs_f64();
    Ok(rows.map(|r| (decode_f32s(&r), engine.info())))
}
