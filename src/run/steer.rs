//! A steering run: [`SteerConfig`] → prepared run → FK steering (docs/steering.md) and its
//! unsteered baseline → [`Outcome`].

use anyhow::bail;

use super::config::SteerConfig;
use super::method::{self, Method};
use super::outcome::Outcome;
use super::prepare::Prepared;
use crate::backend::{Backend, BackendChoice, Init, RunSpec};
use crate::sampler::SamplerKind;
use crate::methods::{self, FkConfig};
use crate::summary::{self, Outputs};

/// Particles per group when neither `--particles` nor `--init` is given.
pub const DEFAULT_PARTICLES: usize = 4096;

/// Runs FK steering as `cfg` says. Unless `cfg.common.quiet`, prints the run's heading on stdout
/// first (and, for a profiled run, its phase times). Call [`Outcome::report`] to print the
/// summary and write the files.
pub fn steer(cfg: &SteerConfig) -> anyhow::Result<Outcome> {
    let mut common = cfg.common.clone();
    let (mut plot, mut ancestry) = (common.plot, cfg.ancestry);
    if cfg.profile.is_some() {
        // A cut run is not a result: write nothing (and create no --out directory).
        if let Some(dir) = common.out.take() {
            eprintln!("--profile: ignoring --out {} (a profiled run writes no files)", dir.display());
        }
        (plot, ancestry) = (false, false);
        common.plot = false;
    }
    let schedule = cfg.schedule;
    schedule.validate().map_err(anyhow::Error::msg)?;
    if ancestry && common.out.is_none() {
        bail!("--ancestry writes ancestry.npy into the output directory; give --out DIR");
    }
    cfg.tempering.check(cfg.potential.kind).map_err(anyhow::Error::msg)?;
    let prep = Prepared::new(&common, cfg.potential, cfg.resample, cfg.adaptive_ess)?;
    check_clamp_backend(&prep)?;
    let (layout, init_rows) = prep.layout_and_init(cfg.particles, DEFAULT_PARTICLES, cfg.groups, cfg.init.as_deref())?;
    // Refused before any allocation when it cannot fit (issue 13, item 1).
    let points = methods::fk::resolve_schedule(&prep.spec, &schedule).map_err(anyhow::Error::msg)?.steps.len();
    let needs = crate::memory::steer(prep.memory_side(), prep.spec.model.dim, points, ancestry, cfg.baseline, false, layout.groups);
    crate::memory::check(&needs, layout.total() as u64)?;
    let mut backend = prep.engine()?;
    if let Some(n) = cfg.profile {
        super::profile::start(&mut backend, n);
    }
    let fk = FkConfig { layout, schedule, keep_ancestors: ancestry, fused: cfg.fused, snapshots: plot, max_intervals: cfg.profile, final_resample: cfg.final_resample };
    let resolved = methods::fk::resolve_schedule(&prep.spec, &schedule).map_err(anyhow::Error::msg)?;
    let quiet = common.quiet;
    if !quiet {
        let (spec, info) = (&prep.spec, backend.info());
        let groups = if layout.groups > 1 { format!(" × {} groups", layout.groups) } else { String::new() };
        println!("flowsteer steer: FK steering towards {} (larger is better), potential {}, λ = {}", spec.reward, spec.potential.kind, spec.potential.lambda);
        let setup = format!(
            "{} particles{groups}, sampler {}, seed {}; model {}; {} backend on {}",
            layout.n,
            spec.sampler,
            spec.seed,
            prep.model_path.display(),
            info.backend,
            info.device
        );
        println!("{}", summary::wrap(&setup));
        println!("  resampling at grid steps {resolved}");
    }
    if let (Some(w), false) = (ode_resampling_warning(&prep.spec), quiet) {
        eprintln!("{w}");
    }
    let init = init_rows.as_deref().map_or(Init::Noise, Init::Given);
    let result = method::execute(&mut backend, &prep.spec, &Method::Steer(fk, cfg.tempering), init)?;
    if let (Some(c), false) = (prep.spec.reward.command(), quiet) {
        let (seconds, batches) = c.time_spent();
        let copies = c.copy_time();
        let copied = if copies > 0.0 { format!(", and {copies:.3} s copying between the device and the host") } else { String::new() };
        println!("  reward program: {seconds:.3} s in {batches} batches{copied}");
    }
    let profiled = cfg.profile.is_some();
    if profiled {
        let t = &result.times;
        println!(
            "profile: ran {} of {} resampling intervals (up to grid step {}); seconds: propagate {:.6}, potential {:.6}, resample {:.6}, fused intervals {:.6}, total {:.6}",
            result.schedule.len(),
            resolved.steps.len(),
            result.schedule.last().copied().unwrap_or(0),
            t.propagate,
            t.potential,
            t.resample,
            t.fused_intervals,
            t.total
        );
    }
    // All final samples non-finite: an error naming the cause, nothing written (issue 13, item 4).
    if !profiled {
        if let Some(warning) = crate::finite::check_final_samples(&result.positions, result.dim, &prep.spec.model, &prep.spec.sampler)? {
            eprintln!("{warning}");
        }
    }
    let baseline = if !cfg.baseline || profiled { None } else { Some(method::baseline(&mut backend, &prep.spec, layout, init)?) };
    let config = serde_json::json!({
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
        "lambda_schedule": cfg.tempering,
        "init": cfg.init.as_ref().map(|p| p.display().to_string()),
        "fused": cfg.fused,
        "final_resample": cfg.final_resample,
        "clamp_weights": cfg.potential.clamp_weights,
    });
    let info = backend.info();
    Ok(Outcome {
        prepared: prep,
        info,
        result,
        baseline,
        config,
        files: Outputs { ancestry, plot },
        out: common.out,
        force: common.force,
        quiet,
        profiled,
    })
}

/// `--clamp-weights` is applied in `Potential::update`, which the CPU backend (and every MPI
/// rank) calls; `kernels/potential.cu` does not clamp, so the CUDA backend refuses it rather than
/// run without it.
pub fn check_clamp_backend(prep: &Prepared) -> anyhow::Result<()> {
    if prep.spec.potential.clamp_weights.is_some() && prep.backend.choice != BackendChoice::Cpu {
        bail!(
            "--clamp-weights runs on the CPU backend only (the CUDA kernels do not clamp weights); add --backend cpu, \
             or leave --clamp-weights out (it is biased and only reproduces the 2025 tutorial's figures)"
        );
    }
    Ok(())
}

/// A warning when an ODE sampler (or the SDE with k = 0) is used with intermediate resampling:
/// the copies a resampling makes then follow one deterministic path and never diverge, so the
/// final samples hold many identical points (docs/steering.md "Defaults").
pub fn ode_resampling_warning(spec: &RunSpec) -> Option<String> {
    let deterministic = spec.sampler.kind != SamplerKind::Sde || spec.sampler.k == 0.0;
    if !(deterministic && spec.potential.kind.resamples_intermediate()) {
        return None;
    }
    let name = match spec.sampler.kind {
        SamplerKind::Sde => "--sampler sde with --k 0".to_string(),
        kind => format!("--sampler {}", clap::ValueEnum::to_possible_value(&kind).map_or(String::new(), |v| v.get_name().to_string())),
    };
    Some(summary::wrap(&format!(
        "warning: {name} is deterministic, so the copies that resampling makes of a particle follow the same path \
         and stay identical: the final samples hold many repeated points. FK steering needs noise after each \
         resampling: use --sampler sde (the default for steer; docs/steering.md)."
    )))
}
