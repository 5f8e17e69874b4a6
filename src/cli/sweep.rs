//! `flowsteer sweep`: a grid of backends × particle counts × methods × seeds, one run per point,
//! the inference-time scaling curves at the end (issue 5, item 2).
//!
//! `DIR/sweep.csv` grows by one flushed row per finished point, so a sweep stopped half-way keeps
//! what it finished and `--resume` runs only the rest. `DIR/sweep.json` holds the settings every
//! point shares (reward, model, sampler, λ, ...): resuming with other settings would mix two
//! experiments in one table, so it is refused. `DIR/scaling.png` is drawn from the whole table.
//!
//! The loop ([`run_grid`]) only sees a [`PointRunner`]: the real one runs the methods of
//! `crate::methods`; tests drive the loop with a fake one.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};

use super::common;
use super::particles::ParticleList;
use crate::backend::cuda::AnyBackend;
use crate::backend::{Backend, BackendChoice, Init, Layout, RunSpec};
use crate::methods::{self, BonConfig, FkConfig, PathsConfig, ScheduleSpec, ZerothConfig};
use crate::model::Mlp;
use crate::plot_scaling::{write_scaling_png, ScalingPoint};
use crate::potential::{Potential, PotentialKind};
use crate::resample::ResampleScheme;
use crate::reward::{Reward, RewardOn};
use crate::sampler::{RenoiseForm, Sampler, SamplerKind, SdeForm};
use crate::stats::{fraction_where, within_radius, FiniteSorted};

/// The methods a sweep compares (SPEC §5–8): FK steering with three potentials, the three search
/// baselines and plain sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum SweepMethod {
    /// FK steering, `max` potential (SPEC §5).
    FkMax,
    /// FK steering, `add` potential.
    FkAdd,
    /// FK steering, `diff` potential.
    FkDiff,
    /// Best-of-N (SPEC §8).
    Bon,
    /// Zeroth-order noise search (SPEC §8).
    Zeroth,
    /// Search over paths (SPEC §8).
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
    /// The reward (SPEC §4), as for `steer`.
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
    /// The velocity model (safetensors, SPEC §1).
    #[arg(long, value_name = "PATH", default_value = "models/checkerboard.safetensors")]
    pub model: PathBuf,
    /// Time steps of every sampler.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Diffusion scale k of the SDE that FK steering and plain sampling use (SPEC §2).
    #[arg(long, default_value_t = 0.1)]
    pub k: f32,
    /// λ of the FK potentials.
    #[arg(long, default_value_t = 10.0)]
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
    /// Model evaluations spent (SPEC §8).
    pub nfe: u64,
    /// particles × steps integrated (for particle-steps/s).
    pub particle_steps: u64,
    /// Distinct t = 0 ancestors among the final particles (FK methods).
    pub distinct_ancestors: Option<u64>,
    /// Wall time of the method proper (model loading and output excluded).
    pub wall_s: f64,
}

/// Runs one point.
pub trait PointRunner {
    fn run(&mut self, point: &Point) -> anyhow::Result<PointOutcome>;
}

/// The columns of sweep.csv, in order.
pub const COLUMNS: [&str; 19] = [
    "backend",
    "device",
    "method",
    "particles",
    "seed",
    "nfe",
    "wall_s",
    "nfe_per_s",
    "particle_steps_per_s",
    "samples",
    "reward_mean",
    "reward_max",
    "reward_q10",
    "reward_q50",
    "reward_q90",
    "frac_within",
    "on_square",
    "distinct_ancestors",
    "nonfinite",
];

/// One finished point: the row of sweep.csv.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub point: Point,
    pub device: String,
    pub nfe: u64,
    pub wall_s: f64,
    pub nfe_per_s: f64,
    pub particle_steps_per_s: f64,
    pub samples: u64,
    pub reward_mean: f64,
    pub reward_max: f64,
    pub reward_q10: f64,
    pub reward_q50: f64,
    pub reward_q90: f64,
    /// None when the reward has no target point (a line, obstacles only).
    pub frac_within: Option<f64>,
    pub on_square: f64,
    pub distinct_ancestors: Option<u64>,
    /// Samples whose final reward was NaN or infinite (left out of the statistics).
    pub nonfinite: u64,
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map(|x| x.to_string()).unwrap_or_default()
}

