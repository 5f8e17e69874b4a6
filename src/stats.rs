//! The statistics `summary.json` and `sweep.csv` both report (docs/outputs.md, docs/quality.md): reward quantiles and
//! the fraction of samples near the target. Defined once here so that the two files give the same
//! number for the same samples.

/// The `p`-quantile (0 ≤ p ≤ 1) of ascending `sorted` values, by linear interpolation between
/// order statistics: with h = p·(n − 1), the value at ⌊h⌋ plus (h − ⌊h⌋) of the step to the next
/// one (numpy's default, Hyndman–Fan type 7). NaN when there are no values.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let h = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (h - lo as f64)
}

/// The finite ones among some values, sorted, and how many were not finite (NaN and ±inf
/// rewards are counted, not averaged).
#[derive(Clone, Debug)]
pub struct FiniteSorted {
    /// Ascending.
    pub values: Vec<f64>,
    pub nonfinite: usize,
}

impl FiniteSorted {
    pub fn new(values: impl IntoIterator<Item = f64>) -> Self {
        let (mut finite, mut nonfinite) = (Vec::new(), 0);
        for v in values {
            if v.is_finite() {
                finite.push(v);
            } else {
                nonfinite += 1;
            }
        }
        finite.sort_by(f64::total_cmp);
        FiniteSorted { values: finite, nonfinite }
    }

    /// NaN when no value is finite.
    pub fn mean(&self) -> f64 {
        if self.values.is_empty() {
            f64::NAN
        } else {
            self.values.iter().sum::<f64>() / self.values.len() as f64
        }
    }

    /// NaN when no value is finite.
    pub fn min(&self) -> f64 {
        self.values.first().copied().unwrap_or(f64::NAN)
    }

    /// NaN when no value is finite.
    pub fn max(&self) -> f64 {
        self.values.last().copied().unwrap_or(f64::NAN)
    }

    /// See [`quantile`].
    pub fn quantile(&self, p: f64) -> f64 {
        quantile(&self.values, p)
    }
}

/// Whether `x` lies within Euclidean distance `radius` of `centre` (the boundary counts as
/// within). Squared distances in f64, so that no f32 rounding moves a sample across the boundary.
pub fn within_radius(x: &[f32], centre: &[f32], radius: f64) -> bool {
    let d2: f64 = x.iter().zip(centre).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
    d2 <= radius * radius
}

/// The share of the rows of `positions` (`[rows, dim]` row-major) that pass `test`: of their
/// count, or of `weights` (one per row, summing to 1) when given. NaN when there are no rows.
pub fn fraction_where(positions: &[f32], dim: usize, weights: Option<&[f64]>, test: impl Fn(&[f32]) -> bool) -> f64 {
    let rows = positions.chunks_exact(dim.max(1));
    let total = rows.len();
    if total == 0 {
        return f64::NAN;
    }
    match weights {
        Some(w) => rows.zip(w).filter(|(x, _)| test(x)).map(|(_, &wi)| wi).sum(),
        None => rows.filter(|x| test(x)).count() as f64 / total as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_order_statistics() {
        let v = [1.0, 2.0, 3.0, 4.0];
        // h = 0.5·3 = 1.5: halfway between 2 and 3.
        assert_eq!(quantile(&v, 0.5), 2.5);
        // h = 0.1·3 = 0.3: 1 + 0.3·(2 − 1).
        assert!((quantile(&v, 0.1) - 1.3).abs() < 1e-12);
        // h = 0.9·3 = 2.7: 3 + 0.7·(4 − 3).
        assert!((quantile(&v, 0.9) - 3.7).abs() < 1e-12);
        assert_eq!((quantile(&v, 0.0), quantile(&v, 1.0)), (1.0, 4.0));
        assert!(quantile(&[], 0.5).is_nan());
        assert_eq!([0.0, 0.05, 0.5, 1.0].map(|p| quantile(&[7.0], p)), [7.0; 4]);
    }

    #[test]
    fn finite_sorted_counts_and_drops_nonfinite_values() {
        let s = FiniteSorted::new([3.0, f64::NAN, 1.0, f64::INFINITY, 2.0, f64::NEG_INFINITY]);
        assert_eq!(s.values, [1.0, 2.0, 3.0]);
        assert_eq!(s.nonfinite, 3);
        assert_eq!((s.mean(), s.min(), s.max(), s.quantile(0.5)), (2.0, 1.0, 3.0, 2.0));
        let none = FiniteSorted::new([f64::NAN]);
        assert!(none.mean().is_nan() && none.max().is_nan() && none.quantile(0.5).is_nan());
    }

    #[test]
    fn within_radius_includes_the_boundary() {
        assert!(within_radius(&[3.0, 4.0], &[0.0, 0.0], 5.0));
        assert!(!within_radius(&[3.0, 4.01], &[0.0, 0.0], 5.0));
        assert!(within_radius(&[2.1, 0.5], &[2.0, 0.5], 0.25));
    }

    #[test]
    fn fractions_by_count_and_by_weight() {
        let rows = [0.0, 0.0, 1.0, 0.0, 2.0, 0.0, 3.0, 0.0];
        let near = |x: &[f32]| within_radius(x, &[0.0, 0.0], 1.0);
        assert_eq!(fraction_where(&rows, 2, None, near), 0.5);
        assert_eq!(fraction_where(&rows, 2, Some(&[0.1, 0.2, 0.3, 0.4]), near), 0.1 + 0.2);
        assert!(fraction_where(&[], 2, None, near).is_nan());
    }
}
