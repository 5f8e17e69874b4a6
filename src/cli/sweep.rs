//! `flowsteer sweep`: the options of a sweep, parsed into the run layer's [`SweepConfig`]; the
//! loop over the grid, sweep.csv, resume and the scaling plot are `crate::run::sweep`.

use std::path::PathBuf;

use super::particles::ParticleList;
use crate::backend::BackendChoice;
use crate::run::sweep::{self as sweep_run, SweepConfig};

pub use crate::run::sweep::{grid, row_from_outcome, Point, PointOutcome, PointRunner, Row, SampleTest, SweepMethod};

#[cfg(test)]
use {
    crate::run::sweep::{header, SweepCsv},
    anyhow::bail,
    std::collections::HashSet,
    std::path::Path,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Particle counts: a comma list (1024,4096), a doubling range (2^10..2^14), or both.
    #[arg(long, default_value = "2^8..2^12")]
    pub particles: ParticleList,
    /// Methods, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fk-max,fk-add,fk-diff,bon,zeroth,paths,plain")]
    pub methods: Vec<SweepMethod>,
    /// Seeds per point: seeds 0..N.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// The reward (docs/rewards.md), as for `steer`.
    #[arg(long, default_value = "point([2,0.5])")]
    pub reward: String,
    /// Output directory: sweep.csv, sweep.json, scaling.png.
    #[arg(long, default_value = "runs/sweep")]
    pub out: PathBuf,
    /// Continue the sweep in --out: skip the points sweep.csv already holds.
    #[arg(long)]
    pub resume: bool,
    /// Engines, comma-separated (auto, cpu, cuda); throughput is plotted per engine.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "auto")]
    pub backend: Vec<BackendChoice>,
    /// The velocity model (safetensors, docs/model.md).
    #[arg(long, value_name = "PATH", default_value = "models/checkerboard.safetensors")]
    pub model: PathBuf,
    /// Time steps of every sampler.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Diffusion scale k of the SDE that FK steering and plain sampling use (docs/samplers.md).
    #[arg(long, default_value_t = 0.1)]
    pub k: f32,
    /// λ of the FK potentials.
    #[arg(long, default_value_t = 10.0, value_parser = crate::potential::parse_lambda)]
    pub lambda: f32,
    /// Zeroth-order search: cycles (the particle count is the candidates per cycle).
    #[arg(long, default_value_t = 4)]
    pub cycles: usize,
    /// Zeroth-order search: radius of the ball around the pivot noise.
    #[arg(long, default_value_t = 0.5)]
    pub radius: f32,
    /// Search over paths: copies of each state per round (the particle count is the beam).
    #[arg(long, default_value_t = 4)]
    pub candidates: usize,
    /// Search over paths: time the first round starts from.
    #[arg(long, default_value_t = 0.3)]
    pub paths_t_start: f64,
    /// Search over paths: backward step Δf of each round.
    #[arg(long, default_value_t = 0.1)]
    pub delta_f: f64,
    /// Search over paths: forward step Δb of each round (> Δf).
    #[arg(long, default_value_t = 0.2)]
    pub delta_b: f64,
    /// Radius around the reward's target for the "fraction within" column.
    #[arg(long, default_value_t = 0.25)]
    pub within: f32,
    /// Under mpirun: the largest particle count one rank runs alone; a bigger point runs on
    /// every rank together (default: what a rank's free memory holds). Ignored by one process.
    #[arg(long, value_name = "MAX", value_parser = parse_rank_particles)]
    pub rank_particles: Option<u64>,
}

/// One particle count, in `--particles`' grammar (65536, 2^16, 65_536).
fn parse_rank_particles(text: &str) -> Result<u64, String> {
    match super::particles::parse(text)?.as_slice() {
        [n] if !text.contains(',') && !text.contains("..") => Ok(*n),
        _ => Err(format!("`{text}` is not one count: give one number such as 65536 or 2^16")),
    }
}