impl Row {
    pub fn to_csv(&self) -> String {
        let p = &self.point;
        let fields = [
            csv_field(&p.backend),
            csv_field(&self.device),
            p.method.name().to_string(),
            p.particles.to_string(),
            p.seed.to_string(),
            self.nfe.to_string(),
            format!("{:.6}", self.wall_s),
            format!("{:.6e}", self.nfe_per_s),
            format!("{:.6e}", self.particle_steps_per_s),
            self.samples.to_string(),
            self.reward_mean.to_string(),
            self.reward_max.to_string(),
            self.reward_q10.to_string(),
            self.reward_q50.to_string(),
            self.reward_q90.to_string(),
            opt(&self.frac_within),
            self.on_square.to_string(),
            opt(&self.distinct_ancestors),
            self.nonfinite.to_string(),
        ];
        fields.join(",") + "\n"
    }

    /// Parses one line written by [`Row::to_csv`]; the error says which field is wrong.
    pub fn from_csv(line: &str) -> Result<Row, String> {
        let f = split_csv(line)?;
        if f.len() != COLUMNS.len() {
            return Err(format!("{} fields, expected {}", f.len(), COLUMNS.len()));
        }
        fn num<T: std::str::FromStr>(f: &[String], i: usize) -> Result<T, String> {
            f[i].parse().map_err(|_| format!("column {} holds `{}`", COLUMNS[i], f[i]))
        }
        fn opt_num<T: std::str::FromStr>(f: &[String], i: usize) -> Result<Option<T>, String> {
            if f[i].is_empty() {
                Ok(None)
            } else {
                num(f, i).map(Some)
            }
        }
        let method = SweepMethod::from_name(&f[2]).ok_or_else(|| format!("unknown method `{}`", f[2]))?;
        Ok(Row {
            point: Point { backend: f[0].clone(), method, particles: num(&f, 3)?, seed: num(&f, 4)? },
            device: f[1].clone(),
            nfe: num(&f, 5)?,
            wall_s: num(&f, 6)?,
            nfe_per_s: num(&f, 7)?,
            particle_steps_per_s: num(&f, 8)?,
            samples: num(&f, 9)?,
            reward_mean: num(&f, 10)?,
            reward_max: num(&f, 11)?,
            reward_q10: num(&f, 12)?,
            reward_q50: num(&f, 13)?,
            reward_q90: num(&f, 14)?,
            frac_within: opt_num(&f, 15)?,
            on_square: num(&f, 16)?,
            distinct_ancestors: opt_num(&f, 17)?,
            nonfinite: num(&f, 18)?,
        })
    }
}

/// Quotes a field when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cur.push(c),
            (false, '"') if cur.is_empty() => quoted = true,
            (false, ',') => out.push(std::mem::take(&mut cur)),
            (false, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    out.push(cur);
    Ok(out)
}

/// A test a sample passes or fails (on the checkerboard's squares).
pub type SampleTest<'a> = &'a dyn Fn(&[f32]) -> bool;

/// The statistics of one point's samples (SPEC §10: reward, fraction within the radius of the
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

/// sweep.csv: reading what a previous run finished, and appending one flushed row at a time.
pub struct SweepCsv {
    path: PathBuf,
    file: std::fs::File,
}

fn header() -> String {
    COLUMNS.join(",") + "\n"
}

impl SweepCsv {
    /// Starts a new sweep.csv; refuses to overwrite one (that is what `--resume` is for).
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        if path.exists() {
            bail!(
                "{} already exists: pass --resume to continue that sweep, or choose another --out",
                path.display()
            );
        }
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(header().as_bytes())?;
        file.flush()?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    /// Opens an existing sweep.csv for appending and returns its finished rows. A last line cut
    /// off mid-write (the process was killed) is dropped, and the file rewritten without it, so
    /// that point runs again; any other malformed line is an error naming it.
    pub fn resume(path: &Path) -> anyhow::Result<(Self, Vec<Row>)> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("--resume: cannot read {} (start without --resume to begin a new sweep)", path.display())
        })?;
        let Some((first, rest)) = text.split_once('\n') else {
            bail!("{} has no complete header line: delete it and start the sweep without --resume", path.display());
        };
        if first != COLUMNS.join(",") {
            bail!(
                "{} has other columns than this flowsteer writes (written by another version?): move it away and start \
                 the sweep without --resume",
                path.display()
            );
        }
        let complete = match rest.rfind('\n') {
            Some(i) => &rest[..=i],
            None => "",
        };
        let mut rows = Vec::new();
        for (i, line) in complete.lines().enumerate() {
            let row = Row::from_csv(line)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}; fix or delete that line, then resume", path.display(), i + 2))?;
            rows.push(row);
        }
        if complete.len() != rest.len() {
            // A torn last row: keep only the whole ones.
            crate::output::write_atomic(path, format!("{first}\n{complete}").as_bytes())?;
        }
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok((Self { path: path.to_path_buf(), file }, rows))
    }

    /// Appends one row and flushes it to the disk.
    pub fn append(&mut self, row: &Row) -> anyhow::Result<()> {
        self.file
            .write_all(row.to_csv().as_bytes())
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("cannot append to {}", self.path.display()))
    }
}

