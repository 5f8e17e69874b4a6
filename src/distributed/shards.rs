//! Sharded outputs (`--shard-outputs`, docs/distributed.md): for a population too large to
//! gather on rank 0, each rank writes its contiguous share of every per-particle array as its own
//! `.npy` file (`samples.r{rank}.npy`, …), and rank 0 writes `manifest.json`, which says how to
//! put them together, beside `summary.json` and `trace.csv`. The summary's statistics come from
//! collectives (`super::global_stats`), so no rank ever holds more than its share.
//!
//! Whole or not at all, as a single process writes (docs/outputs.md): every rank writes into one
//! temporary directory that rank 0 creates beside `--out` (so `--out` must lie on a file system
//! every rank reaches, as cluster scratch does); the ranks then agree on the outcome, and rank 0
//! renames the directory into place only when every rank succeeded, or removes it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::comm::Communicator;
use super::driver::{self, agree, agreed};
use super::engine::RankEngine;
use super::{fk, global_stats};
use crate::backend::{BackendInfo, Init};
use crate::methods::{trace_csv, FkConfig};
use crate::memory::{bytes_text, Available};
use crate::npy::NpyElement;
use crate::output::Staging;
use crate::run::{CommonConfig, Prepared, SteerConfig};
use crate::summary::{self, FinalStats};

/// `manifest.json`'s `format`.
pub const MANIFEST_FORMAT: &str = "flowsteer-shards";
/// `manifest.json`'s `version`; a reader refuses versions it does not know.
pub const MANIFEST_VERSION: u32 = 1;

/// One shard file of an array.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    pub file: String,
    pub rank: usize,
    /// The global particle indices `[start, end)` it holds, along the array's `axis`.
    pub range: [usize; 2],
    pub shape: Vec<usize>,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
}

/// One per-particle array of the run: the whole array is the shards concatenated along `axis`
/// in rank order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArrayEntry {
    /// NumPy's type string, e.g. `<f4`.
    pub dtype: String,
    /// The whole array's shape.
    pub shape: Vec<usize>,
    pub axis: usize,
    pub shards: Vec<ShardEntry>,
}

/// `manifest.json` of a sharded run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// All particles, N·G.
    pub particles: usize,
    /// Particles per group N, and groups G.
    pub n: usize,
    pub groups: usize,
    /// The data dimension D.
    pub dim: usize,
    /// The number of ranks P (one shard per rank and array).
    pub ranks: usize,
    /// `samples`, `log_weights` and, with `--ancestry`, `ancestry`.
    pub arrays: BTreeMap<String, ArrayEntry>,
}

