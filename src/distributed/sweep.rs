//! `flowsteer sweep` across MPI ranks (issue 10, item 4; docs/distributed.md).
//!
//! Rank 0 coordinates: it opens `DIR/sweep.csv` and `DIR/sweep.json` as a single process does
//! (`--resume` skips the finished points), hands each point still to run to the next free worker
//! (ranks 1..P−1, point-to-point messages), and appends every finished row to sweep.csv as it
//! arrives (one flushed row per point; the rows of different workers arrive in any order, which
//! `--resume` accepts), then draws scaling.png. With P = 1 rank 0 runs every point itself.
//!
//! A point with more particles than one rank holds (`--rank-particles MAX`, by default what the
//! smallest rank's free memory holds at the sweep's per-particle estimate) runs on every rank
//! together, between the one-rank points: rank 0 waits until every worker is free, tells them to
//! join, all ranks run one population across ranks (`super::fk`, `super::search`, the population
//! of plain sampling, `super::paths`), and rank 0 writes the row. Such points run on every rank's
//! engine of the point's backend (`super::engine`: the CPU, or the rank's own GPU); a one-rank
//! point on `cuda` runs on its worker's own GPU, local rank mod count, as the ranks of `steer` do.
//!
//! A worker whose point fails reports it; rank 0 hands out nothing more, waits for the points
//! still running (their rows are kept), and ends every rank with an error naming the rank and the
//! point (a [`Collective`] error: rank 0 prints it, every rank exits with a failure). sweep.csv
//! then holds only finished rows, so `--resume` continues from there.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use anyhow::anyhow;

use super::comm::{Bytes, Communicator, Reader};
use super::driver::{agree, agreed, check_same_configuration, Collective};
use super::engine::{rank_gpu, RankEngine};
use crate::backend::Init;
use crate::run::method::Method;
use crate::run::sweep::runner::backend_choice;
use crate::run::sweep::{self as sweep_run, grid, Bar, MethodRunner, Point, PointOutcome, PointRunner, Progress, Row, SweepConfig, SweepCsv};

/// Tag of the messages from rank 0 to a worker.
const TO_WORKER: i32 = 0x5357;
/// Tag of the messages from a worker to rank 0.
const TO_ROOT: i32 = 0x5358;

/// What rank 0 tells a worker.
#[derive(Clone, Debug, PartialEq)]
enum Order {
    /// Run point `i` of the grid alone and report its row.
    Run(u64),
    /// Run point `i` on every rank together (rank 0 writes the row).
    Join(u64),
    /// The sweep is over; with a message when it failed.
    Stop(Option<String>),
}

impl Order {
    fn encode(&self) -> Vec<u8> {
        let mut b = Bytes::default();
        match self {
            Order::Run(i) => b.u32(0).u64(*i),
            Order::Join(i) => b.u32(1).u64(*i),
            Order::Stop(None) => b.u32(2),
            Order::Stop(Some(m)) => {
                b.u32(3);
                b.0.extend_from_slice(m.as_bytes());
                &mut b
            }
        };
        b.0
    }

    fn decode(bytes: &[u8]) -> Order {
        let mut r = Reader::new(bytes);
        match r.u32() {
            0 => Order::Run(r.u64()),
            1 => Order::Join(r.u64()),
            2 => Order::Stop(None),
            _ => Order::Stop(Some(String::from_utf8_lossy(&bytes[4..]).into_owned())),
        }
    }
}

/// What a worker tells rank 0 about point `i`.
#[derive(Clone, Debug, PartialEq)]
enum Report {
    /// Its sweep.csv line.
    Row(u64, String),
    /// Why it failed.
    Failed(u64, String),
}

impl Report {
    fn encode(&self) -> Vec<u8> {
        let (kind, i, text) = match self {
            Report::Row(i, t) => (0, i, t),
            Report::Failed(i, t) => (1, i, t),
        };
        let mut b = Bytes::default();
        b.u32(kind).u64(*i);
        b.0.extend_from_slice(text.as_bytes());
        b.0
    }