/// The settings every point of a sweep shares, kept in sweep.json; `--resume` requires them equal.
pub fn check_or_write_settings(path: &Path, settings: &serde_json::Value, resume: bool) -> anyhow::Result<()> {
    if resume && path.exists() {
        let old: serde_json::Value = serde_json::from_slice(&std::fs::read(path)?)
            .with_context(|| format!("{} is not valid JSON: delete it to resume with the current settings", path.display()))?;
        if let (Some(o), Some(n)) = (old.as_object(), settings.as_object()) {
            for (k, v) in n {
                if o.get(k) != Some(v) {
                    bail!(
                        "--resume: this sweep was started with {k} = {}, now {k} = {v}; resume with the same settings, \
                         or start a new sweep in another --out",
                        o.get(k).map(|x| x.to_string()).unwrap_or_else(|| "(unset)".into())
                    );
                }
            }
        }
        return Ok(());
    }
    crate::output::write_atomic(path, serde_json::to_string_pretty(settings)?.as_bytes())?;
    Ok(())
}

/// Progress shown while the grid runs: the bar advances by the particle count of each finished
/// point (a rough cost), so the estimate of time left weighs big points more than small ones.
pub trait Progress {
    fn start(&mut self, point: &Point, index: usize, total: usize);
    fn finish(&mut self, point: &Point, row: &Row);
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

/// An indicatif bar on stderr (hidden when stderr is not a terminal; then one line per point).
struct Bar {
    bar: indicatif::ProgressBar,
    todo_cost: u64,
    tty: bool,
}

impl Bar {
    fn new(points: &[&Point]) -> Self {
        let todo_cost: u64 = points.iter().map(|p| p.particles).sum();
        let bar = indicatif::ProgressBar::new(todo_cost.max(1));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}  ETA {eta}")
                .expect("valid template"),
        );
        let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
        Self { bar, todo_cost, tty }
    }
}

impl Progress for Bar {
    fn start(&mut self, point: &Point, index: usize, total: usize) {
        self.bar.set_message(format!("point {}/{total}: {point}", index + 1));
        if !self.tty {
            eprintln!("[{}/{total}] {point} ...", index + 1);
        }
    }
    fn finish(&mut self, point: &Point, row: &Row) {
        let line = format!(
            "{point}: reward mean {:.4} max {:.4}, NFE {}, {:.3} s, {:.3e} NFE/s",
            row.reward_mean, row.reward_max, row.nfe, row.wall_s, row.nfe_per_s
        );
        if self.tty {
            self.bar.println(line);
        } else {
            eprintln!("  {line}");
        }
        self.bar.inc(point.particles);
        if self.bar.position() >= self.todo_cost {
            self.bar.finish_and_clear();
        }
    }
}

/// Draws DIR/scaling.png from every row of the sweep.
pub fn plot_rows(rows: &[Row], path: &Path) -> anyhow::Result<()> {
    let pts: Vec<ScalingPoint> = rows
        .iter()
        .map(|r| ScalingPoint {
            method: r.point.method.name().to_string(),
            backend: r.point.backend.clone(),
            particles: r.point.particles,
            nfe: r.nfe as f64,
            reward_mean: r.reward_mean,
            nfe_per_s: r.nfe_per_s,
        })
        .collect();
    write_scaling_png(&pts, path)
}