/// This rank's part of one array, as the bytes of its `.npy` file.
pub struct Part {
    pub name: &'static str,
    pub dtype: &'static str,
    /// The whole array's shape.
    pub shape: Vec<usize>,
    pub axis: usize,
    local_shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Part {
    /// `data` in C order of `local_shape`, which is the whole `shape` cut along `axis`.
    pub fn new<T: NpyElement>(name: &'static str, shape: Vec<usize>, axis: usize, local_shape: Vec<usize>, data: &[T]) -> Part {
        Part { name, dtype: T::DESCR, bytes: crate::npy::to_bytes(&local_shape, data), shape, axis, local_shape }
    }

    fn file_name(&self, rank: usize) -> String {
        format!("{}.r{rank}.npy", self.name)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` and flushes it to the disk.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Writes a sharded run into `out`, on every rank (collective): this rank's `parts` (global
/// indices `range` of `total`), and on rank 0 `manifest.json` and the files `rank0_files` makes
/// (name, bytes). Returns the paths written, on rank 0 (empty elsewhere). Errors name the rank.
pub fn write(
    comm: &dyn Communicator,
    out: &Path,
    force: bool,
    range: &Range<usize>,
    manifest_head: Manifest,
    parts: &[Part],
    rank0_files: impl FnOnce() -> anyhow::Result<Vec<(&'static str, Vec<u8>)>>,
) -> anyhow::Result<Vec<PathBuf>> {
    let rank = comm.rank();
    // Rank 0 creates the temporary directory; everyone learns its path.
    let staging = if rank == 0 { Some(Staging::new(out)) } else { None };
    let created = match &staging {
        Some(Err(e)) => Err(anyhow::anyhow!("{e:#}")),
        _ => Ok(()),
    };
    agree(comm, created)?;
    let staging = staging.map(|s| s.expect("agreed above"));
    let mut path = staging.as_ref().map(|s| s.path.to_string_lossy().into_owned().into_bytes()).unwrap_or_default();
    comm.broadcast(0, &mut path);
    let dir = PathBuf::from(String::from_utf8(path).expect("rank 0 sent a path it made from a string"));

    // Every rank writes its shards, then all learn whether everyone succeeded.
    let written: anyhow::Result<Vec<String>> = parts
        .iter()
        .map(|p| {
            let file = dir.join(p.file_name(rank));
            write_file(&file, &p.bytes).with_context(|| {
                let hint = if dir.is_dir() { "" } else { " (--shard-outputs needs --out on a file system every rank reaches)" };
                format!("cannot write {}{hint}", out.join(p.file_name(rank)).display())
            })?;
            Ok(hex(&Sha256::digest(&p.bytes)))
        })
        .collect();
    // On a failure, rank 0's staging is dropped on return: the directory and every shard in it go.
    let hashes = agreed(comm, written)?;
    let all_hashes = comm.all_gather(hashes.join("\n").as_bytes());
    let ranges = comm.all_gather(&[range.start as u64, range.end as u64].map(u64::to_le_bytes).concat());
    let Some(staging) = staging else { return agree(comm, Ok(())).map(|()| Vec::new()) };

    let finished = (|| -> anyhow::Result<Vec<PathBuf>> {
        let mut manifest = manifest_head;
        for (k, p) in parts.iter().enumerate() {
            let shards = (0..comm.size())
                .map(|r| {
                    let b = &ranges[r];
                    let (start, end) = (u64::from_le_bytes(b[..8].try_into().unwrap()) as usize, u64::from_le_bytes(b[8..].try_into().unwrap()) as usize);
                    let mut shape = p.local_shape.clone();
                    shape[p.axis] = end - start;
                    let sha256 = String::from_utf8_lossy(&all_hashes[r]).split('\n').nth(k).unwrap_or_default().to_string();
                    ShardEntry { file: p.file_name(r), rank: r, range: [start, end], shape, sha256 }
                })
                .collect();
            manifest.arrays.insert(p.name.to_string(), ArrayEntry { dtype: p.dtype.to_string(), shape: p.shape.clone(), axis: p.axis, shards });
        }
        let mut files = rank0_files()?;
        let mut json = serde_json::to_vec_pretty(&manifest).context("serialising manifest.json")?;
        json.push(b'\n');
        files.push(("manifest.json", json));
        let mut paths: Vec<PathBuf> = Vec::new();
        for (name, bytes) in files {
            write_file(&staging.path.join(name), &bytes).with_context(|| format!("cannot write {}", out.join(name).display()))?;
            paths.push(out.join(name));
        }
        staging.commit(force).context("writing the output files")?;
        for r in 0..comm.size() {
            paths.extend(parts.iter().map(|p| out.join(p.file_name(r))));
        }
        Ok(paths)
    })();
    agreed(comm, finished)
}

/// Bytes rank 0 holds per particle to gather a steering run and stage its files
/// (docs/distributed.md, "Sharded outputs"): positions, rewards, log-weights and roots gathered
/// (4·D + 12), the `.npy` bytes of samples and log-weights staged (4·D + 4), the baseline's
/// positions and rewards (4·D + 4), and 8 per ancestry row (gathered, then staged).
pub fn gathered_bytes_per_particle(dim: usize, baseline: bool, ancestry_rows: usize) -> u64 {
    let d = dim as u64;
    (4 * d + 12) + (4 * d + 4) + if baseline { 4 * d + 4 } else { 0 } + 8 * ancestry_rows as u64
}

/// Refuses, before any work, a gathered run of `total` particles whose arrays would not fit in
/// rank 0's `available` memory, and names the way out (`--shard-outputs`). Passes where the
/// available memory is unknown.
pub fn check_gather_fits(total: usize, per_particle: u64, available: Option<&Available>) -> anyhow::Result<()> {
    let Some(a) = available else { return Ok(()) };
    let need = total as u128 * per_particle as u128;
    if need > a.bytes as u128 {
        anyhow::bail!(
            "gathering the {} particles on MPI rank 0 needs about {} of its memory, but {a} is available; pass \
             --shard-outputs so that each rank writes its own share (docs/distributed.md), or use fewer particles",
            crate::format::count(total as u64),
            bytes_text(need)
        );
    }
    Ok(())
}

/// `flowsteer steer --shard-outputs` once the run is prepared (from `driver::steer`, on every
/// rank): steer, compute the summary's statistics across ranks, write the shards and, on rank 0,
/// the manifest, summary and trace, then print the summary. `common` is this rank's (quiet
/// and without `out` on ranks other than 0).
pub fn steer(
    comm: &dyn Communicator,
    cfg: &SteerConfig,
    prep: Prepared,
    info: BackendInfo,
    fk_cfg: &FkConfig,
    init: Init<'_>,
    common: &CommonConfig,
    engine: &RankEngine,
) -> anyhow::Result<()> {
    let out = cfg.common.out.as_deref().context("--shard-outputs needs --out DIR")?;
    let (ended, report) = agreed(comm, fk::steer_kept(comm, &prep.spec, fk_cfg, init, engine))?;
    let fk::Ended { mut res, pop, rewards, ancestry, .. } = ended;
    let (layout, dim, spec) = (fk_cfg.layout, pop.dim, &prep.spec);
    let baseline = if cfg.baseline { Some(driver::baseline_share(comm, spec, layout, init, engine)?) } else { None };
    let positions = pop.rows();
    let w = global_stats::normalised_weights(comm, &pop.log_w, &pop.range, layout);
    let stats = FinalStats {
        reward: global_stats::reward_stats(comm, &rewards, w.as_deref()),
        placement: global_stats::placement(comm, spec, &positions, dim, w.as_deref()),
        baseline: baseline.map(|b| (global_stats::reward_stats(comm, &b.rewards, None), global_stats::placement(comm, spec, &b.positions, dim, None))),
        nonfinite_samples: global_stats::nonfinite_rows(comm, &positions, dim),
    };
    res.distinct_ancestors = global_stats::distinct_roots(comm, &pop.root, &pop.range, layout);

    let (total, len) = (layout.total(), pop.len());
    let mut parts = vec![
        Part::new("samples", vec![total, dim], 0, vec![len, dim], &positions),
        Part::new("log_weights", vec![total], 0, vec![len], &pop.log_w),
    ];
    if cfg.ancestry {
        parts.push(Part::new("ancestry", vec![ancestry.len(), total], 1, vec![ancestry.len(), len], &ancestry.concat()));
    }
    let head = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        particles: total,
        n: layout.n,
        groups: layout.groups,
        dim,
        ranks: comm.size(),
        arrays: BTreeMap::new(),
    };
    let mut config = driver::steer_config_json(cfg, &prep, layout, &report);
    config["shard_outputs"] = true.into();
    let summary = summary::summary_json_of(&prep, config, &info, &res, &stats);
    let written = write(comm, out, common.force, &pop.range, head, &parts, || {
        let mut json = serde_json::to_vec_pretty(&summary).context("serialising summary.json")?;
        json.push(b'\n');
        Ok(vec![("summary.json", json), ("trace.csv", trace_csv(&res.trace).into_bytes())])
    })?;
    if !common.quiet {
        eprintln!("{}", driver::comm_line(&report));
        print!("{}", summary::human_summary_of(spec, &res, &stats));
        for p in &written {
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::comm::ThreadWorld;

    fn head(ranks: usize) -> Manifest {
        Manifest { format: MANIFEST_FORMAT.into(), version: MANIFEST_VERSION, particles: 5, n: 5, groups: 1, dim: 2, ranks, arrays: BTreeMap::new() }
    }

    /// A gathered run that would not fit in rank 0's memory is refused, naming --shard-outputs.
    #[test]
    fn a_gathered_run_too_large_for_rank_0_names_shard_outputs() {
        let per = gathered_bytes_per_particle(2, true, 5);
        assert_eq!(per, 20 + 12 + 12 + 40);
        let gib = Available { bytes: 1 << 30, source: "MemAvailable" };
        check_gather_fits(1_000_000, per, Some(&gib)).unwrap();
        let e = check_gather_fits(100_000_000, per, Some(&gib)).unwrap_err().to_string();
        assert!(e.contains("needs about 7.8 GiB") && e.contains("1.0 GiB (MemAvailable) is available") && e.contains("--shard-outputs"), "{e}");
        check_gather_fits(100_000_000, per, None).unwrap();
    }

    /// Three ranks write their shards; the manifest lists each one with its range and hash, and
    /// the concatenated data is the whole array.
    #[test]
    fn every_rank_writes_its_shard_and_rank_0_the_manifest() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("run");
        let all: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let res = ThreadWorld::run(3, |c| {
            let range = super::super::share::share(5, 3, c.rank());
            let part = Part::new("samples", vec![5, 2], 0, vec![range.len(), 2], &all[2 * range.start..2 * range.end]);
            write(c, &out, false, &range, head(3), &[part], || Ok(vec![("summary.json", b"{}\n".to_vec())])).map_err(|e| e.to_string())
        });
        assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
        let m: Manifest = serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
        let a = &m.arrays["samples"];
        assert_eq!((a.dtype.as_str(), &a.shape, a.axis), ("<f4", &vec![5, 2], 0));
        let mut data = Vec::new();
        for (r, s) in a.shards.iter().enumerate() {
            let bytes = std::fs::read(out.join(&s.file)).unwrap();
            assert_eq!(s.sha256, hex(&Sha256::digest(&bytes)));
            assert_eq!((s.file.clone(), s.range), (format!("samples.r{r}.npy"), [[0, 1], [1, 3], [3, 5]][r]));
            data.extend(crate::npy::parse_f32(&bytes, &s.file).unwrap().data);
        }
        assert_eq!(data, all);
        let mut names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        assert_eq!(names, ["manifest.json", "samples.r0.npy", "samples.r1.npy", "samples.r2.npy", "summary.json"]);
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1, "no temporary directory left");
    }

    /// A rank whose write fails ends the write on
    /// every rank with its message, and nothing is left: no --out, no temporary directory.
    #[test]
    fn a_rank_that_cannot_write_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("run");
        let res = ThreadWorld::run(2, |c| {
            let range = super::super::share::share(5, 2, c.rank());
            // Rank 1's shard goes into a directory that does not exist.
            let name = if c.rank() == 1 { "no/such/dir/x" } else { "samples" };
            let part = Part::new(name, vec![5], 0, vec![range.len()], &vec![0f32; range.len()]);
            write(c, &out, false, &range, head(2), &[part], || Ok(Vec::new())).map_err(|e| e.to_string())
        });
        for r in &res {
            let e = r.as_ref().unwrap_err();
            assert!(e.contains("MPI rank 1: cannot write") && e.contains("no/such/dir/x.r1.npy"), "{e}");
        }
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "nothing left in {}", root.path().display());
    }
}