    fn decode(bytes: &[u8]) -> Report {
        let mut r = Reader::new(bytes);
        let (kind, i) = (r.u32(), r.u64());
        let text = String::from_utf8_lossy(&bytes[12..]).into_owned();
        if kind == 0 {
            Report::Row(i, text)
        } else {
            Report::Failed(i, text)
        }
    }
}

/// What the ranks of a sweep run.
pub trait RankRunner {
    /// One point on this rank alone.
    fn run(&mut self, point: &Point) -> anyhow::Result<PointOutcome>;
    /// One point on every rank of `comm` together (a collective): the outcome on rank 0, None
    /// on the others.
    fn run_across(&mut self, comm: &dyn Communicator, point: &Point) -> anyhow::Result<Option<PointOutcome>>;
}

/// Runs the points of `points` not in rank 0's `table` on the ranks of `comm` (every rank calls
/// it; `table` is rank 0's open sweep.csv and its finished rows, None elsewhere). Points for
/// which `across` holds run on every rank together. Returns every row (the finished ones first)
/// on rank 0, None elsewhere. Errors are [`Collective`]: every rank returns one.
pub fn run_ranks(
    comm: &dyn Communicator,
    points: &[Point],
    across: &dyn Fn(&Point) -> bool,
    runner: &mut dyn RankRunner,
    to_row: &dyn Fn(&Point, &PointOutcome) -> anyhow::Result<Row>,
    table: Option<(SweepCsv, Vec<Row>)>,
    progress: &mut dyn Progress,
) -> anyhow::Result<Option<Vec<Row>>> {
    if comm.rank() != 0 {
        work(comm, points, runner, to_row).map(|()| None)
    } else {
        let (csv, rows) = table.expect("rank 0 holds the table");
        coordinate(comm, points, across, runner, to_row, csv, rows, progress).map(Some)
    }
}

/// A worker: runs what rank 0 orders until it says stop.
fn work(
    comm: &dyn Communicator,
    points: &[Point],
    runner: &mut dyn RankRunner,
    to_row: &dyn Fn(&Point, &PointOutcome) -> anyhow::Result<Row>,
) -> anyhow::Result<()> {
    loop {
        let (_, bytes) = comm.receive_any(TO_WORKER);
        match Order::decode(&bytes) {
            Order::Run(i) => {
                let point = &points[i as usize];
                let report = match runner.run(point).and_then(|o| to_row(point, &o)) {
                    Ok(row) => Report::Row(i, row.to_csv()),
                    Err(e) => Report::Failed(i, format!("{e:#}")),
                };
                comm.send(0, TO_ROOT, &report.encode());
            }
            Order::Join(i) => {
                join(comm, runner, &points[i as usize])?;
            }
            Order::Stop(None) => return Ok(()),
            Order::Stop(Some(m)) => return Err(Collective(m).into()),
        }
    }
}

/// Every rank's part of a point run across all ranks; the outcome on rank 0.
fn join(comm: &dyn Communicator, runner: &mut dyn RankRunner, point: &Point) -> anyhow::Result<Option<PointOutcome>> {
    let ran = runner.run_across(comm, point);
    let local = match &ran {
        Ok(_) => Ok(()),
        Err(e) => Err(anyhow!("{e:#}")),
    };
    if let Err(e) = agree(comm, local) {
        return Err(Collective(format!("sweep point {point} (run across all {} MPI ranks): {e}", comm.size())).into());
    }
    ran
}

