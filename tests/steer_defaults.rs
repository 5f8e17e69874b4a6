//! What a user gets from `flowsteer steer` (issue 11 items 9–12), end to end on the shipped
//! model: the default run is a healthy steered population written as an equally weighted sample;
//! `--no-final-resample` keeps the weighted one; the default SDE keeps resampled copies apart
//! where the midpoint ODE does not (and warns); `--clamp-weights` reproduces the tutorial's
//! spread and is refused where it cannot run.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_flowsteer");

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/checkerboard.safetensors").display().to_string()
}

fn steer(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["steer".to_string(), "--model".into(), model(), "--backend".into(), "cpu".into(), "--out".into(), out.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    Command::new(BIN).args(&args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap()
}

/// Distinct rows of samples.npy (bitwise).
fn distinct_positions(out: &Path) -> usize {
    let a = flowsteer::npy::read_f32(&out.join("samples.npy")).unwrap();
    a.data.chunks(a.shape[1]).map(|r| r.iter().map(|x| x.to_bits()).collect::<Vec<_>>()).collect::<HashSet<_>>().len()
}

fn log_weights(out: &Path) -> Vec<f32> {
    flowsteer::npy::read_f32(&out.join("log_weights.npy")).unwrap().data
}

/// trace.csv as (header, rows of named columns).
fn trace_column(out: &Path, name: &str) -> Vec<String> {
    let t = std::fs::read_to_string(out.join("trace.csv")).unwrap();
    let mut lines = t.lines();
    let col = lines.next().unwrap().split(',').position(|c| c == name).unwrap_or_else(|| panic!("trace.csv has no column {name}"));
    lines.map(|l| l.split(',').nth(col).unwrap().to_string()).collect()
}

fn dir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().to_path_buf();
    (d, p)
}

/// Item 10: `flowsteer steer` with no options (the README's first run) shows steering working:
/// no warning, many distinct ancestors, the reward clearly up against the unsteered run of the
/// same noises; item 9: the sample written is the equally weighted one, and trace.csv counts the
/// distinct ancestors after each point.
#[test]
fn the_default_run_is_healthy_and_equally_weighted() {
    let (_d, base) = dir();
    let out = base.join("default");
    let o = steer(&out, &[]);
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{stderr}");
    println!("{stdout}");
    assert!(!stdout.contains("warning") && !stderr.contains("warning"), "the default run warns:\n{stdout}\n{stderr}");
    assert!(stdout.contains("sampler sde"), "steer's default sampler is the SDE:\n{stdout}");
    assert!(stdout.contains("equally weighted draws, resampled at t = 1"), "{stdout}");
    let s = summary(&out);
    let n = s["layout"]["n"].as_u64().unwrap();
    assert_eq!(n, 4096);
    assert_eq!(s["final_sample"], "resampled");
    assert_eq!(s["config"]["run"]["final_resample"], true);
    let distinct = s["distinct_ancestors"][0].as_u64().unwrap();
    // 347 of 4096 on the CPU at seed 0 (the point reward at λ = 10 keeps 1).
    assert!(distinct >= n / 20, "only {distinct} of {n} ancestors left");
    let (after, before) = (s["final_reward"]["mean"].as_f64().unwrap(), s["baseline_reward"]["mean"].as_f64().unwrap());
    let spread = s["baseline_reward"]["quantiles"][3].as_f64().unwrap() - s["baseline_reward"]["quantiles"][1].as_f64().unwrap();
    assert!(after - before > 0.5 * spread, "mean reward {before} unsteered → {after} steered is not clearly up (IQR {spread})");
    assert!(log_weights(&out).iter().all(|&w| w == 0.0), "an equally weighted sample has log-weights 0");
    let resampled = trace_column(&out, "resampled");
    let ancestors: Vec<u64> = trace_column(&out, "distinct_ancestors").iter().map(|v| v.parse().unwrap()).collect();
    assert_eq!(resampled.last().unwrap(), "1", "the t = 1 row is a resampling");
    assert!(ancestors.windows(2).all(|w| w[1] <= w[0]) && *ancestors.last().unwrap() == distinct, "{ancestors:?}");
    assert_eq!(s["steps"].as_array().unwrap().last().unwrap()["distinct_ancestors"].as_u64().unwrap(), distinct);
}

/// Item 9: `--no-final-resample` writes the weighted sample and says so.
#[test]
fn no_final_resample_keeps_the_weighted_sample() {
    let (_d, base) = dir();
    let out = base.join("weighted");
    let o = steer(&out, &["--particles", "512", "--no-baseline", "--no-final-resample"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("a weighted sample of 512"), "{}", text(&o.stdout));
    let s = summary(&out);
    assert_eq!(s["final_sample"], "weighted");
    assert!(log_weights(&out).iter().any(|&w| w != 0.0), "the final weights are kept");
    assert_eq!(trace_column(&out, "resampled").last().unwrap(), "0");
}

/// Item 11: with the default SDE, resampled copies diverge again and the final samples are
/// (almost) all distinct; with the midpoint ODE they stay copies, and the run warns.
#[test]
fn the_default_sde_keeps_resampled_copies_apart() {
    let (_d, base) = dir();
    let (sde, ode) = (base.join("sde"), base.join("ode"));
    // Without the final resampling, whose copies are the same for both samplers.
    let o = steer(&sde, &["--no-baseline", "--no-final-resample"]);
    assert!(o.status.success() && !text(&o.stderr).contains("deterministic"), "{}", text(&o.stderr));
    let o = steer(&ode, &["--no-baseline", "--no-final-resample", "--sampler", "midpoint"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("warning: --sampler midpoint is deterministic"), "{}", text(&o.stderr));
    let (d_sde, d_ode) = (distinct_positions(&sde), distinct_positions(&ode));
    println!("distinct final positions of 4096: sde {d_sde}, midpoint {d_ode}");
    assert!(d_sde >= 10 * d_ode && d_sde >= 4096 * 99 / 100, "sde {d_sde} vs midpoint {d_ode}");
}

/// Item 12: the point reward at λ = 10 collapses to one ancestor; the tutorial's clamp at 1e10
/// keeps many (biased, for reproduction). It is refused, with the fix, where it cannot run.
#[test]
fn the_tutorial_clamp_keeps_ancestors_and_is_refused_on_cuda() {
    let (_d, base) = dir();
    // The intermediate population, as the tutorial plots it (the final weights, clamped or
    // not, are those of a point reward at λ = 10: a few particles).
    let point = ["--particles", "1024", "--no-baseline", "--no-final-resample", "--reward", "point([2,0.5])", "--lambda", "10", "--potential", "max"];
    let (plain, clamped) = (base.join("plain"), base.join("clamped"));
    let o = steer(&plain, &point);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("population collapsed"), "{}", text(&o.stdout));
    let mut args = point.to_vec();
    args.extend(["--clamp-weights", "1e10"]);
    let o = steer(&clamped, &args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let (a, b) = (summary(&plain)["distinct_ancestors"][0].as_u64().unwrap(), summary(&clamped)["distinct_ancestors"][0].as_u64().unwrap());
    println!("distinct ancestors: unclamped {a}, clamped at 1e10 {b}");
    assert_eq!(a, 1, "the unclamped point reward collapses");
    assert!(b >= 10, "the clamp keeps {b} ancestors");
    assert_eq!(summary(&clamped)["config"]["run"]["clamp_weights"].as_f64().unwrap(), 1e10);

    for (bad, needle) in [(vec!["--backend", "cuda-emulated"], "--backend cpu"), (vec![], "--clamp-weights must be a finite number > 0")] {
        let out = base.join("refused");
        let mut args = vec!["steer", "--particles", "8", "--steps", "4", "--clamp-weights", if bad.is_empty() { "0" } else { "1e10" }];
        args.extend(bad.iter());
        let mut cmd = Command::new(BIN);
        cmd.args(&args).args(["--model", &model(), "--out", out.to_str().unwrap()]);
        let o = cmd.output().unwrap();
        assert!(!o.status.success(), "{args:?} ran");
        assert!(text(&o.stderr).contains(needle), "{args:?}: {}", text(&o.stderr));
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}
