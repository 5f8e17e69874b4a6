//! A sweep: a grid of backends × particle counts × methods × seeds, one run per point, the
//! inference-time scaling curves at the end (issue 5, item 2). [`sweep()`] is the loop over the
//! points; each point is a run of the run layer's methods ([`runner`]).
//!
//! `DIR/sweep.csv` grows by one flushed row per finished point, so a sweep stopped half-way keeps
//! what it finished and `resume` runs only the rest ([`csv`]). `DIR/sweep.json` holds the
//! settings every point shares (reward, model, sampler, λ, ...): resuming with other settings
//! would mix two experiments in one table, so it is refused. `DIR/scaling.png` is drawn from
//! the whole table ([`plot`]).
//!
//! The loop ([`run_grid`]) only sees a [`PointRunner`]: the real one runs the methods of
//! `crate::methods`; tests drive the loop with a fake one.

pub mod csv;
pub mod plot;
pub mod progress;
pub mod runner;

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};

use crate::backend::{BackendChoice, Layout};
use crate::methods::PathsConfig;
use crate::potential::{Potential, PotentialKind};
use crate::reward::Reward;
use crate::sampler::RenoiseForm;
use crate::stats::{fraction_where, within_radius, FiniteSorted};

pub use csv::{check_or_write_settings, header, Row, SweepCsv, COLUMNS};
pub use plot::plot_rows;
pub use progress::{Bar, Progress};
pub use runner::MethodRunner;
pub use runner::{Engines, Shared};

/// What a sweep runs: the command line's `sweep` options, or a caller's own.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// Particle counts, in run order.
    pub particles: Vec<u64>,
    pub methods: Vec<SweepMethod>,
    /// Seeds 0..seeds at every point.
    pub seeds: u64,
    /// The reward expression (docs/rewards.md).
    pub reward: String,
    /// Where sweep.csv, sweep.json and scaling.png go.
    pub out: PathBuf,
    /// Continue the sweep in `out`, skipping the points sweep.csv holds.
    pub resume: bool,
    pub backend: Vec<BackendChoice>,
    pub model: PathBuf,
    pub steps: usize,
    /// Diffusion scale of the SDE that FK steering and plain sampling use.
    pub k: f32,
    pub lambda: f32,
    /// Zeroth-order search: cycles and ball radius.
    pub cycles: usize,
    pub radius: f32,
    /// Search over paths: copies per state, start time, Δf, Δb.
    pub candidates: usize,
    pub paths_t_start: f64,
    pub delta_f: f64,
    pub delta_b: f64,
    /// Radius around the reward's target for the "fraction within" column.
    pub within: f32,
    /// Under MPI: the largest particle count one rank runs alone; bigger points run on every
    /// rank together (`crate::distributed::sweep`). None: what the rank's free memory holds.
    /// Unused by a single process.
    pub rank_particles: Option<u64>,
}

/// The methods a sweep compares (docs/steering.md, docs/resampling.md, docs/schedules.md, docs/search.md): FK steering with three potentials, the three search
/// baselines and plain sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum SweepMethod {
    /// FK steering, `max` potential (docs/steering.md).
    FkMax,
    /// FK steering, `add` potential.
    FkAdd,
    /// FK steering, `diff` potential.
    FkDiff,
    /// Best-of-N (docs/search.md).
    Bon,
    /// Zeroth-order noise search (docs/search.md).
    Zeroth,
    /// Search over paths (docs/search.md).
    Paths,
    /// Plain sampling, no steering: the baseline every curve starts from.
    Plain,
}

impl SweepMethod {
    pub const ALL: [SweepMethod; 7] = [
        SweepMethod::FkMax,
        SweepMethod::FkAdd,
        SweepMethod::FkDiff,
        SweepMethod::Bon,
        SweepMethod::Zeroth,
        SweepMethod::Paths,
        SweepMethod::Plain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SweepMethod::FkMax => "fk-max",
            SweepMethod::FkAdd => "fk-add",
            SweepMethod::FkDiff => "fk-diff",
            SweepMethod::Bon => "bon",
            SweepMethod::Zeroth => "zeroth",
            SweepMethod::Paths => "paths",
            SweepMethod::Plain => "plain",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }
}

