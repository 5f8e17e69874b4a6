//! Compiles every kernel in a covering set of the configurations the CLI can ask for
//! (`flowsteer::backend::cuda::modules::coverage`) for sm_90 and sm_80 with NVRTC alone (no GPU),
//! and fails on any spill or on registers above the per-kernel budget below.
//!
//! Skipped with a printed reason when NVRTC cannot be loaded, unless CI asks for it ([`ci`]):
//! then a missing NVRTC fails (CI installs it from PyPI: bench/ci_nvrtc_snippet.sh in .ci/run).
//! Takes minutes on two cores (NVRTC needs 10–25 s per H = 64 propagate module; 23 min on a
//! machine shared by six builds), with every propagate variant (modules::PropagateVariant): it is
//! the only check that every kernel configuration compiles without spills. The 2x128 variant
//! stays inside the same budget (202 registers at D = 2, H = 64: its layer input, 2·H floats,
//! is as large as v1's two activation vectors).

use flowsteer::backend::cuda::modules::{coverage, ModuleConfig, ModuleKind};
use flowsteer::backend::cuda::nvrtc;

/// Register budget per kernel. Why these numbers:
/// - `fs_propagate` keeps the MLP's two activation vectors (2·H floats) in registers inside the
///   non-inlined `fs_mlp_velocity`, and the integrator holds up to six D-vectors across its calls
///   (x, v0, probe, vm, noise, the result), plus addresses, loop counters, the Philox state and
///   the call: 2·H + 6·D + 96, capped at the hardware's 255. The 96 comes from measuring all
///   20 activation × sampler pairs at the default D = 2, H = 64 with NVRTC 13.0
///   (examples/propagate_registers.rs): 162–185 registers on sm_90 with the CPU-mirroring
///   polynomial activations (elu highest), and 164–220 (sm_90) / up to 227 (sm_80) with CUDA's
///   own expf/tanhf in an earlier version, i.e. an overhead of up to 87 over 2·H + 6·D; 96 keeps
///   that headroom while still flagging a kernel that grew a third register array. What matters
///   most is the spill check: a spill means the activations left the registers.
/// - Reductions/scans (`fs_weigh`, `fs_scan_tiles`, ...) hold a few f64 accumulators, the tile's
///   items and the reward: 96 keeps 2+ blocks of 256 threads resident per SM, enough to hide
///   the memory latency of these bandwidth-bound kernels (measured: ≤ 40).
/// - Element-wise kernels (fills, gathers, noise, renoise, candidates): 64, i.e. at least 50 %
///   occupancy (2,048 threads per SM × 32 registers = 65,536), all a bandwidth-bound kernel
///   needs (measured: ≤ 32).
fn budget(config: &ModuleConfig, kernel: &str) -> u32 {
    let define = |name: &str| -> u32 {
        config.defines.iter().find_map(|d| d.strip_prefix(&format!("-D{name}=")).map(|v| v.parse().unwrap())).unwrap_or(0)
    };
    match (config.kind, kernel) {
        (ModuleKind::Propagate, "fs_propagate") => (2 * define("FS_H") + 6 * define("FS_D") + 96).min(255),
        (ModuleKind::Potential, _) => 96,
        (ModuleKind::Resample, "fs_resample_weights" | "fs_scan_tiles" | "fs_resample_cdf" | "fs_ancestors_grid"
            | "fs_exp_tile_sums" | "fs_ancestors_multinomial" | "fs_residual_counts" | "fs_residual_prefix"
            | "fs_residual_slots" | "fs_marks_count") => 96,
        (ModuleKind::Search, "fs_argmax_tiles" | "fs_argmax_groups") => 96,
        _ => 64,
    }
}

/// CI asks for the check (a missing NVRTC then fails): `CI` set to anything but "", "0" or
/// "false" (.ci/run exports CI=false for local runs), or `FLOWSTEER_CI=1`.
fn ci() -> bool {
    let on = |v: Option<String>| v.map(|v| !matches!(v.as_str(), "" | "0" | "false")).unwrap_or(false);
    on(std::env::var("CI").ok()) || on(std::env::var("FLOWSTEER_CI").ok())
}

#[test]
fn every_kernel_compiles_without_spills_within_its_register_budget() {
    if let Err(reason) = nvrtc::nvrtc_available() {
        if ci() {
            panic!("CI is set but NVRTC is unavailable: {reason}");
        }
        println!("SKIPPED kernels_compile: {reason}");
        return;
    }
    // One thread per architecture (the CI machine has two cores; NVRTC is thread-safe across
    // programs). Compiling the five propagate modules dominates: ~10-25 s each at H = 64, so the
    // test takes ~2.5 min on two cores — it is the only check of every kernel configuration.
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
        let reports = config.annotate(compiled.kernels, arch);
        if let Some(f) = check_propagate_report(arch, &config, &reports) {
            failures.push(f);
        }
        // Non-inlined device functions (their own rows in the report) must not spill either.
        for r in reports.iter().filter(|r| r.name.ends_with("(device function)")) {
            lines.push(format!("{arch} {:<48} {:<26} {:>4} B spill {:>4} B stack", config.label, r.name, r.spill_bytes, r.stack_bytes));
            if r.spill_bytes > 0 {
                failures.push(format!("{arch} {} {}: {} bytes of spills", config.label, r.name, r.spill_bytes));
            }
        }
        for &name in config.kernels {
            let Some(r) = reports.iter().find(|r| r.name == name) else {
                failures.push(format!("{arch} {}: ptxas reported nothing for {name}", config.label));
                continue;
            };
            let limit = budget(&config, name);
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

/// fs_propagate's row carries its variant, a non-zero occupancy on sm_90/sm_80 (both in the
/// occupancy table), and an instruction mix; and the rows survive the JSON of `info --json`.
fn check_propagate_report(arch: &str, config: &ModuleConfig, reports: &[nvrtc::KernelReport]) -> Option<String> {
    let variant = config.propagate?;
    let r = reports.iter().find(|r| r.name == "fs_propagate")?;
    let json: serde_json::Value = serde_json::from_str(&serde_json::to_string(r).ok()?).ok()?;
    let warps = json["warps_per_sm"].as_u64().unwrap_or(0);
    let ratio = json["lds_per_ffma"].as_f64().unwrap_or(0.0);
    let bound = json["fp32_bound"].as_f64().unwrap_or(0.0);
    let fits = r.shared_bytes <= flowsteer::backend::cuda::occupancy::limits(arch)?.shared_per_block;
    let ok = json["variant"].as_str() == Some(variant.name().as_str())
        && (warps > 0 || !fits)
        && warps % (variant.block as u64 / 32) == 0
        && ratio > 0.0
        && bound > 0.0
        && bound <= 1.0;
    println!("{arch} {:<48} variant {}: {warps} warps/SM, {ratio:.3} LDS/FFMA, FP32 <= {:.0}%", config.label, variant.name(), 100.0 * bound);
    (!ok).then(|| format!("{arch} {}: malformed propagate report {json}", config.label))
}
