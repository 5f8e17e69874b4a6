//! Files written whole or not at all (SPEC §9): a temporary name in the same directory, then a
//! rename, so a reader never sees a half-written file and a failed run leaves none behind.

use std::io::Write;
use std::path::Path;

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
}
