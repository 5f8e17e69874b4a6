//! `flowsteer sample` end to end: files, summary, PyTorch agreement through `--init`, and the
//! errors a user can hit (each with a fix, a non-zero exit and no output).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flowsteer::npy;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn flowsteer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowsteer")).args(args).output().expect("run flowsteer")
}

fn flowsteer_env(args: &[&str], key: &str, value: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowsteer")).args(args).env(key, value).output().expect("run flowsteer")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn model() -> String {
    fixture("torch_mlp.safetensors").display().to_string()
}

#[test]
fn init_noise_reproduces_pytorch_and_writes_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let noise = fixture("torch_noise.npy").display().to_string();
    let o = flowsteer(&["sample", "--model", &model(), "--init", &noise, "--steps", "150", "--backend", "cpu", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));

    let ours = npy::read_f32(&out.join("samples.npy")).unwrap();
    let theirs = npy::read_f32(&fixture("torch_midpoint150.npy")).unwrap();
    assert_eq!(ours.shape, vec![256, 2]);
    let d = ours.data.iter().zip(&theirs.data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(d <= 1e-4, "max |Δ| against PyTorch = {d}");
    // The file is float32 [N, D] as numpy writes it.
    let raw = std::fs::read(out.join("samples.npy")).unwrap();
    assert!(String::from_utf8_lossy(&raw[..128]).contains("'descr': '<f4'"));

    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["config"]["particles"], 256);
    assert_eq!(s["config"]["sampler"]["kind"], "midpoint");
    assert_eq!(s["config"]["sampler"]["steps"], 150);
    assert_eq!(s["config"]["model_shape"]["hidden"], 64);
    assert_eq!(s["backend"]["backend"], "cpu");
    assert_eq!(s["throughput"]["particle_steps"], 256 * 150);
    assert_eq!(s["throughput"]["nfe"], 256 * 150 * 2);
    assert!(s["throughput"]["particle_steps_per_s"].as_f64().unwrap() > 0.0);
    assert!(s["times_s"]["propagate"].as_f64().unwrap() > 0.0);
    let q = &s["quality"];
    let frac = q["on_square_fraction"].as_f64().unwrap();
    assert_eq!(frac, flowsteer::checkerboard::on_square_fraction(&ours.data));
    assert!(q["energy_distance"].as_f64().unwrap().is_finite());
    assert_eq!(s["nonfinite_samples"], 0);
}

/// Same seed, same bits, whatever RAYON_NUM_THREADS; the SDE's noise included.
#[test]
fn same_seed_same_samples_file_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, threads: &str, seed: &str| {
        let out = dir.path().join(name);
        let o = flowsteer_env(
            &["sample", "--model", &model(), "--sampler", "sde", "--k", "1", "--steps", "10", "--particles", "300", "--seed", seed, "--backend", "cpu", "--out", out.to_str().unwrap()],
            "RAYON_NUM_THREADS",
            threads,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read(out.join("samples.npy")).unwrap()
    };
    let a = run("a", "1", "5");
    assert_eq!(a, run("b", "2", "5"));
    assert_ne!(a, run("c", "2", "6"));
}

/// Each bad input: non-zero exit, a message naming the problem and the fix, and no output.
#[test]
fn bad_input_fails_cleanly_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let wrong_shape = dir.path().join("noise3.npy");
    std::fs::write(&wrong_shape, npy::to_bytes(&[4, 3], &[0f32; 12])).unwrap();
    let good_noise = fixture("torch_noise.npy").display().to_string();
    let missing = dir.path().join("missing.safetensors").display().to_string();
    let cut = dir.path().join("cut.safetensors");
    let bytes = std::fs::read(fixture("torch_mlp.safetensors")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let m = model();
    let mut cases: Vec<(Vec<&str>, &[&str])> = vec![
        (vec!["--model", &m, "--particles", "0"], &["--particles must be at least 1"]),
        (vec!["--model", &m, "--init", wrong_shape.to_str().unwrap()], &["[4, 3]", "expected [N, 2]"]),
        (vec!["--model", &m, "--init", &good_noise, "--particles", "10"], &["does not match", "256"]),
        (vec!["--model", &missing], &["not found", "--model"]),
        (vec!["--model", cut.to_str().unwrap()], &["truncated", "`net."]),
        (vec!["--model", &m, "--steps", "0"], &["--steps must be at least 1"]),
        (vec!["--model", &m, "--sampler", "sde", "--k=-1"], &["--k must be"]),
    ];
    // `--backend cuda` fails only where CUDA is unusable; on a GPU machine it is a valid run.
    match flowsteer::backend::cuda::availability() {
        Err(_) => cases.push((vec!["--model", &m, "--backend", "cuda"], &["--backend cuda", "--backend cpu"])),
        Ok(dev) => println!("skipped the `--backend cuda` failure case: CUDA is usable here ({dev})"),
    }
    for (i, (args, needles)) in cases.into_iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        let mut full = vec!["sample"];
        full.extend(args.iter().copied());
        full.extend(["--out", out.to_str().unwrap()]);
        let o = flowsteer(&full);
        let msg = stderr(&o);
        assert!(!o.status.success(), "{full:?} succeeded");
        for n in needles {
            assert!(msg.contains(n), "{full:?}: message lacks {n:?}:\n{msg}");
        }
        assert!(!out.exists(), "{full:?} left output behind");
    }
}

#[test]
fn help_explains_every_option_with_its_default() {
    let o = flowsteer(&["sample", "--help"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for opt in ["--model", "--sampler", "--steps", "--particles", "--seed", "--k", "--sde-form", "--init", "--backend", "--out"] {
        assert!(text.contains(opt), "--help lacks {opt}");
    }
    for default in ["models/checkerboard.safetensors", "[default: midpoint]", "[default: 100]", "[default: 0.1]", "[default: auto]"] {
        assert!(text.contains(default), "--help lacks {default}:\n{text}");
    }
}
