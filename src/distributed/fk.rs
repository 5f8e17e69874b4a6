//! Feynman–Kac steering (docs/steering.md) with the population split across ranks: the loop of
//! `methods::fk::steer` with the global weighing and resampling of this module's siblings. Rank 0
//! gathers the final population and returns the [`RunResult`] a single process would.

use anyhow::{bail, ensure};

use super::comm::{decode_f32s, decode_f64s, decode_u32s, Bytes, Communicator, Metered, Traffic};
use super::engine::RankEngine;
use super::population::{self, Population};
use super::resample;
use crate::backend::{Init, RunSpec};
use crate::methods::fk::resolve_schedule;
use crate::methods::{distinct_roots, timed, Clock, FkConfig, RunResult, TraceRow};
use crate::potential::PotentialKind;
use crate::resample::ResampleScheme;
use crate::reward::RewardOn;

/// Communication against compute, for the summary (docs/distributed.md).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CommReport {
    pub ranks: usize,
    /// Seconds inside collectives, this rank (rank 0's, in the summary).
    pub comm_seconds: f64,
    /// The run's seconds outside collectives.
    pub compute_seconds: f64,
    /// Bytes sent to other ranks, all ranks together, over the run.
    pub bytes_total: u64,
    /// Bytes sent by the resampling exchanges, all ranks together, per resampling step.
    pub bytes_per_resampling: f64,
    pub resamplings: usize,
}

/// Concatenates every rank's bytes on rank 0 (global order: shares are in rank order).
pub fn gather_concat(comm: &dyn Communicator, mine: &[u8]) -> Option<Vec<u8>> {
    comm.gather(0, mine).map(|parts| parts.concat())
}

/// Runs FK steering across the ranks of `comm`; `Some(result)` on rank 0, `None` elsewhere.
pub fn steer(comm: &dyn Communicator, spec: &RunSpec, cfg: &FkConfig, init: Init<'_>, engine: &RankEngine) -> anyhow::Result<(Option<RunResult>, CommReport)> {
    let comm = Metered::new(comm);
    let clock = Clock::start();
    let Ended { mut res, pop, rewards, ancestry, resampling_bytes, resamplings } = run_share(&comm, spec, cfg, init, engine)?;
    let layout = cfg.layout;
    let positions = gather_concat(&comm, &Bytes::f32s(&pop.rows()));
    let rewards = gather_concat(&comm, &Bytes::f32s(&rewards));
    let log_weights = gather_concat(&comm, &Bytes::f64s(&pop.log_w));
    let roots = gather_concat(&comm, &Bytes::u32s(&pop.root));
    let rows: Vec<Option<Vec<u8>>> = ancestry.iter().map(|a| gather_concat(&comm, &Bytes::u32s(a))).collect();
    let report = finish_report(&comm, &mut res, &clock, resampling_bytes, resamplings);
    let Some(positions) = positions else { return Ok((None, report)) };
    res.positions = decode_f32s(&positions);
    res.rewards = decode_f32s(&rewards.unwrap());
    res.log_weights = decode_f64s(&log_weights.unwrap());
    res.root_ids = decode_u32s(&roots.unwrap());
    res.distinct_ancestors = distinct_roots(&res.root_ids, layout);
    res.ancestry = cfg.keep_ancestors.then(|| rows.into_iter().map(|r| decode_u32s(&r.unwrap())).collect());
    Ok((Some(res), report))
}

/// What a rank holds when the steering loop ends, before anything is gathered.
pub struct Ended {
    /// The global parts of the result, the same on every rank (trace, schedule, log Ẑ, counters);
    /// the per-particle arrays are empty.
    pub res: RunResult,
    /// This rank's share of the final population.
    pub pop: Population,
    /// The final rewards of the share.
    pub rewards: Vec<f32>,
    /// Per resampling point, the ancestors of the share's particles (with `keep_ancestors`).
    pub ancestry: Vec<Vec<u32>>,
    resampling_bytes: u64,
    resamplings: usize,
}

/// FK steering across the ranks of `comm` where every rank keeps its share at the end (sharded
/// outputs, docs/distributed.md): nothing is gathered.
pub fn steer_kept(comm: &dyn Communicator, spec: &RunSpec, cfg: &FkConfig, init: Init<'_>, engine: &RankEngine) -> anyhow::Result<(Ended, CommReport)> {
    let comm = Metered::new(comm);
    let clock = Clock::start();
    let mut ended = run_share(&comm, spec, cfg, init, engine)?;
    let report = finish_report(&comm, &mut ended.res, &clock, ended.resampling_bytes, ended.resamplings);
    Ok((ended, report))
}

/// Total time and the communication figures, summed over ranks (a collective).
pub(super) fn finish_report(comm: &Metered, res: &mut RunResult, clock: &Clock, resampling_bytes: u64, resamplings: usize) -> CommReport {
    let mut traffic = [comm.traffic().bytes_sent as f64, resampling_bytes as f64];
    comm.inner.all_reduce_sum(&mut traffic);
    res.times.total = clock.seconds();
    let Traffic { seconds, .. } = comm.traffic();
    CommReport {
        ranks: comm.size(),
        comm_seconds: seconds,
        compute_seconds: res.times.total - seconds,
        bytes_total: traffic[0] as u64,
        bytes_per_resampling: if resamplings > 0 { traffic[1] / resamplings as f64 } else { 0.0 },
        resamplings,
    }
}

