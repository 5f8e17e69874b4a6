//! The summary's statistics of a population that stays split across ranks (sharded outputs,
//! docs/distributed.md): what `crate::summary::FinalStats` computes from gathered arrays, from a
//! few small collectives instead, so that rank 0 never holds O(N) values.
//!
//! Counts, minima, maxima, quantiles and distinct roots are exact and do not depend on P (the
//! quantiles bisect over the order of the values, see [`order_statistics`]). Means and weighted
//! sums are floating-point sums of per-rank sums in rank order: their last bits may change with P.

use std::ops::Range;

use super::comm::{Bytes, Communicator, Reader};
use super::share;
use crate::backend::{Layout, RunSpec};
use crate::checkerboard;
use crate::stats::{within_radius, FiniteSorted};
use crate::summary::{Placement, RewardStats, TARGET_RADIUS};

/// The normalised weights of the particles held here (global indices `range`), as
/// `summary::normalised_weights` defines them over the whole population (each group mass 1/G);
/// None on every rank when all log-weights are 0 (an unweighted run).
pub fn normalised_weights<L: Copy + Into<f64>>(comm: &dyn Communicator, log_w: &[L], range: &Range<usize>, layout: Layout) -> Option<Vec<f64>> {
    let lw = |i: usize| -> f64 { log_w[i].into() };
    let mut weighted = [(0..log_w.len()).any(|i| lw(i) != 0.0) as u8 as f64];
    comm.all_reduce_max(&mut weighted);
    if weighted[0] == 0.0 {
        return None;
    }
    let groups = share::groups_of(range, layout.n);
    let local = |g: usize| {
        let s = share::segment(range, layout.n, g);
        s.start - range.start..s.end - range.start
    };
    let mut max = vec![f64::NEG_INFINITY; layout.groups];
    for g in groups.clone() {
        max[g] = local(g).map(lw).fold(f64::NEG_INFINITY, f64::max);
    }
    comm.all_reduce_max(&mut max);
    let mut sum = vec![0f64; layout.groups];
    for g in groups.clone() {
        if max[g] > f64::NEG_INFINITY {
            sum[g] = local(g).map(|i| (lw(i) - max[g]).exp()).sum();
        }
    }
    comm.all_reduce_sum(&mut sum);
    let mut w = vec![0f64; log_w.len()];
    let g_count = layout.groups as f64;
    for g in groups {
        for i in local(g) {
            w[i] = if max[g] == f64::NEG_INFINITY { 1.0 / (layout.n as f64 * g_count) } else { (lw(i) - max[g]).exp() / sum[g] / g_count };
        }
    }
    Some(w)
}

/// A key whose unsigned order is `f64::total_cmp`'s order.
fn order_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | 1 << 63
    }
}

fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// The `ks[j]`-th smallest (from 0) of the values spread over the ranks, each rank's `sorted`
/// ascending; every k must be below the global count. Bisection over the 64-bit order keys: per
/// round one all-gather of a count per k, at most 64 rounds, exact whatever P.
pub fn order_statistics(comm: &dyn Communicator, sorted: &[f64], ks: &[u64]) -> Vec<f64> {
    let mut lo = vec![0u64; ks.len()];
    let mut hi = vec![u64::MAX; ks.len()];
    while lo.iter().zip(&hi).any(|(l, h)| l < h) {
        let mid: Vec<u64> = lo.iter().zip(&hi).map(|(&l, &h)| l + (h - l) / 2).collect();
        let mine: Vec<u8> = mid.iter().flat_map(|&m| (sorted.partition_point(|&x| order_key(x) <= m) as u64).to_le_bytes()).collect();
        let mut below = vec![0u64; ks.len()];
        for bytes in comm.all_gather(&mine) {
            let mut r = Reader::new(&bytes);
            for b in below.iter_mut() {
                *b += r.u64();
            }
        }
        for j in 0..ks.len() {
            if lo[j] < hi[j] {
                if below[j] > ks[j] {
                    hi[j] = mid[j];
                } else {
                    lo[j] = mid[j] + 1;
                }
            }
        }
    }
    lo.into_iter().map(from_order_key).collect()
}

