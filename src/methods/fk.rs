//! Feynman–Kac steering (docs/steering.md, docs/resampling.md, docs/schedules.md), written once for every backend.
//!
//! The loop: integrate to the next resampling point, weigh (reward on x̂1 or x_t, potential,
//! carried log-weights, per-group ESS and log Ẑ increment), resample (or carry, under adaptive
//! resampling) — and at t = 1 weigh with the terminal correction, then either keep the final
//! weights or draw an equally weighted sample from them (`FkConfig::final_resample`,
//! docs/outputs.md "Weighted or equally weighted").

use crate::backend::{Backend, Init, IntervalPlan, Layout, RunSpec, ScoreOn, WeighAt};
use crate::potential::PotentialKind;
use crate::reward::RewardOn;

use super::{distinct_roots, timed, Clock, RunResult, Schedule, ScheduleSpec, Tempering, TraceRow};

/// What an FK run needs besides the [`RunSpec`].
#[derive(Clone, Debug)]
pub struct FkConfig {
    pub layout: Layout,
    pub schedule: ScheduleSpec,
    /// Keep `[K, total]` ancestor indices (`--ancestry`).
    pub keep_ancestors: bool,
    /// Run each interval as one `Backend::interval` call (a GPU may capture it as one graph);
    /// per-phase times are then not separable.
    pub fused: bool,
    /// Read the positions at t = 0 and at every resampling point (before resampling when not
    /// fused) into [`RunResult::snapshots`], for plots.
    pub snapshots: bool,
    /// `--profile N`: stop after the first N intervals (no final scoring; the result holds only
    /// the trace and times of those intervals). `None`: the whole run.
    pub max_intervals: Option<usize>,
    /// Resample once more at t = 1 with the final weights (always, adaptive or not), so that the
    /// final particles are an equally weighted sample of the target instead of a weighted one
    /// (docs/outputs.md). Ignored by `bon`, which weighs nothing.
    pub final_resample: bool,
}

/// The resampling points for `spec`: the schedule for potentials that weigh at intermediate
/// steps, only the final time for `is` and `bon` (docs/steering.md).
pub fn resolve_schedule(spec: &RunSpec, schedule: &ScheduleSpec) -> Result<Schedule, String> {
    let s = schedule.resolve(spec.sampler.steps)?;
    Ok(if spec.potential.kind.resamples_intermediate() { s } else { Schedule::final_only(spec.sampler.steps) })
}

/// Runs FK steering from `init` (docs/steering.md). For `bon` the final particles are sorted by reward,
/// best first.
pub fn steer<B: Backend>(backend: &mut B, spec: &RunSpec, cfg: &FkConfig, init: Init<'_>) -> anyhow::Result<RunResult> {
    steer_tempered(backend, spec, cfg, Tempering::Constant, init)
}