impl fmt::Display for SweepMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One point of the grid.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Point {
    pub backend: String,
    pub method: SweepMethod,
    pub particles: u64,
    pub seed: u64,
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} N={} seed {} on {}", self.method, self.particles, self.seed, self.backend)
    }
}

/// The grid in run order: small particle counts first (every method gets early results), then
/// methods, then seeds.
pub fn grid(backends: &[String], particles: &[u64], methods: &[SweepMethod], seeds: u64) -> Vec<Point> {
    let mut out = Vec::new();
    for backend in backends {
        for &n in particles {
            for &method in methods {
                for seed in 0..seeds {
                    out.push(Point { backend: backend.clone(), method, particles: n, seed });
                }
            }
        }
    }
    out
}

/// What a method returns for one point.
#[derive(Clone, Debug, Default)]
pub struct PointOutcome {
    /// The device the point ran on, as reported by the backend.
    pub device: String,
    /// Final samples, `[rows, dim]` row-major: the population (FK, plain) or the kept candidates
    /// (search methods).
    pub samples: Vec<f32>,
    pub dim: usize,
    /// Model evaluations spent (docs/search.md).
    pub nfe: u64,
    /// particles × steps integrated (for particle-steps/s).
    pub particle_steps: u64,
    /// Distinct t = 0 ancestors among the final particles (FK methods).
    pub distinct_ancestors: Option<u64>,
    /// Wall time of the method proper (model loading and output excluded).
    pub wall_s: f64,
}

impl PointOutcome {
    /// A method's result for one point of `method` on `device`.
    pub fn from_result(result: crate::methods::RunResult, method: SweepMethod, device: String) -> PointOutcome {
        let fk = matches!(method, SweepMethod::FkMax | SweepMethod::FkAdd | SweepMethod::FkDiff);
        PointOutcome {
            device,
            samples: result.positions,
            dim: result.dim,
            nfe: result.nfe,
            particle_steps: result.particle_steps,
            distinct_ancestors: if fk { result.distinct_ancestors.first().copied() } else { None },
            wall_s: result.times.total,
        }
    }

    /// A stand-in outcome for tests of the loop: samples from the point alone, so any runner
    /// (and any rank) gives the same row.
    #[cfg(test)]
    pub fn fake(p: &Point, device: &str) -> PointOutcome {
        let n = p.particles as usize;
        let spread = 1.0 / (n as f32).sqrt();
        let samples: Vec<f32> = (0..n).flat_map(|i| [2.0 + spread * (i as f32 / n as f32 - 0.5), 0.5 + p.seed as f32 * 0.01]).collect();
        PointOutcome {
            device: device.into(),
            samples,
            dim: 2,
            nfe: 10 * p.particles,
            particle_steps: 5 * p.particles,
            distinct_ancestors: (p.method == SweepMethod::FkMax).then_some(p.particles / 2),
            wall_s: 1e-3 * p.particles as f64,
        }
    }
}

/// Runs one point.
pub trait PointRunner {
    fn run(&mut self, point: &Point) -> anyhow::Result<PointOutcome>;
}

/// A test a sample passes or fails (on the checkerboard's squares).
pub type SampleTest<'a> = &'a dyn Fn(&[f32]) -> bool;

