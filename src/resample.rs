//! Resampling schemes (docs/resampling.md): ancestor indices from log-weights and Philox uniforms.
//!
//! These functions are the CPU reference that `kernels/resample.cu` is checked against: the
//! same log-weights and the same Philox uniforms give the same ancestors on both backends.
//! They are pure functions over slices (one group in, its ancestors out), so a GPU test can
//! call them with exactly the inputs it gave the kernels.
//!
//! # The shared definitions (CPU and CUDA cite this block)
//! For group `g` of `n` particles with log-weights `lw_0..lw_{n−1}` at grid index `step`:
//! * Weights `W_j = exp(lw_j − max lw)` in f64 (NaN and +inf count as −inf, i.e. `W_j = 0`).
//!   If every `lw_j` is −inf the group uses equal weights `W_j = 1` and reports it (docs/steering.md).
//! * `C_j` = the f64 inclusive prefix sum of `W`, summed left to right; `C_{n−1}` the total.
//! * `search(p)` = the smallest `j` with `C_j > p·C_{n−1}` (the product in f64), clamped to the
//!   last `j` with `W_j > 0` (so rounding can never pick a zero-weight particle or run off the end).
//! * Uniforms `u(particle, draw)` = lane 0 of `Philox::uniforms4(particle, step, Resampling,
//!   draw)`, in (0, 1] (f32, exact); `E = −ln(u)` is computed in f64 from that f32.
//!
//! Schemes (ancestors `a_0..a_{n−1}` are within-group indices):
//! * **multinomial**: `E_i = −ln u(g·n + i, 0)` for `i = 0..n−1` and `E_n = −ln u(g·n, 1)`;
//!   `S_i = Σ_{l≤i} E_l` (f64, left to right); sorted points `U_(i) = S_i / (S_{n−1} + E_n)`;
//!   `a_i = search(U_(i))`. Normalised exponential spacings are the order statistics of n
//!   i.i.d. uniforms, so this is exact multinomial resampling and the ancestors come out sorted.
//! * **systematic**: `U = u(g, 0) − 2^-24 ∈ [0, 1)` (particle = the group index g); points
//!   `(i + U)/n`.
//! * **stratified**: `U_i = u(g·n + i, 0) − 2^-24`; points `(i + U_i)/n`.
//! * **residual**: `w_j = W_j / C_{n−1}`, with `n·w_j` evaluated in f64 as `(n·W_j) / C_{n−1}`
//!   (so equal weights give exactly 1: `n·(1/n)` rounds below 1 for n = 49, 98, 103, ...);
//!   `floor(n·w_j)` copies of `j`, placed first in
//!   order of `j`; `R = n − Σ copies`; residual weights `ρ_j = n·w_j − floor(n·w_j)`; the last
//!   `R` ancestors are drawn by the multinomial rule on `ρ` (its own prefix sum and `search`,
//!   clamped to the last `ρ_j > 0`) with `E_i = −ln u(g·n + i, 2)` for `i < R` and the extra
//!   `E_R = −ln u(g·n, 3)`.
//!
//! Points `(i + U)/n` are computed in f64 as `(i as f64 + U as f64) / n as f64`.
//! A GPU prefix sum in a different order may differ from `C_j` in the last bits; a point that
//! falls within that rounding of a boundary could then pick the neighbour. The kernels sum in
//! the order above where they claim bitwise agreement.

use crate::rng::{Philox, Purpose};

/// How ancestors are drawn from the weights (docs/resampling.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ResampleScheme {
    #[default]
    Multinomial,
    Systematic,
    Stratified,
    Residual,
}

impl ResampleScheme {
    pub const ALL: [ResampleScheme; 4] =
        [ResampleScheme::Multinomial, ResampleScheme::Systematic, ResampleScheme::Stratified, ResampleScheme::Residual];

    pub fn name(self) -> &'static str {
        match self {
            ResampleScheme::Multinomial => "multinomial",
            ResampleScheme::Systematic => "systematic",
            ResampleScheme::Stratified => "stratified",
            ResampleScheme::Residual => "residual",
        }
    }
}

impl std::fmt::Display for ResampleScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `2^-24`, subtracted from a (0, 1] uniform to give one in [0, 1).
pub const UNIFORM_SHIFT: f32 = 1.0 / 16_777_216.0;