/// Rank 0: hands the points out, writes the rows, then stops every worker.
#[allow(clippy::too_many_arguments)]
fn coordinate(
    comm: &dyn Communicator,
    points: &[Point],
    across: &dyn Fn(&Point) -> bool,
    runner: &mut dyn RankRunner,
    to_row: &dyn Fn(&Point, &PointOutcome) -> anyhow::Result<Row>,
    mut csv: SweepCsv,
    mut rows: Vec<Row>,
    progress: &mut dyn Progress,
) -> anyhow::Result<Vec<Row>> {
    let size = comm.size();
    let done: HashSet<Point> = rows.iter().map(|r| r.point.clone()).collect();
    let todo: Vec<usize> = (0..points.len()).filter(|&i| !done.contains(&points[i])).collect();
    // Per worker, the point it runs; the free workers, in the order they freed up.
    let mut busy: Vec<Option<usize>> = vec![None; size];
    let mut free: VecDeque<usize> = (1..size).collect();
    let mut failure: Option<String> = None;

    // One report from a worker: its row appended, or its failure.
    let take = |busy: &mut Vec<Option<usize>>, free: &mut VecDeque<usize>, rows: &mut Vec<Row>, csv: &mut SweepCsv, progress: &mut dyn Progress| -> Result<(), String> {
        let (w, bytes) = comm.receive_any(TO_ROOT);
        let report = Report::decode(&bytes);
        let i = match &report {
            Report::Row(i, _) | Report::Failed(i, _) => *i as usize,
        };
        busy[w] = None;
        free.push_back(w);
        let point = &points[i];
        match report {
            Report::Failed(_, msg) => Err(format!("MPI rank {w}: sweep point {point}: {msg}")),
            Report::Row(_, line) => {
                let row = Row::from_csv(line.trim_end()).map_err(|e| format!("MPI rank {w}: sweep point {point}: unreadable row ({e})"))?;
                csv.append(&row).map_err(|e| format!("{e:#}"))?;
                progress.finish(point, &row);
                rows.push(row);
                Ok(())
            }
        }
    };

    for (k, &i) in todo.iter().enumerate() {
        let point = &points[i];
        if across(point) {
            // Every worker free first, then all ranks run it together.
            while failure.is_none() && busy.iter().any(Option::is_some) {
                failure = take(&mut busy, &mut free, &mut rows, &mut csv, progress).err();
            }
            if failure.is_some() {
                break;
            }
            for w in 1..size {
                comm.send(w, TO_WORKER, &Order::Join(i as u64).encode());
            }
            progress.start(point, k, todo.len());
            // An error here is every rank's: nobody waits for orders any more.
            let outcome = join(comm, runner, point)?.expect("rank 0 gets the outcome");
            if let Err(e) = to_row(point, &outcome).and_then(|row| {
                csv.append(&row)?;
                progress.finish(point, &row);
                rows.push(row);
                Ok(())
            }) {
                failure = Some(format!("sweep point {point} (run across all {size} MPI ranks): {e:#}"));
                break;
            }
        } else if size == 1 {
            progress.start(point, k, todo.len());
            let result = runner.run(point).and_then(|o| to_row(point, &o)).and_then(|row| {
                csv.append(&row)?;
                progress.finish(point, &row);
                rows.push(row);
                Ok(())
            });
            if let Err(e) = result {
                failure = Some(format!("sweep point {point}: {e:#}"));
                break;
            }
        } else {
            while failure.is_none() && free.is_empty() {
                failure = take(&mut busy, &mut free, &mut rows, &mut csv, progress).err();
            }
            if failure.is_some() {
                break;
            }
            let w = free.pop_front().expect("a free worker");
            busy[w] = Some(i);
            progress.start(point, k, todo.len());
            comm.send(w, TO_WORKER, &Order::Run(i as u64).encode());
        }
    }
    // The points still running finish (their rows are kept), then every worker stops.
    while busy.iter().any(Option::is_some) {
        if let Err(e) = take(&mut busy, &mut free, &mut rows, &mut csv, progress) {
            if failure.is_none() {
                failure = Some(e);
            } else {
                eprintln!("also: {e}");
            }
        }
    }
    for w in 1..size {
        comm.send(w, TO_WORKER, &Order::Stop(failure.clone()).encode());
    }
    match failure {
        Some(m) => Err(Collective(m).into()),
        None => Ok(rows),
    }
}

/// The largest particle count one rank runs alone: `--rank-particles`, or what the smallest
/// free memory of all ranks holds at `needs` (a collective; unlimited where none can be read).
pub fn rank_particles(comm: &dyn Communicator, given: Option<u64>, needs: &crate::memory::Estimate) -> u64 {
    if let Some(n) = given {
        return n;
    }
    let mine = crate::memory::available().map_or(u64::MAX, |a| needs.largest_count(a.bytes));
    comm.all_gather(&mine.to_le_bytes()).iter().map(|b| Reader::new(b).u64()).min().unwrap_or(mine)
}

