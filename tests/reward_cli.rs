//! Rewards on the command line (docs/writing-a-reward.md): expressions, `--reward-cmd` programs
//! that behave and that misbehave in each way the issue lists (each a clear error with the
//! program's stderr, a non-zero exit and no output directory), and `--lambda-schedule`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flowsteer::model::{Activation, Mlp};

const BIN: &str = env!("CARGO_BIN_EXE_flowsteer");

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    Mlp::init_uniform(2, 16, 2, Activation::Elu, 8).save(&model, "net").unwrap();
    (dir, model)
}

fn steer(cwd: &Path, model: &Path, extra: &[&str]) -> Output {
    let base = ["steer", "--model", model.to_str().unwrap(), "--backend", "cpu", "--particles", "64", "--steps", "10", "--quiet"];
    Command::new(BIN).args(base).args(extra).current_dir(cwd).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn python() -> bool {
    let ok = Command::new("python3").arg("-c").arg("pass").output().is_ok_and(|o| o.status.success());
    if !ok {
        println!("SKIPPED: no python3 to run the example reward program");
    }
    ok
}

/// `--reward-timeout` for a misbehaving `mode`: only the hang waits it out; the others must fail
/// for their own reason even when Python starts slowly on a loaded machine (the first batch's
/// wait includes the interpreter's start-up, over 2 s at a load of 19 on 2 cores).
fn timeout(mode: &str) -> &'static str {
    if mode == "hang" {
        "8"
    } else {
        "60"
    }
}

fn program(mode: &str) -> String {
    format!("python3 {}/examples/reward_stdlib.py {mode}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_reward_program_steers_and_is_timed() {
    if !python() {
        return;
    }
    let (dir, model) = setup();
    let out = dir.path().join("run");
    let o = steer(dir.path(), &model, &["--reward-cmd", &program("ok"), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let rc = &summary["reward_command"];
    // Five intermediate points, the final weighing and the final score: at least 7 batches.
    assert!(rc["batches"].as_u64().unwrap() >= 7, "{rc}");
    assert!(rc["seconds"].as_f64().unwrap() > 0.0);
    // The program computes -|x − (2, 0.5)| in f64: the final rewards are that, rounded to f32.
    let x = flowsteer::npy::read_f32(&out.join("samples.npy")).unwrap();
    assert_eq!(x.shape, vec![64, 2]);
    let expr = steer(dir.path(), &model, &["--reward", "-norm(x - [2, 0.5])", "--out", dir.path().join("expr").to_str().unwrap()]);
    assert!(expr.status.success(), "{}", text(&expr.stderr));
}

/// Fails if a process whose working directory is `dir` (what a run in `dir` started) is still
/// alive 5 s after the run ended.
fn assert_no_process_left_in(dir: &Path) {
    let dir = dir.canonicalize().unwrap();
    let left = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
            .filter(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c == dir))
            .map(|e| std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default().replace('\0', " "))
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !left().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(left().is_empty(), "programs left running by the run: {:?}", left());
}

#[test]
fn a_misbehaving_program_ends_the_run_with_its_stderr_and_no_output() {
    if !python() {
        return;
    }
    let (dir, model) = setup();
    let cases = [
        ("die", "reward program: giving up on batch 2"),
        ("hang", "no answer within --reward-timeout"),
        ("shape", "must be [64]"),
        ("garbage", "not a float32 .npy"),
    ];
    for (mode, why) in cases {
        let out = dir.path().join(format!("run-{mode}"));
        let o = steer(dir.path(), &model, &["--reward-cmd", &program(mode), "--reward-timeout", timeout(mode), "--out", out.to_str().unwrap()]);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{mode}: the run must fail");
        assert!(err.contains(why), "{mode}: {err}");
        if mode == "hang" {
            assert!(err.contains("thinking forever"), "the program's stderr must be shown: {err}");
            // Stopping `sh` alone used to leave the hung Python program running after flowsteer exited.
            assert_no_process_left_in(dir.path());
        }
        assert!(!out.exists(), "{mode}: no partial output");
    }
    // A program that does not exist: the shell's complaint is shown.
    let o = steer(dir.path(), &model, &["--reward-cmd", "no-such-program-xyz", "--out", dir.path().join("x").to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("not found"), "{}", text(&o.stderr));
    // The CUDA backend calls the program too: tests/reward_cmd_gpu.rs.
}

#[test]
fn expressions_and_tempering_on_the_command_line() {
    let (dir, model) = setup();
    let out = dir.path().join("run");
    let o = steer(
        dir.path(),
        &model,
        &["--reward", "-norm(x - [2, 0.5]) + 0.5*obstacle([1,0], 0.4, 0.5, 1.0)", "--potential", "rt", "--lambda", "10", "--lambda-schedule", "adaptive", "--out", out.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let trace = std::fs::read_to_string(out.join("trace.csv")).unwrap();
    assert!(trace.lines().next().unwrap().ends_with(",lambda"));
    let lambdas: Vec<f64> = trace.lines().skip(1).map(|l| l.rsplit(',').next().unwrap().parse().unwrap()).collect();
    assert_eq!(*lambdas.last().unwrap(), 10.0, "the final point uses --lambda: {trace}");
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert!(summary.contains("\"lambda\""), "{summary}");
    // A malformed expression: located, non-zero, nothing written.
    let bad = dir.path().join("bad");
    let o = steer(dir.path(), &model, &["--reward", "-norm(x - [2, 0.5, 1])", "--out", bad.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert!(!o.status.success() && !bad.exists());
    assert!(err.contains("D = 2") && err.contains('^'), "{err}");
    let o = steer(dir.path(), &model, &["--reward", "pöint([2, 0.5])"]);
    assert!(text(&o.stderr).contains("`pöint`"), "{}", text(&o.stderr));
    // Adaptive tempering needs rt; diff needs a constant λ.
    let o = steer(dir.path(), &model, &["--lambda-schedule", "adaptive", "--potential", "max"]);
    assert!(!o.status.success() && text(&o.stderr).contains("--potential rt"), "{}", text(&o.stderr));
    let o = steer(dir.path(), &model, &["--lambda-schedule", "linear", "--potential", "diff"]);
    assert!(!o.status.success() && text(&o.stderr).contains("constant"), "{}", text(&o.stderr));
}
