//! Best-of-N (docs/search.md) with the population split across ranks (docs/distributed.md).
//!
//! Each rank integrates its share and keeps, per group, its own K best by the single process's
//! order (`backend::cpu::rank_order`: higher reward first, NaN last, ties to the lower index).
//! Every member of a group's global top K is in its own rank's top K, so rank 0 merging the at
//! most P·K candidates per group in the same order (ties by the global index) picks what one
//! process picks: the same rows, rewards and roots, bit for bit. Only the candidates travel
//! (`K·G·(4·D + 12)` bytes per rank). The trace's mean reward is a sum of per-rank sums in rank
//! order (its last bits may change with P); its best reward is exact.
//!
//! `search zeroth` and `search paths` do not run across ranks yet (`driver::refuse_unless_distributed`).

use std::cmp::Ordering;

use anyhow::{bail, ensure};

use super::comm::{Bytes, Communicator, Metered, Reader, Traffic};
use super::driver::{agree, check_same_configuration};
use super::fk::{gather_concat, CommReport};
use super::population::Population;
use crate::backend::{Backend, Init, Layout, RunSpec};
use crate::methods::{distinct_roots, timed, Clock, RunResult, TraceRow};
use crate::resample::ResampleScheme;
use crate::run::method::search_potential;
use crate::run::{Outcome, Prepared, SearchConfig, SearchMethod};
use crate::summary::Outputs;

/// One rank's best particle of a group: its within-group index, reward and position.
#[derive(Clone, Debug)]
struct Candidate {
    index: u64,
    reward: f32,
    row: Vec<f32>,
}

/// `rank_order` on candidates: higher reward first, NaN last, ties to the lower index.
fn best_first(a: &Candidate, b: &Candidate) -> Ordering {
    match (a.reward.is_nan(), b.reward.is_nan()) {
        (true, true) => a.index.cmp(&b.index),
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => b.reward.partial_cmp(&a.reward).unwrap().then(a.index.cmp(&b.index)),
    }
}

/// Best-of-N across the ranks of `comm` (`methods::best_of_n` for one population split over
/// ranks): `Some(result)` on rank 0, None elsewhere.
pub fn best_of_n(comm: &dyn Communicator, spec: &RunSpec, layout: Layout, top_k: usize, init: Init<'_>) -> anyhow::Result<(Option<RunResult>, CommReport)> {
    let comm = Metered::new(comm);
    let clock = Clock::start();
    ensure!(top_k >= 1 && top_k <= layout.n, "--top-k must be between 1 and N = {}, got {top_k}", layout.n);
    let (dim, steps) = (spec.model.dim, spec.sampler.steps);
    let mut res = RunResult::new("bon", dim);
    let mut pop = Population::new(spec, layout, &comm, init)?;
    timed(&mut res.times.propagate, || pop.propagate(spec, 0..steps));
    res.particle_steps = (layout.total() * steps) as u64;
    res.nfe = res.particle_steps * spec.sampler.evals_per_step() as u64;
    let rewards = timed(&mut res.times.potential, || pop.rewards(spec, steps, true));

    // Per group touched here: finite sum and count, the largest non-NaN reward, the K best.
    let select = || {
        let rows = pop.rows();
        let mut mine = Bytes::default();
        for g in pop.groups() {
            let seg = pop.local_segment(g);
            let s = &rewards[seg.clone()];
            let finite: Vec<f64> = s.iter().filter(|v| v.is_finite()).map(|&v| v as f64).collect();
            let best = s.iter().filter(|v| !v.is_nan()).fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let first = (pop.range.start + seg.start) as u64 - (g * layout.n) as u64;
            let mut here: Vec<Candidate> = seg
                .clone()
                .zip(first..)
                .map(|(i, index)| Candidate { index, reward: rewards[i], row: rows[i * dim..(i + 1) * dim].to_vec() })
                .collect();
            here.sort_by(best_first);
            here.truncate(top_k);
            mine.u64(g as u64).f64(finite.iter().sum()).u64(finite.len() as u64).f64(best).u64(here.len() as u64);
            for c in &here {
                mine.u64(c.index).f32(c.reward);
                for &x in &c.row {
                    mine.f32(x);
                }
            }
        }
        mine.0
    };
    let mine = timed(&mut res.times.resample, select);
    let gathered = gather_concat(&comm, &mine);
    res.times.total = clock.seconds();
    let mut traffic = [comm.traffic().bytes_sent as f64];
    comm.inner.all_reduce_sum(&mut traffic);
    let Traffic { seconds, .. } = comm.traffic();
    let report = CommReport {
        ranks: comm.size(),
        comm_seconds: seconds,
        compute_seconds: res.times.total - seconds,
        bytes_total: traffic[0] as u64,
        bytes_per_resampling: 0.0,
        resamplings: 0,
    };
    let Some(gathered) = gathered else { return Ok((None, report)) };

    // Rank 0: merge the groups' parts in rank order (the records arrive in global order).
    let mut sums = vec![(0f64, 0u64, f64::NEG_INFINITY); layout.groups];
    let mut candidates: Vec<Vec<Candidate>> = vec![Vec::new(); layout.groups];
    let mut r = Reader::new(&gathered);
    while !r.done() {
        let g = r.u64() as usize;
        let (sum, count, best) = (r.f64(), r.u64(), r.f64());
        let s = &mut sums[g];
        *s = (s.0 + sum, s.1 + count, s.2.max(best));
        for _ in 0..r.u64() {
            let (index, reward) = (r.u64(), r.f32());
            candidates[g].push(Candidate { index, reward, row: (0..dim).map(|_| r.f32()).collect() });
        }
    }
    let kept = Layout { n: top_k, groups: layout.groups };
    for (g, (mut c, (sum, count, best))) in candidates.into_iter().zip(sums).enumerate() {
        let mean = if count == 0 { f64::NAN } else { sum / count as f64 };
        res.trace.push(TraceRow { mean_reward: mean, best_reward: best, nfe: res.nfe, ..TraceRow::blank(0, steps, 1.0, g, layout.n) });
        c.sort_by(best_first);
        for c in &c[..top_k] {
            res.positions.extend_from_slice(&c.row);
            res.rewards.push(c.reward);
            res.root_ids.push(c.index as u32);
        }
    }
    res.log_weights = vec![0.0; kept.total()];
    res.nonfinite = res.rewards.iter().filter(|r| !r.is_finite()).count() as u64;
    res.distinct_ancestors = distinct_roots(&res.root_ids, kept);
    res.layout = kept;
    Ok((Some(res), report))
}

