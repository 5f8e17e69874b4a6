//! `plot.png` (docs/outputs.md): panels of the particle cloud over time with the reward drawn in — the
//! checkerboard's squares in grey, attractors as red crosses, lines in red, obstacles as discs
//! (radius ρ solid, range ρ + Q* dashed), particles on top — as researchers draw these 2-D toys.
//! D > 2 shows the first two coordinates.

use std::sync::Once;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::backend::RunSpec;
use crate::methods::RunResult;
use crate::reward::Term;

/// The bundled font (DejaVu Sans), registered once as "sans-serif" for plotters' ab_glyph.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Most points drawn per panel (beyond that the first ones stand for the cloud).
const MAX_POINTS: usize = 20_000;
/// Most panels: t = 0, the resampling points, the final weighted cloud.
const MAX_PANELS: usize = 6;
/// The coordinates a panel shows (D > 2: the first two).
const AXES: [&str; 2] = ["x[0]", "x[1]"];
/// Pixels above the panels for the run's heading.
const TITLE_HEIGHT: u32 = 30;

fn register_font() {
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType file shipped with the crate; failure would be a packaging bug.
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).unwrap_or_else(|_| panic!("assets/DejaVuSans.ttf is not a valid font"));
    });
}

/// One panel: a title, `[m, D]` points and, for the final panel of a weighted run, each
/// point's weight relative to the largest (drawn as its opacity).
struct Panel<'a> {
    title: String,
    points: &'a [f32],
    shade: Option<Vec<f32>>,
}

/// How many distinct rows `points` holds: a collapsed population is many copies of a few
/// points, which look like an empty panel unless the title says so.
fn distinct_rows(points: &[f32], dim: usize) -> usize {
    let mut rows: Vec<Vec<u32>> = points.chunks(dim).map(|r| r.iter().map(|v| v.to_bits()).collect()).collect();
    rows.sort_unstable();
    rows.dedup();
    rows.len()
}

/// "4,096 particles", "1 particle", "4,096 particles, 1 distinct" when copies dominate, and
/// "(first 20,000 drawn)" when the panel shows only [`MAX_POINTS`] of them.
fn count_text(points: &[f32], dim: usize) -> String {
    let n = points.len() / dim.max(1);
    let d = distinct_rows(points, dim);
    let mut text = format!("{} particle{}", crate::format::count(n as u64), if n == 1 { "" } else { "s" });
    if d < n / 2 {
        text += &format!(", {} distinct", crate::format::count(d as u64));
    }
    if n > MAX_POINTS {
        text += &format!(" (first {} drawn)", crate::format::count(MAX_POINTS as u64));
    }
    text
}

/// The figure's heading: the method and reward, λ only for FK steering (the searches rank by
/// the reward itself and never use it), and how many snapshots were left out.
fn heading(spec: &RunSpec, r: &RunResult) -> String {
    let mut h = format!("{}: reward {}", r.method, spec.reward);
    if r.method.starts_with("fk-") {
        h += &format!(", λ = {}", crate::format::number(spec.potential.lambda as f64));
    }
    let snaps = snapshots_before_the_end(spec, r).len();
    if snaps > MAX_PANELS - 1 {
        h += &format!(" ({} of {snaps} snapshots shown)", MAX_PANELS - 1);
    }
    h
}

/// The snapshots taken before the final time (the final samples get their own panel).
fn snapshots_before_the_end<'a>(spec: &RunSpec, r: &'a RunResult) -> Vec<&'a (usize, Vec<f32>)> {
    r.snapshots.iter().filter(|(s, _)| *s < spec.sampler.steps).collect()
}

/// The panels of a run: snapshots (thinned to [`MAX_PANELS`] − 1, first and last kept), then
/// the final samples.
fn panels<'a>(spec: &RunSpec, r: &'a RunResult) -> Vec<Panel<'a>> {
    let steps = spec.sampler.steps as f64;
    let snaps = snapshots_before_the_end(spec, r);
    let keep = MAX_PANELS - 1;
    let chosen: Vec<&(usize, Vec<f32>)> = if snaps.len() <= keep {
        snaps
    } else {
        (0..keep).map(|j| snaps[j * (snaps.len() - 1) / (keep - 1)]).collect()
    };
    let dim = r.dim;
    let mut out: Vec<Panel> = chosen
        .into_iter()
        .map(|(s, p)| Panel { title: format!("t = {}: {}", crate::format::number(*s as f64 / steps), count_text(p, dim)), points: p, shade: None })
        .collect();
    let weighted = r.log_weights.iter().any(|&l| l != 0.0);
    let shade = weighted.then(|| {
        let top = r.log_weights.iter().copied().filter(|l| l.is_finite()).fold(f64::NEG_INFINITY, f64::max);
        r.log_weights.iter().map(|&l| if l.is_finite() { (l - top).exp() as f32 } else { 0.0 }).collect::<Vec<f32>>()
    });
    let title = format!("final: {}{}", count_text(&r.positions, dim), if weighted { ", darker = more weight" } else { "" });
    out.push(Panel { title, points: &r.positions, shade });
    out
}