/// `RewardStats::new` over the rewards of every rank (`weights`: this rank's normalised weights).
pub fn reward_stats(comm: &dyn Communicator, rewards: &[f32], weights: Option<&[f64]>) -> RewardStats {
    let f = FiniteSorted::new(rewards.iter().map(|&r| r as f64));
    let (mut ws, mut wm) = (0f64, 0f64);
    if let Some(w) = weights {
        for (&r, &wi) in rewards.iter().zip(w) {
            if r.is_finite() && wi > 0.0 {
                ws += wi * r as f64;
                wm += wi;
            }
        }
    }
    let mut sums = [f.values.len() as f64, f.values.iter().sum::<f64>(), f.nonfinite as f64, ws, wm];
    comm.all_reduce_sum(&mut sums);
    let mut ends = [f.values.last().copied().unwrap_or(f64::NEG_INFINITY), -f.values.first().copied().unwrap_or(f64::INFINITY)];
    comm.all_reduce_max(&mut ends);
    let count = sums[0] as u64;
    let ps = [0.05, 0.25, 0.5, 0.75, 0.95];
    let quantiles = if count == 0 {
        [f64::NAN; 5]
    } else {
        // stats::quantile's interpolation between the order statistics ⌊h⌋ and ⌈h⌉.
        let hs = ps.map(|p| p * (count - 1) as f64);
        let ks: Vec<u64> = hs.iter().flat_map(|h| [h.floor() as u64, h.ceil() as u64]).collect();
        let v = order_statistics(comm, &f.values, &ks);
        std::array::from_fn(|j| {
            let (lo, hi) = (v[2 * j], v[2 * j + 1]);
            lo + (hi - lo) * (hs[j] - hs[j].floor())
        })
    };
    let nan_if_none = |x: f64| if count == 0 { f64::NAN } else { x };
    RewardStats {
        count: count as usize,
        mean: nan_if_none(sums[1] / count as f64),
        weighted_mean: weights.map(|_| sums[3] / sums[4]),
        min: nan_if_none(-ends[1]),
        max: nan_if_none(ends[0]),
        quantiles,
        nonfinite: sums[2] as usize,
    }
}

/// `Placement::new` over the rows `[len, dim]` of every rank.
pub fn placement(comm: &dyn Communicator, spec: &RunSpec, positions: &[f32], dim: usize, weights: Option<&[f64]>) -> Placement {
    let target = spec.reward.target().map(|c| c.to_vec());
    let rows = positions.chunks_exact(dim.max(1));
    let (mut near, mut near_w, mut square, mut square_w) = (0f64, 0f64, 0f64, 0f64);
    for (i, x) in rows.clone().enumerate() {
        let w = weights.map_or(0.0, |w| w[i]);
        if target.as_deref().is_some_and(|c| within_radius(x, c, TARGET_RADIUS)) {
            near += 1.0;
            near_w += w;
        }
        if dim == 2 && checkerboard::on_square(x[0], x[1]) {
            square += 1.0;
            square_w += w;
        }
    }
    let mut sums = [rows.len() as f64, near, near_w, square, square_w];
    comm.all_reduce_sum(&mut sums);
    let total = sums[0];
    let fraction = |hits: f64| if total == 0.0 { f64::NAN } else { hits / total };
    let weighted = |s: f64| if total == 0.0 { f64::NAN } else { s };
    Placement {
        within_target: target.as_ref().map(|_| fraction(sums[1])),
        within_target_weighted: target.as_ref().zip(weights).map(|_| weighted(sums[2])),
        on_square: (dim == 2).then(|| fraction(sums[3])),
        on_square_weighted: weights.filter(|_| dim == 2).map(|_| weighted(sums[4])),
        target,
    }
}

/// Distinct roots (`Population::root`) left per group over every rank, exact: each distinct
/// (group, root) pair is sent to one rank (the owner of its global index), which counts it once.
pub fn distinct_roots(comm: &dyn Communicator, roots: &[u32], range: &Range<usize>, layout: Layout) -> Vec<u64> {
    let (n, total, size) = (layout.n, layout.total(), comm.size());
    let mut keys: Vec<u64> = range.clone().zip(roots).map(|(i, &r)| ((i / n) * n) as u64 + r as u64).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut sends = vec![Bytes::default(); size];
    for &k in &keys {
        sends[share::owner(total, size, k as usize)].u64(k);
    }
    let sends: Vec<Vec<u8>> = sends.into_iter().map(|b| b.0).collect();
    let mut got: Vec<u64> = Vec::new();
    for bytes in comm.all_to_all_v(&sends) {
        let mut r = Reader::new(&bytes);
        while !r.done() {
            got.push(r.u64());
        }
    }
    got.sort_unstable();
    got.dedup();
    let mut counts = vec![0f64; layout.groups];
    for k in got {
        counts[k as usize / n] += 1.0;
    }
    comm.all_reduce_sum(&mut counts);
    counts.into_iter().map(|c| c as u64).collect()
}