/// `flowsteer search bon` on every rank of `comm`: `Some(outcome)` on rank 0, which reports it
/// as a single process would.
pub fn search(comm: &dyn Communicator, cfg: &SearchConfig) -> anyhow::Result<Option<Outcome>> {
    let SearchMethod::Bon { particles, top_k, init } = &cfg.method else {
        bail!("only `search bon` runs across MPI ranks (zeroth and paths do not yet); run it without mpirun");
    };
    let mut common = cfg.common.clone();
    if comm.rank() != 0 {
        common.quiet = true;
        common.out = None;
    }
    let prepared = (|| {
        let prep = Prepared::new(&common, search_potential(), ResampleScheme::default(), None)?;
        if prep.engine()?.info().backend != "cpu" {
            bail!("under MPI each rank runs the CPU backend (the CUDA rank path is not built yet); pass --backend cpu");
        }
        let (layout, rows) = prep.layout_and_init(*particles, 4096, cfg.groups, init.as_deref())?;
        if layout.total() < comm.size() {
            bail!("{} particles cannot be shared by {} MPI ranks: give at least one particle per rank (--particles × --groups ≥ {})", layout.total(), comm.size(), comm.size());
        }
        ensure!(*top_k >= 1 && *top_k <= layout.n, "--top-k must be between 1 and N = {}, got {top_k}", layout.n);
        Ok((prep, layout, rows))
    })();
    let (prep, layout, rows) = match prepared {
        Ok(p) => {
            agree(comm, Ok(()))?;
            p
        }
        Err(e) => return agree(comm, Err(e)).map(|()| None),
    };
    check_same_configuration(comm, &std::env::args().collect::<Vec<_>>(), &prep.model_path)?;
    let init_points = rows.as_deref().map_or(Init::Noise, Init::Given);
    let (result, report) = match best_of_n(comm, &prep.spec, layout, *top_k, init_points) {
        Ok(r) => {
            agree(comm, Ok(()))?;
            r
        }
        Err(e) => return agree(comm, Err(e)).map(|()| None),
    };
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
    let mut info = prep.engine()?.info();
    info.device = format!("{} per rank, {} MPI ranks", info.device, comm.size());
    if !common.quiet {
        println!("flowsteer search {}: towards {} (larger is better); {} backend on {}", result.method, prep.spec.reward, info.backend, info.device);
        eprintln!("{}", super::driver::comm_line(&report));
    }
    let config = serde_json::json!({ "command": "search bon", "particles": layout.n, "groups": cfg.groups, "top_k": top_k,
        "init": init.as_ref().map(|p| p.display().to_string()), "mpi": report });
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
                let mut out = ThreadWorld::run(p, |c| best_of_n(c, &spec, layout, top_k, Init::Given(&rows)).unwrap().0);
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
