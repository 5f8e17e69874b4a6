//! `flowsteer search paths` under `mpirun` (issue 10, docs/distributed.md, docs/search.md): the
//! beam and each round's candidates split over P = 1, 2, 3 processes (Open MPI's `mpirun`,
//! oversubscribed: CI has 2 cores) give the files of the run without mpirun, byte for byte.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::Command;

use common::{mpirun, read, BIN};

fn json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&read(dir, "summary.json")).unwrap()
}

fn groups(summary: &serde_json::Value) -> usize {
    summary["config"]["run"]["groups"].as_u64().unwrap() as usize
}

/// The same run with and without mpirun, P = 1, 2, 3: samples, log-weights and the per-round
/// trace byte for byte, and summary.json's rewards, ancestors, NFE and run configuration (all but
/// its "mpi" record).
fn same_as_one_process(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &Path| -> Vec<String> {
        let mut a: Vec<String> = ["search", "paths", "--steps", "20", "--reward", "gaussian([2,0.5], 0.5)", "--backend", "cpu", "--quiet"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        a.extend(["--out".to_string(), out.display().to_string()]);
        a
    };
    let plain = dir.path().join("plain");
    let o = Command::new(BIN).args(args(&plain)).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let one = json(&plain);
    assert!(one["steps"].as_array().unwrap().len() >= 2, "{one}");
    for p in 1..=3 {
        let out = dir.path().join(format!("p{p}"));
        let o = mpirun(p, &args(&out));
        assert!(o.status.success(), "{extra:?}, P = {p}: {}", String::from_utf8_lossy(&o.stderr));
        for name in ["samples.npy", "log_weights.npy", "trace.csv"] {
            assert!(read(&out, name) == read(&plain, name), "{extra:?}, P = {p}: {name} differs from one process's");
        }
        let summary = json(&out);
        for key in ["final_reward", "distinct_ancestors", "steps"] {
            assert_eq!(summary[key], one[key], "{extra:?}, P = {p}: {key}");
        }
        assert_eq!((&summary["throughput"]["nfe"], &summary["throughput"]["particle_steps"]), (&one["throughput"]["nfe"], &one["throughput"]["particle_steps"]));
        let mut run = summary["config"]["run"].clone();
        let mpi = run.as_object_mut().unwrap().remove("mpi").expect("config.run.mpi");
        assert_eq!(run, one["config"]["run"], "{extra:?}, P = {p}");
        assert_eq!(mpi["ranks"], p);
        // Each round counts as a resampling; with several ranks its exchanges move bytes.
        assert_eq!(mpi["resamplings"].as_u64().unwrap() as usize, summary["steps"].as_array().unwrap().len() / groups(&one), "{mpi}");
        if p > 1 {
            assert!(mpi["bytes_total"].as_u64().unwrap() > 0 && mpi["bytes_per_resampling"].as_f64().unwrap() > 0.0, "{mpi}");
        }
    }
}

/// Groups of 30 states (90 candidates per round) spanning ranks, the SDE sampler (noise keyed by
/// the global index), the best 3 of each group kept.
#[test]
fn search_over_paths_across_ranks_equals_one_process() {
    same_as_one_process(&["--particles", "30", "--groups", "2", "--candidates", "3", "--top-k", "3", "--sampler", "sde", "--t-start", "0.2"]);
}

/// The default midpoint sampler, the legacy renoising, rewards on x_t, starting rows from --init.
#[test]
fn with_init_legacy_renoising_and_rewards_on_xt() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("init.npy");
    let rows: Vec<f32> = (0..40).map(|i| ((i * 37 % 17) as f32 - 8.0) / 5.0).collect();
    std::fs::write(&init, flowsteer::npy::to_bytes(&[20, 2], &rows)).unwrap();
    same_as_one_process(&["--init", init.to_str().unwrap(), "--groups", "2", "--candidates", "2", "--renoise", "legacy", "--reward-on", "xt"]);
}

/// Fewer beam states than processes: refused on every rank with one clear error, no output.
#[test]
fn fewer_particles_than_processes_is_refused_with_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args: Vec<String> = ["search", "paths", "--particles", "2", "--steps", "20", "--backend", "cpu", "--out", out.to_str().unwrap()].map(String::from).to_vec();
    let o = mpirun(3, &args);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("2 particles cannot be shared by 3 MPI ranks"), "{err}");
    assert_eq!(err.matches("cannot be shared").count(), 1, "printed once, by rank 0: {err}");
    assert!(!out.exists());
}

/// On CUDA ranks (the host emulator here) each rank integrates and scores its share on its own
/// backend and renoises on the host: the files equal one CUDA process's (docs/distributed.md).
#[test]
fn on_cuda_ranks_search_over_paths_equals_one_cuda_process() {
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &Path| -> Vec<String> {
        ["search", "paths", "--steps", "20", "--sampler", "sde", "--backend", "cuda-emulated", "--quiet", "--out", out.to_str().unwrap()].map(String::from).to_vec()
    };
    let plain = dir.path().join("plain");
    let o = Command::new(BIN).args(args(&plain)).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = dir.path().join("two");
    let o = mpirun(2, &args(&out));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for name in ["samples.npy", "trace.csv"] {
        assert!(read(&out, name) == read(&plain, name), "{name} differs between one CUDA process and 2 CUDA ranks");
    }
}
