//! flowsteer under `mpirun` (issue 10, docs/distributed.md). With `--features mpi` these run the
//! binary as P = 1, 2, 3 processes (Open MPI's `mpirun`, oversubscribed: CI has 2 cores); in the
//! default build, only the refusal to run as several processes without MPI is checked.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_flowsteer");

#[cfg(not(feature = "mpi"))]
#[test]
fn without_the_mpi_feature_several_processes_are_refused() {
    // What mpirun puts in the environment of each of 2 processes.
    let out = Command::new(BIN)
        .args(["steer", "--particles", "16", "--steps", "4"])
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .env("OMPI_COMM_WORLD_RANK", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("built without MPI") && err.contains("--features mpi"), "{err}");
}

/// `mpirun -n P flowsteer ARGS`, as root when need be (CI runs as root).
#[allow(dead_code)]
fn mpirun(p: usize, args: &[&str]) -> Output {
    Command::new("mpirun")
        .args(["--oversubscribe", "--allow-run-as-root", "-n", &p.to_string(), BIN])
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("mpirun (Open MPI's openmpi-bin) must be installed to test the mpi feature")
}

#[allow(dead_code)]
fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use super::*;

    const RUN: &[&str] = &[
        "steer", "--particles", "700", "--groups", "3", "--steps", "20", "--sampler", "sde", "--reward", "gaussian([2,0.5], 0.5)",
        "--lambda", "2", "--adaptive-ess", "0.7", "--ancestry", "--quiet", "--backend", "cpu",
    ];

    fn steer(p: usize, out: &Path, extra: &[&str]) -> Output {
        let mut args: Vec<&str> = RUN.to_vec();
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", out.to_str().unwrap()]);
        mpirun(p, &args)
    }

    /// The same seed gives the same bits for P = 1, 2, 3 (groups of 700 spanning ranks).
    #[test]
    fn samples_weights_and_ancestry_do_not_depend_on_the_number_of_processes() {
        let dir = tempfile::tempdir().unwrap();
        for scheme in ["multinomial", "systematic"] {
            let runs: Vec<_> = (1..=3)
                .map(|p| {
                    let out = dir.path().join(format!("{scheme}{p}"));
                    let o = steer(p, &out, &["--resample", scheme]);
                    assert!(o.status.success(), "P = {p}: {}", String::from_utf8_lossy(&o.stderr));
                    out
                })
                .collect();
            for name in ["samples.npy", "log_weights.npy", "ancestry.npy"] {
                let one = read(&runs[0], name);
                for (p, r) in runs.iter().enumerate().skip(1) {
                    assert!(read(r, name) == one, "{scheme}: {name} differs between P = 1 and P = {}", p + 1);
                }
            }
            let summary: serde_json::Value = serde_json::from_slice(&read(&runs[2], "summary.json")).unwrap();
            let mpi = &summary["config"]["run"]["mpi"];
            assert_eq!(mpi["ranks"], 3, "{summary}");
            assert!(mpi["bytes_per_resampling"].as_f64().unwrap() > 0.0, "{mpi}");
        }
    }

    #[test]
    fn fewer_particles_than_processes_is_refused_with_nothing_written() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let o = mpirun(3, &["steer", "--particles", "2", "--steps", "4", "--backend", "cpu", "--out", out.to_str().unwrap()]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("2 particles cannot be shared by 3 MPI ranks"), "{err}");
        assert!(!out.exists());
    }

    /// One rank given other arguments, and one rank that cannot read its model: each ends the
    /// job with an error naming the rank, a failure status and no output.
    #[test]
    fn a_rank_that_differs_or_fails_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let script = format!(
            "exec {BIN} steer --particles 64 --steps 4 --backend cpu --seed $OMPI_COMM_WORLD_RANK --out {}",
            out.display()
        );
        let o = Command::new("mpirun")
            .args(["--oversubscribe", "--allow-run-as-root", "-n", "2", "sh", "-c", &script])
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("MPI rank(s) 1 run a different command line or model file"), "{err}");
        assert!(!out.exists());

        let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/checkerboard.safetensors");
        let copy = dir.path().join("m0.safetensors");
        std::fs::copy(&model, &copy).unwrap();
        let script = format!(
            "exec {BIN} steer --particles 64 --steps 4 --backend cpu --model {}/m$OMPI_COMM_WORLD_RANK.safetensors --out {}",
            dir.path().display(),
            out.display()
        );
        let o = Command::new("mpirun")
            .args(["--oversubscribe", "--allow-run-as-root", "-n", "2", "sh", "-c", &script])
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("MPI rank 1:") && err.contains("m1.safetensors"), "{err}");
        assert!(!out.exists());
    }

    /// A rank killed mid-run ends the job: mpirun names the rank, the status is a failure, and
    /// rank 0 has written nothing (it writes only after the last collective).
    #[test]
    fn a_rank_that_dies_ends_the_job_with_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        // 200,000 particles run for a minute or more here; rank 1 is killed after 2 s.
        let script = format!(
            "if [ $OMPI_COMM_WORLD_RANK = 1 ]; then (sleep 2; kill -9 $$) & fi; exec {BIN} steer --particles 200000 --backend cpu --quiet --out {}",
            out.display()
        );
        let o = Command::new("mpirun")
            .args(["--oversubscribe", "--allow-run-as-root", "-n", "2", "sh", "-c", &script])
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .output()
            .unwrap();
        assert!(!o.status.success());
        let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(all.contains("rank 1") && all.contains("signal 9"), "{all}");
        assert!(!out.exists());
    }

    /// `sample` across 3 ranks writes the samples of a plain single-process run, bit for bit.
    #[test]
    fn sample_across_ranks_equals_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let args = |out: &Path| -> Vec<String> {
            ["sample", "--particles", "999", "--steps", "10", "--sampler", "sde", "--backend", "cpu", "--out", out.to_str().unwrap()]
                .map(String::from)
                .to_vec()
        };
        let (plain, three) = (dir.path().join("plain"), dir.path().join("three"));
        let o = Command::new(BIN).args(args(&plain)).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let a = args(&three);
        let o = mpirun(3, &a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(read(&plain, "samples.npy") == read(&three, "samples.npy"));
    }
}
