//! `scaling.png` of `flowsteer sweep`: the inference-time scaling curves (final reward against
//! model evaluations, one line per method) beside throughput against particle count (one line per
//! backend and method), as the scaling figures of the FK-steering and search papers draw them.
//!
//! Input is one [`ScalingPoint`] per finished sweep point; seeds are pooled here (mean, with the
//! seeds' min–max as an error bar). The file is written whole or not at all (temporary name, rename).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// One finished sweep point, as the plot needs it.
#[derive(Clone, Debug)]
pub struct ScalingPoint {
    pub method: String,
    pub backend: String,
    pub particles: u64,
    pub nfe: f64,
    pub reward_mean: f64,
    /// Model evaluations per second of wall time.
    pub nfe_per_s: f64,
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Registers the bundled DejaVu Sans as plotters' "sans-serif" (there is no system font lookup in
/// this build of plotters; `ab_glyph` renders from the bytes).
pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../assets/DejaVuSans.ttf");
        if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_err() {
            panic!("assets/DejaVuSans.ttf is not a valid font file");
        }
    });
}

/// (x, mean y, min y, max y) per group key, x and y averaged over the points sharing the key.
fn pooled<K: Ord>(points: impl Iterator<Item = (K, f64, f64)>) -> Vec<(f64, f64, f64, f64)> {
    let mut groups: BTreeMap<K, Vec<(f64, f64)>> = BTreeMap::new();
    for (k, x, y) in points {
        groups.entry(k).or_default().push((x, y));
    }
    groups
        .into_values()
        .map(|v| {
            let n = v.len() as f64;
            let x = v.iter().map(|p| p.0).sum::<f64>() / n;
            let mean = v.iter().map(|p| p.1).sum::<f64>() / n;
            let lo = v.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let hi = v.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            (x, mean, lo, hi)
        })
        .collect()
}

/// A label for a log axis at 1, 2 and 5 × 10^k only (plotters puts a tick at every 1..9 × 10^k,
/// whose labels would overlap); `2e4`, `1e6`, plain numbers below 1,000.
fn log_label(v: &f64) -> String {
    if !(v.is_finite() && *v > 0.0) {
        return String::new();
    }
    let e = v.log10().floor();
    let m = v / 10f64.powf(e);
    let lead = [1.0, 2.0, 5.0, 10.0].into_iter().find(|c| (m - c).abs() < 1e-6 * c);
    match lead {
        Some(c) if *v < 1000.0 => format!("{}", (c * 10f64.powf(e)).round()),
        Some(10.0) => format!("1e{}", e as i32 + 1),
        Some(c) => format!("{}e{}", c as i32, e as i32),
        None => String::new(),
    }
}

fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, 0f64);
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 1.0..10.0;
    }
    // Whole decades: plotters puts no tick on a log axis that spans less than one.
    let (a, b) = (lo.log10().floor(), hi.log10().ceil());
    10f64.powf(a)..10f64.powf(b.max(a + 1.0))
}

fn lin_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.08).max(1e-9 + lo.abs() * 0.05);
    (lo - pad)..(hi + pad)
}

