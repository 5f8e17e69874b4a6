//! Search over paths (docs/search.md) with the beam split across ranks (docs/distributed.md).
//!
//! The beam (`N` states per group) and each round's candidates (`N·M` per group) are each held
//! as contiguous shares of their global indices (`share::share`), so a group may span ranks. A
//! rank integrates, renoises and scores its share with the random numbers of the single-process
//! CPU backend, keyed by the global index, so every particle moves as in one process. The two
//! steps that mix particles are made global:
//!
//! - replicating (state `k` of the beam becomes candidates `k·M .. (k+1)·M`) and keeping the
//!   winners are both "new particle `k` takes old particle `src(k)`", done by one
//!   `all_to_all_v` of the rows (`4·D + 4` bytes per particle that changes rank; [`redistribute`]);
//! - a group's `N` best candidates are chosen from every rank's own `N` best of that group
//!   (every member of the global top `N` is in its rank's top `N`), all-gathered as (index,
//!   score) pairs (12 bytes each) and merged on every rank in `backend::cpu::rank_order`
//!   (higher score first, NaN last, ties to the lower index) — what one process keeps, bit
//!   for bit, whatever P.
//!
//! The final `top_k` is chosen as best-of-N chooses (the candidates with their rows and roots
//! gathered on rank 0). Samples, rewards, roots and the trace equal one process's, bit for bit.
//! The summary's MPI line counts each round as a resampling (its bytes: the round's exchanges).

use std::cmp::Ordering;

use anyhow::ensure;

use super::comm::{Bytes, Communicator, Metered, Reader};
use super::driver::agreed;
use super::engine::RankEngine;
use super::fk::{gather_concat, CommReport};
use super::population::Population;
use super::share;
use crate::backend::cpu::{renoise_soa, score_order};
use crate::backend::{Init, Layout, RunSpec};
use crate::methods::search::{max_finite, mean_finite};
use crate::methods::{distinct_roots, timed, Clock, PathsConfig, RunResult, TraceRow};
use crate::reward::RewardOn;
use crate::sampler;

/// A particle competing for a place: its within-group index, score, and (for the final
/// choice, gathered on rank 0) its position and root.
#[derive(Clone, Debug)]
struct Entry {
    index: u64,
    score: f32,
    row: Vec<f32>,
    root: u32,
}

/// `backend::cpu::rank_order` on entries: higher score first, NaN last, ties to the lower index.
fn best_first(a: &Entry, b: &Entry) -> Ordering {
    score_order((a.score, a.index), (b.score, b.index))
}

/// The `keep` best of `v`, best first.
fn top(mut v: Vec<Entry>, keep: usize) -> Vec<Entry> {
    if keep < v.len() {
        v.select_nth_unstable_by(keep - 1, best_first);
        v.truncate(keep);
    }
    v.sort_unstable_by(best_first);
    v
}

/// This rank's `keep` best of every group it touches, packed: per group its index, the count,
/// then (index, score[, row, root]) per entry.
fn local_tops(pop: &Population, scores: &[f32], keep: usize, with_rows: bool) -> Vec<u8> {
    let (dim, n) = (pop.dim, pop.layout.n);
    let rows = if with_rows { pop.rows() } else { Vec::new() };
    let mut mine = Bytes::default();
    for g in pop.groups() {
        let seg = pop.local_segment(g);
        let first = (pop.range.start + seg.start - g * n) as u64;
        let here: Vec<Entry> = seg
            .zip(first..)
            .map(|(i, index)| Entry {
                index,
                score: scores[i],
                row: if with_rows { rows[i * dim..(i + 1) * dim].to_vec() } else { Vec::new() },
                root: pop.root[i],
            })
            .collect();
        let here = top(here, keep);
        mine.u64(g as u64).u64(here.len() as u64);
        for e in &here {
            mine.u64(e.index).f32(e.score);
            if with_rows {
                for &x in &e.row {
                    mine.f32(x);
                }
                mine.u32(e.root);
            }
        }
    }
    mine.0
}

/// Every rank's [`local_tops`], concatenated in rank order → each group's `keep` best overall,
/// best first.
fn merge(all: &[u8], groups: usize, keep: usize, dim: usize, with_rows: bool) -> Vec<Vec<Entry>> {
    let mut by_group = vec![Vec::new(); groups];
    let mut r = Reader::new(all);
    while !r.done() {
        let g = r.u64() as usize;
        for _ in 0..r.u64() {
            let (index, score) = (r.u64(), r.f32());
            let (row, root) = if with_rows { ((0..dim).map(|_| r.f32()).collect(), r.u32()) } else { (Vec::new(), 0) };
            by_group[g].push(Entry { index, score, row, root });
        }
    }
    by_group.into_iter().map(|v| top(v, keep)).collect()
}

