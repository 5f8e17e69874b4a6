//! Criterion benches of resampling on the CPU (docs/resampling.md): ancestors from log-weights for each
//! scheme (f64 CDF, Philox uniforms), then the gather of positions, at 2^12, 2^16 and 2^20
//! particles in one group. Throughput is set in particles, so criterion reports particles/s.
//!
//! Run: `cargo bench --bench resample` (add `-- systematic` to filter).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use flowsteer::resample::{ancestors, gather, ResampleScheme, Stream};
use flowsteer::rng::{Philox, Purpose};

/// Log-weights spread over a few units, like λ·r at a resampling point: not all equal (that
/// would make residual trivial) and not degenerate (one winner would make the scan all there is).
fn log_weights(n: usize) -> Vec<f64> {
    let rng = Philox::new(3);
    (0..n).map(|i| 2.0 * rng.normals4(i as u64, 0, Purpose::InitialNoise, 0)[0] as f64).collect()
}

fn bench_resample(c: &mut Criterion) {
    let rng = Philox::new(11);
    for scheme in [ResampleScheme::Multinomial, ResampleScheme::Systematic, ResampleScheme::Stratified, ResampleScheme::Residual] {
        let mut group = c.benchmark_group(format!("resample/{scheme:?}").to_lowercase());
        group.sample_size(10);
        for n in [1usize << 12, 1 << 16, 1 << 20] {
            let lw = log_weights(n);
            let x: Vec<f32> = (0..2 * n).map(|i| i as f32).collect();
            let mut a = vec![0u32; n];
            let mut y = vec![0f32; n];
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new("ancestors+gather", n), &n, |b, &n| {
                b.iter(|| {
                    ancestors(scheme, &lw, Stream { rng: &rng, step: 60, group: 0, n: n as u64 }, &mut a);
                    gather(&x[..n], &a, &mut y);
                    gather(&x[n..], &a, &mut y);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_resample);
criterion_main!(benches);
