//! Files written whole or not at all (SPEC §9): a temporary name in the same directory, then a
//! rename, so a reader never sees a half-written file and a failed run leaves none behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile_in(dir, path)?;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    drop(tmp.1);
    std::fs::rename(&tmp.0, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp.0);
    })
}

fn tempfile_in(dir: &Path, target: &Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let stem = target.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    for attempt in 0..1000u32 {
        let name = dir.join(format!(".{stem}.tmp.{}.{attempt}", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&name) {
            Ok(f) => return Ok((name, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("could not create a temporary file"))
}

/// A set of output files staged in memory and written together at the end of a run, so that a
/// run that fails part-way writes nothing.
#[derive(Default)]
pub struct OutputSet {
    files: Vec<(std::path::PathBuf, Vec<u8>)>,
}

impl OutputSet {
    pub fn add(&mut self, path: impl Into<std::path::PathBuf>, bytes: Vec<u8>) {
        self.files.push((path.into(), bytes));
    }

    /// Writes every staged file atomically; returns the paths written.
    pub fn commit(self) -> std::io::Result<Vec<std::path::PathBuf>> {
        let mut written = Vec::new();
        for (path, bytes) in self.files {
            write_atomic(&path, &bytes)?;
            written.push(path);
        }
        Ok(written)
    }
}

/// Stages `DIR/samples.npy` (float32 `[N, D]`) and `DIR/summary.json` in `set` (SPEC §9).
/// Nothing touches the disk until `set.commit()`.
pub fn stage_samples_and_summary<S: serde::Serialize>(
    set: &mut OutputSet,
    dir: &Path,
    rows: &[f32],
    dim: usize,
    summary: &S,
) -> anyhow::Result<()> {
    anyhow::ensure!(dim > 0 && rows.len().is_multiple_of(dim), "samples hold {} values, not a multiple of D = {dim}", rows.len());
    set.add(dir.join("samples.npy"), crate::npy::to_bytes(&[rows.len() / dim, dim], rows));
    let mut json = serde_json::to_vec_pretty(summary).context("serialising summary.json")?;
    json.push(b'\n');
    set.add(dir.join("summary.json"), json);
    Ok(())
}

/// Checks, before any work, that `--out DIR` can be made (so a long run does not fail at the
/// end): it must be a directory or not exist, and its nearest existing ancestor a directory.
/// Nothing is created here; the directory appears when the outputs are committed.
pub fn prepare_out_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("--out {} is a file; pass a directory (it is created if missing)", dir.display());
    }
    let mut ancestor = dir.parent();
    while let Some(a) = ancestor {
        if a.as_os_str().is_empty() || a.is_dir() {
            break;
        }
        if a.exists() {
            bail!("--out {}: {} is a file, so the directory cannot be created; pick another path", dir.display(), a.display());
        }
        ancestor = a.parent();
    }
    Ok(())
}

/// Commits a staged output set, saying which files were written.
pub fn commit_outputs(set: OutputSet) -> anyhow::Result<Vec<PathBuf>> {
    commit_outputs_announcing(set, true)
}

/// Commits a staged output set; lists the files written on stderr only when `announce` is set.
pub fn commit_outputs_announcing(set: OutputSet, announce: bool) -> anyhow::Result<Vec<PathBuf>> {
    let written = set.commit().context("writing the output files")?;
    if announce {
        for p in &written {
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b.txt");
        super::write_atomic(&p, b"first").unwrap();
        super::write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left behind");
    }

    use super::*;

    #[test]
    fn outputs_are_staged_then_written_together() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let mut set = OutputSet::default();
        stage_samples_and_summary(&mut set, &out, &[1.0, 2.0, 3.0, 4.0], 2, &serde_json::json!({"a": 1})).unwrap();
        assert!(!out.join("samples.npy").exists(), "nothing on disk before commit");
        commit_outputs(set).unwrap();
        let arr = crate::npy::read_f32(&out.join("samples.npy")).unwrap();
        assert_eq!(arr.shape, vec![2, 2]);
        let j: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(j["a"], 1);
    }
}