/// Final samples with a NaN or infinite coordinate, over every rank.
pub fn nonfinite_rows(comm: &dyn Communicator, positions: &[f32], dim: usize) -> usize {
    let mut c = [crate::finite::nonfinite_rows(positions, dim) as f64];
    comm.all_reduce_sum(&mut c);
    c[0] as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::comm::ThreadWorld;
    use crate::methods::RunResult;
    use crate::summary::{normalised_weights as gathered_weights, FinalStats};

    /// A result of 3 groups of 37 with ties, NaN and ±inf rewards, weights spanning 60 in log,
    /// one group all −inf, roots with repeats.
    fn result() -> (RunSpec, RunResult) {
        let spec = crate::distributed::tests::spec(crate::resample::ResampleScheme::Multinomial, None);
        let layout = Layout { n: 37, groups: 3 };
        let total = layout.total();
        let mut r = RunResult::new("fk-max", 2);
        r.layout = layout;
        r.positions = (0..2 * total).map(|i| ((i * 7919) % 61) as f32 / 10.0 - 3.0).collect();
        r.rewards = (0..total)
            .map(|i| match i % 17 {
                3 => f32::NAN,
                5 => f32::INFINITY,
                6 => f32::NEG_INFINITY,
                k => (k % 6) as f32 * 0.25 - ((i * 31) % 11) as f32,
            })
            .collect();
        r.log_weights = (0..total).map(|i| if i / 37 == 2 { f64::NEG_INFINITY } else { -(((i * 13) % 60) as f64) }).collect();
        r.root_ids = (0..total).map(|i| ((i * i) % 37 / 3) as u32).collect();
        (spec, r)
    }

    #[test]
    fn statistics_across_ranks_equal_those_of_the_gathered_arrays() {
        let (spec, r) = result();
        let one = FinalStats::new(&spec, &r, None);
        let weights = gathered_weights(&r.log_weights, r.layout);
        let distinct = crate::methods::distinct_roots(&r.root_ids, r.layout);
        for p in 1..=4 {
            let out = ThreadWorld::run(p, |c| {
                let range = share::share(r.layout.total(), p, c.rank());
                let rows = &r.positions[2 * range.start..2 * range.end];
                let w = normalised_weights(c, &r.log_weights[range.clone()], &range, r.layout).unwrap();
                let stats = reward_stats(c, &r.rewards[range.clone()], Some(&w));
                let place = placement(c, &spec, rows, 2, Some(&w));
                (w, stats, place, distinct_roots(c, &r.root_ids[range.clone()], &range, r.layout))
            });
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + a.abs()) || (a.is_nan() && b.is_nan());
            let w: Vec<f64> = out.iter().flat_map(|o| o.0.clone()).collect();
            assert!(w.iter().zip(&weights).all(|(a, b)| close(*a, *b)), "P = {p}: weights");
            for (stats, place, d) in out.iter().map(|o| (&o.1, &o.2, &o.3)) {
                let e = &one.reward;
                // Exact: counts, extremes, quantiles (order statistics), distinct roots.
                assert_eq!((stats.count, stats.nonfinite, stats.min, stats.max), (e.count, e.nonfinite, e.min, e.max), "P = {p}");
                assert_eq!(stats.quantiles.map(f64::to_bits), e.quantiles.map(f64::to_bits), "P = {p}");
                assert_eq!(d, &distinct, "P = {p}");
                // Sums of per-rank sums: equal up to rounding.
                assert!(close(stats.mean, e.mean) && close(stats.weighted_mean.unwrap(), e.weighted_mean.unwrap()), "P = {p}");
                let (a, b) = (place, &one.placement);
                assert!(close(a.within_target.unwrap(), b.within_target.unwrap()) && close(a.on_square.unwrap(), b.on_square.unwrap()), "P = {p}");
                assert!(close(a.within_target_weighted.unwrap(), b.within_target_weighted.unwrap()), "P = {p}");
                assert!(close(a.on_square_weighted.unwrap(), b.on_square_weighted.unwrap()), "P = {p}");
            }
        }
    }

    #[test]
    fn order_statistics_find_every_rank_of_values_split_over_ranks() {
        let values: Vec<f64> = vec![3.0, -0.0, 0.0, -2.5, 3.0, 1e300, -1e-300, 7.0, 3.0];
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let ks: Vec<u64> = (0..values.len() as u64).collect();
        for p in 1..=3 {
            let out = ThreadWorld::run(p, |c| {
                let mut mine = values[share::share(values.len(), p, c.rank())].to_vec();
                mine.sort_by(f64::total_cmp);
                order_statistics(c, &mine, &ks)
            });
            for o in out {
                assert_eq!(o.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), sorted.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "P = {p}");
            }
        }
    }
}
