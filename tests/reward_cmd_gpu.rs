//! `--reward-cmd` on the CUDA backend against the CPU backend (docs/writing-a-reward.md, "A
//! reward from any program"), with `examples/reward_stdlib.py` as the program.
//!
//! Both backends hand the program the same `[B, D]` batch when their reward inputs are equal,
//! and the program's answer is used as it is. On the host emulator the reward inputs (x̂1 from
//! the MLP, the samples) are bitwise the CPU's, so every reward, log-weight and sample must be
//! bitwise equal. On a GPU the sample-score batch is the given points themselves (bitwise equal
//! again); x̂1 differs from the CPU's by the integrator's tolerance, at most 1e-4·(1 + |x̂1_d|)
//! per coordinate (tests/gpu.rs TRAJ_TOL), and the program's reward −|x − (2, 0.5)| is
//! 1-Lipschitz, so the rewards may differ by at most √2 · that, plus an f32 rounding of each.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use flowsteer::backend::cpu::CpuBackend;
use flowsteer::backend::cuda::{self, CudaBackend};
use flowsteer::backend::{Backend, Init, Layout, RunSpec, ScoreOn, WeighAt};
use flowsteer::model::{Activation, Mlp};
use flowsteer::potential::{Potential, PotentialKind};
use flowsteer::resample::ResampleScheme;
use flowsteer::reward::command::RewardCommand;
use flowsteer::reward::{Reward, RewardOn};
use flowsteer::sampler::{Sampler, SamplerKind, SdeForm};
use rand::{Rng, SeedableRng};

const BIN: &str = env!("CARGO_BIN_EXE_flowsteer");
/// Per-coordinate agreement of x̂1 between a GPU and the CPU (tests/gpu.rs TRAJ_TOL).
const TRAJ_TOL: f32 = 1e-4;

fn device() -> Option<CudaBackend> {
    match cuda::availability() {
        Err(why) => match CudaBackend::emulated(1 << 30) {
            Ok(b) => Some(b),
            Err(e) => {
                assert!(std::env::var_os("FLOWSTEER_CI").is_none(), "CI must run these tests on the emulator: {e:#}");
                println!("SKIPPED: {why}; and the host emulator is unusable: {e:#}");
                None
            }
        },
        Ok(_) => Some(CudaBackend::new().expect("a CUDA device is present but the backend failed to start")),
    }
}

fn python() -> bool {
    let ok = Command::new("python3").arg("-c").arg("pass").output().is_ok_and(|o| o.status.success());
    if !ok {
        println!("SKIPPED: no python3 to run the example reward program");
    }
    ok
}

fn program(mode: &str) -> String {
    format!("python3 {}/examples/reward_stdlib.py {mode}", env!("CARGO_MANIFEST_DIR"))
}

fn spec(reward: Reward) -> RunSpec {
    RunSpec {
        model: Mlp::init_uniform(2, 16, 2, Activation::Elu, 4),
        sampler: Sampler { kind: SamplerKind::Midpoint, steps: 8, k: 0.0, form: SdeForm::Marginal },
        reward,
        reward_on: RewardOn::X1Hat,
        potential: Potential { kind: PotentialKind::Rt, lambda: 0.5, r_min: 0.0, clamp_weights: None },
        resample: ResampleScheme::Multinomial,
        adaptive_ess: None,
        seed: 5,
    }
}

