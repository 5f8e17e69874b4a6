//! The search baselines of docs/search.md: best-of-N, zeroth-order search, search over paths.
//! Same primitives as FK steering, other orchestration; each counts its model evaluations so
//! that methods compare at equal compute.

use anyhow::{ensure, Context};

use crate::backend::{Backend, Init, Layout, RunSpec, ScoreOn};
use crate::reward::RewardOn;
use crate::rng::{Philox, Purpose};
use crate::sampler::RenoiseForm;

use super::{distinct_roots, timed, Clock, RunResult, TraceRow};

/// Best-of-N: N samples per group, keep the `top_k` best by reward.
#[derive(Clone, Debug)]
pub struct BonConfig {
    pub layout: Layout,
    pub top_k: usize,
}

/// Zeroth-order search: `cycles` rounds of `candidates` (the layout's n) around a pivot.
#[derive(Clone, Debug)]
pub struct ZerothConfig {
    /// `n` = candidates per cycle M, `groups` independent searches.
    pub layout: Layout,
    pub cycles: usize,
    pub radius: f32,
    /// The starting pivot `[groups, D]`; None: a standard normal draw per group (InitialNoise,
    /// particle = group index, step 0).
    pub pivot: Option<Vec<f32>>,
}

/// Search over paths: N noises, M copies per round, backward `delta_f`, forward `delta_b`.
#[derive(Clone, Debug)]
pub struct PathsConfig {
    /// `n` = the beam N kept each round.
    pub layout: Layout,
    pub candidates: usize,
    pub t_start: f64,
    pub delta_f: f64,
    pub delta_b: f64,
    pub renoise: RenoiseForm,
    pub top_k: usize,
}

/// Grid steps of a search over paths, resolved and checked (docs/search.md: `Δb > Δf > h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathsGrid {
    pub start: usize,
    pub back: usize,
    pub forward: usize,
}

impl PathsConfig {
    /// Rounds `Δf`, `Δb` and `t_start` to whole grid steps and checks them.
    pub fn grid(&self, steps: usize) -> Result<PathsGrid, String> {
        let h = 1.0 / steps as f64;
        for (name, v) in [("--t-start", self.t_start), ("--delta-f", self.delta_f), ("--delta-b", self.delta_b)] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("{name} must be a finite number ≥ 0, got {v}"));
            }
        }
        let to_grid = |v: f64| (v * steps as f64).round() as usize;
        let (start, back, forward) = (to_grid(self.t_start), to_grid(self.delta_f), to_grid(self.delta_b));
        if back <= 1 {
            return Err(format!(
                "--delta-f {} is {back} grid step(s) of h = {h}; search over paths needs Δf > h: give at least {}",
                self.delta_f,
                2.0 * h
            ));
        }
        if forward <= back {
            return Err(format!(
                "--delta-b {} ({forward} grid steps) must exceed --delta-f {} ({back} grid steps): Δb > Δf, or the search never reaches t = 1",
                self.delta_b, self.delta_f
            ));
        }
        if start < back || start >= steps {
            return Err(format!(
                "--t-start {} must lie in [Δf, 1) = [{}, 1) so that the first renoising stays at t ≥ 0",
                self.t_start, self.delta_f
            ));
        }
        if self.candidates == 0 {
            return Err("--candidates must be at least 1".into());
        }
        // A round runs while t − Δf + Δb < 1: with none the "search" is plain ODE sampling.
        if start + forward - back >= steps {
            return Err(format!(
                "no search round fits: the first would end at t = {} ≥ 1 (t_start {} − Δf {} + Δb {}), so this is plain sampling; \
                 give --t-start + --delta-b − --delta-f < 1, e.g. --t-start {} (docs/search.md)",
                crate::format::number((start + forward - back) as f64 * h),
                crate::format::number(start as f64 * h),
                crate::format::number(back as f64 * h),
                crate::format::number(forward as f64 * h),
                crate::format::number(((steps + back).saturating_sub(forward + 1)) as f64 * h)
            ));
        }
        Ok(PathsGrid { start, back, forward })
    }
}

