//! Compiles every kernel in a covering set of the configurations the CLI can ask for
//! (`flowsteer::backend::cuda::modules::coverage`) for sm_90 and sm_80 with NVRTC alone (no GPU),
//! and fails on any spill or on registers above the per-kernel budget below.
//!
//! Skipped with a printed reason when NVRTC cannot be loaded, unless the environment variable
//! `CI` is set: then a missing NVRTC fails (CI installs it from PyPI, see .ci/run).

use flowsteer::backend::cuda::modules::{coverage, ModuleKind};
use flowsteer::backend::cuda::nvrtc;

/// Register budget per kernel. Why these numbers:
/// - `fs_propagate` keeps two activation vectors of H ≤ 64 floats in registers plus the state
///   (x, v0, probe, vm, noise: 5·D) and the loop's addresses: ≈ 128 + 5·D + ~40. The hard limit
///   is 255; 232 leaves room and still allows 2 blocks of 128 threads per SM (65,536 registers).
///   What matters more is the spill check: a spill means the activations left the registers.
/// - Reductions/scans (`fs_weigh`, `fs_scan_tiles`, ...) hold a few f64 accumulators, the tile's
///   items and the reward: 96 keeps 2+ blocks of 256 threads resident per SM, enough to hide
///   the memory latency of these bandwidth-bound kernels.
/// - Element-wise kernels (fills, gathers, noise, renoise, candidates): 64, i.e. full occupancy
///   (2,048 threads per SM × 32 registers = 65,536; 64 still gives 50 %), which is all a
///   bandwidth-bound kernel needs.
fn budget(kind: ModuleKind, kernel: &str) -> u32 {
    match (kind, kernel) {
        (ModuleKind::Propagate, "fs_propagate") => 232,
        (ModuleKind::Potential, _) => 96,
        (ModuleKind::Resample, "fs_resample_weights" | "fs_scan_tiles" | "fs_resample_cdf" | "fs_ancestors_grid"
            | "fs_exp_tile_sums" | "fs_ancestors_multinomial" | "fs_residual_counts" | "fs_residual_scatter"
            | "fs_marks_count") => 96,
        (ModuleKind::Search, "fs_argmax_tiles" | "fs_argmax_groups") => 96,
        _ => 64,
    }
}

#[test]
fn every_kernel_compiles_without_spills_within_its_register_budget() {
    if let Err(reason) = nvrtc::nvrtc_available() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but NVRTC is unavailable: {reason}");
        }
        println!("SKIPPED kernels_compile: {reason}");
        return;
    }
    // One thread per architecture (the CI machine has two cores; NVRTC is thread-safe across
    // programs). Compiling the five propagate modules dominates: ~10 s each at H = 64.
    let results: Vec<(Vec<String>, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = ["sm_90", "sm_80"].into_iter().map(|arch| s.spawn(move || check_arch(arch))).collect();
        handles.into_iter().map(|h| h.join().expect("compile thread panicked")).collect()
    });
    let mut failures = Vec::new();
    let mut count = 0;
    for (lines, fails) in results {
        for l in &lines {
            println!("{l}");
        }
        count += lines.len();
        failures.extend(fails);
    }
    assert!(failures.is_empty(), "{} problem(s):\n{}", failures.len(), failures.join("\n"));
    println!("{count} kernel builds checked");
}

/// Compiles every coverage module for `arch`: (report lines, failures).
fn check_arch(arch: &str) -> (Vec<String>, Vec<String>) {
    let (mut lines, mut failures) = (Vec::new(), Vec::new());
    for config in coverage() {
        let compiled = match nvrtc::compile(&config.label, &config.source(), &config.defines, arch, false) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{arch} {}: {e:#}", config.label));
                continue;
            }
        };
        let reports = config.with_launch_shared(compiled.kernels);
        for &name in config.kernels {
            let Some(r) = reports.iter().find(|r| r.name == name) else {
                failures.push(format!("{arch} {}: ptxas reported nothing for {name}", config.label));
                continue;
            };
            let limit = budget(config.kind, name);
            lines.push(format!(
                "{arch} {:<48} {:<26} {:>3} regs (budget {limit:>3}) {:>6} B smem {:>4} B spill {:>4} B stack",
                config.label, name, r.registers, r.shared_bytes, r.spill_bytes, r.stack_bytes
            ));
            if r.spill_bytes > 0 {
                failures.push(format!("{arch} {} {name}: {} bytes of spills", config.label, r.spill_bytes));
            }
            if r.registers > limit {
                failures.push(format!("{arch} {} {name}: {} registers > budget {limit}", config.label, r.registers));
            }
        }
    }
    (lines, failures)
}
