//! Reward evaluation on the CPU: the hand-written built-in terms against the same reward run
//! through the expression evaluator (issue 12: at least half the built-ins' speed).
//! `cargo bench --bench reward`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowsteer::reward::Reward;

const REWARD: &str = "gaussian([2,0.5], 0.5) + 0.5*obstacle([1,0], 0.4, 0.5, 1.0)";

fn bench(c: &mut Criterion) {
    let n = 1 << 16;
    let x: Vec<f32> = (0..2 * n).map(|i| ((i * 7919) % 6000) as f32 / 1000.0 - 3.0).collect();
    let builtin: Reward = REWARD.parse().unwrap();
    let expr = flowsteer::reward_parse::parse_expression(REWARD).unwrap();
    expr.checks_dim(2).unwrap();
    let mut out = vec![0f32; n];
    let mut g = c.benchmark_group("reward");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("builtin", |b| b.iter(|| builtin.eval_soa(&x, 2, n, 1.0, &mut out).unwrap()));
    g.bench_function("expression", |b| b.iter(|| expr.eval_soa(&x, 2, n, 1.0, &mut out).unwrap()));
    g.bench_function("expression -norm(x-c)+obstacle", |b| {
        let e: Reward = "-norm(x - [2, 0.5]) + 0.5*obstacle([1,0], 0.4, 0.5, 1.0)".parse().unwrap();
        b.iter(|| e.eval_soa(&x, 2, n, 1.0, &mut out).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
