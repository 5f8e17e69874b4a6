//! Best-of-N and zeroth-order search (docs/search.md) with the population split across ranks
//! (docs/distributed.md).
//!
//! Each rank integrates its share and keeps, per group, its own K best by the single process's
//! order (`backend::cpu::rank_order`: higher reward first, NaN last, ties to the lower index).
//! Every member of a group's global top K is in its own rank's top K, so rank 0 merging the at
//! most P·K candidates per group in the same order (ties by the global index) picks what one
//! process picks: the same rows, rewards and roots, bit for bit. Only the candidates travel
//! (`K·G·(4·D + 12)` bytes per rank). The trace's mean reward is a sum of per-rank sums in rank
//! order (its last bits may change with P); its best reward is exact.
//!
//! Zeroth-order search is best-of-1 per cycle, with the winner's starting point (the next pivot)
//! sent to every rank. Search over paths is [`super::paths`]; [`search`] runs all three.

use std::cmp::Ordering;

use anyhow::{bail, ensure, Context};

use super::comm::{Bytes, Communicator, Metered, Reader, Traffic};
use super::driver::{agree, agreed, check_same_configuration};
use super::engine::RankEngine;
use super::fk::{gather_concat, CommReport};
use super::population::Population;
use crate::backend::cpu::score_order;
use crate::backend::{Init, Layout, RunSpec};
use crate::methods::{distinct_roots, timed, Clock, PathsConfig, RunResult, TraceRow, ZerothConfig};
use crate::resample::ResampleScheme;
use crate::run::method::search_potential;
use crate::run::prepare::check_layout;
use crate::run::search::parse_pivot;
use crate::run::{Outcome, Prepared, SearchConfig, SearchMethod};
use crate::summary::Outputs;

/// One rank's best particle of a group: its within-group index, reward, position and (for the
/// zeroth-order search, whose pivot moves there) starting point.
#[derive(Clone, Debug)]
struct Candidate {
    index: u64,
    reward: f32,
    row: Vec<f32>,
    start: Vec<f32>,
}

/// A group's K best over every rank, best first, with its finite-reward sum and count and its
/// largest non-NaN reward (the trace's mean and best).
#[derive(Clone, Debug)]
struct GroupTop {
    sum: f64,
    count: u64,
    best: f64,
    kept: Vec<Candidate>,
}

