//! `flowsteer steer` and `flowsteer search` end to end: the outputs of docs/outputs.md, and bad input
//! (issue 3 item 6): each a clear error, a non-zero exit, and nothing written.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flowsteer::model::{Activation, Mlp};

const BIN: &str = env!("CARGO_BIN_EXE_flowsteer");

/// A small model file (D = 2, H = 16, L = 2) in a fresh directory.
fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    Mlp::init_uniform(2, 16, 2, Activation::Elu, 8).save(&model, "net").unwrap();
    (dir, model)
}

fn run(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(cwd).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn npy_shape(path: &Path) -> Vec<usize> {
    flowsteer::npy::read_f32(path).map(|a| a.shape).unwrap_or_else(|_| {
        // ancestry.npy holds u32: read the shape from the header.
        let b = std::fs::read(path).unwrap();
        let h = text(&b[10..10 + u16::from_le_bytes([b[8], b[9]]) as usize]);
        let s = &h[h.find("'shape': (").unwrap() + 10..];
        s[..s.find(')').unwrap()].split(',').filter(|p| !p.trim().is_empty()).map(|p| p.trim().parse().unwrap()).collect()
    })
}

#[test]
fn steer_writes_every_output() {
    let (dir, model) = setup();
    let out = dir.path().join("run");
    let o = run(
        dir.path(),
        &[
            "steer", "--model", model.to_str().unwrap(), "--particles", "64", "--groups", "2", "--steps", "10",
            "--reward", "gaussian([1,0.5], 0.5) + 0.5*obstacle([0,0], 0.3, 0.5, 1)", "--lambda", "1",
            "--resample", "systematic", "--ancestry", "--plot", "--out", out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    // The resolved schedule is printed: 0.6 + 0.07·j on 10 steps → 6, 7, 8, 9, then 10.
    assert!(stdout.contains("resampling at grid steps 6 (t = 0.6), 7 (t = 0.7), 8 (t = 0.8), 9 (t = 0.9), 10 (t = 1)"), "{stdout}");
    for needle in ["reward before steering", "ESS at each resampling point", "particle-steps/s", "log Ẑ"] {
        assert!(stdout.contains(needle), "missing {needle:?} in\n{stdout}");
    }
    assert_eq!(npy_shape(&out.join("samples.npy")), vec![128, 2]);
    assert_eq!(npy_shape(&out.join("log_weights.npy")), vec![128]);
    assert_eq!(npy_shape(&out.join("ancestry.npy")), vec![5, 128], "one row per resampling, the final one at t = 1 included");
    let trace = std::fs::read_to_string(out.join("trace.csv")).unwrap();
    assert_eq!(trace.lines().count(), 1 + 5 * 2, "header + one row per point and group");
    let png = std::fs::read(out.join("plot.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["schedule"], serde_json::json!([6, 7, 8, 9, 10]));
    assert_eq!(s["log_z"].as_array().unwrap().len(), 2);
    assert_eq!(s["backend"], "cpu");
    assert!(s["throughput"]["nfe"].as_u64().unwrap() == 128 * 10 * 2 + 128 * 4);
    assert!(s["times_s"]["total"].as_f64().unwrap() > 0.0);
    assert_eq!(s["steps"].as_array().unwrap().len(), 10);
}

#[test]
fn search_methods_write_their_outputs() {
    let (dir, model) = setup();
    let m = model.to_str().unwrap();
    let cases: [&[&str]; 3] = [
        &["search", "bon", "--particles", "50", "--top-k", "5"],
        &["search", "zeroth", "--candidates", "8", "--cycles", "3", "--radius", "0.4", "--pivot", "0.1,-0.2"],
        &["search", "paths", "--particles", "8", "--candidates", "2", "--t-start", "0.4", "--delta-f", "0.2", "--delta-b", "0.3"],
    ];
    for (k, args) in cases.iter().enumerate() {
        let out = dir.path().join(format!("s{k}"));
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--model", m, "--steps", "10", "--plot", "--out", out.to_str().unwrap()]);
        let o = run(dir.path(), &a);
        assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
        let kept = [5, 1, 1][k];
        assert_eq!(npy_shape(&out.join("samples.npy")), vec![kept, 2], "{args:?}");
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        assert!(s["throughput"]["nfe"].as_u64().unwrap() > 0);
        assert!(out.join("plot.png").exists() && out.join("trace.csv").exists());
    }
}

#[test]
fn same_seed_same_files() {
    let (dir, model) = setup();
    let go = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        let o = run(
            dir.path(),
            &["steer", "--model", model.to_str().unwrap(), "--particles", "40", "--steps", "8", "--sampler", "sde", "--seed", seed, "--no-baseline", "--quiet", "--force", "--out", out.to_str().unwrap()],
        );
        assert!(o.status.success(), "{}", text(&o.stderr));
        (std::fs::read(out.join("samples.npy")).unwrap(), std::fs::read(out.join("log_weights.npy")).unwrap())
    };
    assert_eq!(go("a", "5"), go("b", "5"));
    assert_ne!(go("c", "6").0, go("a", "5").0);
}

/// Each bad input: non-zero exit, an error naming the problem, and no output directory.
#[test]
fn bad_inputs_are_clear_errors_and_write_nothing() {
    let (dir, model) = setup();
    let m = model.to_str().unwrap();
    let wrong_init = dir.path().join("init.npy");
    std::fs::write(&wrong_init, flowsteer::npy::to_bytes(&[10, 3], &[0f32; 30])).unwrap();
    let wi = wrong_init.to_str().unwrap();
    let small = ["--model", m, "--steps", "5", "--particles", "10"];
    let mut cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["steer", "--model", m, "--particles", "0"], "--particles must be at least 1"),
        (vec!["steer", "--model", m, "--groups", "0"], "--groups must be at least 1"),
        (vec!["steer", "--lambda", "0"], "--lambda must be a finite number > 0"),
        (vec!["steer", "--lambda", "-1"], "--lambda must be a finite number > 0"),
        (vec!["steer", "--lambda", "inf"], "--lambda must be a finite number > 0"),
        (vec!["steer", "--lambda", "NaN"], "--lambda must be a finite number > 0"),
        (vec!["steer", "--t-start", "0.9", "--t-end", "0.6"], "need 0 ≤ --t-start < --t-end ≤ 1"),
        (vec!["steer", "--t-start", "0.7", "--t-end", "0.7"], "need 0 ≤ --t-start < --t-end ≤ 1"),
        (vec!["steer", "--reward", "point([1,2,3])"], "the model's data dimension is D = 2"),
        (vec!["steer", "--reward", "gaussian([1,2], 0.5) + obstacle([1], 1, 1, 1)"], "every vector needs the data dimension"),
        (vec!["steer", "--reward", "point([1,2]"], "malformed --reward at character 12"),
        (vec!["steer", "--init", wi], "expected [N·G, D] = [10, 2]"),
        (vec!["steer", "--adaptive-ess", "1.5"], "--adaptive-ess"),
        (vec!["steer", "--steps", "0"], "--steps must be at least 1"),
        (vec!["search", "paths", "--steps", "100", "--delta-f", "0.2", "--delta-b", "0.1"], "must exceed --delta-f"),
        (vec!["search", "paths", "--steps", "100", "--delta-f", "0.2", "--delta-b", "0.2"], "must exceed --delta-f"),
        (vec!["search", "paths", "--steps", "100", "--delta-f", "0.01", "--delta-b", "0.3"], "Δf > h"),
        (vec!["search", "zeroth", "--pivot", "1,2,3"], "D = 2"),
        (vec!["search", "bon", "--top-k", "11"], "--top-k must be between 1 and N = 10"),
        (vec!["search", "bon", "--init", wi], "expected [N·G, D]"),
    ];
    // `--backend cuda` fails only where CUDA is unusable; on a GPU machine it is a valid run.
    match flowsteer::backend::cuda::availability() {
        Err(_) => cases.push((vec!["steer", "--backend", "cuda"], "--backend cuda")),
        Ok(dev) => println!("skipped the `--backend cuda` failure case: CUDA is usable here ({dev})"),
    }
    for (k, (args, want)) in cases.into_iter().enumerate() {
        let out = dir.path().join(format!("bad{k}"));
        let mut a = args.clone();
        // Options after the subcommand; later duplicates of --particles/--steps would be
        // rejected by clap, so only add the defaults a case does not set itself.
        for pair in small.chunks(2) {
            let zeroth_has_no_particles = pair[0] == "--particles" && a[0] == "search" && a[1] == "zeroth";
            if !(a.contains(&pair[0]) || zeroth_has_no_particles) {
                a.extend_from_slice(pair);
            }
        }
        a.extend(["--out", out.to_str().unwrap()]);
        let o = run(dir.path(), &a);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{args:?} should fail");
        assert!(err.contains(want), "{args:?}: expected {want:?} in\n{err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
}

#[test]
fn missing_default_model_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), &["steer"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("models/checkerboard.safetensors") && err.contains("flowsteer train"), "{err}");
}

/// The caret sits under the offending character.
#[test]
fn malformed_reward_shows_a_caret() {
    let (dir, model) = setup();
    let o = run(dir.path(), &["steer", "--model", model.to_str().unwrap(), "--reward", "point([2,0.5]) * * 2"]);
    let err = text(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("  point([2,0.5]) * * 2\n                   ^"), "{err}");
}

/// `--profile 1` runs only the first resampling interval (of the default schedule's 6) and writes
/// nothing, not even the `--out` directory; a bare `--profile` runs 2; `--profile 0` is an error.
#[test]
fn profile_runs_the_first_intervals_and_writes_nothing() {
    let (dir, model) = setup();
    let m = model.to_str().unwrap();
    let out = dir.path().join("prof");
    let base = ["steer", "--model", m, "--steps", "20", "--particles", "64", "--backend", "cpu", "--out", out.to_str().unwrap()];
    // On 20 steps the default schedule is steps 12, 13, 15, 16, 18 and 20: 6 intervals.
    for (flag, want) in [(&["--profile", "1"][..], "ran 1 of 6 resampling intervals (up to grid step 12)"), (&["--profile"][..], "ran 2 of 6 resampling intervals (up to grid step 13)")] {
        let mut a = base.to_vec();
        a.extend_from_slice(flag);
        let o = run(dir.path(), &a);
        let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
        assert!(o.status.success(), "{a:?}: {stderr}");
        assert!(stdout.contains(want), "{a:?}: expected {want:?} in\n{stdout}");
        assert!(stderr.contains("NVTX ranges are GPU-only") && stderr.contains("writes no files"), "{stderr}");
        assert!(!out.exists(), "{a:?} wrote {}", out.display());
    }
    let mut a = base.to_vec();
    a.extend(["--profile", "0"]);
    let o = run(dir.path(), &a);
    assert!(!o.status.success() && text(&o.stderr).contains("--profile takes a number of intervals ≥ 1"), "{}", text(&o.stderr));
}

/// Issue 13, items 2–3: a non-empty `--out` is refused (the older run untouched) unless
/// `--force`, which replaces it whole; nothing is left beside it either way.
#[test]
fn a_non_empty_out_is_refused_unless_force() {
    let (dir, model) = setup();
    let m = model.to_str().unwrap();
    let cases: [&[&str]; 4] = [
        &["steer", "--particles", "16", "--no-baseline"],
        &["search", "bon", "--particles", "16"],
        &["search", "zeroth", "--candidates", "4", "--cycles", "2"],
        &["sample", "--particles", "16"],
    ];
    for (k, args) in cases.iter().enumerate() {
        let parent = dir.path().join(format!("p{k}"));
        let out = parent.join("run");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("plot.png"), b"an older run").unwrap();
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--model", m, "--steps", "5", "--backend", "cpu", "--out", out.to_str().unwrap()]);
        let o = run(dir.path(), &a);
        assert!(!o.status.success(), "{args:?} wrote into a non-empty --out");
        let err = text(&o.stderr);
        assert!(err.contains("not empty") && err.contains("--force"), "{args:?}: {err}");
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["plot.png"], "{args:?}: the older run must be untouched");
        a.push("--force");
        let o = run(dir.path(), &a);
        assert!(o.status.success(), "{args:?} --force: {}", text(&o.stderr));
        assert!(!out.join("plot.png").exists(), "{args:?} --force: the older run's file is still there");
        assert!(out.join("samples.npy").exists() && out.join("summary.json").exists(), "{args:?}");
        let beside: Vec<_> = std::fs::read_dir(&parent).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(beside, ["run"], "{args:?}: temporaries left beside --out");
    }
}