/// The population of `layout` in which global particle `k` is `pop`'s global particle `src(k)`
/// (position and root; potential states initial and log-weights 0, which a search never
/// changes). One `all_to_all_v`: each rank sends every rank the rows it holds that the other's
/// new share takes, in the order of the new indices.
fn redistribute(comm: &dyn Communicator, spec: &RunSpec, pop: &Population, layout: Layout, src: &dyn Fn(usize) -> usize) -> Population {
    let (size, dim) = (comm.size(), pop.dim);
    let (old_total, new_total) = (pop.layout.total(), layout.total());
    let len_old = pop.len();
    let sends: Vec<Vec<u8>> = (0..size)
        .map(|q| {
            let mut b = Bytes::default();
            for k in share::share(new_total, size, q) {
                let s = src(k);
                if pop.range.contains(&s) {
                    let i = s - pop.range.start;
                    b.u32(pop.root[i]);
                    for d in 0..dim {
                        b.f32(pop.x[d * len_old + i]);
                    }
                }
            }
            b.0
        })
        .collect();
    let got = comm.all_to_all_v(&sends);
    let mut from: Vec<Reader> = got.iter().map(|b| Reader::new(b)).collect();
    let range = share::share(new_total, size, comm.rank());
    let len = range.len();
    let (mut x, mut root) = (vec![0f32; dim * len], vec![0u32; len]);
    for (i, k) in range.clone().enumerate() {
        let r = &mut from[share::owner(old_total, size, src(k))];
        root[i] = r.u32();
        for d in 0..dim {
            x[d * len + i] = r.f32();
        }
    }
    Population { layout, dim, range, x, state: vec![spec.potential.initial_state(); len], log_w: vec![0.0; len], root, engine: pop.engine.clone() }
}

/// The rewards of `pop` at grid index `step` (`Population::rewards`), or, when they fail on any
/// rank (a `--reward-cmd` program), the same [`super::driver::Collective`] error on every rank,
/// naming the first that failed, before anyone enters the next collective.
fn scores(comm: &dyn Communicator, spec: &RunSpec, pop: &Population, step: usize, on_sample: bool) -> anyhow::Result<Vec<f32>> {
    agreed(comm, pop.rewards(spec, step, on_sample))
}

