//! The FP32 limit `bench` divides by: the rate of fused multiply-adds that touch only
//! registers, on every thread of the pool, best of many short bursts.
//!
//! No kernel can do more FP32 work per second than the FMA units issue, so a row's fraction of
//! this limit stays at or below 100 % unless its FLOP count is wrong. The limit used to be the
//! median rate of a 1.6 GFLOP blocked SGEMM: on a shared machine that long multiply is always
//! interrupted by other jobs while a 0.5 ms row often is not, and rows showed 170 % of it. A
//! burst here lasts microseconds, so the best of them is an uninterrupted one whatever the load.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::backend::cpu::propagate::Isa;

/// Independent accumulator vectors: enough to cover the FMA latency on both FMA pipes.
const CHAINS: usize = 12;
/// f32 lanes of one AVX register.
const LANES: usize = 8;
/// FMA rounds per burst: 2·12·8·2,048 = 393,216 FLOPs, a few microseconds at full rate.
const ROUNDS: usize = 2048;

/// The measured limit.
#[derive(Clone, Copy, Debug)]
pub struct Peak {
    /// Sum over the threads that fit on the cores of each thread's best burst rate, GFLOP/s.
    pub gflops: f64,
    /// Threads the sum is over.
    pub threads: usize,
    pub isa: Isa,
}

impl Peak {
    pub fn describe(&self) -> String {
        format!(
            "FMA peak: register-only fused multiply-adds, best of short bursts on each of {} threads, {} kernels",
            self.threads,
            self.isa.name()
        )
    }
}

#[inline(always)]
fn burst_body(start: f32) -> f32 {
    let (m, c) = (black_box(0.999_f32), black_box(1e-3_f32));
    let mut acc = [[0f32; LANES]; CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        a.iter_mut().enumerate().for_each(|(l, v)| *v = start + (i * LANES + l) as f32);
    }
    for _ in 0..ROUNDS {
        for a in acc.iter_mut() {
            for v in a.iter_mut() {
                *v = v.mul_add(m, c);
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn burst_avx2(start: f32) -> f32 {
    burst_body(start)
}

/// One burst with the same instructions the kernels of `isa` use (the portable kernels call
/// libm's `fmaf`, and so does this).
fn burst(isa: Isa) -> f32 {
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2Fma comes from Isa::detect on a CPU with AVX2 and FMA.
        Isa::Avx2Fma => unsafe { burst_avx2(black_box(1.0)) },
        _ => burst_body(black_box(1.0)),
    }
}

/// FLOPs of one burst (2 per FMA).
const BURST_FLOPS: f64 = (2 * CHAINS * LANES * ROUNDS) as f64;

/// The best burst rate of the calling thread within about `budget`, GFLOP/s.
fn best_burst(isa: Isa, budget: Duration) -> f64 {
    let until = Instant::now() + budget;
    let mut best = 0f64;
    let mut bursts = 0;
    while bursts < 8 || Instant::now() < until {
        let t = Instant::now();
        black_box(burst(isa));
        best = best.max(BURST_FLOPS / t.elapsed().as_secs_f64() / 1e9);
        bursts += 1;
    }
    best
}

/// Measures the limit on the current rayon pool, spending about `budget` on each thread. Threads
/// beyond the machine's cores share them, so only the best `cores` of the per-thread rates count.
pub fn measure(budget: Duration) -> Peak {
    let isa = Isa::detect();
    let mut rates = rayon::broadcast(|_| best_burst(isa, budget));
    rates.sort_by(|a, b| b.total_cmp(a));
    let cores = std::thread::available_parallelism().map_or(rates.len(), |c| c.get());
    rates.truncate(cores.max(1));
    Peak { gflops: rates.iter().sum(), threads: rates.len(), isa }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked SGEMM, the fastest FP32 code in the crate, stays below the FMA peak (a few
    /// percent of slack for the clock changing between the two measurements).
    #[test]
    fn the_peak_bounds_the_sgemm() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        pool.install(|| {
            let sgemm = super::super::sgemm::measure(0, 3);
            let peak = measure(Duration::from_millis(30));
            assert!(sgemm.best_gflops <= 1.05 * peak.gflops, "SGEMM {} GFLOP/s above the FMA peak {}", sgemm.best_gflops, peak.gflops);
            assert_eq!(peak.threads, 1);
        });
    }
}