fn bitwise(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Rewards of the program on x̂1: bitwise on the emulator, else within the bound derived above.
/// Rewards (f32, widened exactly) or log-weights (f64) of the device against the CPU's.
fn rewards_agree(gpu: &CudaBackend, device: &[f64], cpu: &[f64]) -> bool {
    if gpu.is_emulated() {
        return device.len() == cpu.len() && device.iter().zip(cpu).all(|(a, b)| a.to_bits() == b.to_bits());
    }
    // |x̂1_d| ≤ 2.5 + |r| + 2 bounds 1 + |x̂1_d| by |r| + 6 (the reward is a distance from (2, 0.5)).
    device.len() == cpu.len() && device.iter().zip(cpu).all(|(a, b)| (a - b).abs() <= 2f64.sqrt() * TRAJ_TOL as f64 * (b.abs() + 6.0) + 2.0 * f32::EPSILON as f64 * b.abs())
}

#[test]
fn the_device_calls_the_program_with_the_cpus_batches() {
    let Some(mut gpu) = device() else { return };
    if !python() {
        return;
    }
    let command = RewardCommand::start(&program("ok"), Duration::from_secs(60)).unwrap();
    let s = spec(Reward::from_command(command));
    let mut cpu = CpuBackend::new();
    let layout = Layout { n: 53, groups: 2 };
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let pts: Vec<f32> = (0..layout.total() * 2).map(|_| rng.random_range(-2.5f32..2.5)).collect();
    let mut pc = cpu.init(&s, layout, Init::Given(&pts)).unwrap();
    let mut pg = gpu.init(&s, layout, Init::Given(&pts)).unwrap();
    let c = s.reward.command().unwrap().clone();
    // The samples themselves: the same points, so the same answers on any device.
    let (a, b) = (cpu.score(&s, &mut pc, ScoreOn::Sample).unwrap(), gpu.score(&s, &mut pg, ScoreOn::Sample).unwrap());
    assert!(bitwise(&b, &a), "device {b:?}\ncpu {a:?}");
    assert!(a.iter().all(|v| v.is_finite() && *v <= 0.0));
    // x̂1 at an intermediate step (one MLP evaluation on each side).
    let on = ScoreOn::Intermediate { step: 3 };
    let (a, b) = (cpu.score(&s, &mut pc, on).unwrap(), gpu.score(&s, &mut pg, on).unwrap());
    let widen = |v: &[f32]| v.iter().map(|&r| r as f64).collect::<Vec<f64>>();
    assert!(rewards_agree(&gpu, &widen(&b), &widen(&a)), "device {b:?}\ncpu {a:?}");
    // A weighing reads the program's rewards: the same log-weights and mean rewards.
    let at = WeighAt { step: 3, index: 0, is_final: false };
    let (wc, wg) = (cpu.weigh(&s, &mut pc, at).unwrap(), gpu.weigh(&s, &mut pg, at).unwrap());
    let (lc, lg) = (cpu.read_log_weights(&pc).unwrap(), gpu.read_log_weights(&pg).unwrap());
    // log-weights are λ·r: the reward bound scaled by λ = 0.5 < 1.
    assert!(rewards_agree(&gpu, &lg, &lc), "device {lg:?}\ncpu {lc:?}");
    for (x, y) in wc.iter().zip(&wg) {
        assert!((x.mean_reward - y.mean_reward).abs() <= 1e-3 * (1.0 + x.mean_reward.abs()), "{x:?} vs {y:?}");
        assert!(x.mean_reward < 0.0 && x.nonfinite == 0 && y.nonfinite == 0);
    }
    // Six batches went to the program (three per backend); the device's copies were timed.
    assert_eq!(c.time_spent().1, 6);
    assert!(c.copy_time() > 0.0, "the device's copies to and from the host are counted");
}

fn steer(model: &Path, backend: &str, out: &Path, extra: &[&str]) -> Output {
    let m = model.to_str().unwrap();
    let base = ["steer", "--model", m, "--backend", backend, "--particles", "64", "--groups", "2", "--steps", "12", "--quiet"];
    Command::new(BIN).args(base).args(["--out", out.to_str().unwrap()]).args(extra).output().unwrap()
}

fn summary(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap()
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    Mlp::init_uniform(2, 16, 2, Activation::Elu, 8).save(&model, "net").unwrap();
    (dir, model)
}

#[test]
fn a_steering_run_with_a_program_matches_the_cpu() {
    let Some(gpu) = device() else { return };
    if !python() {
        return;
    }
    let engine = if gpu.is_emulated() { "cuda-emulated" } else { "cuda" };
    let (dir, model) = setup();
    let cmd = program("ok");
    // Fixed λ (fused intervals on the CPU, plain launches around the host call on the device)
    // and adaptive tempering (scores at every point, then weighing).
    let runs: [&[&str]; 2] = [&["--reward-cmd", &cmd, "--lambda", "1"], &["--reward-cmd", &cmd, "--potential", "rt", "--lambda-schedule", "adaptive"]];
    for (k, extra) in runs.iter().enumerate() {
        let mut outs = Vec::new();
        for backend in ["cpu", engine] {
            let out = dir.path().join(format!("run{k}-{backend}"));
            let o = steer(&model, backend, &out, extra);
            assert!(o.status.success(), "{extra:?} on {backend}: {}", String::from_utf8_lossy(&o.stderr));
            outs.push(out);
        }
        let (sc, sg) = (summary(&outs[0]), summary(&outs[1]));
        let (rc, rg) = (&sc["reward_command"], &sg["reward_command"]);
        assert_eq!(rc["batches"], rg["batches"], "the same reward evaluations on both backends: {rc} {rg}");
        assert!(rg["seconds"].as_f64().unwrap() > 0.0 && rg["copy_seconds"].as_f64().unwrap() > 0.0, "{rg}");
        assert_eq!(rc["copy_seconds"].as_f64(), Some(0.0), "the CPU copies nothing: {rc}");
        let read = |o: &PathBuf, f: &str| flowsteer::npy::read_f32(&o.join(f)).unwrap();
        let (xc, xg) = (read(&outs[0], "samples.npy"), read(&outs[1], "samples.npy"));
        assert_eq!(xc.shape, xg.shape);
        if gpu.is_emulated() {
            assert!(bitwise(&xc.data, &xg.data), "{extra:?}: the emulated run must give the CPU's samples");
            let (lc, lg) = (read(&outs[0], "log_weights.npy"), read(&outs[1], "log_weights.npy"));
            assert!(bitwise(&lc.data, &lg.data), "{extra:?}: the emulated run must give the CPU's log-weights");
        }
        println!("{extra:?}: {} batches on each backend, copies {} s", rg["batches"], rg["copy_seconds"]);
    }
    // A search scores on the device (fs_score) and selects the best: the same pivots.
    let mut samples = Vec::new();
    for backend in ["cpu", engine] {
        let out = dir.path().join(format!("zeroth-{backend}"));
        let args = ["search", "zeroth", "--model", model.to_str().unwrap(), "--candidates", "8", "--cycles", "3", "--radius", "0.4", "--steps", "12"];
        let o = Command::new(BIN).args(args).args(["--reward-cmd", &cmd, "--backend", backend, "--quiet", "--out", out.to_str().unwrap()]).output().unwrap();
        assert!(o.status.success(), "search zeroth on {backend}: {}", String::from_utf8_lossy(&o.stderr));
        samples.push(flowsteer::npy::read_f32(&out.join("samples.npy")).unwrap());
    }
    assert_eq!(samples[0].shape, samples[1].shape);
    if gpu.is_emulated() {
        assert!(bitwise(&samples[0].data, &samples[1].data), "search zeroth: the emulated run must give the CPU's samples");
    }
}

#[test]
fn a_misbehaving_program_ends_a_device_run_with_no_output() {
    let Some(gpu) = device() else { return };
    if !python() {
        return;
    }
    let engine = if gpu.is_emulated() { "cuda-emulated" } else { "cuda" };
    let (dir, model) = setup();
    let cases = [("die", "giving up on batch 2"), ("hang", "no answer within --reward-timeout"), ("shape", "must be [128]")];
    for (mode, why) in cases {
        let out = dir.path().join(format!("run-{mode}"));
        // Only the hang waits out the timeout; the others must fail for their own reason even
        // when Python starts slowly on a loaded machine (the first batch includes its start-up).
        let timeout = if mode == "hang" { "8" } else { "60" };
        let o = steer(&model, engine, &out, &["--reward-cmd", &program(mode), "--reward-timeout", timeout]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{mode}: the run must fail");
        assert!(err.contains(why), "{mode}: {err}");
        assert!(!out.exists(), "{mode}: no partial output");
        if mode == "hang" {
            assert!(err.contains("thinking forever"), "the program's stderr must be shown: {err}");
        }
    }
}
