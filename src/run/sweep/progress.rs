//! Progress of a sweep on stderr: an indicatif bar on a terminal, one line per point otherwise.

use super::csv::Row;
use super::Point;

/// Progress shown while the grid runs: the bar advances by the particle count of each finished
/// point (a rough cost), so the estimate of time left weighs big points more than small ones.
pub trait Progress {
    fn start(&mut self, point: &Point, index: usize, total: usize);
    fn finish(&mut self, point: &Point, row: &Row);
}

/// An indicatif bar on stderr (hidden when stderr is not a terminal; then one line per point).
pub struct Bar {
    bar: indicatif::ProgressBar,
    todo_cost: u64,
    tty: bool,
}

impl Bar {
    pub fn new(points: &[&Point]) -> Self {
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
            "{point}: reward mean {} max {}, NFE {}, {:.3} s, {} NFE/s",
            crate::format::number(row.reward_mean),
            crate::format::number(row.reward_max),
            crate::format::count(row.nfe),
            row.wall_s,
            crate::format::number(row.nfe_per_s)
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

