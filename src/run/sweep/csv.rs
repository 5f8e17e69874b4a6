//! `DIR/sweep.csv` and `DIR/sweep.json` of a sweep: one row per finished point, appended and
//! flushed at once so that a sweep stopped half-way keeps what it finished; reading them back
//! for `--resume`, which requires the settings every point shares to be unchanged.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::{Point, SweepMethod};

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

/// sweep.csv: reading what a previous run finished, and appending one flushed row at a time.
pub struct SweepCsv {
    path: PathBuf,
    file: std::fs::File,
}

/// The header line of sweep.csv.
pub fn header() -> String {
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

