//! Files written whole or not at all (docs/outputs.md, docs/outputs.md).
//!
//! A single file ([`write_atomic`]): a temporary name beside it, then a rename. A run's files
//! ([`OutputSet`]): every file is written into a fresh temporary directory beside the run's
//! directory, which is then renamed into place, so a reader sees all of a run or none of it, and a
//! run that fails part-way leaves nothing behind (the temporary directory, and any parent this
//! commit created, are removed on every failure path). Every I/O error names the file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// `path`'s directory, `.` for a bare file name.
fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// `path`'s last component, for temporary names beside it.
fn name_of(path: &Path) -> String {
    path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into())
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, then a rename. On failure
/// the temporary file, and any parent directory this call created, are removed again.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent_of(path);
    let created = create_parents(dir)?;
    let result = write_atomic_in(dir, path, bytes);
    if result.is_err() {
        remove_created(&created);
    }
    result
}

fn write_atomic_in(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let (tmp, mut file) = unique(dir, &format!(".{}.tmp", name_of(path)), |p| {
        std::fs::OpenOptions::new().write(true).create_new(true).open(p)
    })?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    written.and_then(|()| std::fs::rename(&tmp, path)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Tries `make` on `base.PID.0`, `base.PID.1`, ... in `dir` until one does not exist yet.
fn unique<T>(dir: &Path, base: &str, make: impl Fn(&Path) -> std::io::Result<T>) -> std::io::Result<(PathBuf, T)> {
    for attempt in 0..1000u32 {
        let name = dir.join(format!("{base}.{}.{attempt}", std::process::id()));
        match make(&name) {
            Ok(t) => return Ok((name, t)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("1000 temporary names are taken"))
}

/// Creates `dir` and its missing parents; returns those it created, outermost first, so that a
/// failed write can remove them again.
fn create_parents(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut d = Some(dir);
    while let Some(p) = d.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(p.to_path_buf());
        d = p.parent();
    }
    missing.reverse();
    for (i, p) in missing.iter().enumerate() {
        if let Err(e) = std::fs::create_dir(p) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                remove_created(&missing[..i]);
                return Err(e);
            }
        }
    }
    Ok(missing)
}

/// Removes directories [`create_parents`] made, innermost first, as long as they are empty.
fn remove_created(created: &[PathBuf]) {
    for p in created.iter().rev() {
        let _ = std::fs::remove_dir(p);
    }
}

/// How a file of a set is produced.
enum Content<'a> {
    Bytes(Vec<u8>),
    /// Written by a function given its path (a plot renderer that only writes to paths), so that
    /// even its scratch file lives in the temporary directory.
    Render(Box<dyn FnOnce(&Path) -> anyhow::Result<()> + 'a>),
}

/// The files of one run, staged in memory and written together at the end into one directory
/// (every path must lie in it), so that a run that fails part-way writes nothing.
#[derive(Default)]
pub struct OutputSet<'a> {
    files: Vec<(PathBuf, Content<'a>)>,
}

impl<'a> OutputSet<'a> {
    pub fn add(&mut self, path: impl Into<PathBuf>, bytes: Vec<u8>) {
        self.files.push((path.into(), Content::Bytes(bytes)));
    }

    /// A file that `render` writes to the path it is given (at commit time).
    pub fn add_rendered(&mut self, path: impl Into<PathBuf>, render: impl FnOnce(&Path) -> anyhow::Result<()> + 'a) {
        self.files.push((path.into(), Content::Render(Box::new(render))));
    }

    /// Writes every file into their directory, all or nothing; the directory must be missing or
    /// empty. Returns the paths written.
    pub fn commit(self) -> anyhow::Result<Vec<PathBuf>> {
        self.commit_replacing(false)
    }

    /// [`OutputSet::commit`]; with `replace`, a directory that holds files is replaced whole
    /// (its old files are gone afterwards, also those this run does not write).
    pub fn commit_replacing(self, replace: bool) -> anyhow::Result<Vec<PathBuf>> {
        let Some((first, _)) = self.files.first() else { return Ok(Vec::new()) };
        let dir = parent_of(first).to_path_buf();
        if let Some((p, _)) = self.files.iter().find(|(p, _)| parent_of(p) != dir) {
            bail!("output files must share one directory: {} is not in {}", p.display(), dir.display());
        }
        let staging = Staging::new(&dir)?;
        let written = self.write_into(&staging.path)?;
        staging.commit(replace)?;
        Ok(written)
    }

    /// Writes each file into `staging` under its own name; errors name the file's final path.
    fn write_into(self, staging: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        for (path, content) in self.files {
            let target = staging.join(path.file_name().with_context(|| format!("{} has no file name", path.display()))?);
            match content {
                Content::Bytes(bytes) => std::fs::File::create(&target)
                    .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()))
                    .with_context(|| format!("cannot write {}", path.display()))?,
                Content::Render(render) => render(&target).with_context(|| format!("cannot write {}", path.display()))?,
            }
            written.push(path);
        }
        Ok(written)
    }
}