/// Best-of-N (docs/search.md).
pub fn best_of_n<B: Backend>(backend: &mut B, spec: &RunSpec, cfg: &BonConfig, init: Init<'_>) -> anyhow::Result<RunResult> {
    let clock = Clock::start();
    let layout = cfg.layout;
    ensure!(cfg.top_k >= 1 && cfg.top_k <= layout.n, "--top-k must be between 1 and N = {}, got {}", layout.n, cfg.top_k);
    let mut res = RunResult::new("bon", spec.model.dim);
    let steps = spec.sampler.steps;
    let mut p = backend.init(spec, layout, init)?;
    timed(&mut res.times.propagate, || backend.propagate(spec, &mut p, 0..steps))?;
    res.particle_steps = (layout.total() * steps) as u64;
    res.nfe = res.particle_steps * spec.sampler.evals_per_step() as u64;
    let all = timed(&mut res.times.potential, || backend.score(spec, &mut p, ScoreOn::Sample))?;
    for (g, s) in all.chunks(layout.n).enumerate() {
        res.trace.push(TraceRow { mean_reward: mean_finite(s), best_reward: max_finite(s), nfe: res.nfe, ..TraceRow::blank(0, steps, 1.0, g, layout.n) });
    }
    let (scores, _) = timed(&mut res.times.resample, || backend.select_top(spec, &mut p, ScoreOn::Sample, cfg.top_k))?;
    finish(backend, &mut p, &mut res, scores, Layout { n: cfg.top_k, groups: layout.groups }, &clock)?;
    Ok(res)
}

/// Checks a zeroth-order search's `--cycles` and `--radius` and returns its starting pivot
/// `[groups, D]`: `cfg.pivot`, or a standard normal draw per group (InitialNoise, particle =
/// group index, step 0). One process and the ranks of `crate::distributed` start from it.
pub fn initial_pivot(spec: &RunSpec, cfg: &ZerothConfig) -> anyhow::Result<Vec<f32>> {
    let (groups, dim) = (cfg.layout.groups, spec.model.dim);
    ensure!(cfg.cycles >= 1, "--cycles must be at least 1");
    ensure!(cfg.radius.is_finite() && cfg.radius >= 0.0, "--radius must be a finite number ≥ 0, got {}", cfg.radius);
    Ok(match &cfg.pivot {
        Some(p) => {
            ensure!(p.len() == groups * dim, "the pivot holds {} values; expected {groups} × D = {dim} ({groups} groups)", p.len());
            p.clone()
        }
        None => {
            let rng = Philox::new(spec.seed);
            let mut v = vec![0f32; groups * dim];
            for (g, row) in v.chunks_mut(dim).enumerate() {
                rng.normal_vector(g as u64, 0, Purpose::InitialNoise, row);
            }
            v
        }
    })
}

/// Zeroth-order search (docs/search.md): each cycle runs the `M` candidates around the pivot (candidate
/// 0 is the pivot itself) through the sampler and moves the pivot to the best candidate's
/// starting noise. Returns the best sample of each group.
pub fn zeroth_order<B: Backend>(backend: &mut B, spec: &RunSpec, cfg: &ZerothConfig) -> anyhow::Result<RunResult> {
    let clock = Clock::start();
    let layout = cfg.layout;
    let dim = spec.model.dim;
    let mut pivot = initial_pivot(spec, cfg)?;
    let mut res = RunResult::new("zeroth", dim);
    let steps = spec.sampler.steps;
    let mut best = vec![f32::NEG_INFINITY; layout.groups];
    let mut last = None;
    for cycle in 0..cfg.cycles {
        let cycle32 = u32::try_from(cycle).context("too many cycles")?;
        let mut p = backend.init(spec, layout, Init::AroundPivot { pivot: &pivot, radius: cfg.radius, cycle: cycle32 })?;
        let starts = backend.read_positions(&p)?;
        timed(&mut res.times.propagate, || backend.propagate(spec, &mut p, 0..steps))?;
        res.particle_steps += (layout.total() * steps) as u64;
        res.nfe += (layout.total() * steps * spec.sampler.evals_per_step()) as u64;
        let all = timed(&mut res.times.potential, || backend.score(spec, &mut p, ScoreOn::Sample))?;
        let (scores, former) = timed(&mut res.times.resample, || backend.select_top(spec, &mut p, ScoreOn::Sample, 1))?;
        for g in 0..layout.groups {
            let i = g * layout.n + former[g] as usize;
            pivot[g * dim..(g + 1) * dim].copy_from_slice(&starts[i * dim..(i + 1) * dim]);
            best[g] = scores[g];
            let s = &all[g * layout.n..(g + 1) * layout.n];
            res.trace.push(TraceRow { mean_reward: mean_finite(s), best_reward: scores[g] as f64, nfe: res.nfe, ..TraceRow::blank(cycle, cycle, 1.0, g, layout.n) });
        }
        last = Some((p, scores));
    }
    let (mut p, scores) = last.expect("at least one cycle");
    finish(backend, &mut p, &mut res, scores, Layout { n: 1, groups: layout.groups }, &clock)?;
    res.schedule = (0..cfg.cycles).collect();
    Ok(res)
}

