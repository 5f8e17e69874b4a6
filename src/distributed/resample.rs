//! Global resampling across ranks (docs/resampling.md for the schemes, docs/distributed.md for
//! the distribution): one population split into P contiguous shares resamples as one.
//!
//! Per group, with the exact sums of [`super::population::weigh`]:
//! * `C_j` = the exact (`u128`) inclusive prefix sum of the fixed-point weights in global order;
//!   a rank starts from the sums of the ranks before it.
//! * Points `p_i ∈ [0, 1)` as `crate::resample` defines them per scheme (multinomial: sorted
//!   uniforms from exponential spacings, whose prefix sums are exact in the same fixed point;
//!   systematic; stratified), drawn with the global index as Philox counter.
//! * `a_i` = the smallest `j` with `f64(C_j) > p_i·f64(C_total)`, clamped to the last `j` with a
//!   positive weight. Every value compared is computed from exact sums, so `a_i` is the same for
//!   every P.
//!
//! The rank holding point i finds the rank holding `a_i` from the per-rank segment ends, sends it
//! the point (16 bytes), and gets back the particle's whole state: two all-to-all-v exchanges,
//! the second carrying the particles that change rank. Points whose ancestor is local move nothing.

use super::comm::{Bytes, Communicator, Reader};
use super::population::{spacing_fx, weight_fx, Population, Weighed};
use super::share;
use crate::backend::{GroupResample, RunSpec};
use crate::potential::PotentialState;
use crate::resample::{draws, ResampleScheme, UNIFORM_SHIFT};
use crate::rng::{Philox, Purpose};

/// What one global resampling did.
#[derive(Clone, Debug)]
pub struct Resampled {
    /// Per group (all groups, the same on every rank).
    pub groups: Vec<GroupResample>,
    /// Within-group ancestor of each particle held here (identity for groups that skipped).
    pub ancestors: Vec<u32>,
}

/// The smallest local index in `c` (one segment's global prefix sums) with `f64(C) > threshold`,
/// or `fallback` when there is none.
fn search(c: &[u128], threshold: f64, fallback: usize) -> usize {
    let j = c.partition_point(|&cj| (cj as f64) <= threshold);
    if j == c.len() {
        fallback
    } else {
        j
    }
}