/// A fresh temporary directory beside a run's directory `dir`, filled by one writer (an
/// [`OutputSet`]) or several (every MPI rank writing its shard, docs/distributed.md), then
/// renamed into place by [`Staging::commit`]. Dropped uncommitted (any failure), it is removed
/// with its files, and so are the parents of `dir` that [`Staging::new`] created.
pub struct Staging {
    /// Where the writers put their files.
    pub path: PathBuf,
    dir: PathBuf,
    created: Vec<PathBuf>,
    committed: bool,
}

impl Staging {
    pub fn new(dir: &Path) -> anyhow::Result<Staging> {
        let parent = parent_of(dir).to_path_buf();
        let created = create_parents(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let (path, ()) = unique(&parent, &format!(".{}.tmp", name_of(dir)), |p| std::fs::create_dir(p))
            .with_context(|| format!("cannot write {}: no temporary directory can be created in {}", dir.display(), parent.display()))
            .inspect_err(|_| remove_created(&created))?;
        Ok(Staging { path, dir: dir.to_path_buf(), created, committed: false })
    }

    /// Renames the finished directory to `dir` (see [`OutputSet::commit_replacing`] for `replace`).
    pub fn commit(mut self, replace: bool) -> anyhow::Result<()> {
        place(&self.path, &self.dir, replace)?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
            remove_created(&self.created);
        }
    }
}

/// Renames the finished `staging` directory to `dir`. A missing or empty `dir` is replaced in
/// one rename; a `dir` holding files only with `replace` (moved aside, then removed).
fn place(staging: &Path, dir: &Path, replace: bool) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("cannot write {}: it is a file, not a directory", dir.display());
    }
    if !(replace && dir.is_dir() && !is_empty_dir(dir)?) {
        return std::fs::rename(staging, dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::DirectoryNotEmpty => anyhow::anyhow!(
                "cannot write {}: it is not empty (another run wrote there meanwhile?); pass --force to replace it",
                dir.display()
            ),
            _ => anyhow::Error::new(e).context(format!("cannot move the finished files into {}", dir.display())),
        });
    }
    let parent = parent_of(dir);
    let (old, ()) = unique(parent, &format!(".{}.old", name_of(dir)), |p| {
        if p.exists() {
            Err(std::io::ErrorKind::AlreadyExists.into())
        } else {
            Ok(())
        }
    })?;
    std::fs::rename(dir, &old).with_context(|| format!("cannot move the old {} aside to replace it", dir.display()))?;
    if let Err(e) = std::fs::rename(staging, dir) {
        let _ = std::fs::rename(&old, dir);
        return Err(anyhow::Error::new(e).context(format!("cannot move the finished files into {}", dir.display())));
    }
    std::fs::remove_dir_all(&old).with_context(|| format!("wrote {}, but cannot remove its old files moved to {}", dir.display(), old.display()))
}

/// Whether `dir` holds no entries.
pub fn is_empty_dir(dir: &Path) -> anyhow::Result<bool> {
    Ok(std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?.next().is_none())
}