/// Search over paths (docs/search.md): N noises by the sampler to `t_start`; then while
/// `t − Δf + Δb < 1`: M copies of each state, renoise to `t − Δf` (round r = the Renoising step
/// counter), integrate to `t − Δf + Δb`, score, keep the best N; finally integrate to 1 and
/// keep the `top_k` best.
pub fn search_over_paths<B: Backend>(backend: &mut B, spec: &RunSpec, cfg: &PathsConfig, init: Init<'_>) -> anyhow::Result<RunResult> {
    let clock = Clock::start();
    let steps = spec.sampler.steps;
    let grid = cfg.grid(steps).map_err(anyhow::Error::msg)?;
    let layout = cfg.layout;
    ensure!(cfg.top_k >= 1 && cfg.top_k <= layout.n, "--top-k must be between 1 and N = {}, got {}", layout.n, cfg.top_k);
    let evals = spec.sampler.evals_per_step() as u64;
    let mut res = RunResult::new("paths", spec.model.dim);
    let mut p = backend.init(spec, layout, init)?;
    timed(&mut res.times.propagate, || backend.propagate(spec, &mut p, 0..grid.start))?;
    res.particle_steps += (layout.total() * grid.start) as u64;
    res.nfe += res.particle_steps * evals;
    let mut t = grid.start;
    let mut round = 0u32;
    let wide = Layout { n: layout.n * cfg.candidates, groups: layout.groups };
    while t - grid.back + grid.forward < steps {
        let (from, to, next) = (t, t - grid.back, t - grid.back + grid.forward);
        timed(&mut res.times.resample, || -> anyhow::Result<()> {
            backend.replicate(&mut p, cfg.candidates)?;
            backend.renoise(spec, &mut p, from, to, cfg.renoise, round)
        })?;
        timed(&mut res.times.propagate, || backend.propagate(spec, &mut p, to..next))?;
        let moved = (wide.total() * grid.forward) as u64;
        res.particle_steps += moved;
        res.nfe += moved * evals;
        if spec.reward_on == RewardOn::X1Hat {
            res.nfe += wide.total() as u64;
        }
        let on = ScoreOn::Intermediate { step: next };
        let (scores, _) = timed(&mut res.times.potential, || backend.select_top(spec, &mut p, on, layout.n))?;
        for (g, s) in scores.chunks(layout.n).enumerate() {
            res.trace.push(TraceRow {
                mean_reward: mean_finite(s),
                best_reward: max_finite(s),
                nfe: res.nfe,
                ..TraceRow::blank(round as usize, next, next as f64 / steps as f64, g, wide.n)
            });
        }
        res.schedule.push(next);
        t = next;
        round += 1;
    }
    timed(&mut res.times.propagate, || backend.propagate(spec, &mut p, t..steps))?;
    let last = (layout.total() * (steps - t)) as u64;
    res.particle_steps += last;
    res.nfe += last * evals;
    let (scores, _) = timed(&mut res.times.resample, || backend.select_top(spec, &mut p, ScoreOn::Sample, cfg.top_k))?;
    finish(backend, &mut p, &mut res, scores, Layout { n: cfg.top_k, groups: layout.groups }, &clock)?;
    Ok(res)
}

fn finish<B: Backend>(backend: &mut B, p: &mut B::Particles, res: &mut RunResult, scores: Vec<f32>, layout: Layout, clock: &Clock) -> anyhow::Result<()> {
    res.positions = backend.read_positions(p)?;
    res.root_ids = backend.read_root_ids(p)?;
    res.log_weights = vec![0.0; layout.total()];
    res.rewards = scores;
    res.nonfinite = res.rewards.iter().filter(|r| !r.is_finite()).count() as u64;
    res.distinct_ancestors = distinct_roots(&res.root_ids, layout);
    res.layout = layout;
    res.times.total = clock.seconds();
    Ok(())
}

pub(crate) fn mean_finite(s: &[f32]) -> f64 {
    let f: Vec<f64> = s.iter().filter(|v| v.is_finite()).map(|&v| v as f64).collect();
    if f.is_empty() {
        f64::NAN
    } else {
        f.iter().sum::<f64>() / f.len() as f64
    }
}

pub(crate) fn max_finite(s: &[f32]) -> f64 {
    s.iter().filter(|v| !v.is_nan()).fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64))
}