/// The statistics of one point's samples (docs/quality.md: reward, fraction within the radius of the
/// target, on-square fraction).
pub fn row_from_outcome(
    point: &Point,
    o: &PointOutcome,
    reward: &dyn Fn(&[f32]) -> f32,
    target: Option<&[f32]>,
    within: f32,
    on_square: Option<SampleTest<'_>>,
) -> anyhow::Result<Row> {
    anyhow::ensure!(o.dim > 0 && !o.samples.is_empty() && o.samples.len().is_multiple_of(o.dim), "{point}: the method returned no samples");
    let n = o.samples.len() / o.dim;
    let r = FiniteSorted::new(o.samples.chunks_exact(o.dim).map(|x| reward(x) as f64));
    let fraction = |test: &dyn Fn(&[f32]) -> bool| fraction_where(&o.samples, o.dim, None, test);
    let wall = o.wall_s.max(1e-9);
    Ok(Row {
        point: point.clone(),
        device: o.device.clone(),
        nfe: o.nfe,
        wall_s: o.wall_s,
        nfe_per_s: o.nfe as f64 / wall,
        particle_steps_per_s: o.particle_steps as f64 / wall,
        samples: n as u64,
        reward_mean: r.mean(),
        reward_max: r.max(),
        reward_q10: r.quantile(0.1),
        reward_q50: r.quantile(0.5),
        reward_q90: r.quantile(0.9),
        frac_within: target.map(|c| fraction(&|x| within_radius(x, c, within as f64))),
        on_square: on_square.map_or(f64::NAN, fraction),
        distinct_ancestors: o.distinct_ancestors,
        nonfinite: r.nonfinite as u64,
    })
}

/// Runs every point of `points` not in `done`, appending each finished row to `csv` at once.
/// Returns the rows finished by this call.
pub fn run_grid(
    points: &[Point],
    done: &HashSet<Point>,
    runner: &mut dyn PointRunner,
    csv: &mut SweepCsv,
    to_row: &dyn Fn(&Point, &PointOutcome) -> anyhow::Result<Row>,
    progress: &mut dyn Progress,
) -> anyhow::Result<Vec<Row>> {
    let todo: Vec<&Point> = points.iter().filter(|p| !done.contains(*p)).collect();
    let mut rows = Vec::new();
    for (i, point) in todo.iter().enumerate() {
        progress.start(point, i, todo.len());
        let outcome = runner.run(point).with_context(|| format!("sweep point {point}"))?;
        let row = to_row(point, &outcome)?;
        csv.append(&row)?;
        progress.finish(point, &row);
        rows.push(row);
    }
    Ok(rows)
}

/// Validates what clap cannot: empty lists and counts.
pub fn validate(cfg: &SweepConfig) -> anyhow::Result<()> {
    if cfg.methods.is_empty() {
        bail!("--methods is empty: give a comma list of fk-max, fk-add, fk-diff, bon, zeroth, paths, plain");
    }
    if let Some((i, m)) = cfg.methods.iter().enumerate().find(|(i, m)| cfg.methods[..*i].contains(m)) {
        bail!("--methods names {} twice (entry {}): each method runs once per point; drop the repeat", m.name(), i + 1);
    }
    if cfg.seeds == 0 {
        bail!("--seeds must be at least 1 (the sweep runs seeds 0..N)");
    }
    if cfg.backend.is_empty() {
        bail!("--backend is empty: give auto, cpu or cuda (comma-separated for several)");
    }
    if !(cfg.within.is_finite() && cfg.within > 0.0) {
        bail!("--within must be a finite radius > 0, got {}", cfg.within);
    }
    Ok(())
}

/// Opens `DIR/sweep.csv` for a sweep as the command line asks: a new one (refusing to overwrite
/// one), or with `resume` the existing one, whose rows come back (sweep.json must hold the same
/// `settings`). Also writes sweep.json. Says on stderr how many of `points` are already done.
pub fn open_table(cfg: &SweepConfig, points: &[Point], settings: &serde_json::Value) -> anyhow::Result<(SweepCsv, Vec<Row>)> {
    std::fs::create_dir_all(&cfg.out).with_context(|| format!("cannot create --out {}", cfg.out.display()))?;
    let csv_path = cfg.out.join("sweep.csv");
    let (csv, rows) = if cfg.resume && csv_path.exists() {
        check_or_write_settings(&cfg.out.join("sweep.json"), settings, true)?;
        SweepCsv::resume(&csv_path)?
    } else {
        if csv_path.exists() {
            bail!("{} already exists: pass --resume to continue that sweep, or choose another --out", csv_path.display());
        }
        check_or_write_settings(&cfg.out.join("sweep.json"), settings, false)?;
        (SweepCsv::create(&csv_path)?, Vec::new())
    };
    let done: HashSet<&Point> = rows.iter().map(|r| &r.point).collect();
    let skipped = points.iter().filter(|p| done.contains(p)).count();
    if skipped > 0 {
        eprintln!("resume: {skipped} of {} points already in {}; running the other {}", points.len(), csv_path.display(), points.len() - skipped);
    }
    Ok((csv, rows))
}