/// Stages `DIR/samples.npy` (float32 `[N, D]`) and `DIR/summary.json` in `set` (docs/outputs.md).
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
/// end): it must be a directory or not exist, empty unless `force` (which replaces it whole when
/// the run's files are written), and its nearest existing ancestor a directory. Nothing is
/// created here; the directory appears when the outputs are committed.
pub fn prepare_out_dir(dir: &Path, force: bool) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("--out {} is a file; pass a directory (it is created if missing)", dir.display());
    }
    if dir.is_dir() && force {
        // Replacing deletes the old directory: never the one the user stands in, or above it.
        let here = std::env::current_dir().and_then(|c| c.canonicalize());
        if let (Ok(here), Ok(target)) = (here, dir.canonicalize()) {
            if here.starts_with(&target) {
                bail!("--out {} holds the current directory; --force would delete it. Choose another --out", dir.display());
            }
        }
    }
    if dir.is_dir() && !force && !is_empty_dir(dir)? {
        bail!(
            "--out {} is not empty: a run writes into a directory of its own. Pass --force to replace it whole \
             (its old files are deleted), or choose another --out",
            dir.display()
        );
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

/// Commits a staged output set into a missing or empty directory, saying which files were
/// written.
pub fn commit_outputs(set: OutputSet) -> anyhow::Result<Vec<PathBuf>> {
    commit_outputs_announcing(set, false, true)
}

/// Commits a staged output set (replacing a non-empty directory whole when `replace`); lists
/// the files written on stderr only when `announce` is set.
pub fn commit_outputs_announcing(set: OutputSet, replace: bool, announce: bool) -> anyhow::Result<Vec<PathBuf>> {
    let written = set.commit_replacing(replace).context("writing the output files")?;
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

    /// Everything under `dir`, hidden temporaries included.
    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    /// A write that fails after other files were written (here a file name the file system
    /// refuses) leaves nothing: no run directory, no parent it created, no temporaries; the
    /// error names the file.
    #[test]
    fn a_run_that_fails_part_way_leaves_nothing_and_names_the_file() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("new/deeper/run");
        let long = "x".repeat(300);
        let mut set = OutputSet::default();
        set.add(out.join("samples.npy"), vec![1, 2, 3]);
        set.add(out.join(&long), vec![4]);
        let err = format!("{:#}", set.commit().unwrap_err());
        assert!(err.contains(&long), "{err}");
        assert!(entries(root.path()).is_empty(), "left behind: {:?}", entries(root.path()));
    }

    /// A file rendered at commit time (the plot) that fails half-way: same, and its scratch file
    /// lived in the run's temporary directory, so it is gone too.
    #[test]
    fn a_renderer_that_fails_half_way_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("run");
        let mut set = OutputSet::default();
        set.add(out.join("summary.json"), b"{}".to_vec());
        set.add_rendered(out.join("plot.png"), |path: &Path| {
            std::fs::write(path, b"half a png")?;
            anyhow::bail!("the renderer gave up")
        });
        let err = format!("{:#}", set.commit().unwrap_err());
        assert!(err.contains("plot.png") && err.contains("gave up"), "{err}");
        assert!(entries(root.path()).is_empty(), "left behind: {:?}", entries(root.path()));
    }

    /// A directory holding files is not written into, unless replaced whole.
    #[test]
    fn a_non_empty_directory_is_replaced_whole_or_refused() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("run");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("plot.png"), b"an older run").unwrap();
        assert!(prepare_out_dir(&out, false).unwrap_err().to_string().contains("--force"));
        prepare_out_dir(&out, true).unwrap();
        let set = |v: u8| {
            let mut s = OutputSet::default();
            s.add(out.join("samples.npy"), vec![v]);
            s
        };
        let err = format!("{:#}", set(1).commit().unwrap_err());
        assert!(err.contains("not empty") && err.contains("--force"), "{err}");
        assert_eq!(entries(&out), ["plot.png"], "the old run is untouched");
        assert_eq!(entries(root.path()), ["run"], "no temporaries");
        set(2).commit_replacing(true).unwrap();
        assert_eq!(entries(&out), ["samples.npy"], "replaced whole: the old plot is gone");
        assert_eq!(std::fs::read(out.join("samples.npy")).unwrap(), [2]);
        assert_eq!(entries(root.path()), ["run"], "no temporaries");
        // --force never replaces the current directory or one above it.
        for here in [".", ".."] {
            let err = prepare_out_dir(Path::new(here), true).unwrap_err().to_string();
            assert!(err.contains("current directory"), "{here}: {err}");
        }
        // An empty directory is written into without --force.
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        prepare_out_dir(&empty, false).unwrap();
        let mut s = OutputSet::default();
        s.add(empty.join("a"), vec![0]);
        s.commit().unwrap();
        assert_eq!(entries(&empty), ["a"]);
    }
}