/// Search over paths across the ranks of `comm` (`methods::search_over_paths` for a beam split
/// over ranks) on `engine` (integration and scores; the renoising is on the host, as the rest
/// of the particle bookkeeping): `Some(result)` on rank 0, None elsewhere.
pub fn search_over_paths(comm: &dyn Communicator, spec: &RunSpec, cfg: &PathsConfig, init: Init<'_>, engine: &RankEngine) -> anyhow::Result<(Option<RunResult>, CommReport)> {
    let comm = Metered::new(comm);
    let clock = Clock::start();
    let (dim, steps) = (spec.model.dim, spec.sampler.steps);
    let grid = cfg.grid(steps).map_err(anyhow::Error::msg)?;
    let layout = cfg.layout;
    ensure!(cfg.top_k >= 1 && cfg.top_k <= layout.n, "--top-k must be between 1 and N = {}, got {}", layout.n, cfg.top_k);
    ensure!(
        layout.total() >= comm.size(),
        "{} particles cannot be shared by {} MPI ranks: give at least one particle per rank (N × --groups ≥ {})",
        layout.total(),
        comm.size(),
        comm.size()
    );
    let evals = spec.sampler.evals_per_step() as u64;
    let mut res = RunResult::new("paths", dim);
    let mut pop = Population::new(spec, layout, &comm, init, engine)?;
    timed(&mut res.times.propagate, || agreed(&comm, pop.propagate(spec, 0..grid.start)))?;
    res.particle_steps += (layout.total() * grid.start) as u64;
    res.nfe += res.particle_steps * evals;
    let mut t = grid.start;
    let mut round = 0u32;
    let (n, copies) = (layout.n, cfg.candidates);
    let wide = Layout { n: n * copies, groups: layout.groups };
    // Bytes this rank sent in the rounds' exchanges (replication, choice, winners).
    let mut round_bytes = 0u64;
    while t - grid.back + grid.forward < steps {
        let (from, to, next) = (t, t - grid.back, t - grid.back + grid.forward);
        let sent_before = comm.traffic().bytes_sent;
        pop = timed(&mut res.times.resample, || {
            let mut w = redistribute(&comm, spec, &pop, wide, &|k| k / copies);
            let (tf, ts) = (spec.sampler.time(from), spec.sampler.time(to));
            let len = w.len();
            renoise_soa(spec.seed, sampler::renoise_coefficients(cfg.renoise, tf, ts), &mut w.x, dim, len, w.range.start as u64, round);
            w
        });
        timed(&mut res.times.propagate, || agreed(&comm, pop.propagate(spec, to..next)))?;
        let moved = (wide.total() * grid.forward) as u64;
        res.particle_steps += moved;
        res.nfe += moved * evals;
        if spec.reward_on == RewardOn::X1Hat {
            res.nfe += wide.total() as u64;
        }
        let kept = timed(&mut res.times.potential, || -> anyhow::Result<_> {
            let scores = scores(&comm, spec, &pop, next, false)?;
            let mine = local_tops(&pop, &scores, n, false);
            Ok(merge(&comm.all_gather(&mine).concat(), layout.groups, n, dim, false))
        })?;
        for (g, k) in kept.iter().enumerate() {
            let s: Vec<f32> = k.iter().map(|e| e.score).collect();
            res.trace.push(TraceRow {
                mean_reward: mean_finite(&s),
                best_reward: max_finite(&s),
                nfe: res.nfe,
                ..TraceRow::blank(round as usize, next, next as f64 / steps as f64, g, wide.n)
            });
        }
        pop = timed(&mut res.times.potential, || redistribute(&comm, spec, &pop, layout, &|k| (k / n) * wide.n + kept[k / n][k % n].index as usize));
        round_bytes += comm.traffic().bytes_sent - sent_before;
        res.schedule.push(next);
        t = next;
        round += 1;
    }
    timed(&mut res.times.propagate, || agreed(&comm, pop.propagate(spec, t..steps)))?;
    let last = (layout.total() * (steps - t)) as u64;
    res.particle_steps += last;
    res.nfe += last * evals;
    let gathered = timed(&mut res.times.resample, || -> anyhow::Result<_> {
        let scores = scores(&comm, spec, &pop, steps, true)?;
        Ok(gather_concat(&comm, &local_tops(&pop, &scores, cfg.top_k, true)))
    })?;
    let report = super::fk::finish_report(&comm, &mut res, &clock, round_bytes, round as usize);
    let Some(gathered) = gathered else { return Ok((None, report)) };
    let kept = Layout { n: cfg.top_k, groups: layout.groups };
    for e in merge(&gathered, layout.groups, cfg.top_k, dim, true).into_iter().flatten() {
        res.positions.extend_from_slice(&e.row);
        res.rewards.push(e.score);
        res.root_ids.push(e.root);
    }
    res.log_weights = vec![0.0; kept.total()];
    res.nonfinite = res.rewards.iter().filter(|r| !r.is_finite()).count() as u64;
    res.distinct_ancestors = distinct_roots(&res.root_ids, kept);
    res.layout = kept;
    res.times.total = clock.seconds();
    Ok((Some(res), report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::distributed::comm::ThreadWorld;
    use crate::resample::ResampleScheme;
    use crate::run::method::search_potential;
    use crate::sampler::{RenoiseForm, SamplerKind};

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn assert_same(r: &RunResult, one: &RunResult, what: &str) {
        assert_eq!(bits(&r.positions), bits(&one.positions), "{what}: samples");
        assert_eq!(bits(&r.rewards), bits(&one.rewards), "{what}: rewards");
        assert_eq!((&r.root_ids, &r.log_weights, r.layout), (&one.root_ids, &one.log_weights, one.layout), "{what}");
        assert_eq!((&r.distinct_ancestors, r.nfe, r.particle_steps, &r.schedule, r.nonfinite), (&one.distinct_ancestors, one.nfe, one.particle_steps, &one.schedule, one.nonfinite), "{what}");
        assert_eq!(r.trace.len(), one.trace.len(), "{what}");
        for (a, b) in r.trace.iter().zip(&one.trace) {
            assert_eq!((a.mean_reward.to_bits(), a.best_reward.to_bits(), a.nfe, a.step, a.group), (b.mean_reward.to_bits(), b.best_reward.to_bits(), b.nfe, b.step, b.group), "{what}: trace");
        }
    }

    /// Against the single-process CPU backend for P = 1…4: an SDE sampler (noise keyed by the
    /// global index of beam and candidates), both renoising forms, x̂1 and x_t rewards, groups
    /// that span ranks, `--top-k` > 1, and N·G smaller than the candidates so that shares move.
    #[test]
    fn search_over_paths_across_ranks_equals_one_process() {
        let mut spec = crate::distributed::tests::spec(ResampleScheme::Multinomial, None);
        spec.potential = search_potential();
        spec.sampler.steps = 20;
        let layout = Layout { n: 7, groups: 3 };
        for (kind, renoise, reward_on, top_k) in [
            (SamplerKind::Sde, RenoiseForm::Exact, RewardOn::X1Hat, 3),
            (SamplerKind::Midpoint, RenoiseForm::default(), RewardOn::Xt, 1),
            (SamplerKind::Sde, RenoiseForm::Legacy, RewardOn::Xt, 7),
        ] {
            spec.sampler.kind = kind;
            spec.reward_on = reward_on;
            let cfg = PathsConfig { layout, candidates: 3, t_start: 0.2, delta_f: 0.1, delta_b: 0.25, renoise, top_k };
            let one = crate::methods::search_over_paths(&mut CpuBackend::new(), &spec, &cfg, Init::Noise).unwrap();
            assert!(one.schedule.len() >= 3, "{:?}", one.schedule);
            for p in 1..=4 {
                let mut out = ThreadWorld::run(p, |c| search_over_paths(c, &spec, &cfg, Init::Noise, &RankEngine::Cpu).unwrap().0);
                let r = out.remove(0).expect("rank 0 holds the result");
                assert!(out.iter().all(Option::is_none));
                assert_same(&r, &one, &format!("{kind:?}, {renoise:?}, {reward_on:?}, K = {top_k}, P = {p}"));
            }
        }
    }

    /// Ties across ranks go to the lower index as in one process: an obstacle reward that is 0
    /// away from the obstacle gives most candidates the same score in every round and at the
    /// end, so the winners are decided by the index alone, across rank boundaries.
    #[test]
    fn ties_are_broken_as_in_one_process() {
        use crate::reward::{Reward, Term};
        let mut spec = crate::distributed::tests::spec(ResampleScheme::Multinomial, None);
        spec.potential = search_potential();
        spec.sampler.steps = 10;
        spec.reward = Reward { terms: vec![(1.0, Term::Obstacle { c: vec![0.0, 0.0], rho: 0.3, q_star: 0.4, eta: 1.0 })], eps: 1e-3 };
        let layout = Layout { n: 10, groups: 2 };
        for (reward_on, top_k) in [(RewardOn::Xt, 4), (RewardOn::X1Hat, 10)] {
            spec.reward_on = reward_on;
            let cfg = PathsConfig { layout, candidates: 2, t_start: 0.3, delta_f: 0.2, delta_b: 0.3, renoise: RenoiseForm::Exact, top_k };
            let one = crate::methods::search_over_paths(&mut CpuBackend::new(), &spec, &cfg, Init::Noise).unwrap();
            // The test means something only if kept scores tie.
            assert!(one.rewards.windows(2).any(|w| w[0] == w[1]), "{:?}", one.rewards);
            for p in 1..=4 {
                let mut out = ThreadWorld::run(p, |c| search_over_paths(c, &spec, &cfg, Init::Noise, &RankEngine::Cpu).unwrap().0);
                assert_same(&out.remove(0).unwrap(), &one, &format!("{reward_on:?}, P = {p}"));
            }
        }
    }

    #[test]
    fn fewer_particles_than_ranks_is_refused_on_every_rank() {
        let mut spec = crate::distributed::tests::spec(ResampleScheme::Multinomial, None);
        spec.potential = search_potential();
        let cfg = PathsConfig { layout: Layout { n: 2, groups: 1 }, candidates: 4, t_start: 0.3, delta_f: 0.2, delta_b: 0.3, renoise: RenoiseForm::Exact, top_k: 1 };
        let errs = ThreadWorld::run(3, |c| search_over_paths(c, &spec, &cfg, Init::Noise, &RankEngine::Cpu).err().map(|e| e.to_string()));
        assert!(errs.iter().all(|e| e.as_ref().is_some_and(|e| e.contains("2 particles cannot be shared by 3 MPI ranks"))), "{errs:?}");
    }
}
