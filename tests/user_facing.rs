//! What a user hits first (issue 13, items 1, 4, 5 and 7): huge counts refused with the bytes
//! needed instead of an abort, all-NaN runs as errors that write nothing, `--init` without
//! `--particles`, and options that used to degenerate silently.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flowsteer::model::{Activation, Mlp};

const BIN: &str = env!("CARGO_BIN_EXE_flowsteer");

/// A small model file (D = 2, H = 16, L = 2), its weights scaled by `scale`, in a fresh directory.
fn setup(scale: f32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let mut m = Mlp::init_uniform(2, 16, 2, Activation::Elu, 8);
    for l in &mut m.layers {
        l.weight.iter_mut().for_each(|w| *w *= scale);
    }
    m.save(&model, "net").unwrap();
    (dir, model)
}

fn run(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(cwd).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit status 1 (an error), not a signal: SIGABRT gave 134 and no code at all from Rust's view.
fn refused(o: &Output) -> bool {
    o.status.code() == Some(1)
}

#[test]
fn huge_counts_are_refused_with_the_bytes_needed_and_the_largest_that_fits() {
    let (dir, model) = setup(1.0);
    let m = model.to_str().unwrap();
    let huge = (1u64 << 34).to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["steer", "--model", m, "--particles", &huge, "--backend", "cpu"],
        vec!["sample", "--model", m, "--particles", &huge, "--backend", "cpu", "--out", "s"],
        vec!["search", "bon", "--model", m, "--particles", &huge, "--backend", "cpu"],
        vec!["search", "paths", "--model", m, "--particles", &huge, "--backend", "cpu"],
        vec!["search", "zeroth", "--model", m, "--candidates", &huge, "--backend", "cpu"],
        vec!["bench", "--backend", "cpu", "--particles", "2^34"],
        vec!["sweep", "--model", m, "--particles", "2^34", "--backend", "cpu", "--out", "sw"],
        vec!["train", "--batch", &huge, "--out", "t.safetensors"],
    ];
    for args in cases {
        let o = run(dir.path(), &args);
        let e = stderr(&o);
        assert!(refused(&o), "{args:?}: status {:?}\n{e}", o.status);
        assert!(e.contains("of memory") && e.contains("is available") && e.contains("that fits is"), "{args:?}: {e}");
        assert!(!e.contains("memory allocation of"), "{args:?}: {e}");
    }
    for written in ["s", "sw", "t.safetensors"] {
        assert!(!dir.path().join(written).exists(), "{written} was written");
    }
}

#[test]
fn all_nonfinite_samples_are_an_error_and_write_nothing() {
    // Weights ×10^30: every velocity overflows.
    let (dir, model) = setup(1e30);
    let m = model.to_str().unwrap();
    for args in [
        vec!["sample", "--model", m, "--particles", "64", "--out", "out"],
        vec!["steer", "--model", m, "--particles", "64", "--out", "out"],
        vec!["search", "bon", "--model", m, "--particles", "64", "--out", "out"],
    ] {
        let o = run(dir.path(), &args);
        let e = stderr(&o);
        assert!(refused(&o), "{args:?}: {e}");
        assert!(e.contains("final samples is NaN or infinite") && e.contains("|w| = "), "{args:?}: {e}");
        assert!(!dir.path().join("out").exists(), "{args:?} wrote its outputs");
    }
    // A diverging SDE names the sampler.
    let (dir, model) = setup(1.0);
    let o = run(dir.path(), &["sample", "--model", model.to_str().unwrap(), "--particles", "64", "--sampler", "sde", "--k", "1000", "--out", "out"]);
    assert!(refused(&o) && stderr(&o).contains("--k 1000 on 100 steps"), "{}", stderr(&o));
}

fn write_init(dir: &Path, rows: usize) -> PathBuf {
    let data: Vec<f32> = (0..rows * 2).map(|i| (i as f32 * 0.37).sin()).collect();
    let p = dir.join("noise.npy");
    std::fs::write(&p, flowsteer::npy::to_bytes(&[rows, 2], &data)).unwrap();
    p
}

