//! What a steering or search run reports (docs/outputs.md): the human summary, `summary.json`, and the
//! staging of every output file (written whole or not at all, `output::OutputSet`). The report
//! step of the run layer (`crate::run`): it reads a run's result and its prepared
//! configuration, never the command line.
//!
//! Why one file of ~660 lines: the human summary and `summary.json` state the same fields and are
//! kept side by side so that they cannot drift apart.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::backend::{BackendInfo, Layout, RunSpec};
use crate::checkerboard;
use crate::format::{count, number};
use crate::output::stage_samples_and_summary;
use crate::run::Prepared;
use crate::methods::{trace_csv, RunResult};
use sha2::Digest;
use crate::output::OutputSet;
use crate::stats::{fraction_where, within_radius, FiniteSorted};

/// The radius of "fraction within r of the target" (issue 3's default summary).
pub const TARGET_RADIUS: f64 = 0.25;

/// Which optional files to write.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outputs {
    pub ancestry: bool,
    pub plot: bool,
}

/// Normalised weights over all groups, each group carrying mass 1/G (uniform in a group whose
/// weights are all −inf). None when the weights are all equal to 0 (unweighted methods).
pub fn normalised_weights(log_w: &[f64], layout: Layout) -> Vec<f64> {
    let mut w = vec![0f64; log_w.len()];
    for (lw, out) in log_w.chunks(layout.n).zip(w.chunks_mut(layout.n)) {
        let max = lw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            out.fill(1.0 / (layout.n * layout.groups) as f64);
            continue;
        }
        let s: f64 = lw.iter().map(|&l| (l - max).exp()).sum();
        for (o, &l) in out.iter_mut().zip(lw) {
            *o = (l - max).exp() / s / layout.groups as f64;
        }
    }
    w
}

/// Statistics of a set of rewards with optional weights (finite rewards only).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RewardStats {
    pub count: usize,
    pub mean: f64,
    pub weighted_mean: Option<f64>,
    pub min: f64,
    pub max: f64,
    /// The 5, 25, 50, 75 and 95 % quantiles (unweighted; interpolated, [`crate::stats::quantile`]).
    pub quantiles: [f64; 5],
    pub nonfinite: usize,
}

impl RewardStats {
    pub fn new(rewards: &[f32], weights: Option<&[f64]>) -> Self {
        let f = FiniteSorted::new(rewards.iter().map(|&r| r as f64));
        let weighted_mean = weights.map(|w| {
            let (mut s, mut m) = (0f64, 0f64);
            for (&r, &wi) in rewards.iter().zip(w) {
                if r.is_finite() && wi > 0.0 {
                    s += wi * r as f64;
                    m += wi;
                }
            }
            s / m
        });
        RewardStats {
            count: f.values.len(),
            mean: f.mean(),
            weighted_mean,
            min: f.min(),
            max: f.max(),
            quantiles: [0.05, 0.25, 0.5, 0.75, 0.95].map(|p| f.quantile(p)),
            nonfinite: f.nonfinite,
        }
    }
}

/// Fractions of particles (and of weight) near the target and on the checkerboard.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Placement {
    pub target: Option<Vec<f32>>,
    pub within_target: Option<f64>,
    pub within_target_weighted: Option<f64>,
    /// D = 2 only.
    pub on_square: Option<f64>,
    pub on_square_weighted: Option<f64>,
}

impl Placement {
    pub fn new(spec: &RunSpec, positions: &[f32], dim: usize, weights: Option<&[f64]>) -> Self {
        let target = spec.reward.target().map(|c| c.to_vec());
        let near = |c: &[f32], w: Option<&[f64]>| fraction_where(positions, dim, w, |x| within_radius(x, c, TARGET_RADIUS));
        let square = |x: &[f32]| checkerboard::on_square(x[0], x[1]);
        Placement {
            within_target: target.as_deref().map(|c| near(c, None)),
            within_target_weighted: target.as_deref().zip(weights).map(|(c, w)| near(c, Some(w))),
            on_square: (dim == 2).then(|| checkerboard::on_square_fraction(positions)),
            on_square_weighted: weights.filter(|_| dim == 2).map(|w| fraction_where(positions, dim, Some(w), square)),
            target,
        }
    }
}