/// [`steer`] with λ per resampling point from `tempering` (`methods::tempering`); the final
/// point always uses `spec.potential.lambda`, so the target stays `p·exp(λ r)`.
pub fn steer_tempered<B: Backend>(backend: &mut B, spec: &RunSpec, cfg: &FkConfig, tempering: Tempering, init: Init<'_>) -> anyhow::Result<RunResult> {
    let clock = Clock::start();
    tempering.check(spec.potential.kind).map_err(anyhow::Error::msg)?;
    let schedule = resolve_schedule(spec, &cfg.schedule).map_err(anyhow::Error::msg)?;
    let mut res = RunResult::new(format!("fk-{}", spec.potential.kind), spec.model.dim);
    res.times.fused = cfg.fused;
    let layout = cfg.layout;
    let total = layout.total() as u64;
    let evals = spec.sampler.evals_per_step() as u64;
    let mut p = backend.init(spec, layout, init)?;
    if cfg.snapshots {
        res.snapshots.push((0, backend.read_positions(&p)?));
    }
    let mut log_z = vec![0f64; layout.groups];
    let mut ancestry = cfg.keep_ancestors.then(Vec::new);
    let mut prev = 0usize;
    let mut roots_left = vec![layout.n as u64; layout.groups];
    let limit = cfg.max_intervals.unwrap_or(usize::MAX);
    let points = schedule.steps.len();
    let (mut lambda_prev, mut level) = (0f32, 0f32);
    // The spec of one point: λ_k in place of λ (a run-time kernel argument on the device).
    let mut point_spec = spec.clone();
    for (k, &step) in schedule.steps.iter().enumerate().take(limit) {
        let is_final = step == spec.sampler.steps;
        let at = WeighAt { step, index: k, is_final };
        let plan = IntervalPlan { steps: prev..step, weigh: at, resample: !is_final, keep_ancestors: cfg.keep_ancestors };
        let adaptive = match tempering {
            Tempering::Adaptive { target_ess } if !is_final => Some(target_ess),
            _ => None,
        };
        point_spec.potential.lambda = if is_final { spec.potential.lambda } else { tempering.fixed(spec.potential.lambda, k, points) };
        // The final resampling draws in every group whatever its ESS: no adaptive threshold at
        // t = 1 (a backend may take the skip decision while weighing, so from the weighing on).
        let final_resample = is_final && cfg.final_resample && spec.potential.kind != PotentialKind::Bon;
        point_spec.adaptive_ess = if final_resample { None } else { spec.adaptive_ess };
        let spec = &point_spec;
        let mut report = if let Some(target) = adaptive {
            // λ_k by bisection on this point's rewards (one extra reward evaluation).
            timed(&mut res.times.propagate, || backend.propagate(spec, &mut p, plan.steps.clone()))?;
            if cfg.snapshots {
                res.snapshots.push((step, backend.read_positions(&p)?));
            }
            let r = timed(&mut res.times.potential, || backend.score(spec, &mut p, ScoreOn::Intermediate { step }))?;
            if spec.reward_on == RewardOn::X1Hat {
                res.nfe += total;
            }
            let lw = backend.read_log_weights(&p)?;
            // rt compounds across resamplings: the level reached is Σ λ_j, so λ_k is an increment
            // within what is left of the final λ (methods::tempering).
            let left = (spec.potential.lambda - level).max(0.0);
            let lambda = super::tempering::adaptive_lambda(&lw, &r, layout.n, 0.0, left, target);
            level += lambda;
            let mut sp = spec.clone();
            sp.potential.lambda = lambda;
            let weights = timed(&mut res.times.potential, || backend.weigh(&sp, &mut p, at))?;
            let (resample, ancestors) = timed(&mut res.times.resample, || backend.resample(&sp, &mut p, step, cfg.keep_ancestors))?;
            lambda_prev = lambda;
            crate::backend::IntervalReport { weights, resample, ancestors }
        } else if cfg.fused {
            let r = timed(&mut res.times.fused_intervals, || backend.interval(spec, &mut p, &plan))?;
            if cfg.snapshots {
                res.snapshots.push((step, backend.read_positions(&p)?));
            }
            r
        } else {
            timed(&mut res.times.propagate, || backend.propagate(spec, &mut p, plan.steps.clone()))?;
            if cfg.snapshots {
                res.snapshots.push((step, backend.read_positions(&p)?));
            }
            let weights = timed(&mut res.times.potential, || backend.weigh(spec, &mut p, at))?;
            let (resample, ancestors) = if plan.resample {
                timed(&mut res.times.resample, || backend.resample(spec, &mut p, step, cfg.keep_ancestors))?
            } else {
                (Vec::new(), None)
            };
            crate::backend::IntervalReport { weights, resample, ancestors }
        };
        if final_resample {
            let (resample, ancestors) = timed(&mut res.times.resample, || backend.resample(spec, &mut p, step, cfg.keep_ancestors))?;
            (report.resample, report.ancestors) = (resample, ancestors);
            res.final_resampled = true;
        }
        // Distinct starting particles left after this point (read only when something moved; a
        // profiled run skips the read-back so that its timeline shows only the primitives).
        if report.resample.iter().any(|r| r.resampled) && cfg.max_intervals.is_none() {
            roots_left = distinct_roots(&backend.read_root_ids(&p)?, layout);
        }
        res.particle_steps += total * (step - prev) as u64;
        res.nfe += total * (step - prev) as u64 * evals;
        // The intermediate reward on x̂1 costs one evaluation per particle.
        if !is_final && spec.reward_on == RewardOn::X1Hat {
            res.nfe += total;
        }
        for (g, w) in report.weights.iter().enumerate() {
            log_z[g] += w.log_z_increment;
            res.nonfinite += w.nonfinite;
            res.all_neg_inf_events += w.all_neg_inf as u64;
            let r = report.resample.get(g).copied().unwrap_or_default();
            res.trace.push(TraceRow {
                ess: w.ess,
                log_z_increment: w.log_z_increment,
                max_log_weight: w.max_log_weight,
                mean_reward: w.mean_reward,
                nonfinite: w.nonfinite,
                all_neg_inf: w.all_neg_inf,
                resampled: r.resampled,
                distinct_parents: r.distinct_parents,
                distinct_ancestors: roots_left.get(g).copied().unwrap_or(0),
                nfe: res.nfe,
                lambda: if adaptive.is_some() { lambda_prev as f64 } else { spec.potential.lambda as f64 },
                ..TraceRow::blank(k, step, step as f64 / spec.sampler.steps as f64, g, layout.n)
            });
        }
        if let (Some(rows), Some(a)) = (ancestry.as_mut(), report.ancestors) {
            rows.push(a);
        }
        prev = step;
    }
    if limit < schedule.steps.len() {
        // Cut short by --profile: the particles are mid-run, so there is nothing final to read.
        res.layout = layout;
        res.schedule = schedule.steps[..limit].to_vec();
        res.times.total = clock.seconds();
        return Ok(res);
    }
    if spec.potential.kind == PotentialKind::Bon {
        timed(&mut res.times.resample, || backend.select_top(spec, &mut p, ScoreOn::Sample, layout.n))?;
    }
    res.rewards = timed(&mut res.times.potential, || backend.score(spec, &mut p, ScoreOn::Sample))?;
    res.positions = backend.read_positions(&p)?;
    res.log_weights = backend.read_log_weights(&p)?;
    res.root_ids = backend.read_root_ids(&p)?;
    res.distinct_ancestors = distinct_roots(&res.root_ids, layout);
    res.layout = layout;
    res.schedule = schedule.steps;
    res.ancestry = ancestry;
    res.log_z = Some(log_z);
    res.times.total = clock.seconds();
    Ok(res)
}