/// The draw indices (fourth counter word) of each use of the resampling uniforms.
pub mod draws {
    /// Multinomial `E_i` (per particle); also systematic and stratified `U`.
    pub const SPACING: u32 = 0;
    /// Multinomial's extra `E_n` (particle = `g·n`).
    pub const SPACING_EXTRA: u32 = 1;
    /// Residual's `E_i`, `i < R`.
    pub const RESIDUAL_SPACING: u32 = 2;
    /// Residual's extra `E_R` (particle = `g·n`).
    pub const RESIDUAL_SPACING_EXTRA: u32 = 3;
}

/// A group's cumulative weights (module doc): `C_j`, and the last index with `W_j > 0`.
#[derive(Clone, Debug, PartialEq)]
pub struct Cdf {
    /// `W_j`.
    pub w: Vec<f64>,
    /// `C_j`.
    pub c: Vec<f64>,
    pub last_positive: usize,
    /// Every log-weight was −inf (or NaN/+inf): equal weights were used.
    pub all_neg_inf: bool,
}

impl Cdf {
    /// `C_j` from log-weights.
    pub fn from_log_weights(lw: &[f64]) -> Cdf {
        assert!(!lw.is_empty(), "a group needs at least one particle");
        let finite_or_neg = |x: f64| if x.is_nan() || x == f64::INFINITY { f64::NEG_INFINITY } else { x };
        let max = lw.iter().map(|&x| finite_or_neg(x)).fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return Cdf::from_weights_iter(lw.iter().map(|_| 1.0), true);
        }
        Cdf::from_weights_iter(lw.iter().map(|&x| (finite_or_neg(x) - max).exp()), false)
    }

    /// `C_j` from non-negative weights (the residual step's `ρ_j`).
    pub fn from_weights(w: &[f64]) -> Cdf {
        assert!(!w.is_empty(), "a group needs at least one particle");
        if !w.iter().any(|&x| x > 0.0) {
            return Cdf::from_weights_iter(w.iter().map(|_| 1.0), true);
        }
        Cdf::from_weights_iter(w.iter().copied(), false)
    }

    fn from_weights_iter(w: impl Iterator<Item = f64>, all_neg_inf: bool) -> Cdf {
        let w: Vec<f64> = w.collect();
        let mut c = Vec::with_capacity(w.len());
        let (mut acc, mut last_positive) = (0f64, 0usize);
        for (j, &wj) in w.iter().enumerate() {
            acc += wj;
            if wj > 0.0 {
                last_positive = j;
            }
            c.push(acc);
        }
        Cdf { w, c, last_positive, all_neg_inf }
    }

    pub fn total(&self) -> f64 {
        *self.c.last().unwrap()
    }

    /// `search(p)`: the smallest `j` with `C_j > p·C_{n−1}`, clamped to the last positive weight.
    pub fn search(&self, p: f64) -> usize {
        let threshold = p * self.total();
        let j = self.c.partition_point(|&cj| cj <= threshold);
        j.min(self.last_positive)
    }

    /// Ancestors for sorted points, by one merge walk (equal to [`Cdf::search`] point by point).
    fn search_sorted(&self, points: impl Iterator<Item = f64>, out: &mut [u32]) {
        let total = self.total();
        let mut j = 0usize;
        for (o, p) in out.iter_mut().zip(points) {
            let threshold = p * total;
            while j < self.c.len() && self.c[j] <= threshold {
                j += 1;
            }
            *o = j.min(self.last_positive) as u32;
        }
    }
}

/// What one group's resampling reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct GroupDraw {
    /// Every log-weight was −inf: resampled uniformly (docs/steering.md).
    pub all_neg_inf: bool,
}

/// Where a group's uniforms come from: the run's generator, the grid index, the group's place.
#[derive(Clone, Copy, Debug)]
pub struct Stream<'a> {
    pub rng: &'a Philox,
    pub step: u32,
    /// The group index `g`.
    pub group: u64,
    /// Particles per group `n` (the global index of particle `i` is `g·n + i`).
    pub n: u64,
}

impl Stream<'_> {
    fn u(&self, particle: u64, draw: u32) -> f32 {
        self.rng.uniform(particle, self.step, Purpose::Resampling, draw)
    }

    /// `E = −ln u` in f64.
    fn exp_spacing(&self, particle: u64, draw: u32) -> f64 {
        -(self.u(particle, draw) as f64).ln()
    }
}

