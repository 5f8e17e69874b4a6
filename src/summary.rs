//! What a steering or search run reports (SPEC §9): the human summary, `summary.json`, and the
//! staging of every output file (written whole or not at all, `output::OutputSet`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::backend::{BackendInfo, Layout, RunSpec};
use crate::cli::steer::{CommonArgs, Prepared};
use crate::methods::{trace_csv, RunResult};
use crate::output::OutputSet;

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
pub fn normalised_weights(log_w: &[f32], layout: Layout) -> Vec<f64> {
    let mut w = vec![0f64; log_w.len()];
    for (lw, out) in log_w.chunks(layout.n).zip(w.chunks_mut(layout.n)) {
        let max = lw.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        if max == f64::NEG_INFINITY {
            out.fill(1.0 / (layout.n * layout.groups) as f64);
            continue;
        }
        let s: f64 = lw.iter().map(|&l| (l as f64 - max).exp()).sum();
        for (o, &l) in out.iter_mut().zip(lw) {
            *o = (l as f64 - max).exp() / s / layout.groups as f64;
        }
    }
    w
}

/// Whether (x, y) lies on a square of the checkerboard of SPEC §10.
// TODO(dedupe): use core's checkerboard helper once src/checkerboard.rs lands.
pub fn on_checkerboard(x: f32, y: f32) -> bool {
    if !(-3.0..=3.0).contains(&x) || !(-3.0..=3.0).contains(&y) {
        return false;
    }
    ((x / 1.5).floor() as i64 + (y / 1.5).floor() as i64) % 2 == 0
}

/// Statistics of a set of rewards with optional weights (finite rewards only).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RewardStats {
    pub count: usize,
    pub mean: f64,
    pub weighted_mean: Option<f64>,
    pub min: f64,
    pub max: f64,
    /// The 5, 25, 50, 75 and 95 % quantiles (unweighted).
    pub quantiles: [f64; 5],
    pub nonfinite: usize,
}

impl RewardStats {
    pub fn new(rewards: &[f32], weights: Option<&[f64]>) -> Self {
        let mut f: Vec<f64> = rewards.iter().filter(|r| r.is_finite()).map(|&r| r as f64).collect();
        f.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let q = |p: f64| if f.is_empty() { f64::NAN } else { f[((f.len() - 1) as f64 * p).round() as usize] };
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
            count: f.len(),
            mean: if f.is_empty() { f64::NAN } else { f.iter().sum::<f64>() / f.len() as f64 },
            weighted_mean,
            min: f.first().copied().unwrap_or(f64::NAN),
            max: f.last().copied().unwrap_or(f64::NAN),
            quantiles: [q(0.05), q(0.25), q(0.5), q(0.75), q(0.95)],
            nonfinite: rewards.len() - f.len(),
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
        let total = positions.len() / dim.max(1);
        let frac = |pred: &dyn Fn(&[f32]) -> bool, w: Option<&[f64]>| -> f64 {
            let mut hit = 0f64;
            for (i, row) in positions.chunks(dim).enumerate() {
                if pred(row) {
                    hit += w.map_or(1.0 / total as f64, |w| w[i]);
                }
            }
            hit
        };
        let target = spec.reward.target().map(|c| c.to_vec());
        let near = target.clone().map(|c| {
            move |row: &[f32]| row.iter().zip(&c).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt() <= TARGET_RADIUS
        });
        let square = |row: &[f32]| on_checkerboard(row[0], row[1]);
        Placement {
            within_target: near.as_ref().map(|p| frac(p, None)),
            within_target_weighted: near.as_ref().and_then(|p| weights.map(|w| frac(p, Some(w)))),
            on_square: (dim == 2).then(|| frac(&square, None)),
            on_square_weighted: (dim == 2).then_some(()).and(weights).map(|w| frac(&square, Some(w))),
            target,
        }
    }
}

/// Whether a result carries non-trivial weights.
fn weighted(result: &RunResult) -> bool {
    result.log_weights.iter().any(|&l| l != 0.0)
}