/// The steering loop on this rank's share.
fn run_share(comm: &Metered, spec: &RunSpec, cfg: &FkConfig, init: Init<'_>, engine: &RankEngine) -> anyhow::Result<Ended> {
    population::check_scheme(spec.resample)?;
    ensure!(spec.potential.kind != PotentialKind::Bon, "--potential bon does not run across MPI ranks yet; run it without mpirun");
    ensure!(cfg.max_intervals.is_none(), "--profile does not run across MPI ranks; profile one process");
    let layout = cfg.layout;
    if layout.total() < comm.size() {
        bail!("{} particles cannot be shared by {} MPI ranks: give at least one particle per rank (--particles × --groups ≥ {})", layout.total(), comm.size(), comm.size());
    }
    let schedule = resolve_schedule(spec, &cfg.schedule).map_err(anyhow::Error::msg)?;
    let mut res = RunResult::new(format!("fk-{}", spec.potential.kind), spec.model.dim);
    let total = layout.total() as u64;
    let evals = spec.sampler.evals_per_step() as u64;
    let mut pop = Population::new(spec, layout, comm, init, engine)?;
    if cfg.snapshots {
        gather_snapshot(comm, &pop, 0, &mut res);
    }
    let mut log_z = vec![0f64; layout.groups];
    let mut ancestry: Vec<Vec<u32>> = Vec::new();
    let mut resampling_bytes = 0u64;
    let mut resamplings = 0usize;
    let mut prev = 0usize;
    let mut roots_left = vec![layout.n as u64; layout.groups];
    for (k, &step) in schedule.steps.iter().enumerate() {
        let is_final = step == spec.sampler.steps;
        timed(&mut res.times.propagate, || pop.propagate(spec, prev..step))?;
        if cfg.snapshots {
            gather_snapshot(comm, &pop, step, &mut res);
        }
        // The final point resamples too with `final_resample` (every group, adaptive or not).
        let resamples = !is_final || cfg.final_resample;
        let forced = RunSpec { adaptive_ess: if is_final { None } else { spec.adaptive_ess }, ..spec.clone() };
        let spacings_at = (resamples && spec.resample == ResampleScheme::Multinomial).then_some(step);
        let w = timed(&mut res.times.potential, || population::weigh(comm, spec, &mut pop, step, is_final, spacings_at))?;
        let report = if !resamples {
            None
        } else {
            res.final_resampled = is_final;
            let before = comm.traffic().bytes_sent;
            let r = timed(&mut res.times.resample, || resample::resample(comm, &forced, &mut pop, &w, step));
            resampling_bytes += comm.traffic().bytes_sent - before;
            resamplings += 1;
            Some(r)
        };
        if report.as_ref().is_some_and(|r| r.groups.iter().any(|g| g.resampled)) {
            roots_left = distinct_roots_across(comm, &pop.root, layout);
        }
        res.particle_steps += total * (step - prev) as u64;
        res.nfe += total * (step - prev) as u64 * evals;
        if !is_final && spec.reward_on == RewardOn::X1Hat {
            res.nfe += total;
        }
        for (g, gw) in w.groups.iter().enumerate() {
            log_z[g] += gw.log_z_increment;
            res.nonfinite += gw.nonfinite;
            res.all_neg_inf_events += gw.all_neg_inf as u64;
            let r = report.as_ref().map(|r| r.groups[g]).unwrap_or_default();
            res.trace.push(TraceRow {
                ess: gw.ess,
                log_z_increment: gw.log_z_increment,
                max_log_weight: gw.max_log_weight,
                mean_reward: gw.mean_reward,
                nonfinite: gw.nonfinite,
                all_neg_inf: gw.all_neg_inf,
                resampled: r.resampled,
                distinct_parents: r.distinct_parents,
                distinct_ancestors: roots_left.get(g).copied().unwrap_or(0),
                nfe: res.nfe,
                ..TraceRow::blank(k, step, step as f64 / spec.sampler.steps as f64, g, layout.n)
            });
        }
        if cfg.keep_ancestors {
            if let Some(r) = &report {
                ancestry.push(r.ancestors.clone());
            }
        }
        prev = step;
    }
    let rewards = timed(&mut res.times.potential, || pop.rewards(spec, spec.sampler.steps, true))?;
    res.layout = layout;
    res.schedule = schedule.steps;
    res.log_z = Some(log_z);
    Ok(Ended { res, pop, rewards, ancestry, resampling_bytes, resamplings })
}

/// Distinct roots per group of the whole population (every rank's roots gathered on rank 0;
/// the trace is rank 0's). Empty on the other ranks.
fn distinct_roots_across(comm: &dyn Communicator, roots: &[u32], layout: crate::backend::Layout) -> Vec<u64> {
    gather_concat(comm, &Bytes::u32s(roots)).map_or_else(Vec::new, |all| distinct_roots(&decode_u32s(&all), layout))
}

fn gather_snapshot(comm: &dyn Communicator, pop: &Population, step: usize, res: &mut RunResult) {
    if let Some(rows) = gather_concat(comm, &Bytes::f32s(&pop.rows())) {
        res.snapshots.push((step, decode_f32s(&rows)));
    }
}