/// Ancestors of one group by `scheme` (module doc), into `out` (`lw.len()` entries).
pub fn ancestors(scheme: ResampleScheme, lw: &[f64], s: Stream<'_>, out: &mut [u32]) -> GroupDraw {
    assert_eq!(lw.len(), out.len());
    assert_eq!(lw.len() as u64, s.n, "the stream's n must be the group size");
    let cdf = Cdf::from_log_weights(lw);
    match scheme {
        ResampleScheme::Multinomial => multinomial(&cdf, s, draws::SPACING, draws::SPACING_EXTRA, out),
        ResampleScheme::Systematic => systematic(&cdf, s, out),
        ResampleScheme::Stratified => stratified(&cdf, s, out),
        ResampleScheme::Residual => residual(&cdf, s, out),
    }
    GroupDraw { all_neg_inf: cdf.all_neg_inf }
}

/// Multinomial by sorted uniforms from exponential spacings; `out.len()` draws from `cdf`.
pub fn multinomial(cdf: &Cdf, s: Stream<'_>, draw: u32, extra_draw: u32, out: &mut [u32]) {
    let m = out.len();
    if m == 0 {
        return;
    }
    let base = s.group * s.n;
    let spacings: Vec<f64> = (0..m as u64).map(|i| s.exp_spacing(base + i, draw)).collect();
    let mut total = spacings.iter().sum::<f64>();
    // The sum above and the running sum below are the same left-to-right sum.
    total += s.exp_spacing(base, extra_draw);
    let mut acc = 0f64;
    let points = spacings.iter().map(|e| {
        acc += e;
        acc / total
    });
    cdf.search_sorted(points, out);
}

/// Systematic: one uniform per group, points `(i + U)/n`.
pub fn systematic(cdf: &Cdf, s: Stream<'_>, out: &mut [u32]) {
    let n = out.len() as f64;
    let u = (s.u(s.group, draws::SPACING) - UNIFORM_SHIFT) as f64;
    cdf.search_sorted((0..out.len()).map(|i| (i as f64 + u) / n), out);
}

/// Stratified: one uniform per stratum, points `(i + U_i)/n`.
pub fn stratified(cdf: &Cdf, s: Stream<'_>, out: &mut [u32]) {
    let n = out.len() as f64;
    let base = s.group * s.n;
    let points = (0..out.len()).map(|i| {
        let u = (s.u(base + i as u64, draws::SPACING) - UNIFORM_SHIFT) as f64;
        (i as f64 + u) / n
    });
    cdf.search_sorted(points, out);
}

/// Residual: deterministic copies `floor(n·w_j)`, the rest multinomial on the residuals.
pub fn residual(cdf: &Cdf, s: Stream<'_>, out: &mut [u32]) {
    let n = out.len();
    let total = cdf.total();
    let mut rho = vec![0f64; n];
    let mut filled = 0usize;
    for (j, (r, &w)) in rho.iter_mut().zip(&cdf.w).enumerate() {
        let nw = (n as f64 * w) / total;
        let copies = nw.floor();
        *r = nw - copies;
        // Rounding could in principle push Σ floor above n; never write past the end.
        let copies = (copies as usize).min(n - filled);
        out[filled..filled + copies].fill(j as u32);
        filled += copies;
    }
    if filled < n {
        let res = Cdf::from_weights(&rho);
        // If rounding left every residual at 0, fall back to the weights themselves.
        let res = if res.all_neg_inf { cdf.clone() } else { res };
        multinomial(&res, s, draws::RESIDUAL_SPACING, draws::RESIDUAL_SPACING_EXTRA, &mut out[filled..]);
    }
}

/// Offspring counts `o_j = #{i : a_i = j}` of one group.
pub fn offspring_counts(ancestors: &[u32], n: usize) -> Vec<u32> {
    let mut o = vec![0u32; n];
    for &a in ancestors {
        o[a as usize] += 1;
    }
    o
}

/// Distinct parents: the number of `j` with at least one offspring.
pub fn distinct_parents(ancestors: &[u32], n: usize) -> u64 {
    offspring_counts(ancestors, n).iter().filter(|&&c| c > 0).count() as u64
}