/// Validates what clap cannot: empty lists and counts.
pub fn validate(args: &Args) -> anyhow::Result<()> {
    if args.methods.is_empty() {
        bail!("--methods is empty: give a comma list of fk-max, fk-add, fk-diff, bon, zeroth, paths, plain");
    }
    if let Some((i, m)) = args.methods.iter().enumerate().find(|(i, m)| args.methods[..*i].contains(m)) {
        bail!("--methods names {} twice (entry {}): each method runs once per point; drop the repeat", m.name(), i + 1);
    }
    if args.seeds == 0 {
        bail!("--seeds must be at least 1 (the sweep runs seeds 0..N)");
    }
    if args.backend.is_empty() {
        bail!("--backend is empty: give auto, cpu or cuda (comma-separated for several)");
    }
    if !(args.within.is_finite() && args.within > 0.0) {
        bail!("--within must be a finite radius > 0, got {}", args.within);
    }
    Ok(())
}

/// Runs the sweep with `runner`: the CSV, resume, progress and plot around [`run_grid`].
pub fn sweep_with(
    args: &Args,
    backends: &[String],
    settings: serde_json::Value,
    runner: &mut dyn PointRunner,
    to_row: &dyn Fn(&Point, &PointOutcome) -> anyhow::Result<Row>,
) -> anyhow::Result<Vec<Row>> {
    validate(args)?;
    let points = grid(backends, args.particles.counts(), &args.methods, args.seeds);
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create --out {}", args.out.display()))?;
    let csv_path = args.out.join("sweep.csv");
    let (mut csv, mut rows) = if args.resume && csv_path.exists() {
        check_or_write_settings(&args.out.join("sweep.json"), &settings, true)?;
        SweepCsv::resume(&csv_path)?
    } else {
        if csv_path.exists() {
            bail!("{} already exists: pass --resume to continue that sweep, or choose another --out", csv_path.display());
        }
        check_or_write_settings(&args.out.join("sweep.json"), &settings, false)?;
        (SweepCsv::create(&csv_path)?, Vec::new())
    };
    let done: HashSet<Point> = rows.iter().map(|r| r.point.clone()).collect();
    let skipped = points.iter().filter(|p| done.contains(*p)).count();
    if skipped > 0 {
        eprintln!("resume: {skipped} of {} points already in {}; running the other {}", points.len(), csv_path.display(), points.len() - skipped);
    }
    let todo: Vec<&Point> = points.iter().filter(|p| !done.contains(*p)).collect();
    let mut bar = Bar::new(&todo);
    let started = Instant::now();
    rows.extend(run_grid(&points, &done, runner, &mut csv, to_row, &mut bar)?);
    plot_rows(&rows, &args.out.join("scaling.png"))?;
    eprintln!(
        "sweep: {} points run in {:.1} s; {} rows in {}; plot {}",
        todo.len(),
        started.elapsed().as_secs_f64(),
        rows.len(),
        csv_path.display(),
        args.out.join("scaling.png").display()
    );
    Ok(rows)
}

/// What every point shares: the model, the reward and the methods' parameters.
struct Shared {
    model: Mlp,
    reward: Reward,
    steps: usize,
    k: f32,
    lambda: f32,
    cycles: usize,
    radius: f32,
    paths: PathsConfig,
}

impl Shared {
    /// The run specification of `method` at `seed`: FK steering and plain sampling on the SDE,
    /// the search methods on the midpoint ODE (SPEC §8 runs candidates "through the ODE").
    fn spec(&self, method: SweepMethod, seed: u64) -> RunSpec {
        let sde = Sampler { kind: SamplerKind::Sde, steps: self.steps, k: self.k, form: SdeForm::Marginal };
        let ode = Sampler { kind: SamplerKind::Midpoint, steps: self.steps, ..Sampler::default() };
        let (sampler, kind) = match method {
            SweepMethod::FkMax => (sde, PotentialKind::Max),
            SweepMethod::FkAdd => (sde, PotentialKind::Add),
            SweepMethod::FkDiff => (sde, PotentialKind::Diff),
            SweepMethod::Plain => (sde, PotentialKind::Bon),
            SweepMethod::Bon | SweepMethod::Zeroth | SweepMethod::Paths => (ode, PotentialKind::Bon),
        };
        RunSpec {
            model: self.model.clone(),
            sampler,
            reward: self.reward.clone(),
            reward_on: RewardOn::X1Hat,
            potential: Potential { kind, lambda: self.lambda, r_min: 0.0 },
            resample: ResampleScheme::Multinomial,
            adaptive_ess: None,
            seed,
        }
    }
}

