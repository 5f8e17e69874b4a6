//! `DIR/scaling.png` of a sweep, drawn from every row of sweep.csv.

use std::path::Path;

use super::csv::Row;
use crate::plot_scaling::{write_scaling_png, ScalingPoint};

/// Draws DIR/scaling.png from every row of the sweep.
pub fn plot_rows(rows: &[Row], path: &Path) -> anyhow::Result<()> {
    let pts: Vec<ScalingPoint> = rows
        .iter()
        .map(|r| ScalingPoint {
            method: r.point.method.name().to_string(),
            backend: r.point.backend.clone(),
            particles: r.point.particles,
            nfe: r.nfe as f64,
            reward_mean: r.reward_mean,
            nfe_per_s: r.nfe_per_s,
        })
        .collect();
    write_scaling_png(&pts, path)
}