/// Gathers one group's per-particle values: `dst[i] = src[a_i]`.
pub fn gather<T: Copy>(src: &[T], ancestors: &[u32], dst: &mut [T]) {
    for (d, &a) in dst.iter_mut().zip(ancestors) {
        *d = src[a as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rng: &Philox, n: usize) -> Stream<'_> {
        Stream { rng, step: 7, group: 0, n: n as u64 }
    }

    #[test]
    fn search_is_the_smallest_index_past_the_point_clamped_to_positive_weight() {
        // W = [1, 0, 2, 0]: C = [1, 1, 3, 3].
        let cdf = Cdf::from_weights(&[1.0, 0.0, 2.0, 0.0]);
        assert_eq!(cdf.search(0.0), 0);
        assert_eq!(cdf.search(0.3), 0);
        assert_eq!(cdf.search(1.0 / 3.0), 2);
        assert_eq!(cdf.search(0.99), 2);
        // p = 1 would run past every C_j (none exceeds the total): clamped to the last W > 0.
        assert_eq!(cdf.search(1.0), 2);
    }

    #[test]
    fn all_minus_infinity_resamples_uniformly_and_says_so() {
        let rng = Philox::new(3);
        let lw = [f64::NEG_INFINITY; 8];
        let mut a = [0u32; 8];
        let d = ancestors(ResampleScheme::Systematic, &lw, stream(&rng, 8), &mut a);
        assert!(d.all_neg_inf);
        // Equal weights and systematic points (i + U)/8 give every particle exactly one child.
        assert_eq!(a, [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn nan_and_zero_weight_particles_are_never_chosen() {
        let rng = Philox::new(11);
        let lw = [f64::NAN, 0.0, f64::NEG_INFINITY, f64::INFINITY, -1.0, f64::NEG_INFINITY];
        for scheme in ResampleScheme::ALL {
            for step in 0..50 {
                let mut a = [0u32; 6];
                ancestors(scheme, &lw, Stream { rng: &rng, step, group: 0, n: 6 }, &mut a);
                assert!(a.iter().all(|&j| j == 1 || j == 4), "{scheme}: {a:?}");
            }
        }
    }

    #[test]
    fn residual_places_the_deterministic_copies_first() {
        let rng = Philox::new(5);
        let ninf = f64::NEG_INFINITY;
        // w = [1/2, 1/2, 0, 0], n = 4: n·w = 2 exactly, no residual draws.
        let mut a = [9u32; 4];
        ancestors(ResampleScheme::Residual, &[0.0, 0.0, ninf, ninf], stream(&rng, 4), &mut a);
        assert_eq!(a, [0, 0, 1, 1]);
        // w = [1/3, 1/3, 1/3, 0]: one copy each, R = 1 drawn from the residuals on 0..2.
        ancestors(ResampleScheme::Residual, &[0.0, 0.0, 0.0, ninf], stream(&rng, 4), &mut a);
        assert_eq!(&a[..3], &[0, 1, 2]);
        assert!(a[3] < 3);
    }

    #[test]
    fn multinomial_ancestors_come_out_sorted_and_gather_follows_them() {
        let rng = Philox::new(9);
        let lw: Vec<f64> = (0..100).map(|i| ((i * 37) % 11) as f64 * 0.3).collect();
        let mut a = vec![0u32; 100];
        ancestors(ResampleScheme::Multinomial, &lw, stream(&rng, 100), &mut a);
        assert!(a.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(offspring_counts(&a, 100).iter().sum::<u32>(), 100);
        let src: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let mut dst = vec![0f32; 100];
        gather(&src, &a, &mut dst);
        assert!(dst.iter().zip(&a).all(|(d, &j)| *d == j as f32));
    }

    /// Merge-walk search equals point-by-point `search` on the same points.
    #[test]
    fn merge_walk_matches_binary_search() {
        let rng = Philox::new(21);
        let lw: Vec<f64> = (0..257).map(|i| (((i * 7919) % 101) as f64 / 10.0) - 5.0).collect();
        let cdf = Cdf::from_log_weights(&lw);
        let s = stream(&rng, 257);
        let mut a = vec![0u32; 257];
        stratified(&cdf, s, &mut a);
        for (i, &ai) in a.iter().enumerate() {
            let u = (s.u(i as u64, 0) - UNIFORM_SHIFT) as f64;
            assert_eq!(ai as usize, cdf.search((i as f64 + u) / 257.0));
        }
    }
}