/// One point on one backend. FK steering keeps its whole final population; best-of-N, zeroth-order
/// search and search over paths return their single best sample; plain sampling all N samples
/// (best-of-N with top-k = N).
fn run_point<B: Backend>(backend: &mut B, shared: &Shared, point: &Point) -> anyhow::Result<PointOutcome> {
    let n = usize::try_from(point.particles).context("particle count does not fit this machine's usize")?;
    let layout = Layout { n, groups: 1 };
    let spec = shared.spec(point.method, point.seed);
    let result = match point.method {
        SweepMethod::FkMax | SweepMethod::FkAdd | SweepMethod::FkDiff => {
            let cfg = FkConfig { layout, schedule: ScheduleSpec::default(), keep_ancestors: false, fused: true, snapshots: false, max_intervals: None };
            methods::steer(backend, &spec, &cfg, Init::Noise)?
        }
        SweepMethod::Bon => methods::best_of_n(backend, &spec, &BonConfig { layout, top_k: 1 }, Init::Noise)?,
        SweepMethod::Plain => methods::best_of_n(backend, &spec, &BonConfig { layout, top_k: n }, Init::Noise)?,
        SweepMethod::Zeroth => {
            let cfg = ZerothConfig { layout, cycles: shared.cycles, radius: shared.radius, pivot: None };
            methods::zeroth_order(backend, &spec, &cfg)?
        }
        SweepMethod::Paths => {
            let cfg = PathsConfig { layout, ..shared.paths.clone() };
            methods::search_over_paths(backend, &spec, &cfg, Init::Noise)?
        }
    };
    let fk = matches!(point.method, SweepMethod::FkMax | SweepMethod::FkAdd | SweepMethod::FkDiff);
    Ok(PointOutcome {
        device: backend.info().device,
        samples: result.positions,
        dim: result.dim,
        nfe: result.nfe,
        particle_steps: result.particle_steps,
        distinct_ancestors: if fk { result.distinct_ancestors.first().copied() } else { None },
        wall_s: result.times.total,
    })
}

/// The engines of a sweep by backend name (`cpu`, `cuda`), each started when its first point
/// runs, so that a resumed sweep with nothing left on an engine never starts it.
#[derive(Default)]
struct Engines(HashMap<String, AnyBackend>);

impl Engines {
    fn get(&mut self, name: &str) -> anyhow::Result<&mut AnyBackend> {
        match self.0.entry(name.to_string()) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let choice = [BackendChoice::Cpu, BackendChoice::Cuda, BackendChoice::CudaEmulated]
                    .into_iter()
                    .find(|&c| common::backend_name(c) == name)
                    .with_context(|| format!("the sweep has no `{name}` backend; use cpu, cuda or cuda-emulated"))?;
                Ok(e.insert(AnyBackend::resolve(choice)?))
            }
        }
    }
}

/// The real runner: the methods of `crate::methods` on the engines the sweep resolved.
struct MethodRunner {
    shared: Shared,
    engines: Engines,
    /// (engine, method) pairs already run once untimed.
    warmed: std::collections::HashSet<(String, SweepMethod)>,
}

/// Particles of the untimed warm-up run.
const WARM_UP_PARTICLES: u64 = 64;

impl PointRunner for MethodRunner {
    fn run(&mut self, point: &Point) -> anyhow::Result<PointOutcome> {
        let engine = self.engines.get(&point.backend)?;
        // The first point of each method on each engine would otherwise time the kernel
        // compilation (or cache load) of its modules, and the CPU's thread-pool start: one small
        // untimed run first keeps that out of the throughput curves.
        if self.warmed.insert((point.backend.clone(), point.method)) {
            let warm_up = Point { particles: point.particles.min(WARM_UP_PARTICLES), ..point.clone() };
            run_point(engine, &self.shared, &warm_up)?;
        }
        run_point(engine, &self.shared, point)
    }
}