/// Draws the two panels into `path` (PNG), atomically.
pub fn write_scaling_png(points: &[ScalingPoint], path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(!points.is_empty(), "no finished sweep points to plot");
    register_font();
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".scaling.tmp.{}.png", std::process::id()));
    let drawn = draw(points, &tmp);
    match drawn.and_then(|()| std::fs::rename(&tmp, path).map_err(anyhow::Error::from)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn draw(points: &[ScalingPoint], file: &Path) -> anyhow::Result<()> {
    let methods: Vec<&str> = {
        let mut m: Vec<&str> = Vec::new();
        for p in points {
            if !m.contains(&p.method.as_str()) {
                m.push(&p.method);
            }
        }
        m
    };
    let backends: Vec<&str> = {
        let mut b: Vec<&str> = points.iter().map(|p| p.backend.as_str()).collect();
        b.sort_unstable();
        b.dedup();
        b
    };
    let colour = |method: &str| PALETTE[methods.iter().position(|m| *m == method).unwrap_or(0) % PALETTE.len()];

    let root = BitMapBackend::new(file, (1400, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(700);

    // Left: final reward against NFE, one line per method (seeds pooled, min–max bars).
    let xr = log_range(points.iter().map(|p| p.nfe));
    let yr = lin_range(points.iter().map(|p| p.reward_mean));
    let mut chart = ChartBuilder::on(&left)
        .caption("inference-time scaling: final reward vs NFE", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(xr.log_scale(), yr)?;
    chart
        .configure_mesh()
        .x_desc("model evaluations (NFE), log scale")
        .x_label_formatter(&log_label)
        .y_desc("final reward (mean over particles)")
        .label_style(("sans-serif", 14))
        .draw()?;
    for &method in &methods {
        let c = colour(method);
        let series = pooled(points.iter().filter(|p| p.method == method).map(|p| (p.particles, p.nfe, p.reward_mean)));
        chart
            .draw_series(LineSeries::new(series.iter().map(|s| (s.0, s.1)), c.stroke_width(2)))?
            .label(method)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(series.iter().map(|s| Circle::new((s.0, s.1), 4, c.filled())))?;
        chart.draw_series(series.iter().filter(|s| s.3 > s.2).map(|s| PathElement::new(vec![(s.0, s.2), (s.0, s.3)], c)))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;

    // Right: throughput against particle count, per backend (line style) and method (colour).
    let xr = log_range(points.iter().map(|p| p.particles as f64));
    let yr = log_range(points.iter().map(|p| p.nfe_per_s));
    let mut chart = ChartBuilder::on(&right)
        .caption("throughput vs particle count", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(xr.log_scale(), yr.log_scale())?;
    chart
        .configure_mesh()
        .x_desc("particles, log scale")
        .y_desc("model evaluations per second (NFE/s)")
        .x_label_formatter(&log_label)
        .y_label_formatter(&log_label)
        .label_style(("sans-serif", 14))
        .draw()?;
    for (bi, &backend) in backends.iter().enumerate() {
        for &method in &methods {
            let c = colour(method);
            let series = pooled(
                points
                    .iter()
                    .filter(|p| p.method == method && p.backend == backend)
                    .map(|p| (p.particles, p.particles as f64, p.nfe_per_s)),
            );
            if series.is_empty() {
                continue;
            }
            let width = if bi == 0 { 2 } else { 1 };
            let label = if backends.len() > 1 { format!("{method} · {backend}") } else { format!("{method} ({backend})") };
            chart
                .draw_series(LineSeries::new(series.iter().map(|s| (s.0, s.1)), c.stroke_width(width)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(width)));
            if bi == 0 {
                chart.draw_series(series.iter().map(|s| Circle::new((s.0, s.1), 4, c.filled())))?;
            } else {
                chart.draw_series(series.iter().map(|s| TriangleMarker::new((s.0, s.1), 5, c.filled())))?;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(method: &str, backend: &str, n: u64, seed: u64) -> ScalingPoint {
        ScalingPoint {
            method: method.into(),
            backend: backend.into(),
            particles: n,
            nfe: n as f64 * 205.0,
            reward_mean: (n as f64).ln() + seed as f64 * 0.1,
            nfe_per_s: n as f64 * 1e4,
        }
    }

    #[test]
    fn log_labels_only_at_one_two_five() {
        let got: Vec<String> = [1e4, 2e4, 3e4, 5e5, 9e6, 1e7, 100.0, 200.0, 7.0].iter().map(log_label).collect();
        assert_eq!(got, ["1e4", "2e4", "", "5e5", "", "1e7", "100", "200", ""]);
    }

    #[test]
    fn seeds_pool_into_mean_and_range() {
        let pts = [(1u64, 10.0, 1.0), (1, 10.0, 3.0), (2, 20.0, 5.0)];
        let got = pooled(pts.into_iter());
        assert_eq!(got, vec![(10.0, 2.0, 1.0, 3.0), (20.0, 5.0, 5.0, 5.0)]);
    }

    #[test]
    fn writes_a_png_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scaling.png");
        let mut pts = Vec::new();
        for m in ["fk-max", "bon", "plain"] {
            for n in [64u64, 256, 1024] {
                for s in 0..2 {
                    pts.push(point(m, "cpu", n, s));
                }
            }
        }
        write_scaling_png(&pts, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn nothing_to_plot_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scaling.png");
        assert!(write_scaling_png(&[], &path).is_err());
        assert!(!path.exists());
    }
}