/// Whether a result carries non-trivial weights.
fn weighted(result: &RunResult) -> bool {
    result.log_weights.iter().any(|&l| l != 0.0)
}

/// The unsteered run of the same starting points that steering is compared against.
#[derive(Clone, Debug)]
pub struct Baseline {
    /// Final rewards `[total]`.
    pub rewards: Vec<f32>,
    /// Final positions `[total, D]`.
    pub positions: Vec<f32>,
}

/// An ESS for people: one decimal near 1, whole numbers above 10.
fn ess_text(ess: f64) -> String {
    if ess < 10.0 {
        format!("{ess:.1}")
    } else {
        format!("{ess:.0}")
    }
}

/// A time as `0.67`: at most 4 decimals, no trailing zeros.
fn time_text(t: f64) -> String {
    number(t)
}

/// A point as `(2, 0.5)`.
fn point_text(c: &[f32]) -> String {
    format!("({})", c.iter().map(|&v| number(v as f64)).collect::<Vec<_>>().join(", "))
}

/// "91.2% before → 0.0% after (0.0% weighted)", or without the parts that are absent.
fn fraction_text(before: Option<f64>, after: Option<f64>, weighted: Option<f64>, of: &str) -> String {
    let pct = |v: f64| format!("{:.1}%", 100.0 * v);
    let mut s = match (before, after) {
        (Some(b), Some(a)) => format!("{} before → {} after", pct(b), pct(a)),
        (None, Some(a)) => format!("{} {of}", pct(a)),
        _ => "-".into(),
    };
    if let Some(w) = weighted {
        let _ = write!(s, " ({} weighted)", pct(w));
    }
    s
}

/// Mean over groups of one trace column at point `k`.
fn point_mean(r: &RunResult, k: usize, f: impl Fn(&crate::methods::TraceRow) -> f64) -> f64 {
    let rows: Vec<f64> = r.trace.iter().filter(|t| t.index == k).map(f).collect();
    rows.iter().sum::<f64>() / rows.len().max(1) as f64
}

/// The short text printed after a run: reward before and after, fractions near the target and on
/// the squares, ESS at each point, and plain warnings when the population collapsed or the
/// intermediate points did not steer (so that a surprising result explains itself).
pub fn human_summary(spec: &RunSpec, r: &RunResult, baseline: Option<&Baseline>) -> String {
    human_summary_of(spec, r, &FinalStats::new(spec, r, baseline))
}

/// The statistics of the final particles, and of the baseline's, that the summaries report.
#[derive(Clone, Debug)]
pub struct FinalStats {
    pub reward: RewardStats,
    pub placement: Placement,
    /// The unsteered run's rewards and placement (unweighted).
    pub baseline: Option<(RewardStats, Placement)>,
    /// Final samples with a NaN or infinite coordinate.
    pub nonfinite_samples: usize,
}

impl FinalStats {
    /// From the arrays of a result held by one process (a population split across MPI ranks
    /// computes them with collectives instead: `crate::distributed::global_stats`).
    pub fn new(spec: &RunSpec, r: &RunResult, baseline: Option<&Baseline>) -> Self {
        let w = weighted(r).then(|| normalised_weights(&r.log_weights, r.layout));
        FinalStats {
            reward: RewardStats::new(&r.rewards, w.as_deref()),
            placement: Placement::new(spec, &r.positions, r.dim, w.as_deref()),
            baseline: baseline.map(|b| (RewardStats::new(&b.rewards, None), Placement::new(spec, &b.positions, r.dim, None))),
            nonfinite_samples: crate::finite::nonfinite_rows(&r.positions, r.dim),
        }
    }
}