/// The plot of the whole table and the closing line on stderr.
pub fn close(cfg: &SweepConfig, rows: &[Row], ran: usize, started: Instant) -> anyhow::Result<()> {
    plot_rows(rows, &cfg.out.join("scaling.png"))?;
    eprintln!(
        "sweep: {} points run in {:.1} s; {} rows in {}; plot {}",
        ran,
        started.elapsed().as_secs_f64(),
        rows.len(),
        cfg.out.join("sweep.csv").display(),
        cfg.out.join("scaling.png").display()
    );
    Ok(())
}

/// Runs the sweep with `runner`: the CSV, resume, progress and plot around [`run_grid`].
pub fn sweep_with(
    cfg: &SweepConfig,
    backends: &[String],
    settings: serde_json::Value,
    runner: &mut dyn PointRunner,
    to_row: &dyn Fn(&Point, &PointOutcome) -> anyhow::Result<Row>,
) -> anyhow::Result<Vec<Row>> {
    validate(cfg)?;
    let points = grid(backends, &cfg.particles, &cfg.methods, cfg.seeds);
    let (mut csv, mut rows) = open_table(cfg, &points, &settings)?;
    let done: HashSet<Point> = rows.iter().map(|r| r.point.clone()).collect();
    let todo: Vec<&Point> = points.iter().filter(|p| !done.contains(*p)).collect();
    let mut bar = Bar::new(&todo);
    let started = Instant::now();
    rows.extend(run_grid(&points, &done, runner, &mut csv, to_row, &mut bar)?);
    close(cfg, &rows, todo.len(), started)?;
    Ok(rows)
}

/// The memory one particle of the sweep's largest method needs (counted as on the CPU, whose
/// particles live in host memory): FK steering's state, or search over paths' M copies.
pub fn memory_estimate(cfg: &SweepConfig, dim: usize) -> crate::memory::Estimate {
    let mut needs = crate::memory::steer(crate::memory::Side::Host, dim, 6, false, false, false, 1);
    if cfg.methods.contains(&SweepMethod::Paths) {
        let paths = crate::memory::search_paths(crate::memory::Side::Host, dim, cfg.candidates, false, 1);
        if paths.per_item() > needs.per_item() {
            needs = paths;
        }
    }
    needs.what = format!("sweep ({})", needs.what);
    needs
}

/// A sweep checked and ready to run on the real methods ([`prepare`], which also returns the
/// runner).
pub struct Ready {
    /// The engines' names, each once, in the order given.
    pub backends: Vec<String>,
    /// What sweep.json holds.
    pub settings: serde_json::Value,
    pub dim: usize,
    reward: Reward,
    target: Option<Vec<f32>>,
    within: f32,
}

impl Ready {
    /// The row of a finished point (reward statistics, fraction within, on-square fraction).
    pub fn row(&self, p: &Point, o: &PointOutcome) -> anyhow::Result<Row> {
        let on_square = |x: &[f32]| crate::checkerboard::on_square(x[0], x[1]);
        let sq: Option<SampleTest<'_>> = if self.dim == 2 { Some(&on_square) } else { None };
        row_from_outcome(p, o, &|x: &[f32]| self.reward.eval(x), self.target.as_deref(), self.within, sq)
    }
}