/// The real methods: one rank's points on its engines (`cuda` on the rank's own GPU), points
/// across ranks on the population of `super::population` (FK steering, best-of-N, zeroth-order
/// search, plain sampling, search over paths) with every rank's engine of the point's backend,
/// opened once per backend.
struct AcrossRanks {
    methods: MethodRunner,
    engines: HashMap<String, RankEngine>,
}

impl AcrossRanks {
    fn new(mut methods: MethodRunner, comm: &dyn Communicator) -> Self {
        methods.engines.gpu = rank_gpu(comm);
        AcrossRanks { methods, engines: HashMap::new() }
    }

    /// This rank's engine for `backend`, opened on every rank alike (a collective: a rank that
    /// cannot open it stops them all before the point's first collective).
    fn engine(&mut self, comm: &dyn Communicator, backend: &str) -> anyhow::Result<RankEngine> {
        if let Some(e) = self.engines.get(backend) {
            return Ok(e.clone());
        }
        let opened = backend_choice(backend).and_then(|choice| RankEngine::open(choice, comm));
        let engine = agreed(comm, opened)?;
        self.engines.insert(backend.to_string(), engine.clone());
        Ok(engine)
    }
}

impl RankRunner for AcrossRanks {
    fn run(&mut self, point: &Point) -> anyhow::Result<PointOutcome> {
        PointRunner::run(&mut self.methods, point)
    }

    fn run_across(&mut self, comm: &dyn Communicator, point: &Point) -> anyhow::Result<Option<PointOutcome>> {
        let engine = self.engine(comm, &point.backend)?;
        let shared = &self.methods.shared;
        let (spec, method) = (shared.spec(point.method, point.seed), shared.method(point)?);
        let (result, _report) = match &method {
            Method::Steer(cfg, _constant) => super::fk::steer(comm, &spec, cfg, Init::Noise, &engine)?,
            Method::BestOfN(b) => super::search::best_of_n(comm, &spec, b.layout, b.top_k, Init::Noise, &engine)?,
            Method::Zeroth(cfg) => super::search::zeroth_order(comm, &spec, cfg, &engine)?,
            Method::Paths(cfg) => super::paths::search_over_paths(comm, &spec, cfg, Init::Noise, &engine)?,
        };
        let Some(result) = result else { return Ok(None) };
        let device = format!("{} per rank, {} MPI ranks", engine.info().device, comm.size());
        Ok(Some(PointOutcome::from_result(result, point.method, device)))
    }
}

/// The table's side of a sweep on every rank of `comm`: rank 0 opens sweep.csv (a collective
/// check: every rank learns when it cannot), then [`run_ranks`], then rank 0 draws the plot.
/// Returns every row on rank 0, None elsewhere.
pub fn sweep_ranks(
    comm: &dyn Communicator,
    cfg: &SweepConfig,
    backends: &[String],
    settings: &serde_json::Value,
    across: &dyn Fn(&Point) -> bool,
    runner: &mut dyn RankRunner,
    to_row: &dyn Fn(&Point, &PointOutcome) -> anyhow::Result<Row>,
) -> anyhow::Result<Option<Vec<Row>>> {
    let points = grid(backends, &cfg.particles, &cfg.methods, cfg.seeds);
    // Rank 0 opens the table; every rank learns when it cannot.
    let table = agreed(comm, if comm.rank() == 0 { sweep_run::open_table(cfg, &points, settings).map(Some) } else { Ok(None) })?;
    let started = Instant::now();
    let done: HashSet<Point> = table.iter().flat_map(|(_, rows)| rows.iter().map(|r| r.point.clone())).collect();
    let todo: Vec<&Point> = points.iter().filter(|p| !done.contains(*p)).collect();
    let mut bar = Bar::new(&todo);
    let Some(rows) = run_ranks(comm, &points, across, runner, to_row, table, &mut bar)? else { return Ok(None) };
    let closed = sweep_run::close(cfg, &rows, todo.len(), started);
    closed.map_err(|e| Collective(format!("{e:#}")))?;
    Ok(Some(rows))
}