/// [`human_summary`] with the final statistics given; `r`'s per-particle arrays are not read.
pub fn human_summary_of(spec: &RunSpec, r: &RunResult, stats: &FinalStats) -> String {
    let mut s = String::new();
    let (after, place) = (&stats.reward, &stats.placement);
    let before_place = stats.baseline.as_ref().map(|(_, p)| p);
    let steered = r.log_z.is_some();
    if let Some((before, _)) = &stats.baseline {
        let _ = writeln!(
            s,
            "  reward before steering (same noises, no steering): mean {}, median {}, max {}",
            number(before.mean),
            number(before.quantiles[2]),
            number(before.max)
        );
    }
    let label = if steered { "reward after steering:" } else { "reward of the kept samples:" };
    let total = r.layout.total();
    let of = if steered { "of particles".to_string() } else { format!("of the {total} kept sample{}", if total == 1 { "" } else { "s" }) };
    let _ = write!(s, "  {label} mean {}, median {}, max {}", number(after.mean), number(after.quantiles[2]), number(after.max));
    if let Some(m) = after.weighted_mean {
        let _ = write!(s, " (weighted by the final weights: mean {})", number(m));
    }
    s.push('\n');
    if let Some(c) = &place.target {
        let _ = writeln!(
            s,
            "  within {TARGET_RADIUS} of the target {}: {}",
            point_text(c),
            fraction_text(before_place.as_ref().and_then(|p| p.within_target), place.within_target, place.within_target_weighted, &of)
        );
    }
    if place.on_square.is_some() {
        let _ = writeln!(
            s,
            "  on a checkerboard square: {}",
            fraction_text(before_place.as_ref().and_then(|p| p.on_square), place.on_square, place.on_square_weighted, &of)
        );
    }
    if let Some(lz) = &r.log_z {
        let (n, groups) = (r.layout.n, r.layout.groups);
        let over_groups = if groups > 1 { ", mean over groups" } else { "" };
        let points: Vec<String> =
            (0..r.schedule.len()).map(|k| format!("{} at t = {}", ess_text(point_mean(r, k, |t| t.ess)), time_text(point_mean(r, k, |t| t.t)))).collect();
        let ess_line = format!("ESS at each resampling point (of N = {n}{over_groups}; at t = 1 of the final weights): {}", points.join(", "));
        let _ = writeln!(s, "{}", wrap(&ess_line));
        let mean_lz = lz.iter().sum::<f64>() / lz.len() as f64;
        let distinct = r.distinct_ancestors.iter().sum::<u64>() as f64 / groups as f64;
        let left: Vec<String> = (0..r.schedule.len())
            .map(|k| format!("{:.0} at t = {}", point_mean(r, k, |t| t.distinct_ancestors as f64), time_text(point_mean(r, k, |t| t.t))))
            .collect();
        let _ = writeln!(s, "  distinct ancestors left: {distinct:.0} of {n}{over_groups}; log Ẑ = {}", number(mean_lz));
        let ancestors_line = format!("distinct ancestors (starting particles with descendants) after each resampling point: {}", left.join(", "));
        let _ = writeln!(s, "{}", wrap(&ancestors_line));
        let _ = writeln!(s, "{}", wrap(&final_sample_text(r)));
        s.push_str(&steering_warnings(spec, r, distinct));
    }
    if let (Some(c), 2) = (&place.target, r.dim) {
        if steered && !crate::checkerboard::on_square(c[0], c[1]) {
            let _ = writeln!(
                s,
                "{}",
                wrap(&format!(
                    "note: the target {} lies in a gap between the data squares, where the model puts almost no mass: \
                     steered samples get near it only by leaving the squares.",
                    point_text(c)
                ))
            );
        }
    }
    if r.nonfinite > 0 || r.all_neg_inf_events > 0 {
        let _ = writeln!(s, "  non-finite rewards or weights: {} (dropped); groups entirely −inf: {}", r.nonfinite, r.all_neg_inf_events);
    }
    let t = &r.times;
    let phases = if t.fused {
        format!("fused intervals {:.3} s", t.fused_intervals)
    } else {
        format!("propagate {:.3} s, potential {:.3} s, resample {:.3} s", t.propagate, t.potential, t.resample)
    };
    let _ = writeln!(
        s,
        "  time {:.3} s ({phases}); {} particle-steps/s, NFE {} ({}/s)",
        t.total,
        number(r.particle_steps_per_second()),
        count(r.nfe),
        number(r.nfe as f64 / t.total.max(1e-12))
    );
    s
}

/// What the final particles are: `"resampled"` (an equally weighted sample, drawn at t = 1 from
/// the final weights) or `"weighted"` (weigh them by the final log-weights); docs/outputs.md.
pub fn final_sample_kind(r: &RunResult) -> &'static str {
    if r.final_resampled {
        "resampled"
    } else {
        "weighted"
    }
}