/// The short text printed after a run.
pub fn human_summary(spec: &RunSpec, r: &RunResult, baseline: Option<&[f32]>) -> String {
    let mut s = String::new();
    let w = weighted(r).then(|| normalised_weights(&r.log_weights, r.layout));
    let after = RewardStats::new(&r.rewards, w.as_deref());
    let place = Placement::new(spec, &r.positions, r.dim, w.as_deref());
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
    if let Some(b) = baseline {
        let before = RewardStats::new(b, None);
        let _ = writeln!(s, "  reward before steering (same noises, no steering): mean {:.4}, median {:.4}", before.mean, before.quantiles[2]);
    }
    let _ = write!(s, "  reward after:  mean {:.4} over particles, median {:.4}, max {:.4}", after.mean, after.quantiles[2], after.max);
    if let Some(m) = after.weighted_mean {
        let _ = write!(s, "; {m:.4} weighted by the final weights");
    }
    s.push('\n');
    if let Some(c) = &place.target {
        let _ = writeln!(
            s,
            "  within {TARGET_RADIUS} of the target {c:?}: {} of particles ({} weighted)",
            pct(place.within_target),
            pct(place.within_target_weighted)
        );
    }
    if place.on_square.is_some() {
        let _ = writeln!(s, "  on a checkerboard square: {} of particles ({} weighted)", pct(place.on_square), pct(place.on_square_weighted));
    }
    if let Some(lz) = &r.log_z {
        let groups = r.layout.groups;
        let mut ess = Vec::new();
        for k in 0..r.schedule.len() {
            let rows: Vec<_> = r.trace.iter().filter(|t| t.index == k).collect();
            let mean = rows.iter().map(|t| t.ess).sum::<f64>() / rows.len().max(1) as f64;
            ess.push(format!("{:.0}", mean));
        }
        let _ = writeln!(
            s,
            "  ESS at each resampling point{}: {}  (N = {})",
            if groups > 1 { " (mean over groups)" } else { "" },
            ess.join(", "),
            r.layout.n
        );
        let mean_lz = lz.iter().sum::<f64>() / lz.len() as f64;
        let distinct = r.distinct_ancestors.iter().sum::<u64>() as f64 / groups as f64;
        let _ = writeln!(s, "  log Ẑ = {mean_lz:.4}{}; distinct ancestors left: {distinct:.0} of {}", if groups > 1 { " (mean over groups)" } else { "" }, r.layout.n);
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
        "  time {:.3} s ({phases}); {:.3e} particle-steps/s, NFE {} ({:.3e}/s)",
        t.total,
        r.particle_steps_per_second(),
        r.nfe,
        r.nfe as f64 / t.total.max(1e-12)
    );
    s
}

/// `summary.json` (SPEC §9).
pub fn summary_json(prep: &Prepared, common: &CommonArgs, config: Value, info: &BackendInfo, r: &RunResult, baseline: Option<&[f32]>) -> Value {
    let spec = &prep.spec;
    let w = weighted(r).then(|| normalised_weights(&r.log_weights, r.layout));
    let steps: Vec<Value> = r
        .trace
        .iter()
        .map(|t| {
            json!({
                "index": t.index, "step": t.step, "t": t.t, "group": t.group, "ess": finite(t.ess),
                "max_log_weight": finite(t.max_log_weight), "log_z_increment": finite(t.log_z_increment),
                "mean_reward": finite(t.mean_reward), "best_reward": finite(t.best_reward),
                "resampled": t.resampled, "distinct_parents": t.distinct_parents,
                "nonfinite": t.nonfinite, "all_neg_inf": t.all_neg_inf, "nfe": t.nfe,
            })
        })
        .collect();
    let t = &r.times;
    json!({
        "method": r.method,
        "config": {
            "run": config,
            "model": prep.model_path.display().to_string(),
            "model_shape": spec.model.shape(),
            "reward": spec.reward.to_string(),
            "reward_terms": spec.reward,
            "reward_on": spec.reward_on,
            "sampler": spec.sampler,
            "seed": spec.seed,
            "backend_choice": common.backend,
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
        "final_reward": RewardStats::new(&r.rewards, w.as_deref()),
        "baseline_reward": baseline.map(|b| RewardStats::new(b, None)),
        "placement": Placement::new(spec, &r.positions, r.dim, w.as_deref()),
        "steps": steps,
        "log_z": r.log_z.as_ref().map(|v| v.iter().map(|&x| finite(x)).collect::<Vec<_>>()),
        "distinct_ancestors": r.distinct_ancestors,
        "nonfinite_events": r.nonfinite,
        "all_neg_inf_events": r.all_neg_inf_events,
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

/// Stages every output of a run and writes them together; returns the paths written.
#[allow(clippy::too_many_arguments)]
pub fn write_outputs(
    dir: &Path,
    prep: &Prepared,
    common: &CommonArgs,
    config: Value,
    info: &BackendInfo,
    r: &RunResult,
    baseline: Option<&[f32]>,
    outputs: Outputs,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut set = OutputSet::default();
    let summary = summary_json(prep, common, config, info, r, baseline);
    set.add(dir.join("summary.json"), serde_json::to_vec_pretty(&summary)?);
    let total = r.layout.total();
    set.add(dir.join("samples.npy"), crate::npy::to_bytes(&[total, r.dim], &r.positions));
    set.add(dir.join("trace.csv"), trace_csv(&r.trace).into_bytes());
    set.add(dir.join("log_weights.npy"), crate::npy::to_bytes(&[total], &r.log_weights));
    if outputs.ancestry {
        let rows = r.ancestry.clone().unwrap_or_default();
        let flat: Vec<u32> = rows.concat();
        set.add(dir.join("ancestry.npy"), crate::npy::to_bytes(&[rows.len(), total], &flat));
    }
    if outputs.plot {
        set.add(dir.join("plot.png"), crate::plot::render_png(&prep.spec, r)?);
    }
    Ok(set.commit()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkerboard_squares() {
        assert!(on_checkerboard(0.1, 0.1));
        assert!(!on_checkerboard(1.6, 0.1));
        assert!(on_checkerboard(-0.1, -0.1));
        assert!(!on_checkerboard(-0.1, 0.1));
        assert!(!on_checkerboard(3.5, 0.1));
    }

    #[test]
    fn weights_normalise_per_group() {
        let w = normalised_weights(&[0.0, 0.0, f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY], Layout { n: 3, groups: 2 });
        let want = [0.25, 0.25, 0.0, 0.0, 0.5, 0.0];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
