//! `flowsteer sweep` under `mpirun` (issue 10, item 4; docs/distributed.md): rank 0 hands the
//! points to the other ranks and writes sweep.csv; points above `--rank-particles` run on every
//! rank together. The rows must be those of a plain single-process sweep (timing columns and
//! the device aside), whatever the number of processes.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;

use common::{mpirun, mpirun_shell, ok, plain, BIN};

const GRID: &[&str] = &[
    "sweep", "--backend", "cpu", "--particles", "64,128", "--methods", "fk-max,bon,plain", "--seeds", "2", "--steps", "6",
    "--cycles", "2",
];

fn args<'a>(out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = GRID.to_vec();
    a.extend_from_slice(extra);
    a.extend_from_slice(&["--out", out.to_str().unwrap()]);
    a
}


/// sweep.csv's rows, sorted, without the columns that may differ: device (1), wall_s (6),
/// nfe_per_s (7), particle_steps_per_s (8). The device field may be quoted (it holds commas).
fn rows(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("sweep.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap().split(',').nth(6), Some("wall_s"));
    let mut out: Vec<String> = lines
        .map(|l| {
            let (backend, rest) = l.split_once(',').unwrap();
            let rest = match rest.strip_prefix('"') {
                Some(q) => &q[q.find("\",").unwrap() + 2..],
                None => rest.split_once(',').unwrap().1,
            };
            let f: Vec<&str> = rest.split(',').collect();
            // f[0..4] = method, particles, seed, nfe; f[4..7] timing.
            let mut kept = vec![backend];
            kept.extend_from_slice(&f[..4]);
            kept.extend_from_slice(&f[7..]);
            kept.join(",")
        })
        .collect();
    out.sort();
    out
}

/// P = 1, 2, 3 processes write the rows of one plain process; with `--rank-particles 64`, the
/// N = 128 points run on every rank together, with the same values.
#[test]
fn a_sweep_across_ranks_writes_the_rows_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one");
    ok(&plain(&args(&one, &[])), "plain process");
    let expected = rows(&one);
    assert_eq!(expected.len(), 12);
    for p in 1..=3 {
        for extra in [&[][..], &["--rank-particles", "64"][..]] {
            let out = dir.path().join(format!("p{p}-{}", extra.len()));
            let o = mpirun(p, &args(&out, extra));
            ok(&o, &format!("P = {p} {extra:?}"));
            assert_eq!(rows(&out), expected, "P = {p} {extra:?}");
            assert!(out.join("scaling.png").exists() && out.join("sweep.json").exists());
            let text = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
            if !extra.is_empty() {
                assert_eq!(text.matches(&format!("{p} MPI ranks")).count(), 6, "the 6 points of N = 128 ran across ranks:\n{text}");
            }
        }
    }
}

/// `--resume` under mpirun runs only the points sweep.csv lacks; a finished sweep runs nothing.
#[test]
fn resume_across_ranks_runs_only_the_missing_points() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("one");
    ok(&plain(&args(&one, &[])), "plain process");
    let out = dir.path().join("run");
    ok(&mpirun(3, &args(&out, &[])), "first sweep");
    // Keep the header and 5 rows (as a sweep stopped half-way), then resume on 2 ranks.
    let csv = out.join("sweep.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let kept: Vec<&str> = text.lines().take(6).collect();
    std::fs::write(&csv, kept.join("\n") + "\n").unwrap();
    let again = mpirun(3, &args(&out, &[]));
    assert!(!again.status.success(), "without --resume an existing sweep is not overwritten");
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    let o = mpirun(2, &args(&out, &["--resume", "--rank-particles", "64"]));
    ok(&o, "resume");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("resume: 5 of 12 points already"), "{err}");
    assert_eq!(rows(&out), rows(&one));
    let o = mpirun(3, &args(&out, &["--resume"]));
    ok(&o, "resume of a finished sweep");
    assert!(String::from_utf8_lossy(&o.stderr).contains("sweep: 0 points run"));
}

/// Search over paths across ranks: with `--rank-particles 16` its N = 32 point runs on every
/// rank together and gives the row of one process. A rank with other arguments is named.
#[test]
fn paths_points_across_ranks_and_a_rank_that_differs() {
    let dir = tempfile::tempdir().unwrap();
    let grid = ["sweep", "--backend", "cpu", "--particles", "16,32", "--methods", "paths,bon", "--seeds", "1", "--steps", "20"];
    let with = |out: &Path, extra: &[&'static str]| -> Vec<String> {
        let mut a: Vec<String> = grid.iter().map(|s| s.to_string()).collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(["--out".to_string(), out.to_str().unwrap().to_string()]);
        a
    };
    let one = dir.path().join("one");
    let a = with(&one, &[]);
    ok(&plain(&a.iter().map(String::as_str).collect::<Vec<_>>()), "plain process");
    let out = dir.path().join("paths");
    let a = with(&out, &["--rank-particles", "16"]);
    let o = mpirun(3, &a.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&o, "paths across 3 ranks");
    assert_eq!(rows(&out), rows(&one));
    let text = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    assert_eq!(text.matches("3 MPI ranks").count(), 2, "the N = 32 points ran across ranks:\n{text}");

    let out = dir.path().join("differ");
    let script = format!(
        "exec {BIN} sweep --backend cpu --particles 16 --methods bon --seeds 1 --steps 4 --lambda $((OMPI_COMM_WORLD_RANK + 1)) --out {}",
        out.display()
    );
    let o = mpirun_shell(2, &script);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("MPI rank(s) 1 run a different command line"), "{err}");
    assert!(!out.join("sweep.csv").exists());
}

/// Points on `cuda-emulated` (the CUDA backend over the host emulator of its kernels): one-rank
/// points on each worker's own backend, and N = 128 across 2 ranks, each on its own CUDA backend,
/// give the rows of one plain process.
#[test]
fn cuda_points_across_ranks_write_the_rows_of_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let grid = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["sweep", "--backend", "cpu,cuda-emulated", "--particles", "64,128", "--methods", "fk-max,bon", "--seeds", "1", "--steps", "6"]
            .map(String::from)
            .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(["--out".to_string(), out.display().to_string()]);
        a
    };
    let one = dir.path().join("one");
    let a = grid(&one, &[]);
    ok(&plain(&a.iter().map(String::as_str).collect::<Vec<_>>()), "plain process");
    let expected = rows(&one);
    assert_eq!(expected.len(), 8);
    let two = dir.path().join("two");
    let a = grid(&two, &["--rank-particles", "64"]);
    let o = mpirun(2, &a.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&o, "P = 2");
    assert_eq!(rows(&two), expected);
    let text = std::fs::read_to_string(two.join("sweep.csv")).unwrap();
    assert_eq!(text.lines().filter(|l| l.starts_with("cuda-emulated") && l.contains("2 MPI ranks")).count(), 2, "{text}");
}
