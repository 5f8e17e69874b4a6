//! Offspring counts of every resampling scheme (docs/resampling.md) over many draws: they sum to N exactly,
//! have mean N·w_j, and the variance of that scheme, which is known in closed form:
//! * multinomial: `N·w(1−w)`;
//! * systematic: `f(1−f)` with `f = frac(N·w_j)` (a grid of spacing 1/N puts ⌊Nw⌋ or ⌈Nw⌉ points
//!   in an interval of length w);
//! * stratified: `Σ_i p_ij(1 − p_ij)`, `p_ij = N·|stratum i ∩ interval j|` (independent
//!   Bernoullis, one per stratum);
//! * residual: `R·ρ̄_j(1 − ρ̄_j)`, `ρ̄_j = ρ_j / Σρ`, `R = N − Σ⌊Nw⌋` (multinomial on the residuals).
//!
//! The last three are below multinomial's, which the test also checks.
//!
//! Tolerances. With D draws, the sample mean of o_j has standard error `sqrt(V_j/D)` and the
//! sample variance s² has standard error `sqrt((m4 − s⁴)/D)` (delta method, m4 the sample fourth
//! central moment). Each check allows 5 standard errors (a two-sided normal tail of 6e-7; 64
//! checks give a false-alarm rate below 4e-5) plus 1e-9 for the cases where V_j = 0 exactly.

use flowsteer::resample::{ancestors, offspring_counts, ResampleScheme, Stream};
use flowsteer::rng::Philox;

const W: [f64; 8] = [0.30, 0.05, 0.20, 0.01, 0.14, 0.10, 0.12, 0.08];
const DRAWS: usize = 20_000;

/// The weights as the code sees them: f64 log-weights, normalised in f64.
fn weights() -> (Vec<f64>, Vec<f64>) {
    let lw: Vec<f64> = W.iter().map(|w| w.ln()).collect();
    let e: Vec<f64> = lw.iter().map(|&l| l.exp()).collect();
    let s: f64 = e.iter().sum();
    (lw, e.iter().map(|x| x / s).collect())
}

fn exact_variance(scheme: ResampleScheme, w: &[f64]) -> Vec<f64> {
    let n = w.len() as f64;
    match scheme {
        ResampleScheme::Multinomial => w.iter().map(|w| n * w * (1.0 - w)).collect(),
        ResampleScheme::Systematic => w.iter().map(|w| (n * w).fract() * (1.0 - (n * w).fract())).collect(),
        ResampleScheme::Stratified => {
            let mut c = 0.0;
            w.iter()
                .map(|wj| {
                    let (a, b) = (c, c + wj);
                    c = b;
                    (0..w.len())
                        .map(|i| {
                            let (lo, hi) = (i as f64 / n, (i + 1) as f64 / n);
                            let p = n * (hi.min(b) - lo.max(a)).max(0.0);
                            p * (1.0 - p)
                        })
                        .sum()
                })
                .collect()
        }
        ResampleScheme::Residual => {
            let floors: f64 = w.iter().map(|w| (n * w).floor()).sum();
            let r = n - floors;
            let rho: Vec<f64> = w.iter().map(|w| n * w - (n * w).floor()).collect();
            let total: f64 = rho.iter().sum();
            rho.iter().map(|p| r * (p / total) * (1.0 - p / total)).collect()
        }
    }
}

#[test]
fn offspring_counts_sum_to_n_with_the_schemes_mean_and_variance() {
    let (lw, w) = weights();
    let n = lw.len();
    let rng = Philox::new(2024);
    for scheme in ResampleScheme::ALL {
        let mut counts = vec![Vec::with_capacity(DRAWS); n];
        let mut a = vec![0u32; n];
        for d in 0..DRAWS {
            // Independent draws: a different (step, group) counter for each.
            let s = Stream { rng: &rng, step: (d % 1000) as u32, group: (d / 1000) as u64, n: n as u64 };
            ancestors(scheme, &lw, s, &mut a);
            let o = offspring_counts(&a, n);
            assert_eq!(o.iter().sum::<u32>() as usize, n, "{scheme}: counts must sum to N exactly");
            for j in 0..n {
                counts[j].push(o[j] as f64);
            }
        }
        let var = exact_variance(scheme, &w);
        let multinomial = exact_variance(ResampleScheme::Multinomial, &w);
        for j in 0..n {
            let c = &counts[j];
            let mean = c.iter().sum::<f64>() / DRAWS as f64;
            let s2 = c.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (DRAWS - 1) as f64;
            let m4 = c.iter().map(|x| (x - mean).powi(4)).sum::<f64>() / DRAWS as f64;
            let se_mean = (var[j] / DRAWS as f64).sqrt();
            let se_var = ((m4 - s2 * s2).max(0.0) / DRAWS as f64).sqrt();
            let want = n as f64 * w[j];
            assert!((mean - want).abs() <= 5.0 * se_mean + 1e-9, "{scheme} j={j}: mean {mean} vs N·w = {want} (se {se_mean})");
            assert!((s2 - var[j]).abs() <= 5.0 * se_var + 1e-9, "{scheme} j={j}: variance {s2} vs {} (se {se_var})", var[j]);
            assert!(var[j] <= multinomial[j] + 1e-12, "{scheme} j={j}: the exact variance exceeds multinomial's");
        }
    }
}

/// With equal weights the low-variance schemes give every particle exactly one child (sizes around
/// block boundaries, and n = 49 where n·(1/n) rounds below 1).
#[test]
fn low_variance_schemes_keep_everyone_under_equal_weights() {
    let rng = Philox::new(1);
    for scheme in [ResampleScheme::Systematic, ResampleScheme::Stratified, ResampleScheme::Residual] {
        for n in [1usize, 31, 32, 33, 49, 1025] {
            let lw = vec![-3.5f64; n];
            let mut a = vec![0u32; n];
            ancestors(scheme, &lw, Stream { rng: &rng, step: 4, group: 2, n: n as u64 }, &mut a);
            assert!(a.iter().enumerate().all(|(i, &ai)| ai as usize == i), "{scheme} n={n}");
        }
    }
}