impl Args {
    /// The run layer's configuration of this sweep.
    pub fn config(&self) -> SweepConfig {
        SweepConfig {
            particles: self.particles.counts().to_vec(),
            methods: self.methods.clone(),
            seeds: self.seeds,
            reward: self.reward.clone(),
            out: self.out.clone(),
            resume: self.resume,
            backend: self.backend.clone(),
            model: self.model.clone(),
            steps: self.steps,
            k: self.k,
            lambda: self.lambda,
            cycles: self.cycles,
            radius: self.radius,
            candidates: self.candidates,
            paths_t_start: self.paths_t_start,
            delta_f: self.delta_f,
            delta_b: self.delta_b,
            within: self.within,
            rank_particles: self.rank_particles,
        }
    }
}

/// Validates what clap cannot: empty lists and counts.
pub fn validate(args: &Args) -> anyhow::Result<()> {
    sweep_run::validate(&args.config())
}

/// Runs the sweep of `args` with `runner` (tests pass a stand-in for the methods).
pub fn sweep_with(
    args: &Args,
    backends: &[String],
    settings: serde_json::Value,
    runner: &mut dyn PointRunner,
    to_row: &dyn Fn(&Point, &PointOutcome) -> anyhow::Result<Row>,
) -> anyhow::Result<Vec<Row>> {
    sweep_run::sweep_with(&args.config(), backends, settings, runner, to_row)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match crate::distributed::driver::world() {
        // Under mpirun/srun: rank 0 hands the points out (docs/distributed.md).
        Some(w) => crate::distributed::sweep::sweep(&*w, &args.config()).map(|_| ()),
        None => sweep_run::sweep(&args.config()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A method stand-in: samples at a distance from the target that shrinks with N, NFE = 10·N.
    struct Fake {
        calls: Vec<Point>,
        fail_at: Option<usize>,
    }

    impl PointRunner for Fake {
        fn run(&mut self, p: &Point) -> anyhow::Result<PointOutcome> {
            if self.fail_at == Some(self.calls.len()) {
                bail!("stopped (simulated interruption)");
            }
            self.calls.push(p.clone());
            Ok(PointOutcome::fake(p, "fake, 1 thread"))
        }
    }

    fn to_row(p: &Point, o: &PointOutcome) -> anyhow::Result<Row> {
        let reward = |x: &[f32]| 1.0 / ((x[0] - 2.0).powi(2) + (x[1] - 0.5).powi(2) + 1e-3);
        row_from_outcome(p, o, &reward, Some(&[2.0, 0.5]), 0.25, Some(&|x: &[f32]| x[0] > 0.0))
    }

    fn args(dir: &Path, extra: &[&str]) -> Args {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            a: Args,
        }
        let out = dir.to_str().unwrap();
        let mut argv = vec!["sweep", "--out", out, "--particles", "4,8", "--methods", "fk-max,bon,plain", "--seeds", "2"];
        argv.extend_from_slice(extra);
        Wrap::try_parse_from(argv).unwrap().a
    }

    fn settings() -> serde_json::Value {
        serde_json::json!({ "reward": "point([2,0.5])", "steps": 100 })
    }

    #[test]
    fn a_sweep_stopped_half_way_resumes_and_skips_finished_points() {
        let dir = tempfile::tempdir().unwrap();
        let backends = vec!["cpu".to_string()];
        // 2 counts × 3 methods × 2 seeds = 12 points; the first run stops after 5.
        let mut first = Fake { calls: vec![], fail_at: Some(5) };
        let err = sweep_with(&args(dir.path(), &[]), &backends, settings(), &mut first, &to_row).unwrap_err();
        assert!(format!("{err:#}").contains("simulated interruption"));
        let text = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
        assert_eq!(text.lines().count(), 1 + 5, "header and one row per finished point:\n{text}");
        assert!(!dir.path().join("scaling.png").exists());

        // Without --resume the existing sweep is not overwritten.
        let mut again = Fake { calls: vec![], fail_at: None };
        let err = sweep_with(&args(dir.path(), &[]), &backends, settings(), &mut again, &to_row).unwrap_err();
        assert!(err.to_string().contains("--resume"), "{err}");
        assert!(again.calls.is_empty());

        let mut second = Fake { calls: vec![], fail_at: None };
        let rows = sweep_with(&args(dir.path(), &["--resume"]), &backends, settings(), &mut second, &to_row).unwrap();
        let all = grid(&backends, &[4, 8], &[SweepMethod::FkMax, SweepMethod::Bon, SweepMethod::Plain], 2);
        assert_eq!(second.calls, all[5..].to_vec(), "only the unfinished points run, in grid order");
        assert_eq!(first.calls, all[..5].to_vec());
        assert_eq!(rows.len(), 12);
        let text = std::fs::read_to_string(dir.path().join("sweep.csv")).unwrap();
        assert_eq!(text.lines().count(), 13);
        assert!(dir.path().join("scaling.png").exists());

        // Resuming a finished sweep runs nothing and redraws the plot.
        let mut third = Fake { calls: vec![], fail_at: None };
        sweep_with(&args(dir.path(), &["--resume"]), &backends, settings(), &mut third, &to_row).unwrap();
        assert!(third.calls.is_empty());
    }

    #[test]
    fn a_torn_last_row_is_dropped_and_that_point_runs_again() {
        let dir = tempfile::tempdir().unwrap();
        let backends = vec!["cpu".to_string()];
        let mut first = Fake { calls: vec![], fail_at: Some(3) };
        let _ = sweep_with(&args(dir.path(), &[]), &backends, settings(), &mut first, &to_row);
        // Simulate a kill in the middle of writing the fourth row.
        let csv = dir.path().join("sweep.csv");
        let mut text = std::fs::read_to_string(&csv).unwrap();
        text.push_str("cpu,fake,bon,4,1,40,0.0");
        std::fs::write(&csv, &text).unwrap();
        let mut second = Fake { calls: vec![], fail_at: None };
        sweep_with(&args(dir.path(), &["--resume"]), &backends, settings(), &mut second, &to_row).unwrap();
        assert_eq!(second.calls.len(), 12 - 3);
        let rows: Vec<Row> =
            std::fs::read_to_string(&csv).unwrap().lines().skip(1).map(|l| Row::from_csv(l).unwrap()).collect();
        assert_eq!(rows.len(), 12);
        let unique: HashSet<Point> = rows.iter().map(|r| r.point.clone()).collect();
        assert_eq!(unique.len(), 12, "no point twice");
    }

    #[test]
    fn resuming_with_other_settings_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let backends = vec!["cpu".to_string()];
        let mut first = Fake { calls: vec![], fail_at: Some(2) };
        let _ = sweep_with(&args(dir.path(), &[]), &backends, settings(), &mut first, &to_row);
        let other = serde_json::json!({ "reward": "point([0,0])", "steps": 100 });
        let mut second = Fake { calls: vec![], fail_at: None };
        let err = sweep_with(&args(dir.path(), &["--resume"]), &backends, other, &mut second, &to_row).unwrap_err();
        assert!(err.to_string().contains("reward"), "{err}");
        assert!(second.calls.is_empty());
    }

    #[test]
    fn a_malformed_row_is_an_error_naming_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("sweep.csv");
        std::fs::write(&csv, header() + "cpu,x,fk-max,notanumber,0,1,1,1,1,1,1,1,1,1,1,,1,,0\n").unwrap();
        let err = SweepCsv::resume(&csv).err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("line 2") && msg.contains("particles"), "{msg}");
    }

    #[test]
    fn rows_round_trip_through_csv() {
        let p = Point { backend: "cuda".into(), method: SweepMethod::Zeroth, particles: 1 << 20, seed: 3 };
        let row = Row {
            point: p,
            device: "NVIDIA H100, \"80GB\"".into(),
            nfe: 123456789,
            wall_s: 1.25,
            nfe_per_s: 9.87654e10,
            particle_steps_per_s: 4.5e10,
            samples: 16,
            reward_mean: 12.5,
            reward_max: 999.0,
            reward_q10: -0.25,
            reward_q50: 3.0,
            reward_q90: 50.0,
            frac_within: None,
            on_square: 0.75,
            distinct_ancestors: Some(7),
            nonfinite: 1,
        };
        let line = row.to_csv();
        let back = Row::from_csv(line.trim_end_matches('\n')).unwrap();
        assert_eq!(back.point, row.point);
        assert_eq!(back.device, row.device);
        assert_eq!((back.frac_within, back.distinct_ancestors, back.reward_q10), (None, Some(7), -0.25));
        assert!((back.nfe_per_s - row.nfe_per_s).abs() / row.nfe_per_s < 1e-6);
    }

    #[test]
    fn statistics_of_a_point() {
        let p = Point { backend: "cpu".into(), method: SweepMethod::Plain, particles: 5, seed: 0 };
        // Rewards 0, 1, 2, 3 and one NaN; samples within 0.25 of (0, 0): the first two.
        let samples = vec![0.0, 0.0, 0.1, 0.0, 2.0, 0.0, 3.0, 0.0, f32::NAN, 0.0];
        let o = PointOutcome { device: "d".into(), samples, dim: 2, nfe: 50, particle_steps: 25, distinct_ancestors: None, wall_s: 0.5 };
        let reward = |x: &[f32]| if x[0] == 0.1 { 1.0 } else { x[0] };
        let row = row_from_outcome(&p, &o, &reward, Some(&[0.0, 0.0]), 0.25, Some(&|x: &[f32]| x[0] >= 2.0)).unwrap();
        assert_eq!(row.nonfinite, 1);
        assert_eq!(row.reward_mean, 1.5);
        assert_eq!(row.reward_max, 3.0);
        assert_eq!(row.reward_q50, 1.5);
        assert!((row.reward_q10 - 0.3).abs() < 1e-12);
        assert_eq!(row.frac_within, Some(0.4));
        assert_eq!(row.on_square, 0.4);
        assert_eq!((row.nfe_per_s, row.particle_steps_per_s), (100.0, 50.0));
    }

    fn model_file(dir: &Path) -> PathBuf {
        let path = dir.join("m.safetensors");
        crate::model::Mlp::init_uniform(2, 8, 2, crate::model::Activation::Elu, 3).save(&path, "net").unwrap();
        path
    }

    fn real_args(dir: &Path, extra: &[&str]) -> Args {
        #[derive(Parser)]
        #[command(args_override_self = true)]
        struct Wrap {
            #[command(flatten)]
            a: Args,
        }
        let (model, out) = (model_file(dir), dir.join("out"));
        let mut argv = vec!["sweep", "--backend", "cpu", "--steps", "20", "--particles", "4,8", "--seeds", "1"];
        let (m, o) = (model.to_str().unwrap().to_string(), out.to_str().unwrap().to_string());
        argv.extend_from_slice(&["--model", &m, "--out", &o]);
        argv.extend_from_slice(extra);
        Wrap::try_parse_from(argv).unwrap().a
    }

    /// Every method on the CPU backend, tiny: one row per point, the NFE each method reports
    /// (docs/search.md: best-of-N N·2·steps with the midpoint; zeroth-order N·C·2·steps), and the plot.
    #[test]
    fn a_tiny_real_sweep_writes_every_point_and_the_plot() {
        let dir = tempfile::tempdir().unwrap();
        let args = real_args(dir.path(), &["--cycles", "2"]);
        run(args).unwrap();
        let out = dir.path().join("out");
        let text = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
        let rows: Vec<Row> = text.lines().skip(1).map(|l| Row::from_csv(l).unwrap()).collect();
        assert_eq!(rows.len(), 2 * 7);
        for r in &rows {
            let n = r.point.particles;
            match r.point.method {
                SweepMethod::Bon => assert_eq!((r.nfe, r.samples), (n * 2 * 20, 1)),
                SweepMethod::Plain => assert_eq!((r.nfe, r.samples), (n * 2 * 20, n)),
                SweepMethod::Zeroth => assert_eq!(r.nfe, n * 2 * 2 * 20),
                SweepMethod::FkMax | SweepMethod::FkAdd | SweepMethod::FkDiff => {
                    assert_eq!(r.samples, n);
                    assert!(r.distinct_ancestors.is_some_and(|d| d >= 1 && d <= n));
                }
                SweepMethod::Paths => assert!(r.nfe > n * 2 * 20, "paths spends more than one pass"),
            }
            assert!(r.wall_s > 0.0 && r.nfe_per_s > 0.0 && r.on_square >= 0.0 && r.on_square <= 1.0);
        }
        assert!(out.join("scaling.png").exists() && out.join("sweep.json").exists());
    }

    /// Bad input fails before anything is written to --out.
    #[test]
    fn bad_input_writes_nothing() {
        let cases: [(&[&str], &str); 6] = [
            (&["--reward", "point([2,0.5]"], "--reward"),
            (&["--reward", "point([1,2,3])"], "D = 2"),
            (&["--delta-f", "0.3", "--delta-b", "0.2"], "Δb > Δf"),
            (&["--seeds", "0"], "--seeds"),
            (&["--lambda=-1"], "--lambda"),
            (&["--model", "/nonexistent/m.safetensors"], "not found"),
        ];
        for (extra, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            let err = format!("{:#}", run(real_args(dir.path(), extra)).unwrap_err());
            assert!(err.contains(want), "{extra:?}: `{err}` should mention `{want}`");
            assert!(!dir.path().join("out").exists(), "{extra:?} wrote into --out");
        }
    }

    /// `--backend cuda` without a usable device fails with the reason and the fix before
    /// anything is written, also when it follows an engine that works.
    #[test]
    fn cuda_without_a_device_fails_before_writing() {
        if let Ok(device) = crate::backend::cuda::availability() {
            eprintln!("skipped: {device} is usable here (tests/gpu.rs runs the sweep on it)");
            return;
        }
        for backends in ["cuda", "cpu,cuda"] {
            let dir = tempfile::tempdir().unwrap();
            let err = format!("{:#}", run(real_args(dir.path(), &["--backend", backends])).unwrap_err());
            assert!(err.contains("no usable CUDA device") && err.contains("--backend cpu"), "{backends}: {err}");
            assert!(!dir.path().join("out").exists(), "--backend {backends} wrote into --out");
        }
    }

    #[test]
    fn the_grid_runs_small_counts_first() {
        let g = grid(&["cpu".into()], &[8, 4096], &[SweepMethod::Bon, SweepMethod::FkMax], 2);
        assert_eq!(g.len(), 8);
        assert!(g[..4].iter().all(|p| p.particles == 8));
        assert_eq!((g[0].method, g[0].seed, g[1].seed), (SweepMethod::Bon, 0, 1));
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        #[derive(Parser, Debug)]
        struct Wrap {
            #[command(flatten)]
            a: Args,
        }
        let parse = |argv: &[&str]| Wrap::try_parse_from(std::iter::once("sweep").chain(argv.iter().copied()));
        let e = parse(&["--methods", "fk-max,best"]).unwrap_err().to_string();
        assert!(e.contains("best") && e.contains("fk-max"), "names the bad value and the choices: {e}");
        let e = parse(&["--particles", ""]).unwrap_err().to_string();
        assert!(e.contains("empty particle list"), "{e}");
        let e = parse(&["--particles", "2^10..1000"]).unwrap_err().to_string();
        assert!(e.contains("power of two"), "{e}");
        let e = parse(&["--methods", ""]).map(|w| validate(&w.a).unwrap_err().to_string());
        let e = match e {
            Ok(msg) => msg,
            Err(clap_err) => clap_err.to_string(),
        };
        assert!(e.contains("--methods") || e.contains("methods"), "{e}");
        let w = parse(&["--seeds", "0"]).unwrap();
        assert!(validate(&w.a).unwrap_err().to_string().contains("--seeds"));
        // The defaults are valid and cover every method.
        let w = parse(&[]).unwrap();
        validate(&w.a).unwrap();
        assert_eq!(w.a.methods, SweepMethod::ALL.to_vec());
    }

    #[test]
    fn rank_particles_takes_one_count_in_the_particles_grammar() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(args(dir.path(), &[]).rank_particles, None);
        assert_eq!(args(dir.path(), &["--rank-particles", "2^16"]).rank_particles, Some(65536));
        assert_eq!(args(dir.path(), &["--rank-particles", "1_000"]).config().rank_particles, Some(1000));
        assert!(parse_rank_particles("2^3..2^5").is_err() && parse_rank_particles("8,16").is_err());
    }
}