/// Resamples every group whose ESS calls for it (all groups unless `spec.adaptive_ess`), at grid
/// index `step` (the uniforms' counter). Gathers positions, potential state and root ids; resets
/// the log-weights of resampled groups.
pub fn resample(comm: &dyn Communicator, spec: &RunSpec, pop: &mut Population, w: &Weighed, step: usize) -> Resampled {
    let (n, dim, len) = (pop.layout.n, pop.dim, pop.len());
    let (total, size, me) = (pop.layout.total(), comm.size(), comm.rank());
    let rng = Philox::new(spec.seed);
    let u = |particle: u64, draw: u32| rng.uniform(particle, step as u32, Purpose::Resampling, draw);
    let threshold = spec.adaptive_ess.map(|tau| tau as f64 * n as f64);
    let resampled: Vec<bool> = w.groups.iter().map(|g| !threshold.is_some_and(|th| g.ess >= th)).collect();
    let ranks_of = |g: usize| share::owner(total, size, g * n)..=share::owner(total, size, (g + 1) * n - 1);

    // Prefix sums C (global within the group) of every particle here, and where each point goes.
    let mut c = vec![0u128; len];
    let mut ancestors: Vec<u32> = pop.range.clone().map(|i| (i % n) as u32).collect();
    let mut from: Vec<Option<usize>> = vec![None; len]; // local source, when the ancestor is here
    let mut requests: Vec<Bytes> = vec![Bytes::default(); size];
    let mut waiting: Vec<(usize, usize)> = Vec::new(); // (local index, rank asked)
    let mut chosen = vec![false; len];
    let mut segments_c: Vec<(usize, std::ops::Range<usize>)> = Vec::new();
    let first_group = pop.groups().start;
    let mut last_here: Vec<Option<usize>> = vec![None; pop.groups().len()];
    for g in pop.groups() {
        let seg = pop.local_segment(g);
        if !resampled[g] {
            continue;
        }
        let max = w.groups[g].max_log_weight;
        // Offsets from the ranks before this one, and every rank's segment end.
        let (mut offset, mut c_total, mut e_offset, mut e_total) = (0u128, 0u128, 0u128, 0u128);
        let mut ends: Vec<(usize, u128)> = Vec::new();
        let mut last_positive = 0u64;
        for r in ranks_of(g) {
            let s = w.segment(r, g).expect("every rank of a group reports its segment");
            if r < me {
                offset += s.weights;
                e_offset += s.spacings;
            }
            c_total += s.weights;
            e_total += s.spacings;
            ends.push((r, c_total));
            if let Some(lp) = s.last_positive {
                last_positive = last_positive.max(lp);
            }
        }
        let mut acc = offset;
        for i in seg.clone() {
            let wi = weight_fx(pop.log_w[i], max);
            if wi > 0 {
                last_here[g - first_group] = Some(i);
            }
            acc += wi;
            c[i] = acc;
        }
        segments_c.push((g, seg.clone()));
        let total_f = c_total as f64;
        let base = (g * n) as u64;
        // Multinomial: S_i from the exact spacing sums; the extra spacing closes the sum.
        let s_total = e_total + spacing_fx(&rng, base, step as u32, draws::SPACING_EXTRA);
        let mut s_acc = e_offset;
        let u_systematic = (u(g as u64, draws::SPACING) - UNIFORM_SHIFT) as f64;
        let clamp_owner = share::owner(total, size, g * n + last_positive as usize);
        for i in seg {
            let gi = (pop.range.start + i) as u64;
            let within = gi - base;
            let p = match spec.resample {
                ResampleScheme::Multinomial => {
                    s_acc += spacing_fx(&rng, gi, step as u32, draws::SPACING);
                    s_acc as f64 / s_total as f64
                }
                ResampleScheme::Systematic => (within as f64 + u_systematic) / n as f64,
                ResampleScheme::Stratified => (within as f64 + (u(gi, draws::SPACING) - UNIFORM_SHIFT) as f64) / n as f64,
                ResampleScheme::Residual => unreachable!("checked before the run (population::check_scheme)"),
            };
            let th = p * total_f;
            let owner = ends.iter().find(|(_, e)| (*e as f64) > th).map_or(clamp_owner, |(r, _)| *r);
            if owner != me {
                requests[owner].u64(g as u64).f64(th);
                waiting.push((i, owner));
            } else {
                let local = local_search(pop, &c, &last_here, g, th);
                from[i] = Some(local);
                chosen[local] = true;
                ancestors[i] = ((pop.range.start + local) % n) as u32;
            }
        }
    }
    // Answer the points other ranks sent: the ancestor's within-group index and its state.
    let incoming = comm.all_to_all_v(&requests.into_iter().map(|b| b.0).collect::<Vec<_>>());
    let mut replies: Vec<Vec<u8>> = vec![Vec::new(); size];
    for (q, bytes) in incoming.iter().enumerate() {
        let mut rd = Reader::new(bytes);
        let mut out = Bytes::default();
        while !rd.done() {
            let (g, th) = (rd.u64() as usize, rd.f64());
            let j = local_search(pop, &c, &last_here, g, th);
            chosen[j] = true;
            out.u32(((pop.range.start + j) % n) as u32);
            for d in 0..dim {
                out.f32(pop.x[d * len + j]);
            }
            out.f64(pop.state[j].carried).f64(pop.state[j].accumulated_log_g).u32(pop.root[j]);
        }
        replies[q] = out.0;
    }
    let answers = comm.all_to_all_v(&replies);
    // Assemble the new population.
    let mut x = vec![0f32; dim * len];
    let mut state = vec![PotentialState::default(); len];
    let mut root = vec![0u32; len];
    for i in 0..len {
        let j = from[i].unwrap_or(i);
        for d in 0..dim {
            x[d * len + i] = pop.x[d * len + j];
        }
        state[i] = pop.state[j];
        root[i] = pop.root[j];
    }
    let mut readers: Vec<Reader<'_>> = answers.iter().map(|a| Reader::new(a)).collect();
    for &(i, q) in &waiting {
        let rd = &mut readers[q];
        ancestors[i] = rd.u32();
        for d in 0..dim {
            x[d * len + i] = rd.f32();
        }
        state[i] = PotentialState { carried: rd.f64(), accumulated_log_g: rd.f64() };
        root[i] = rd.u32();
    }
    for (g, seg) in &segments_c {
        debug_assert!(resampled[*g]);
        pop.log_w[seg.clone()].fill(0.0);
    }
    pop.x = x;
    pop.state = state;
    pop.root = root;
    // Distinct parents: the chosen particles of each group, counted where they live.
    let mut counts = Bytes::default();
    for g in pop.groups() {
        counts.u64(pop.local_segment(g).filter(|&j| chosen[j]).count() as u64);
    }
    let mut distinct = vec![0u64; pop.layout.groups];
    for (r, bytes) in comm.all_gather(&counts.0).into_iter().enumerate() {
        let mut rd = Reader::new(&bytes);
        for g in share::groups_of(&share::share(total, size, r), n) {
            distinct[g] += rd.u64();
        }
    }
    let groups = (0..pop.layout.groups)
        .map(|g| GroupResample { resampled: resampled[g], distinct_parents: if resampled[g] { distinct[g] } else { n as u64 } })
        .collect();
    Resampled { groups, ancestors }
}

/// [`search`] over group `g`'s segment here; the fallback (no `C` above the threshold) is the
/// segment's last positive weight, which is the group's when this rank was asked for it.
fn local_search(pop: &Population, c: &[u128], last_positive: &[Option<usize>], g: usize, threshold: f64) -> usize {
    let seg = pop.local_segment(g);
    let fallback = last_positive[g - pop.groups().start].expect("a rank is only asked for a group where it holds a positive weight");
    seg.start + search(&c[seg.clone()], threshold, fallback - seg.start)
}
