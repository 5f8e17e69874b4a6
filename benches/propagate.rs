//! Criterion benches of the CPU hot loop (docs/model.md, docs/samplers.md): one `propagate` call of 10 grid steps of
//! the default model (D = 2, H = 64, L = 3, ELU) for each sampler, at 2^12, 2^14 and 2^16
//! particles, on all cores; and the same with the portable (non-AVX2) kernels at 2^12.
//! Throughput is set in particle-steps, so criterion reports particle-steps/s.
//!
//! Run: `cargo bench --bench propagate` (add `-- midpoint` to filter).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use flowsteer::backend::cpu::propagate::{propagate_with, Isa, PackedMlp};
use flowsteer::model::{Activation, Mlp};
use flowsteer::sampler::{Sampler, SamplerKind, SdeForm};

const STEPS: usize = 10;

fn noise(n: usize) -> Vec<f32> {
    flowsteer::backend::cpu::initial_noise(1, 2, n)
}

fn bench_propagate(c: &mut Criterion) {
    let model = PackedMlp::new(&Mlp::init_uniform(2, 64, 3, Activation::Elu, 0));
    let samplers = [
        ("euler", Sampler { kind: SamplerKind::Euler, ..Default::default() }),
        ("midpoint", Sampler { kind: SamplerKind::Midpoint, ..Default::default() }),
        ("sde", Sampler { kind: SamplerKind::Sde, k: 0.1, form: SdeForm::Marginal, steps: 100 }),
    ];
    let isa = Isa::detect();
    for (name, sampler) in samplers {
        let mut group = c.benchmark_group(format!("propagate/{name}"));
        group.sample_size(10);
        for n in [1usize << 12, 1 << 14, 1 << 16] {
            let x0 = noise(n);
            group.throughput(Throughput::Elements((n * STEPS) as u64));
            group.bench_with_input(BenchmarkId::new(isa.name(), n), &n, |b, &n| {
                let mut x = x0.clone();
                b.iter(|| propagate_with(isa, &model, &sampler, 7, &mut x, n, 0, 0..STEPS));
            });
        }
        if isa != Isa::Portable {
            let n = 1 << 12;
            let x0 = noise(n);
            group.throughput(Throughput::Elements((n * STEPS) as u64));
            group.bench_with_input(BenchmarkId::new("portable", n), &n, |b, &n| {
                let mut x = x0.clone();
                b.iter(|| propagate_with(Isa::Portable, &model, &sampler, 7, &mut x, n, 0, 0..STEPS));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench_propagate);
criterion_main!(benches);