/// The summary's line on which sample the run wrote.
fn final_sample_text(r: &RunResult) -> String {
    let total = r.layout.total();
    if r.final_resampled {
        format!(
            "final samples (samples.npy): {total} equally weighted draws, resampled at t = 1 from the final weights \
             (--no-final-resample keeps the weighted sample)"
        )
    } else {
        format!(
            "final samples (samples.npy): a weighted sample of {total}; weigh each by its final weight (log_weights.npy) \
             — plotted or averaged without them they misrepresent the target"
        )
    }
}

/// `text` as lines of at most 100 columns, indented by two spaces (four after the first), so
/// that warnings read as paragraphs in a terminal.
pub fn wrap(text: &str) -> String {
    const WIDTH: usize = 100;
    let mut out = String::from("  ");
    let (mut col, mut line_start) = (2, true);
    for word in text.split_whitespace() {
        let len = word.chars().count();
        if !line_start && col + 1 + len > WIDTH {
            out.push_str("\n    ");
            (col, line_start) = (4, true);
        }
        if !line_start {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        (col, line_start) = (col + len, false);
    }
    out
}

/// Below this ESS one particle holds essentially all the weight.
const COLLAPSED_ESS: f64 = 1.5;

/// A final weighted sample whose ESS is below this fraction of N is degenerate (issue 11 item 9:
/// `add` at λ = 1 gives ESS 212 of 65,536).
const DEGENERATE_FINAL_ESS: f64 = 0.01;

/// Plain-language warnings about an FK run: a collapsed population (ESS ≈ 1, so every final
/// sample is a copy of a few ancestors), or intermediate points that weighed every particle the
/// same (so only the final weights steer). Empty when neither happened.
fn steering_warnings(spec: &RunSpec, r: &RunResult, distinct: f64) -> String {
    let mut s = String::new();
    let n = r.layout.n;
    let points = r.schedule.len();
    let lambda = spec.potential.lambda;
    let collapse = (0..points.saturating_sub(1)).find(|&k| point_mean(r, k, |t| t.ess) < COLLAPSED_ESS);
    if let Some(k) = collapse {
        let ess = point_mean(r, k, |t| t.ess);
        let top = point_mean(r, k, |t| t.max_log_weight);
        let mean = lambda as f64 * point_mean(r, k, |t| t.mean_reward);
        let _ = writeln!(
            s,
            "{}",
            wrap(&format!(
            "warning: the population collapsed. At t = {} one particle held almost all the weight (ESS {} of {n}), so \
             resampling copied it into the whole population: the {n} final samples descend from {distinct:.0} starting \
             particle(s), and the later ESS values near N only mean that the copies weigh the same. The largest \
             log-weight there was {} against λ·(mean reward) = {}; weights exp(λ·r) that far apart pick \
             one winner. For a spread-out steered population use a smaller --lambda or a smoother reward, e.g. \
             steer's defaults (--reward \"gaussian([2.25,2.25], 0.5)\" --lambda 1 --potential rt).",
            time_text(point_mean(r, k, |t| t.t)),
            ess_text(ess),
            number(top),
            number(mean)
            ))
        );
    } else if distinct <= (n as f64 / 100.0).max(1.0) && n > 1 {
        let _ = writeln!(
            s,
            "{}",
            wrap(&format!(
            "warning: only {distinct:.0} of {n} starting particles have descendants left: the steered samples are \
             copies of a few points. A smaller --lambda, fewer resampling points (--resample-count) or --adaptive-ess \
             keep more of them."
            ))
        );
    }
    let final_ess = if points > 0 { point_mean(r, points - 1, |t| t.ess) } else { f64::NAN };
    if final_ess < (DEGENERATE_FINAL_ESS * n as f64).max(COLLAPSED_ESS) {
        let what = if r.final_resampled {
            let parents = point_mean(r, points - 1, |t| t.distinct_parents as f64);
            format!(
                "the final resampling drew the {n} samples from {parents:.0} distinct particle(s), so samples.npy holds \
                 many copies of each"
            )
        } else {
            "the weighted numbers above rest on a few samples, and samples.npy is a poor picture of the target \
             even weighted by log_weights.npy"
                .to_string()
        };
        let _ = writeln!(
            s,
            "{}",
            wrap(&format!(
                "warning: the final weights are degenerate (ESS {} of {n} at t = 1, below 1%): {what}. The final \
                 weights exp(λ·r − Σ log G) spread widely when the rewards at t = 1 differ by many units of 1/λ, or \
                 when the intermediate potentials rewarded something else (e.g. --potential add); a smaller --lambda, \
                 a smoother reward or --potential rt keep them even.",
                ess_text(final_ess)
            ))
        );
    }
    let flat = points > 1 && (0..points - 1).all(|k| point_mean(r, k, |t| t.ess) >= n as f64 * (1.0 - 1e-9));
    if flat && collapse.is_none() {
        let hint = if spec.potential.kind == crate::potential::PotentialKind::Max {
            format!(
                ": with --potential max the running max starts at --r-min {}, and the rewards here stayed below it \
                 (gaussian and obstacle rewards are ≤ 0). Pass a lower --r-min (e.g. --r-min=-1000) or --potential rt \
                 so that the intermediate points steer too",
                spec.potential.r_min
            )
        } else {
            String::new()
        };
        let _ = writeln!(s, "{}", wrap(&format!("note: the intermediate resampling points weighed every particle the same (ESS = N), so only the final weights steer{hint}.")));
    }
    s
}

/// `summary.json` (docs/outputs.md).
pub fn summary_json(prep: &Prepared, config: Value, info: &BackendInfo, r: &RunResult, baseline: Option<&Baseline>) -> Value {
    summary_json_of(prep, config, info, r, &FinalStats::new(&prep.spec, r, baseline))
}

/// [`summary_json`] with the final statistics given; `r`'s per-particle arrays are not read.
pub fn summary_json_of(prep: &Prepared, config: Value, info: &BackendInfo, r: &RunResult, stats: &FinalStats) -> Value {
    let spec = &prep.spec;
    let steps: Vec<Value> = r
        .trace
        .iter()
        .map(|t| {
            json!({
                "index": t.index, "step": t.step, "t": t.t, "group": t.group, "ess": finite(t.ess),
                "max_log_weight": finite(t.max_log_weight), "log_z_increment": finite(t.log_z_increment),
                "mean_reward": finite(t.mean_reward), "best_reward": finite(t.best_reward),
                "resampled": t.resampled, "distinct_parents": t.distinct_parents, "distinct_ancestors": t.distinct_ancestors,
                "nonfinite": t.nonfinite, "all_neg_inf": t.all_neg_inf, "nfe": t.nfe,
                "lambda": finite(t.lambda),
            })
        })
        .collect();
    let t = &r.times;
    // Time spent in a --reward-cmd program (host round trips included), and on a device backend
    // in copying each batch to the host and its rewards back.
    let reward_command = spec.reward.command().map(|c| {
        let (seconds, batches) = c.time_spent();
        json!({ "command": c.command, "seconds": seconds, "batches": batches, "copy_seconds": c.copy_time() })
    });
    // The model file's hash ties a result to exact weights (null if the file went away).
    let model_sha256 = std::fs::read(&prep.model_path).ok().map(|b| sha2::Sha256::digest(&b).iter().map(|x| format!("{x:02x}")).collect::<String>());
    json!({
        "reward_command": reward_command,
        "method": r.method,
        "version": env!("CARGO_PKG_VERSION"),
        "config": {
            "run": config,
            "model": prep.model_path.display().to_string(),
            "model_sha256": model_sha256,
            "model_shape": spec.model.shape(),
            "reward": spec.reward.to_string(),
            "reward_terms": spec.reward,
            "reward_on": spec.reward_on,
            "sampler": spec.sampler,
            "seed": spec.seed,
            "backend_choice": prep.backend.requested,
            "backend_resolution": prep.backend,
        },
        "backend": info.backend,
        "device": info.device,
        "times_s": {
            "compile": Value::Null,
            "propagate": t.propagate,
            "potential": t.potential,
            "resample": t.resample,
            "fused_intervals": t.fused_intervals,
            "fused": t.fused,
            "total": t.total,
        },
        "throughput": {
            "particle_steps": r.particle_steps,
            "particle_steps_per_s": r.particle_steps_per_second(),
            "nfe": r.nfe,
            "nfe_per_s": r.nfe as f64 / t.total.max(1e-12),
        },
        "layout": { "n": r.layout.n, "groups": r.layout.groups },
        "schedule": r.schedule,
        "final_reward": stats.reward,
        "baseline_reward": stats.baseline.as_ref().map(|(b, _)| b),
        "baseline_placement": stats.baseline.as_ref().map(|(_, p)| p),
        "placement": stats.placement,
        "steps": steps,
        "log_z": r.log_z.as_ref().map(|v| v.iter().map(|&x| finite(x)).collect::<Vec<_>>()),
        "distinct_ancestors": r.distinct_ancestors,
        "final_sample": r.log_z.is_some().then(|| final_sample_kind(r)),
        "nonfinite_events": r.nonfinite,
        "all_neg_inf_events": r.all_neg_inf_events,
        "nonfinite_samples": stats.nonfinite_samples,
    })
}

/// JSON has no NaN or inf: those become null.
fn finite(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

/// Stages every output of a run in `dir` (summary.json as given), to be written together.
pub fn stage_outputs<'a>(dir: &Path, spec: &'a RunSpec, summary: Value, r: &'a RunResult, outputs: Outputs) -> anyhow::Result<OutputSet<'a>> {
    let mut set = OutputSet::default();
    stage_samples_and_summary(&mut set, dir, &r.positions, r.dim, &summary)?;
    let total = r.layout.total();
    set.add(dir.join("trace.csv"), trace_csv(&r.trace).into_bytes());
    set.add(dir.join("log_weights.npy"), crate::npy::to_bytes(&[total], &r.log_weights));
    if outputs.ancestry {
        let rows = r.ancestry.clone().unwrap_or_default();
        let flat: Vec<u32> = rows.concat();
        set.add(dir.join("ancestry.npy"), crate::npy::to_bytes(&[rows.len(), total], &flat));
    }
    if outputs.plot {
        set.add_rendered(dir.join("plot.png"), move |path| crate::plot::write_png(spec, r, path));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkerboard_squares() {
        use crate::checkerboard::on_square;
        assert!(on_square(0.1, 0.1));
        assert!(!on_square(1.6, 0.1));
        assert!(on_square(-0.1, -0.1));
        assert!(!on_square(-0.1, 0.1));
        assert!(!on_square(3.5, 0.1));
    }

    /// A hand-built FK result with N = 8 and the given ESS at each point (the last at t = 1).
    fn fk_result(ess: &[f64], distinct: u64) -> (RunSpec, RunResult) {
        use crate::model::{Activation, Mlp};
        let spec = RunSpec {
            model: Mlp::init_uniform(2, 4, 1, Activation::Elu, 1),
            sampler: crate::sampler::Sampler::default(),
            reward: "point([2,0.5])".parse().unwrap(),
            reward_on: Default::default(),
            potential: crate::potential::Potential { lambda: 10.0, ..Default::default() },
            resample: Default::default(),
            adaptive_ess: None,
            seed: 0,
        };
        let mut r = RunResult::new("fk-max", 2);
        r.layout = Layout { n: 8, groups: 1 };
        r.positions = vec![0.1; 16];
        r.rewards = vec![1.0; 8];
        r.log_weights = vec![0.0; 8];
        r.log_z = Some(vec![0.0]);
        r.distinct_ancestors = vec![distinct];
        r.schedule = (0..ess.len()).collect();
        r.trace = ess
            .iter()
            .enumerate()
            .map(|(k, &e)| crate::methods::TraceRow { index: k, t: (k + 1) as f64 / ess.len() as f64, ess: e, max_log_weight: 100.0, mean_reward: 1.0, ..Default::default() })
            .collect();
        (spec, r)
    }

    /// The summary with its wrapped lines joined, so that phrases can be searched.
    fn one_line(text: &str) -> String {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Huge log-weights (λ = 1e38) and rewards are short numbers, not 39 digits (issue 13 item 7).
    #[test]
    fn huge_numbers_are_printed_short() {
        let (spec, mut r) = fk_result(&[1.0, 8.0, 8.0], 1);
        r.trace.iter_mut().for_each(|t| t.max_log_weight = 1.8615654e38);
        r.rewards = vec![1.3e30; 8];
        let text = human_summary(&spec, &r, None);
        assert!(text.contains("1.862e38") && text.contains("max 1.3e30"), "{text}");
        let longest_digits = text.split(|c: char| !c.is_ascii_digit()).map(str::len).max().unwrap();
        assert!(longest_digits < 8, "{text}");
    }

    #[test]
    fn a_collapse_is_called_one_and_a_healthy_run_is_not() {
        let (spec, r) = fk_result(&[1.0, 8.0, 8.0], 1);
        let text = one_line(&human_summary(&spec, &r, None));
        assert!(text.contains("population collapsed") && text.contains("ESS 1.0 of 8"), "{text}");
        assert!(!text.contains("only the final weights steer"), "the equal ESS after a collapse is not the flat case:\n{text}");
        let (spec, r) = fk_result(&[5.0, 6.0, 4.0], 6);
        let text = one_line(&human_summary(&spec, &r, None));
        assert!(!text.contains("warning") && !text.contains("only the final weights steer"), "{text}");
        assert!(text.contains("lies in a gap between the data squares"), "(2, 0.5) is off the squares:\n{text}");
    }

    #[test]
    fn equal_intermediate_weights_are_explained() {
        let (spec, r) = fk_result(&[8.0, 8.0, 3.0], 5);
        let text = one_line(&human_summary(&spec, &r, None));
        assert!(text.contains("only the final weights steer") && text.contains("--r-min"), "{text}");
        let (spec, r) = fk_result(&[8.0, 8.0, 1.0], 5);
        assert!(one_line(&human_summary(&spec, &r, None)).contains("final weights are degenerate (ESS 1.0 of 8"));
    }

    /// Issue 11 item 9: a final ESS below 1% of N is called degenerate (the weighted or the
    /// resampled sample alike); 1% or more is not. The summary says which sample was written.
    #[test]
    fn a_degenerate_final_sample_is_called_one() {
        let (spec, mut r) = fk_result(&[800.0, 700.0, 9.0], 500);
        r.layout.n = 1000;
        let text = one_line(&human_summary(&spec, &r, None));
        assert!(text.contains("final weights are degenerate (ESS 9.0 of 1000 at t = 1, below 1%)"), "{text}");
        assert!(text.contains("a weighted sample of 1000") && text.contains("log_weights.npy"), "{text}");
        r.final_resampled = true;
        r.trace[2].distinct_parents = 7;
        let text = one_line(&human_summary(&spec, &r, None));
        assert!(text.contains("from 7 distinct particle(s)") && text.contains("1000 equally weighted draws"), "{text}");
        r.trace[2].ess = 10.0;
        let text = one_line(&human_summary(&spec, &r, None));
        assert!(!text.contains("degenerate"), "ESS 10 of 1000 is 1%, not below:\n{text}");
    }

    /// The distinct ancestors after each point are printed, one per point.
    #[test]
    fn distinct_ancestors_are_listed_per_point() {
        let (spec, mut r) = fk_result(&[5.0, 6.0, 4.0], 3);
        for (row, d) in r.trace.iter_mut().zip([7, 5, 3]) {
            row.distinct_ancestors = d;
        }
        let text = one_line(&human_summary(&spec, &r, None));
        assert!(text.contains("after each resampling point: 7 at t = 0.3333, 5 at t = 0.6667, 3 at t = 1"), "{text}");
        assert!(text.contains("distinct ancestors left: 3 of 8"), "{text}");
    }

    #[test]
    fn wrapping_keeps_every_word_within_the_width() {
        let text = "word ".repeat(60) + "--reward \"gaussian([2,0.5], 0.5)\"";
        let w = wrap(&text);
        assert!(w.starts_with("  word word"));
        assert!(w.lines().skip(1).all(|l| l.starts_with("    ") && !l.starts_with("     ")), "{w}");
        assert!(w.lines().all(|l| l.chars().count() <= 100), "{w}");
        assert_eq!(w.split_whitespace().collect::<Vec<_>>(), text.split_whitespace().collect::<Vec<_>>());
    }

    #[test]
    fn weights_normalise_per_group() {
        let w = normalised_weights(&[0.0, 0.0, f64::NEG_INFINITY, f64::NEG_INFINITY, 1.0, f64::NEG_INFINITY], Layout { n: 3, groups: 2 });
        let want = [0.25, 0.25, 0.0, 0.0, 0.5, 0.0];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