/// Checks every setting of `cfg` and resolves the engines, before anything is written. With
/// `check_memory` the largest point must fit this process (a single-process sweep; across MPI
/// ranks the big points are shared, `crate::distributed::sweep`). `announce`: say on stderr
/// which engine `auto` chose.
pub fn prepare(cfg: &SweepConfig, check_memory: bool, announce: bool) -> anyhow::Result<(Ready, MethodRunner)> {
    validate(cfg)?;
    let model = crate::run::prepare::load_model(&cfg.model)?;
    if check_memory {
        // The largest point must fit before the first one runs.
        let largest = cfg.particles.iter().copied().max().unwrap_or(0);
        crate::memory::check(&memory_estimate(cfg, model.dim), largest)?;
    }
    let reward: Reward = cfg.reward.parse().map_err(|e: crate::reward_parse::RewardParseError| anyhow::anyhow!("{e}"))?;
    reward.checks_dim(model.dim).map_err(anyhow::Error::msg)?;
    if cfg.steps == 0 || cfg.steps >= 1 << 24 {
        bail!("--steps must be between 1 and 2^24 − 1, got {}", cfg.steps);
    }
    if !(cfg.k.is_finite() && cfg.k >= 0.0) {
        bail!("--k must be a finite number ≥ 0, got {}", cfg.k);
    }
    Potential { kind: PotentialKind::Max, lambda: cfg.lambda, r_min: 0.0, clamp_weights: None }.validate().map_err(anyhow::Error::msg)?;
    if cfg.cycles == 0 {
        bail!("--cycles must be at least 1");
    }
    if !(cfg.radius.is_finite() && cfg.radius >= 0.0) {
        bail!("--radius must be a finite number ≥ 0, got {}", cfg.radius);
    }
    let paths = PathsConfig {
        layout: Layout { n: 1, groups: 1 },
        candidates: cfg.candidates,
        t_start: cfg.paths_t_start,
        delta_f: cfg.delta_f,
        delta_b: cfg.delta_b,
        renoise: RenoiseForm::Exact,
        top_k: 1,
    };
    if cfg.methods.contains(&SweepMethod::Paths) {
        paths.grid(cfg.steps).map_err(|e| anyhow::anyhow!("search over paths: {e}"))?;
    }
    // Each requested engine resolved once, before anything is written (auto says why on stderr):
    // `cuda` without a usable device fails here with the reason. Duplicates dropped.
    let mut backends: Vec<String> = Vec::new();
    for &choice in &cfg.backend {
        let r = crate::run::prepare::resolve_backend(choice, crate::backend::cuda::availability(), crate::backend::cuda::AUTO_SELECTS_CUDA)?;
        if choice == BackendChoice::Auto && announce {
            eprintln!("backend: {} (auto: {})", crate::run::prepare::backend_name(r.choice), r.reason);
        }
        let name = crate::run::prepare::backend_name(r.choice).to_string();
        if !backends.contains(&name) {
            backends.push(name);
        }
    }
    let settings = serde_json::json!({
        "reward": cfg.reward,
        "model": cfg.model.display().to_string(),
        "model_sha256": crate::run::prepare::file_sha256(&cfg.model)?,
        "steps": cfg.steps,
        "k": cfg.k,
        "lambda": cfg.lambda,
        "cycles": cfg.cycles,
        "radius": cfg.radius,
        "candidates": cfg.candidates,
        "paths_t_start": cfg.paths_t_start,
        "delta_f": cfg.delta_f,
        "delta_b": cfg.delta_b,
        "within": cfg.within,
    });
    let target = reward.target().map(|c| c.to_vec());
    let dim = model.dim;
    let shared = Shared { model, reward: reward.clone(), steps: cfg.steps, k: cfg.k, lambda: cfg.lambda, cycles: cfg.cycles, radius: cfg.radius, paths };
    let runner = MethodRunner { shared, engines: Engines::default(), warmed: Default::default() };
    Ok((Ready { backends, settings, dim, reward, target, within: cfg.within }, runner))
}

/// Runs the sweep `cfg` describes on the real methods in this process: checks every setting,
/// resolves the engines, then loops over the points not yet in sweep.csv.
pub fn sweep(cfg: &SweepConfig) -> anyhow::Result<()> {
    let (ready, mut runner) = prepare(cfg, true, true)?;
    let to_row = |p: &Point, o: &PointOutcome| ready.row(p, o);
    sweep_with(cfg, &ready.backends, ready.settings.clone(), &mut runner, &to_row)?;
    Ok(())
}