/// Renders the run's panels as a PNG file at `path` (plotters encodes PNG only to a path; the
/// run layer passes a path inside the run's temporary directory, so nothing lands in /tmp).
pub fn write_png(spec: &RunSpec, r: &RunResult, path: &std::path::Path) -> anyhow::Result<()> {
    register_font();
    let dim = r.dim;
    let panels = panels(spec, r);
    let cols = panels.len().min(3);
    let rows = panels.len().div_ceil(cols);
    let (w, h) = (400 * cols as u32, 400 * rows as u32 + TITLE_HEIGHT);
    (|| -> anyhow::Result<()> {
        let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
        let root = root.titled(&heading(spec, r), ("sans-serif", 18)).map_err(|e| anyhow!("plot: {e}"))?;
        let (lo, hi) = bounds(spec, &panels, dim);
        for (area, panel) in root.split_evenly((rows, cols)).iter().zip(&panels) {
            draw_panel(area, spec, panel, dim, lo, hi).map_err(|e| anyhow!("plot: {e}"))?;
        }
        root.present().map_err(|e| anyhow!("plot: {e}"))?;
        Ok(())
    })()
}

/// A square window holding the checkerboard, the reward's features and most of the points.
fn bounds(spec: &RunSpec, panels: &[Panel], dim: usize) -> (f32, f32) {
    let mut lo = -3.5f32;
    let mut hi = 3.5f32;
    for (_, t) in &spec.reward.terms {
        if let Some(c) = t.centre() {
            for &v in c.iter().take(2) {
                lo = lo.min(v - 0.5);
                hi = hi.max(v + 0.5);
            }
        }
    }
    if let Some(last) = panels.last() {
        for row in last.points.chunks(dim).take(MAX_POINTS) {
            for &v in row.iter().take(2) {
                if v.is_finite() && v.abs() < 10.0 {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
        }
    }
    (lo, hi)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    spec: &RunSpec,
    panel: &Panel,
    dim: usize,
    lo: f32,
    hi: f32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(44)
        .build_cartesian_2d(lo..hi, lo..hi)?;
    // Whole-number ticks: the squares' corners sit on multiples of 1.5, and "1.0"-style labels
    // blur at this size.
    let ticks = (hi.floor() - lo.ceil()) as usize + 1;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(ticks)
        .y_labels(ticks)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc(AXES[0])
        .y_desc(AXES[1])
        .axis_desc_style(("sans-serif", 14))
        .label_style(("sans-serif", 13))
        .draw()?;
    if dim == 2 {
        let squares = (0..4).flat_map(|i| (0..4).map(move |j| (i, j))).filter(|(i, j)| (i + j) % 2 == 0);
        chart.draw_series(squares.map(|(i, j)| {
            let (x0, y0) = (-3.0 + 1.5 * i as f32, -3.0 + 1.5 * j as f32);
            Rectangle::new([(x0, y0), (x0 + 1.5, y0 + 1.5)], RGBColor(228, 228, 228).filled())
        }))?;
    }
    let red = RGBColor(200, 30, 30);
    for (w, t) in &spec.reward.terms {
        match t {
            Term::Point { c } | Term::Gaussian { c, .. } => {
                let (x, y) = (c[0], *c.get(1).unwrap_or(&0.0));
                let style = if *w > 0.0 { red.stroke_width(3) } else { BLACK.stroke_width(3) };
                chart.draw_series(std::iter::once(Cross::new((x, y), 7, style)))?;
                if let Term::Gaussian { sigma, .. } = t {
                    chart.draw_series(std::iter::once(circle_path((x, y), *sigma, red.mix(0.6).stroke_width(1))))?;
                }
            }
            Term::Line { axis, c } => {
                let seg = if *axis == 0 { [(*c, lo), (*c, hi)] } else { [(lo, *c), (hi, *c)] };
                chart.draw_series(std::iter::once(PathElement::new(seg.to_vec(), red.stroke_width(2))))?;
            }
            Term::Obstacle { c, rho, q_star, .. } => {
                let centre = (c[0], *c.get(1).unwrap_or(&0.0));
                chart.draw_series(std::iter::once(circle_path(centre, *rho, BLACK.stroke_width(2))))?;
                chart.draw_series(dashed_circle(centre, rho + q_star, BLACK.mix(0.5).stroke_width(1)))?;
            }
            Term::Expr(_) | Term::Command(_) => {}
        }
    }
    let blue = RGBColor(31, 90, 180);
    // A handful of distinct points (a collapsed population) is drawn large so that it shows.
    let few = distinct_rows(panel.points, dim) <= 20;
    let radius = if few { 4 } else { 1 };
    let pts = panel
        .points
        .chunks(dim)
        .enumerate()
        .take(MAX_POINTS)
        .filter(|(_, p)| p[0].is_finite() && p.get(1).is_none_or(|v| v.is_finite()));
    chart.draw_series(pts.map(|(i, p)| {
        let alpha = match &panel.shade {
            Some(w) => 0.06 + 0.9 * w[i] as f64,
            None if few => 0.9,
            None => 0.35,
        };
        Circle::new((p[0], *p.get(1).unwrap_or(&0.0)), radius, blue.mix(alpha).filled())
    }))?;
    Ok(())
}

/// A circle in data coordinates (the axes are equal, so it stays round).
fn circle_path(c: (f32, f32), r: f32, style: ShapeStyle) -> PathElement<(f32, f32)> {
    let pts: Vec<(f32, f32)> = (0..=96).map(|k| circle_point(c, r, k as f32 / 96.0)).collect();
    PathElement::new(pts, style)
}

fn dashed_circle(c: (f32, f32), r: f32, style: ShapeStyle) -> Vec<PathElement<(f32, f32)>> {
    (0..48).step_by(2).map(|k| PathElement::new(vec![circle_point(c, r, k as f32 / 48.0), circle_point(c, r, (k + 1) as f32 / 48.0)], style)).collect()
}

fn circle_point(c: (f32, f32), r: f32, frac: f32) -> (f32, f32) {
    let a = std::f32::consts::TAU * frac;
    (c.0 + r * a.cos(), c.1 + r * a.sin())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Layout;

    fn spec() -> RunSpec {
        RunSpec {
            model: crate::model::Mlp::init_uniform(2, 4, 1, crate::model::Activation::Elu, 1),
            sampler: crate::sampler::Sampler::default(),
            reward: "point([2,0.5])".parse().unwrap(),
            reward_on: Default::default(),
            potential: crate::potential::Potential { lambda: 10.0, ..Default::default() },
            resample: Default::default(),
            adaptive_ess: None,
            seed: 0,
        }
    }

    fn result(method: &str, n: usize, snapshots: usize) -> RunResult {
        let mut r = RunResult::new(method, 2);
        r.layout = Layout { n, groups: 1 };
        r.positions = (0..2 * n).map(|i| i as f32 * 1e-4).collect();
        r.log_weights = vec![0.0; n];
        r.snapshots = (0..snapshots).map(|k| (k * 10, vec![0.5; 2 * n])).collect();
        r
    }

    #[test]
    fn the_heading_names_lambda_only_where_the_method_uses_it() {
        let s = spec();
        assert!(heading(&s, &result("fk-max", 4, 0)).contains("λ = 10"));
        for method in ["bon", "zeroth", "paths"] {
            let h = heading(&s, &result(method, 1, 0));
            assert!(!h.contains('λ'), "{h}");
        }
    }

    #[test]
    fn counts_are_singular_for_one_and_say_when_points_or_panels_are_left_out() {
        let s = spec();
        let r = result("bon", 1, 0);
        let p = panels(&s, &r);
        assert_eq!(p.last().unwrap().title, "final: 1 particle");
        let r = result("fk-max", MAX_POINTS + 5, 9);
        let p = panels(&s, &r);
        assert_eq!(p.len(), MAX_PANELS);
        let last = &p.last().unwrap().title;
        assert!(last.contains("20,005 particles") && last.contains("(first 20,000 drawn)"), "{last}");
        let h = heading(&s, &r);
        assert!(h.contains("(5 of 9 snapshots shown)"), "{h}");
        // Snapshot times are short numbers.
        assert!(p[1].title.starts_with("t = 0.2:"), "{}", p[1].title);
    }
}
