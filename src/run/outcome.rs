//! Outcome → report and outputs for `steer` and `search`: the human summary, `summary.json`
//! (docs/outputs.md) and the run's files, staged and written by one writer.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::prepare::Prepared;
use crate::backend::BackendInfo;
use crate::methods::RunResult;
use crate::output::OutputSet;
use crate::summary::{self, Baseline, Outputs};

/// What a steering or search run produced, with what is needed to report it.
pub struct Outcome {
    pub prepared: Prepared,
    /// The engine and device the run used.
    pub info: BackendInfo,
    pub result: RunResult,
    /// The unsteered run of the same noises (steer without `baseline: false`).
    pub baseline: Option<Baseline>,
    /// The command's own settings: `config.run` in summary.json.
    pub config: Value,
    /// Optional files (ancestry.npy, plot.png).
    pub files: Outputs,
    /// Where [`Outcome::report`] writes the files; None writes nothing.
    pub out: Option<PathBuf>,
    /// [`Outcome::report`] prints nothing but errors.
    pub quiet: bool,
    /// A profiled run (cut short): nothing to summarise or write.
    pub profiled: bool,
}

impl Outcome {
    /// The short text a person reads after the run.
    pub fn summary_text(&self) -> String {
        summary::human_summary(&self.prepared.spec, &self.result, self.baseline.as_ref())
    }

    /// `summary.json`.
    pub fn summary_json(&self) -> Value {
        summary::summary_json(&self.prepared, self.config.clone(), &self.info, &self.result, self.baseline.as_ref())
    }

    /// Every file of the run in `dir`, staged in memory (nothing touches the disk).
    pub fn stage(&self, dir: &Path) -> anyhow::Result<OutputSet> {
        summary::stage_outputs(dir, &self.prepared.spec, self.summary_json(), &self.result, self.files)
    }

    /// Writes every file of the run into `dir`, whole or not at all; lists them on stderr when
    /// `announce` is set. Returns the paths written.
    pub fn write(&self, dir: &Path, announce: bool) -> anyhow::Result<Vec<PathBuf>> {
        crate::output::commit_outputs_announcing(self.stage(dir)?, announce)
    }

    /// What the command line does with an outcome: print the summary (unless quiet) and write
    /// the files into `out` (when set).
    pub fn report(&self) -> anyhow::Result<()> {
        if self.profiled {
            return Ok(());
        }
        if !self.quiet {
            print!("{}", self.summary_text());
        }
        if let Some(dir) = &self.out {
            self.write(dir, !self.quiet)?;
        }
        Ok(())
    }
}
