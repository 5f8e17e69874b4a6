//! flowsteer under `mpirun` (issue 10, docs/distributed.md). With `--features mpi` these run the
//! binary as P = 1, 2, 3 processes (Open MPI's `mpirun`, oversubscribed: CI has 2 cores); in the
//! default build, only the refusal to run as several processes without MPI is checked.

mod common;

use std::process::Command;

use common::BIN;

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


#[cfg(feature = "mpi")]
mod with_mpi {
    use std::path::Path;
    use std::process::Output;

    use super::common::{launcher, mpirun, mpirun_shell, read};
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
        let o = mpirun_shell(2, &script);
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
        let o = mpirun_shell(2, &script);
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
        let o = mpirun_shell(2, &script);
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

    /// A `--reward-cmd` program that dies on one rank only, mid-run: every rank stops at the same
    /// step with one error naming that rank (no rank left waiting in a collective the failed rank
    /// never joins), for steering and each search that scores more than once; no output.
    #[test]
    fn a_reward_program_failing_on_one_rank_ends_the_run_on_every_rank() {
        if !Command::new("python3").arg("-c").arg("pass").output().is_ok_and(|o| o.status.success()) {
            println!("SKIPPED: no python3 to run the example reward program");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let example = format!("{}/examples/reward_stdlib.py", env!("CARGO_MANIFEST_DIR"));
        // Rank 1's program gives up on its second batch.
        let program = format!("if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then exec python3 {example} die; else exec python3 {example} ok; fi");
        for command in [&["steer", "--particles", "8"][..], &["search", "zeroth", "--candidates", "8", "--cycles", "3"], &["search", "paths", "--particles", "8"]] {
            let out = dir.path().join(command.join("-"));
            let mut args: Vec<String> = command.iter().map(|s| s.to_string()).collect();
            args.extend(["--steps", "20", "--backend", "cpu", "--reward-cmd", &program, "--reward-timeout", "60", "--out", out.to_str().unwrap()].map(String::from));
            let mut child = launcher(2)
                .arg(BIN)
                .args(&args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let start = std::time::Instant::now();
            while child.try_wait().unwrap().is_none() {
                if start.elapsed().as_secs() > 120 {
                    child.kill().unwrap();
                    panic!("{command:?}: the job hung after one rank's reward program died");
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let o = child.wait_with_output().unwrap();
            assert!(!o.status.success(), "{command:?}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("MPI rank 1: --reward-cmd") && err.contains("giving up on batch 2"), "{command:?}: {err}");
            assert_eq!(err.matches("error").count(), 1, "{command:?}: printed once, by rank 0: {err}");
            assert!(!out.exists(), "{command:?}");
        }
    }

    /// `--backend cuda-emulated` under mpirun: each rank integrates and scores its share on its
    /// own CUDA backend (here the host emulator of the kernels; on a cluster, local GPU
    /// r mod count), and the files equal the single-process CUDA run's, for steer and sample.
    #[test]
    fn each_rank_on_its_own_cuda_backend_gives_the_single_process_cuda_files() {
        let dir = tempfile::tempdir().unwrap();
        let steer = |out: &Path| -> Vec<String> {
            ["steer", "--particles", "200", "--groups", "2", "--steps", "10", "--lambda", "2", "--ancestry", "--quiet", "--backend", "cuda-emulated", "--out", out.to_str().unwrap()]
                .map(String::from)
                .to_vec()
        };
        let sample = |out: &Path| -> Vec<String> {
            ["sample", "--particles", "301", "--steps", "10", "--sampler", "sde", "--backend", "cuda-emulated", "--out", out.to_str().unwrap()].map(String::from).to_vec()
        };
        for (what, args, files) in [("steer", &steer as &dyn Fn(&Path) -> Vec<String>, &["samples.npy", "log_weights.npy", "ancestry.npy"][..]), ("sample", &sample, &["samples.npy"][..])] {
            let plain = dir.path().join(format!("{what}-plain"));
            let o = Command::new(BIN).args(args(&plain)).output().unwrap();
            assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
            for p in [1, 2] {
                let out = dir.path().join(format!("{what}-{p}"));
                let a = args(&out);
                let o = mpirun(p, &a.iter().map(String::as_str).collect::<Vec<_>>());
                assert!(o.status.success(), "{what}, P = {p}: {}", String::from_utf8_lossy(&o.stderr));
                for name in files {
                    assert!(read(&plain, name) == read(&out, name), "{what}: {name} differs between one CUDA process and {p} CUDA ranks");
                }
                let summary: serde_json::Value = serde_json::from_slice(&read(&out, "summary.json")).unwrap();
                // steer's summary names the backend beside the device; sample's nests them.
                let backend = summary["backend"].as_str().or(summary["backend"]["backend"].as_str());
                assert_eq!(backend, Some("cuda-emulated"), "{what}: {summary}");
            }
        }
    }

    /// The data of a .npy file: what follows its header.
    fn npy_data(bytes: &[u8]) -> &[u8] {
        let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        &bytes[10 + header..]
    }

    /// `--shard-outputs` for P = 2 and 3: the shards, joined as manifest.json says (each file's
    /// SHA-256 checked), are the data of the gathered single-process files byte for byte, and the
    /// summary's statistics, taken across ranks, are the gathered run's.
    #[test]
    fn sharded_outputs_join_into_the_gathered_files() {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        // A lower --r-min so that the intermediate points resample and particles change rank.
        let gathered = dir.path().join("gathered");
        let o = steer(1, &gathered, &["--r-min=-1000"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let one: serde_json::Value = serde_json::from_slice(&read(&gathered, "summary.json")).unwrap();
        for p in [2usize, 3] {
            let out = dir.path().join(format!("sharded{p}"));
            let o = steer(p, &out, &["--r-min=-1000", "--shard-outputs"]);
            assert!(o.status.success(), "P = {p}: {}", String::from_utf8_lossy(&o.stderr));
            let m: serde_json::Value = serde_json::from_slice(&read(&out, "manifest.json")).unwrap();
            assert_eq!((m["format"].as_str(), m["version"].as_u64()), (Some("flowsteer-shards"), Some(1)), "{m}");
            assert_eq!((m["ranks"].as_u64(), m["particles"].as_u64(), m["dim"].as_u64()), (Some(p as u64), Some(2100), Some(2)), "{m}");
            let mut names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
            names.sort();
            let mut expected: Vec<String> = ["manifest.json", "summary.json", "trace.csv"].map(String::from).to_vec();
            for name in ["samples", "log_weights", "ancestry"] {
                let a = &m["arrays"][name];
                let shards = a["shards"].as_array().unwrap();
                assert_eq!(shards.len(), p, "{name}");
                let files: Vec<Vec<u8>> = shards
                    .iter()
                    .map(|s| {
                        let bytes = read(&out, s["file"].as_str().unwrap());
                        let sha: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
                        assert_eq!(s["sha256"].as_str(), Some(sha.as_str()), "P = {p}: {s}");
                        expected.push(s["file"].as_str().unwrap().into());
                        bytes
                    })
                    .collect();
                let joined: Vec<u8> = if a["axis"] == 0 {
                    files.iter().flat_map(|f| npy_data(f).to_vec()).collect()
                } else {
                    // ancestry [K, N·G], cut along axis 1: row k is every shard's row k.
                    assert_eq!((name, a["axis"].as_u64()), ("ancestry", Some(1)));
                    let k = a["shape"][0].as_u64().unwrap() as usize;
                    assert!(k > 0, "the run resamples");
                    (0..k)
                        .flat_map(|row| {
                            files.iter().flat_map(move |f| {
                                let d = npy_data(f);
                                let width = d.len() / k;
                                d[row * width..(row + 1) * width].to_vec()
                            })
                        })
                        .collect()
                };
                let whole = read(&gathered, &format!("{name}.npy"));
                assert!(joined == npy_data(&whole), "P = {p}: the {name} shards differ from {name}.npy");
            }
            expected.sort();
            assert_eq!(names, expected, "P = {p}: exactly the manifest's files, the summary and the trace");
            let summary: serde_json::Value = serde_json::from_slice(&read(&out, "summary.json")).unwrap();
            for key in ["count", "min", "max", "quantiles", "nonfinite"] {
                assert_eq!(summary["final_reward"][key], one["final_reward"][key], "P = {p}: final_reward.{key}");
                assert_eq!(summary["baseline_reward"][key], one["baseline_reward"][key], "P = {p}: baseline_reward.{key}");
            }
            for key in ["distinct_ancestors", "log_z", "nonfinite_samples"] {
                assert_eq!(summary[key], one[key], "P = {p}: {key}");
            }
            assert_eq!(summary["config"]["run"]["shard_outputs"], true);
        }
    }

    /// Rank 1 cannot write its shard (a file-size limit of 512 bytes; SIGXFSZ ignored, so the
    /// write fails instead of killing it): every rank ends with the error naming rank 1, and
    /// neither --out nor the temporary directory is left.
    #[test]
    fn a_rank_that_cannot_write_its_shard_leaves_no_output() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let script = format!(
            "if [ $OMPI_COMM_WORLD_RANK = 1 ]; then trap '' XFSZ; ulimit -f 1; fi; exec {BIN} steer --particles 4000 --steps 4 --backend cpu --quiet --shard-outputs --out {}",
            out.display()
        );
        let o = mpirun_shell(2, &script);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("MPI rank 1: cannot write") && err.contains("samples.r1.npy"), "{err}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    /// Without mpirun, --shard-outputs is refused before any work.
    #[test]
    fn shard_outputs_without_mpirun_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let o = Command::new(BIN).args(["steer", "--particles", "16", "--steps", "4", "--shard-outputs", "--out", out.to_str().unwrap()]).output().unwrap();
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("--shard-outputs splits the output files across MPI ranks"));
        assert!(!out.exists());
    }

    /// `search bon` across P = 1, 2, 3 ranks keeps what one process keeps: the same rows, bit for
    /// bit (groups of 500 span ranks for P = 3), the same rewards and roots.
    #[test]
    fn best_of_n_across_ranks_equals_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let args = |out: &Path| -> Vec<String> {
            ["search", "bon", "--particles", "500", "--groups", "2", "--top-k", "3", "--steps", "10", "--reward", "gaussian([2,0.5], 0.5)", "--backend", "cpu", "--quiet", "--out", out.to_str().unwrap()]
                .map(String::from)
                .to_vec()
        };
        let plain = dir.path().join("plain");
        let o = Command::new(BIN).args(args(&plain)).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let one: serde_json::Value = serde_json::from_slice(&read(&plain, "summary.json")).unwrap();
        for p in 1..=3 {
            let out = dir.path().join(format!("p{p}"));
            let a = args(&out);
            let o = mpirun(p, &a.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(o.status.success(), "P = {p}: {}", String::from_utf8_lossy(&o.stderr));
            for name in ["samples.npy", "log_weights.npy"] {
                assert!(read(&out, name) == read(&plain, name), "P = {p}: {name} differs from one process's");
            }
            let summary: serde_json::Value = serde_json::from_slice(&read(&out, "summary.json")).unwrap();
            for key in ["final_reward", "distinct_ancestors", "throughput"] {
                let (a, b) = (&summary[key], &one[key]);
                if key == "throughput" {
                    assert_eq!((&a["nfe"], &a["particle_steps"]), (&b["nfe"], &b["particle_steps"]), "P = {p}");
                } else {
                    assert_eq!(a, b, "P = {p}: {key}");
                }
            }
            assert_eq!(summary["config"]["run"]["mpi"]["ranks"], p);
        }
    }

    /// `search zeroth` across P = 1, 2, 3 ranks moves the pivot as one process does: the same
    /// final samples, bit for bit, and the same winner at every cycle.
    #[test]
    fn zeroth_order_search_across_ranks_equals_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let args = |out: &Path| -> Vec<String> {
            ["search", "zeroth", "--candidates", "40", "--cycles", "3", "--groups", "2", "--steps", "10", "--reward", "gaussian([2,0.5], 0.5)", "--backend", "cpu", "--quiet", "--out", out.to_str().unwrap()]
                .map(String::from)
                .to_vec()
        };
        let plain = dir.path().join("plain");
        let o = Command::new(BIN).args(args(&plain)).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let one: serde_json::Value = serde_json::from_slice(&read(&plain, "summary.json")).unwrap();
        let winners = |s: &serde_json::Value| s["steps"].as_array().unwrap().iter().map(|r| r["best_reward"].clone()).collect::<Vec<_>>();
        for p in 1..=3 {
            let out = dir.path().join(format!("p{p}"));
            let a = args(&out);
            let o = mpirun(p, &a.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(o.status.success(), "P = {p}: {}", String::from_utf8_lossy(&o.stderr));
            assert!(read(&out, "samples.npy") == read(&plain, "samples.npy"), "P = {p}: samples.npy differs from one process's");
            let summary: serde_json::Value = serde_json::from_slice(&read(&out, "summary.json")).unwrap();
            assert_eq!(winners(&summary), winners(&one), "P = {p}");
            assert_eq!(summary["final_reward"], one["final_reward"], "P = {p}");
        }
    }
}