#[test]
fn init_without_particles_gives_n_for_steer_and_search() {
    let (dir, model) = setup(1.0);
    let m = model.to_str().unwrap();
    let init = write_init(dir.path(), 12);
    let i = init.to_str().unwrap();
    for (args, n) in [
        (vec!["steer", "--model", m, "--init", i, "--out", "a", "--no-baseline"], 12),
        (vec!["steer", "--model", m, "--init", i, "--groups", "3", "--out", "b", "--no-baseline"], 4),
        (vec!["search", "bon", "--model", m, "--init", i, "--top-k", "12", "--out", "c"], 12),
        (vec!["search", "paths", "--model", m, "--init", i, "--top-k", "12", "--out", "d"], 12),
    ] {
        let o = run(dir.path(), &args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let out = dir.path().join(args[args.iter().position(|a| *a == "--out").unwrap() + 1]);
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(s["config"]["run"]["particles"], n, "{args:?}");
        // The summary ties the result to the model's bytes and to the version (item 7).
        assert_eq!(s["config"]["model_sha256"].as_str().map(str::len), Some(64), "{args:?}");
        assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(s["nonfinite_samples"], 0);
    }
    let o = run(dir.path(), &["steer", "--model", m, "--init", i, "--groups", "5"]);
    assert!(refused(&o) && stderr(&o).contains("holds 12 rows, not a multiple of --groups 5"), "{}", stderr(&o));
    let o = run(dir.path(), &["steer", "--model", m, "--init", i, "--particles", "5"]);
    assert!(refused(&o) && stderr(&o).contains("does not match the 12 rows"), "{}", stderr(&o));
}

#[test]
fn options_that_degenerated_silently_now_say_so() {
    let (dir, model) = setup(1.0);
    let m = model.to_str().unwrap();
    // --resample-every used to override --resample-count without a word.
    let o = run(dir.path(), &["steer", "--model", m, "--particles", "8", "--resample-every", "5", "--resample-count", "3"]);
    assert!(!o.status.success() && stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    // 1,000 points on a 10-step grid become 4: said on the schedule line.
    let o = run(dir.path(), &["steer", "--model", m, "--particles", "8", "--steps", "10", "--resample-count", "1000", "--no-baseline"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("requested point(s) fell on a grid index already taken"), "{out}");
    assert!(!out.contains("0.6666666"), "{out}");
    // Search over paths with no round.
    let o = run(dir.path(), &["search", "paths", "--model", m, "--particles", "8", "--t-start", "0.9"]);
    assert!(refused(&o) && stderr(&o).contains("no search round fits"), "{}", stderr(&o));
    // Duplicate sweep methods.
    let o = run(dir.path(), &["sweep", "--model", m, "--particles", "16", "--methods", "bon,bon", "--out", "sw"]);
    assert!(refused(&o) && stderr(&o).contains("names bon twice"), "{}", stderr(&o));
}

/// Threads that spin until dropped: other jobs on a shared machine.
struct Busy(std::sync::Arc<std::sync::atomic::AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Busy {
    fn start(threads: usize) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handles = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Busy(stop, handles)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        self.1.drain(..).for_each(|h| h.join().unwrap());
    }
}

#[test]
fn bench_prints_each_row_once_and_no_row_exceeds_the_fp32_limit() {
    let dir = tempfile::tempdir().unwrap();
    let common = ["bench", "--backend", "cpu", "--particles", "1024", "--threads", "1", "--grid", "10", "--steps", "2", "--warmup", "1"];
    // On a terminal stdout and stderr interleave: each row must appear once in the two together.
    let o = run(dir.path(), &[&common[..], &["--rows", "potential,resample", "--repeats", "1"]].concat());
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(o.status.success(), "{all}");
    assert_eq!(all.lines().filter(|l| l.contains("  potential  ")).count(), 1, "{all}");
    assert_eq!(all.lines().filter(|l| l.contains("  resample  ")).count(), 1, "{all}");
    // Under load, a sub-millisecond row used to run uninterrupted while the long SGEMM that served
    // as the limit did not, and rows showed 170 % of it. The FMA peak bounds every row.
    let cores = std::thread::available_parallelism().map_or(2, |c| c.get());
    let busy = Busy::start(3 * cores);
    let o = run(dir.path(), &[&common[..], &["--rows", "propagate,potential", "--repeats", "5", "--json"]].concat());
    drop(busy);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for row in report["rows"].as_array().unwrap() {
        let f = row["fraction_of_fp32_limit"].as_f64().unwrap();
        assert!(f > 0.0 && f <= 1.0, "{} at {:.0}% of the FP32 limit {}", row["phase"], 100.0 * f, report["fp32_limit_gflops"]);
    }
}

#[test]
fn lambda_beyond_f32_and_os_errors_are_reported_as_given() {
    let (dir, model) = setup(1.0);
    let m = model.to_str().unwrap();
    // 1e300 used to be stored as f32 inf and refused as "got inf".
    let o = run(dir.path(), &["steer", "--model", m, "--particles", "8", "--lambda", "1e300"]);
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("1e300 is beyond the largest f32") && !e.contains("got inf"), "{e}");
    // The OS's text once, not once per link of the error chain.
    let o = run(dir.path(), &["steer", "--model", m, "--init", "missing.npy"]);
    let e = stderr(&o);
    assert!(refused(&o) && e.matches("os error 2").count() == 1, "{e}");
    // The CPU fallback is one short line, without advice to pass what auto has just chosen.
    let o = run(dir.path(), &["steer", "--model", m, "--particles", "8", "--no-baseline"]);
    let line = stderr(&o).lines().find(|l| l.starts_with("backend:")).map(str::to_string).unwrap_or_default();
    assert!(o.status.success() && !line.contains("use --backend cpu"), "{line}");
    assert!(!line.contains("no usable CUDA device") || line.chars().count() < 100, "{line}");
}