/// The SHA-256 of the model file, so that `--resume` notices a retrained model.
fn file_sha256(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    validate(&args)?;
    let model = common::load_model(&args.model)?;
    // The largest point must fit before the first one runs (counted as on the CPU, whose
    // particles live in host memory): FK steering's state, or search over paths' M copies.
    let largest = args.particles.counts().iter().copied().max().unwrap_or(0);
    let mut needs = crate::memory::steer(crate::memory::Side::Host, model.dim, 6, false, false, false, 1);
    if args.methods.contains(&SweepMethod::Paths) {
        let paths = crate::memory::search_paths(crate::memory::Side::Host, model.dim, args.candidates, false, 1);
        if paths.per_item() > needs.per_item() {
            needs = paths;
        }
    }
    needs.what = format!("sweep ({})", needs.what);
    crate::memory::check(&needs, largest)?;
    let reward: Reward = args.reward.parse().map_err(|e: crate::reward_parse::RewardParseError| anyhow::anyhow!("{e}"))?;
    reward.checks_dim(model.dim).map_err(anyhow::Error::msg)?;
    if args.steps == 0 || args.steps >= 1 << 24 {
        bail!("--steps must be between 1 and 2^24 − 1, got {}", args.steps);
    }
    if !(args.k.is_finite() && args.k >= 0.0) {
        bail!("--k must be a finite number ≥ 0, got {}", args.k);
    }
    Potential { kind: PotentialKind::Max, lambda: args.lambda, r_min: 0.0 }.validate().map_err(anyhow::Error::msg)?;
    if args.cycles == 0 {
        bail!("--cycles must be at least 1");
    }
    if !(args.radius.is_finite() && args.radius >= 0.0) {
        bail!("--radius must be a finite number ≥ 0, got {}", args.radius);
    }
    let paths = PathsConfig {
        layout: Layout { n: 1, groups: 1 },
        candidates: args.candidates,
        t_start: args.paths_t_start,
        delta_f: args.delta_f,
        delta_b: args.delta_b,
        renoise: RenoiseForm::Exact,
        top_k: 1,
    };
    if args.methods.contains(&SweepMethod::Paths) {
        paths.grid(args.steps).map_err(|e| anyhow::anyhow!("search over paths: {e}"))?;
    }
    // Each requested engine resolved once, before anything is written (auto says why on stderr):
    // `cuda` without a usable device fails here with the reason. Duplicates dropped.
    let mut backends: Vec<String> = Vec::new();
    for &choice in &args.backend {
        let r = common::resolve_backend(choice, crate::backend::cuda::availability(), crate::backend::cuda::AUTO_SELECTS_CUDA)?;
        if choice == BackendChoice::Auto {
            eprintln!("backend: {} (auto: {})", common::backend_name(r.choice), r.reason);
        }
        let name = common::backend_name(r.choice).to_string();
        if !backends.contains(&name) {
            backends.push(name);
        }
    }
    let settings = serde_json::json!({
        "reward": args.reward,
        "model": args.model.display().to_string(),
        "model_sha256": file_sha256(&args.model)?,
        "steps": args.steps,
        "k": args.k,
        "lambda": args.lambda,
        "cycles": args.cycles,
        "radius": args.radius,
        "candidates": args.candidates,
        "paths_t_start": args.paths_t_start,
        "delta_f": args.delta_f,
        "delta_b": args.delta_b,
        "within": args.within,
    });
    let target = reward.target().map(|c| c.to_vec());
    let dim = model.dim;
    let shared = Shared { model, reward: reward.clone(), steps: args.steps, k: args.k, lambda: args.lambda, cycles: args.cycles, radius: args.radius, paths };
    let mut runner = MethodRunner { shared, engines: Engines::default(), warmed: Default::default() };
    let on_square = |x: &[f32]| crate::checkerboard::on_square(x[0], x[1]);
    let to_row = |p: &Point, o: &PointOutcome| {
        let sq: Option<SampleTest<'_>> = if dim == 2 { Some(&on_square) } else { None };
        row_from_outcome(p, o, &|x: &[f32]| reward.eval(x), target.as_deref(), args.within, sq)
    };
    sweep_with(&args, &backends, settings, &mut runner, &to_row)?;
    Ok(())
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
            let n = p.particles as usize;
            let spread = 1.0 / (n as f32).sqrt();
            let samples: Vec<f32> =
                (0..n).flat_map(|i| [2.0 + spread * (i as f32 / n as f32 - 0.5), 0.5 + p.seed as f32 * 0.01]).collect();
            Ok(PointOutcome {
                device: "fake, 1 thread".into(),
                samples,
                dim: 2,
                nfe: 10 * p.particles,
                particle_steps: 5 * p.particles,
                distinct_ancestors: (p.method == SweepMethod::FkMax).then_some(p.particles / 2),
                wall_s: 1e-3 * p.particles as f64,
            })
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
    /// (SPEC §8: best-of-N N·2·steps with the midpoint; zeroth-order N·C·2·steps), and the plot.
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
}