impl GroupTop {
    fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Per group touched here, the record [`merge`] reads: the finite sum and count, the largest
/// non-NaN reward, and this rank's `k` best (with their starting points when `starts` is given).
fn local_tops(pop: &Population, rewards: &[f32], k: usize, starts: Option<&[f32]>) -> Vec<u8> {
    let dim = pop.dim;
    let rows = pop.rows();
    let mut mine = Bytes::default();
    for g in pop.groups() {
        let seg = pop.local_segment(g);
        let s = &rewards[seg.clone()];
        let finite: Vec<f64> = s.iter().filter(|v| v.is_finite()).map(|&v| v as f64).collect();
        let best = s.iter().filter(|v| !v.is_nan()).fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let first = (pop.range.start + seg.start - g * pop.layout.n) as u64;
        let row = |x: &[f32], i: usize| x[i * dim..(i + 1) * dim].to_vec();
        let mut here: Vec<Candidate> = seg
            .clone()
            .zip(first..)
            .map(|(i, index)| Candidate { index, reward: rewards[i], row: row(&rows, i), start: starts.map(|x| row(x, i)).unwrap_or_default() })
            .collect();
        here.sort_by(best_first);
        here.truncate(k);
        mine.u64(g as u64).f64(finite.iter().sum()).u64(finite.len() as u64).f64(best).u64(here.len() as u64);
        for c in &here {
            mine.u64(c.index).f32(c.reward);
            for &x in c.row.iter().chain(&c.start) {
                mine.f32(x);
            }
        }
    }
    mine.0
}

/// Every rank's [`local_tops`], concatenated in rank order → each group's `k` best overall.
fn merge(all: &[u8], groups: usize, k: usize, dim: usize, with_starts: bool) -> Vec<GroupTop> {
    let mut tops = vec![GroupTop { sum: 0.0, count: 0, best: f64::NEG_INFINITY, kept: Vec::new() }; groups];
    let mut r = Reader::new(all);
    while !r.done() {
        let t = &mut tops[r.u64() as usize];
        t.sum += r.f64();
        t.count += r.u64();
        t.best = t.best.max(r.f64());
        for _ in 0..r.u64() {
            let (index, reward) = (r.u64(), r.f32());
            let row = (0..dim).map(|_| r.f32()).collect();
            let start = if with_starts { (0..dim).map(|_| r.f32()).collect() } else { Vec::new() };
            t.kept.push(Candidate { index, reward, row, start });
        }
    }
    for t in &mut tops {
        t.kept.sort_by(best_first);
        t.kept.truncate(k);
    }
    tops
}

/// The final result of a search from each group's kept candidates: `kept` per group, best first.
fn finish(res: &mut RunResult, tops: &[GroupTop], kept: Layout) {
    for t in tops {
        for c in &t.kept {
            res.positions.extend_from_slice(&c.row);
            res.rewards.push(c.reward);
            res.root_ids.push(c.index as u32);
        }
    }
    res.log_weights = vec![0.0; kept.total()];
    res.nonfinite = res.rewards.iter().filter(|r| !r.is_finite()).count() as u64;
    res.distinct_ancestors = distinct_roots(&res.root_ids, kept);
    res.layout = kept;
}

/// Communication figures of a search (no resampling), summed over ranks (a collective).
fn report(comm: &Metered, res: &mut RunResult, clock: &Clock) -> CommReport {
    res.times.total = clock.seconds();
    let mut traffic = [comm.traffic().bytes_sent as f64];
    comm.inner.all_reduce_sum(&mut traffic);
    let Traffic { seconds, .. } = comm.traffic();
    CommReport {
        ranks: comm.size(),
        comm_seconds: seconds,
        compute_seconds: res.times.total - seconds,
        bytes_total: traffic[0] as u64,
        bytes_per_resampling: 0.0,
        resamplings: 0,
    }
}

/// `rank_order` on candidates: higher reward first, NaN last, ties to the lower index.
fn best_first(a: &Candidate, b: &Candidate) -> Ordering {
    score_order((a.reward, a.index), (b.reward, b.index))
}

/// Best-of-N across the ranks of `comm` (`methods::best_of_n` for one population split over
/// ranks): `Some(result)` on rank 0, None elsewhere.
pub fn best_of_n(comm: &dyn Communicator, spec: &RunSpec, layout: Layout, top_k: usize, init: Init<'_>, engine: &RankEngine) -> anyhow::Result<(Option<RunResult>, CommReport)> {
    let comm = Metered::new(comm);
    let clock = Clock::start();
    ensure!(top_k >= 1 && top_k <= layout.n, "--top-k must be between 1 and N = {}, got {top_k}", layout.n);
    let (dim, steps) = (spec.model.dim, spec.sampler.steps);
    let mut res = RunResult::new("bon", dim);
    let mut pop = Population::new(spec, layout, &comm, init, engine)?;
    timed(&mut res.times.propagate, || agreed(&comm, pop.propagate(spec, 0..steps)))?;
    res.particle_steps = (layout.total() * steps) as u64;
    res.nfe = res.particle_steps * spec.sampler.evals_per_step() as u64;
    let rewards = timed(&mut res.times.potential, || agreed(&comm, pop.rewards(spec, steps, true)))?;

    let mine = timed(&mut res.times.resample, || local_tops(&pop, &rewards, top_k, None));
    let gathered = gather_concat(&comm, &mine);
    let report = report(&comm, &mut res, &clock);
    let Some(gathered) = gathered else { return Ok((None, report)) };
    let tops = merge(&gathered, layout.groups, top_k, dim, false);
    for (g, t) in tops.iter().enumerate() {
        res.trace.push(TraceRow { mean_reward: t.mean(), best_reward: t.best, nfe: res.nfe, ..TraceRow::blank(0, steps, 1.0, g, layout.n) });
    }
    finish(&mut res, &tops, Layout { n: top_k, groups: layout.groups });
    Ok((Some(res), report))
}

/// Zeroth-order search (`methods::zeroth_order`) across the ranks of `comm`: each cycle's
/// candidates are shared by the ranks; every rank learns each group's best candidate (one
/// all-gather of at most P records per group) and moves its pivot to that candidate's starting
/// point, as one process does. `Some(result)` on rank 0, None elsewhere.
pub fn zeroth_order(comm: &dyn Communicator, spec: &RunSpec, cfg: &ZerothConfig, engine: &RankEngine) -> anyhow::Result<(Option<RunResult>, CommReport)> {
    let comm = Metered::new(comm);
    let clock = Clock::start();
    let (layout, dim, steps) = (cfg.layout, spec.model.dim, spec.sampler.steps);
    let mut pivot = crate::methods::search::initial_pivot(spec, cfg)?;
    let mut res = RunResult::new("zeroth", dim);
    let mut last = Vec::new();
    for cycle in 0..cfg.cycles {
        let cycle32 = u32::try_from(cycle).context("too many cycles")?;
        let mut pop = Population::new(spec, layout, &comm, Init::AroundPivot { pivot: &pivot, radius: cfg.radius, cycle: cycle32 }, engine)?;
        let starts = pop.rows();
        timed(&mut res.times.propagate, || agreed(&comm, pop.propagate(spec, 0..steps)))?;
        res.particle_steps += (layout.total() * steps) as u64;
        res.nfe += (layout.total() * steps * spec.sampler.evals_per_step()) as u64;
        let rewards = timed(&mut res.times.potential, || agreed(&comm, pop.rewards(spec, steps, true)))?;
        let tops = timed(&mut res.times.resample, || {
            let mine = local_tops(&pop, &rewards, 1, Some(&starts));
            merge(&comm.all_gather(&mine).concat(), layout.groups, 1, dim, true)
        });
        for (g, t) in tops.iter().enumerate() {
            let winner = &t.kept[0];
            pivot[g * dim..(g + 1) * dim].copy_from_slice(&winner.start);
            res.trace.push(TraceRow { mean_reward: t.mean(), best_reward: winner.reward as f64, nfe: res.nfe, ..TraceRow::blank(cycle, cycle, 1.0, g, layout.n) });
        }
        last = tops;
    }
    let report = report(&comm, &mut res, &clock);
    if comm.rank() != 0 {
        return Ok((None, report));
    }
    finish(&mut res, &last, Layout { n: 1, groups: layout.groups });
    res.schedule = (0..cfg.cycles).collect();
    Ok((Some(res), report))
}

/// What a search across ranks runs, once prepared.
enum Plan {
    Bon { layout: Layout, top_k: usize, rows: Option<Vec<f32>> },
    Zeroth(ZerothConfig),
    Paths { cfg: PathsConfig, rows: Option<Vec<f32>> },
}

/// `flowsteer search bon|zeroth|paths` on every rank of `comm`: `Some(outcome)` on rank 0, which
/// reports it as a single process would (`run::search`, whose checks and `config.run` it keeps).
pub fn search(comm: &dyn Communicator, cfg: &SearchConfig) -> anyhow::Result<Option<Outcome>> {
    let mut common = cfg.common.clone();
    if comm.rank() != 0 {
        common.quiet = true;
        common.out = None;
    }
    let groups = cfg.groups;
    let prepared = (|| {
        let prep = Prepared::new(&common, search_potential(), ResampleScheme::default(), None)?;
        let engine = RankEngine::open(prep.backend.choice, comm)?;
        engine.check_model(&prep.spec.model).with_context(|| format!("model file {}", prep.model_path.display()))?;
        let (plan, config, layout) = match &cfg.method {
            SearchMethod::Bon { particles, top_k, init } => {
                let (layout, rows) = prep.layout_and_init(*particles, 4096, groups, init.as_deref())?;
                ensure!(*top_k >= 1 && *top_k <= layout.n, "--top-k must be between 1 and N = {}, got {top_k}", layout.n);
                let config = serde_json::json!({ "command": "search bon", "particles": layout.n, "groups": groups, "top_k": top_k,
                    "init": init.as_ref().map(|p| p.display().to_string()) });
                (Plan::Bon { layout, top_k: *top_k, rows }, config, layout)
            }
            SearchMethod::Zeroth { candidates, cycles, radius, pivot } => {
                let layout = check_layout(*candidates, groups, "--candidates")?;
                let pivot_rows = pivot.as_deref().map(|s| parse_pivot(s, prep.spec.model.dim, groups)).transpose()?;
                let config = serde_json::json!({ "command": "search zeroth", "candidates": candidates, "cycles": cycles,
                    "radius": radius, "pivot": pivot, "groups": groups });
                (Plan::Zeroth(ZerothConfig { layout, cycles: *cycles, radius: *radius, pivot: pivot_rows }), config, layout)
            }
            SearchMethod::Paths { top_k, .. } => {
                let (paths, rows, config) = crate::run::search::paths_plan(&prep, &cfg.method, groups)?;
                let layout = paths.layout;
                ensure!(*top_k >= 1 && *top_k <= layout.n, "--top-k must be between 1 and N = {}, got {top_k}", layout.n);
                (Plan::Paths { cfg: paths, rows }, config, layout)
            }
        };
        if layout.total() < comm.size() {
            bail!("{} particles cannot be shared by {} MPI ranks: give at least one particle per rank (N × --groups ≥ {})", layout.total(), comm.size(), comm.size());
        }
        Ok((prep, plan, config, engine))
    })();
    let (prep, plan, mut config, engine) = agreed(comm, prepared)?;
    check_same_configuration(comm, &std::env::args().collect::<Vec<_>>(), &prep.model_path)?;
    let ran = match &plan {
        Plan::Bon { layout, top_k, rows } => best_of_n(comm, &prep.spec, *layout, *top_k, rows.as_deref().map_or(Init::Noise, Init::Given), &engine),
        Plan::Zeroth(z) => zeroth_order(comm, &prep.spec, z, &engine),
        Plan::Paths { cfg, rows } => super::paths::search_over_paths(comm, &prep.spec, cfg, rows.as_deref().map_or(Init::Noise, Init::Given), &engine),
    };
    let (result, report) = agreed(comm, ran)?;
    // All kept samples non-finite: an error naming the cause, nothing written (as one process).
    let checked = match &result {
        Some(r) => crate::finite::check_final_samples(&r.positions, r.dim, &prep.spec.model, &prep.spec.sampler).map(|warning| {
            if let Some(w) = warning {
                eprintln!("{w}");
            }
        }),
        None => Ok(()),
    };
    agree(comm, checked)?;
    let Some(result) = result else { return Ok(None) };
    let mut info = engine.info();
    info.device = format!("{} per rank, {} MPI ranks", info.device, comm.size());
    if !common.quiet {
        println!("flowsteer search {}: towards {} (larger is better); {} backend on {}", result.method, prep.spec.reward, info.backend, info.device);
        if !result.schedule.is_empty() && result.method == "paths" {
            println!("  rounds end at grid steps {:?}", result.schedule);
        }
        eprintln!("{}", super::driver::comm_line(&report));
    }
    config["mpi"] = serde_json::to_value(&report)?;
    Ok(Some(Outcome {
        prepared: prep,
        info,
        result,
        baseline: None,
        config,
        files: Outputs { ancestry: false, plot: common.plot },
        out: common.out,
        force: common.force,
        quiet: common.quiet,
        profiled: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::distributed::comm::ThreadWorld;
    use crate::methods::BonConfig;

    /// Zeroth-order search against the single-process CPU backend for P = 1…4: the candidates
    /// (keyed by the global index), the winners and so every pivot move are the same.
    #[test]
    fn zeroth_order_across_ranks_equals_one_process() {
        let mut spec = crate::distributed::tests::spec(ResampleScheme::Multinomial, None);
        spec.potential = search_potential();
        for pivot in [None, Some(vec![0.3f32, -0.2, 1.0, 0.5])] {
            let cfg = ZerothConfig { layout: Layout { n: 9, groups: 2 }, cycles: 3, radius: 0.8, pivot };
            let one = crate::methods::zeroth_order(&mut CpuBackend::new(), &spec, &cfg).unwrap();
            for p in 1..=4 {
                let mut out = ThreadWorld::run(p, |c| zeroth_order(c, &spec, &cfg, &RankEngine::Cpu).unwrap().0);
                let r = out.remove(0).expect("rank 0 holds the result");
                assert_eq!(r.positions.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), one.positions.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "P = {p}");
                assert_eq!((&r.root_ids, &r.rewards, r.layout, &r.schedule), (&one.root_ids, &one.rewards, one.layout, &one.schedule), "P = {p}");
                let best = |r: &RunResult| r.trace.iter().map(|t| t.best_reward).collect::<Vec<_>>();
                assert_eq!(best(&r), best(&one), "P = {p}: every cycle's winner");
                assert_eq!((r.nfe, r.particle_steps), (one.nfe, one.particle_steps));
            }
        }
    }

    /// Against the single-process CPU backend for P = 1…4, with groups spanning ranks and ties:
    /// many starting rows repeat, so equal rewards meet across ranks and the lower global index
    /// must win, as in one process.
    #[test]
    fn best_of_n_across_ranks_equals_one_process() {
        let mut spec = crate::distributed::tests::spec(ResampleScheme::Multinomial, None);
        spec.potential = search_potential();
        // The ODE sampler: equal starting rows end equal.
        spec.sampler.kind = crate::sampler::SamplerKind::Midpoint;
        let layout = Layout { n: 50, groups: 3 };
        let rows: Vec<f32> = (0..layout.total()).flat_map(|i| { let k = ((i * 7) % 5) as f32; [k * 0.3 - 0.6, 0.2 * k] }).collect();
        for top_k in [1, 4] {
            let one = crate::methods::best_of_n(&mut CpuBackend::new(), &spec, &BonConfig { layout, top_k }, Init::Given(&rows)).unwrap();
            // The test means something only if the kept rows tie.
            assert!(top_k == 1 || one.rewards[0] == one.rewards[1], "{:?}", one.rewards);
            for p in 1..=4 {
                let mut out = ThreadWorld::run(p, |c| best_of_n(c, &spec, layout, top_k, Init::Given(&rows), &RankEngine::Cpu).unwrap().0);
                let r = out.remove(0).expect("rank 0 holds the result");
                assert!(out.iter().all(Option::is_none));
                assert_eq!(r.positions.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), one.positions.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "P = {p}, K = {top_k}");
                assert_eq!((&r.root_ids, &r.rewards, &r.log_weights), (&one.root_ids, &one.rewards, &one.log_weights), "P = {p}, K = {top_k}");
                assert_eq!((r.layout, &r.distinct_ancestors, r.nfe, r.particle_steps), (one.layout, &one.distinct_ancestors, one.nfe, one.particle_steps));
                for (a, b) in r.trace.iter().zip(&one.trace) {
                    assert_eq!(a.best_reward, b.best_reward);
                    assert!((a.mean_reward - b.mean_reward).abs() <= 1e-12 * b.mean_reward.abs().max(1.0));
                }
            }
        }
    }
}