/// `flowsteer sweep` under mpirun/srun, on every rank of `comm`: every rank checks the settings
/// and loads the model (a failure on any rank stops all), rank 0 compares every rank's command
/// line and model, then [`sweep_ranks`] on the real methods. Rows on rank 0, None elsewhere.
pub fn sweep(comm: &dyn Communicator, cfg: &SweepConfig) -> anyhow::Result<Option<Vec<Row>>> {
    let prepared = sweep_run::prepare(cfg, false, comm.rank() == 0);
    let (ready, runner) = agreed(comm, prepared)?;
    check_same_configuration(comm, &std::env::args().collect::<Vec<_>>(), &cfg.model)?;
    let needs = sweep_run::memory_estimate(cfg, ready.dim);
    let limit = rank_particles(comm, cfg.rank_particles, &needs);
    let across = move |p: &Point| p.particles > limit;
    let points = grid(&ready.backends, &cfg.particles, &cfg.methods, cfg.seeds);
    // What one rank holds must fit it, before the first point runs: the largest point a rank runs
    // alone, and its share of the largest point run across ranks (as a single process checks its
    // largest point).
    let size = comm.size() as u64;
    let alone = points.iter().filter(|p| !across(p)).map(|p| p.particles).max().unwrap_or(0);
    let share = points.iter().filter(|p| across(p)).map(|p| p.particles.div_ceil(size)).max().unwrap_or(0);
    let fits = crate::memory::check(&needs, alone.max(share))
        .map_err(|e| anyhow!("{e:#} Across MPI ranks: lower --rank-particles (points above it run on every rank together), or run on more ranks."));
    agree(comm, fits)?;
    if comm.rank() == 0 && comm.size() > 1 {
        let big = points.iter().filter(|p| across(p)).count();
        eprintln!(
            "sweep across {} MPI ranks: rank 0 hands the points to ranks 1..{}; {big} of {} points have more than {} particles and run on every rank together",
            comm.size(),
            comm.size() - 1,
            points.len(),
            crate::format::count(limit)
        );
    }
    let to_row = |p: &Point, o: &PointOutcome| ready.row(p, o);
    let mut runner = AcrossRanks::new(runner, comm);
    sweep_ranks(comm, cfg, &ready.backends, &ready.settings, &across, &mut runner, &to_row)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Mutex;

    use anyhow::bail;

    use super::*;
    use crate::run::sweep::SweepMethod;
    use crate::backend::BackendChoice;
    use crate::distributed::comm::ThreadWorld;
    use crate::run::sweep::row_from_outcome;

    /// A method stand-in, as the single-process sweep's tests use: samples from the point alone,
    /// so any rank gives the same row. `fail` names a point that fails; `ran` records who ran what.
    struct Fake<'a> {
        rank: usize,
        fail: Option<Point>,
        ran: &'a Mutex<Vec<(usize, Point, bool)>>,
    }

    fn outcome(p: &Point) -> PointOutcome {
        PointOutcome::fake(p, "fake")
    }

    impl RankRunner for Fake<'_> {
        fn run(&mut self, p: &Point) -> anyhow::Result<PointOutcome> {
            self.ran.lock().unwrap().push((self.rank, p.clone(), false));
            if self.fail.as_ref() == Some(p) {
                bail!("simulated failure");
            }
            Ok(outcome(p))
        }
        fn run_across(&mut self, comm: &dyn Communicator, p: &Point) -> anyhow::Result<Option<PointOutcome>> {
            self.ran.lock().unwrap().push((self.rank, p.clone(), true));
            // A collective, as the real population's: every rank must be here.
            let all = comm.all_gather(&[comm.rank() as u8]);
            assert_eq!(all.len(), comm.size());
            Ok((comm.rank() == 0).then(|| outcome(p)))
        }
    }

    fn to_row(p: &Point, o: &PointOutcome) -> anyhow::Result<Row> {
        let reward = |x: &[f32]| 1.0 / ((x[0] - 2.0).powi(2) + (x[1] - 0.5).powi(2) + 1e-3);
        row_from_outcome(p, o, &reward, Some(&[2.0, 0.5]), 0.25, Some(&|x: &[f32]| x[0] > 0.0))
    }

    fn config(dir: &Path, resume: bool) -> SweepConfig {
        SweepConfig {
            particles: vec![4, 8, 16],
            methods: vec![SweepMethod::FkMax, SweepMethod::Bon, SweepMethod::Plain],
            seeds: 2,
            reward: "point([2,0.5])".into(),
            out: dir.to_path_buf(),
            resume,
            backend: vec![BackendChoice::Cpu],
            model: "models/checkerboard.safetensors".into(),
            steps: 4,
            k: 0.1,
            lambda: 10.0,
            cycles: 2,
            radius: 0.5,
            candidates: 2,
            paths_t_start: 0.3,
            delta_f: 0.1,
            delta_b: 0.2,
            within: 0.25,
            rank_particles: None,
        }
    }

    fn settings() -> serde_json::Value {
        serde_json::json!({ "reward": "point([2,0.5])", "steps": 4 })
    }

    type Ran = Vec<(usize, Point, bool)>;

    /// The sweep on `p` thread ranks; points with more than `limit` particles run across ranks.
    fn sweep_on(p: usize, dir: &Path, resume: bool, limit: u64, fail: Option<Point>) -> (Vec<anyhow::Result<Option<Vec<Row>>>>, Ran) {
        let ran = Mutex::new(Vec::new());
        let cfg = config(dir, resume);
        let backends = vec!["cpu".to_string()];
        let out = ThreadWorld::run(p, |c| {
            let mut fake = Fake { rank: c.rank(), fail: fail.clone(), ran: &ran };
            let across = |pt: &Point| pt.particles > limit;
            sweep_ranks(c, &cfg, &backends, &settings(), &across, &mut fake, &to_row)
        });
        (out, ran.into_inner().unwrap())
    }

    /// sweep.csv's rows sorted, as text without the timing columns (wall_s, nfe_per_s,
    /// particle_steps_per_s) and, with `device: false`, the device.
    fn rows_of(dir: &Path, device: bool) -> Vec<String> {
        let text = std::fs::read_to_string(dir.join("sweep.csv")).unwrap();
        let mut rows: Vec<String> = text
            .lines()
            .skip(1)
            .map(|l| {
                let mut r = Row::from_csv(l).unwrap();
                (r.wall_s, r.nfe_per_s, r.particle_steps_per_s) = (0.0, 0.0, 0.0);
                if !device {
                    r.device.clear();
                }
                r.to_csv()
            })
            .collect();
        rows.sort();
        rows
    }

    fn table(dir: &Path) -> Vec<String> {
        rows_of(dir, true)
    }

    fn single_process(dir: &Path) -> Vec<String> {
        struct One;
        impl PointRunner for One {
            fn run(&mut self, p: &Point) -> anyhow::Result<PointOutcome> {
                Ok(outcome(p))
            }
        }
        sweep_run::sweep_with(&config(dir, false), &["cpu".to_string()], settings(), &mut One, &to_row).unwrap();
        table(dir)
    }

    #[test]
    fn orders_and_reports_round_trip() {
        for o in [Order::Run(7), Order::Join(1 << 40), Order::Stop(None), Order::Stop(Some("rank 2: nope".into()))] {
            assert_eq!(Order::decode(&o.encode()), o);
        }
        for r in [Report::Row(3, "cpu,x\n".into()), Report::Failed(u64::MAX, String::new())] {
            assert_eq!(Report::decode(&r.encode()), r);
        }
    }

    /// P = 1, 2, 3 ranks write the rows of one process (in any order), each point once; the
    /// points above the limit run on every rank together, the others on workers only.
    #[test]
    fn the_rows_do_not_depend_on_the_number_of_ranks() {
        let one = tempfile::tempdir().unwrap();
        let expected = single_process(one.path());
        assert_eq!(expected.len(), 18);
        for p in 1..=3 {
            for limit in [u64::MAX, 8] {
                let dir = tempfile::tempdir().unwrap();
                let (out, ran) = sweep_on(p, dir.path(), false, limit, None);
                let rows = out[0].as_ref().unwrap().as_ref().unwrap();
                assert_eq!(rows.len(), 18);
                assert!(out[1..].iter().all(|r| matches!(r, Ok(None))));
                assert_eq!(table(dir.path()), expected, "P = {p}, limit {limit}");
                assert!(dir.path().join("scaling.png").exists());
                let alone: Vec<_> = ran.iter().filter(|r| !r.2).collect();
                assert_eq!(alone.len(), if limit == 8 { 12 } else { 18 });
                assert!(alone.iter().all(|r| r.0 != 0 || p == 1), "rank 0 runs points alone only when it is the only rank");
                let together = ran.iter().filter(|r| r.2).count();
                assert_eq!(together, if limit == 8 { 6 * p } else { 0 }, "every rank joins each big point");
            }
        }
    }

    /// A sweep stopped by a failing point keeps its finished rows; resuming runs only the rest.
    #[test]
    fn a_failing_point_names_its_rank_and_resume_runs_the_rest() {
        for p in [1, 3] {
            let dir = tempfile::tempdir().unwrap();
            let bad = Point { backend: "cpu".into(), method: SweepMethod::Bon, particles: 8, seed: 1 };
            let (out, ran) = sweep_on(p, dir.path(), false, u64::MAX, Some(bad.clone()));
            let who = ran.iter().find(|r| r.1 == bad).unwrap().0;
            for (r, res) in out.iter().enumerate() {
                let e = res.as_ref().err().unwrap_or_else(|| panic!("P = {p}: rank {r} did not fail"));
                assert!(e.downcast_ref::<Collective>().is_some(), "{e}");
                let msg = e.to_string();
                assert!(msg.contains(&bad.to_string()) && msg.contains("simulated failure"), "{msg}");
                if p > 1 {
                    assert!(msg.contains(&format!("MPI rank {who}:")), "{msg}");
                }
            }
            assert!(!dir.path().join("scaling.png").exists());
            let finished = table(dir.path());
            assert!(finished.len() < 18 && !finished.is_empty());
            let runs_before = ran.len();
            assert_eq!(finished.len(), runs_before - 1, "every point that ran, but the failed one, has its row");

            let (out, ran) = sweep_on(p, dir.path(), true, 8, None);
            assert_eq!(out[0].as_ref().unwrap().as_ref().unwrap().len(), 18);
            let reran: HashSet<Point> = ran.iter().map(|r| r.1.clone()).collect();
            assert_eq!(reran.len(), 18 - finished.len(), "only the unfinished points run");
            let one = tempfile::tempdir().unwrap();
            assert_eq!(table(dir.path()), single_process(one.path()));
        }
    }

    /// An existing sweep.csv without --resume: every rank stops with rank 0's error.
    #[test]
    fn a_table_rank_0_cannot_open_stops_every_rank() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sweep.csv"), "x\n").unwrap();
        let (out, ran) = sweep_on(3, dir.path(), false, u64::MAX, None);
        assert!(ran.is_empty());
        for r in out {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("--resume"), "{e}");
        }
    }

    /// The real methods: a point across 2 thread ranks gives the row one process gives, on the
    /// CPU and on CUDA ranks (the host emulator of the kernels).
    #[test]
    fn real_methods_across_ranks_give_the_single_process_rows() {
        let mut cfg = config(Path::new("unused"), false);
        cfg.backend = vec![BackendChoice::Cpu, BackendChoice::CudaEmulated];
        cfg.particles = vec![24];
        cfg.methods = vec![SweepMethod::FkMax, SweepMethod::Bon, SweepMethod::Zeroth, SweepMethod::Paths, SweepMethod::Plain];
        cfg.seeds = 1;
        cfg.steps = 20;
        let one = tempfile::tempdir().unwrap();
        cfg.out = one.path().to_path_buf();
        sweep_run::sweep(&cfg).unwrap();
        let across = tempfile::tempdir().unwrap();
        cfg.out = across.path().to_path_buf();
        cfg.rank_particles = Some(8);
        let out = ThreadWorld::run(2, |c| sweep(c, &cfg).map(|r| r.map(|rows| rows.len())));
        assert_eq!(out[0].as_ref().unwrap(), &Some(10));
        assert_eq!(rows_of(across.path(), false), rows_of(one.path(), false));
        let text = std::fs::read_to_string(across.path().join("sweep.csv")).unwrap();
        assert!(text.contains("2 MPI ranks"), "the device column says the point ran across ranks:\n{text}");
    }
}
