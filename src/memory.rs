//! The host memory a run needs, estimated before it allocates, and the refusal when it does not
//! fit (issue 13, item 1).
//!
//! Without this a huge `--particles` died with "memory allocation of … bytes failed" (SIGABRT)
//! or met the OOM killer half-way through a long run. Every command builds an [`Estimate`] from
//! the buffers it will hold — written out below as plain arithmetic, term by term, so that a
//! change in what a run allocates has one place to be reflected — and calls [`check`] with the
//! particle count before its first large allocation.
//!
//! An estimate is linear in the count `c` (particles N·G, candidates M·G, training batch):
//! `bytes(c) = fixed + c·(Σ resident + max transient)`. *Resident* buffers live for the whole run
//! (positions, potential state); *transient* ones exist in one phase at a time (the gather of a
//! resampling, the reward scratch, the final read-back with the output staging), so only the
//! largest counts. Available memory is `MemAvailable` of /proc/meminfo, or the cgroup's headroom
//! when that is lower (a container's limit is what the OOM killer enforces).
//!
//! The CUDA backend keeps the particles on the device and checks device memory itself
//! (`backend::cuda`); here it is charged only what it holds on the host: the read-back results,
//! the output staging, the baseline and the `--init` rows.

use std::fmt;

/// Bytes of one f32 / u32 / f64 / usize.
const F32: u64 = 4;
const U32: u64 = 4;
const F64: u64 = 8;
const USIZE: u64 = std::mem::size_of::<usize>() as u64;
/// A `Vec` header plus the allocator's bookkeeping, for buffers held as one `Vec` per particle.
const VEC_OVERHEAD: u64 = 24 + 16;

/// What the program needs whatever the count: code, model, thread stacks, the quality measure's
/// at most 100,000 + 100,000 points and their shuffles (docs/quality.md). Generous on purpose:
/// it only matters for small counts, where it decides nothing.
const FIXED_BYTES: u64 = 64 << 20;

/// Where the particles live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Particles in host memory (the CPU backend): every buffer counts.
    Host,
    /// Particles on a device (CUDA): only the host copies count.
    Device,
}

/// The bytes a run needs as a function of its count.
#[derive(Clone, Debug)]
pub struct Estimate {
    /// What is estimated, for the message: "steer on the CPU".
    pub what: String,
    /// The count's name in the message: "particles (N·G)", "--batch".
    pub count_name: &'static str,
    /// Count per unit of the option the user sets (G for N·G; M·G for search over paths), so
    /// that the largest value that fits is said in the user's terms.
    pub per_option: u64,
    /// The option the user sets: "--particles".
    pub option: &'static str,
    pub fixed: u64,
    /// Bytes per counted item for the whole run, by buffer.
    pub resident: Vec<(&'static str, u64)>,
    /// Bytes per counted item of each phase's own buffers; the largest counts.
    pub transient: Vec<(&'static str, u64)>,
}

impl Estimate {
    fn new(what: impl Into<String>, count_name: &'static str, option: &'static str, per_option: u64) -> Self {
        Self { what: what.into(), count_name, option, per_option: per_option.max(1), fixed: FIXED_BYTES, resident: Vec::new(), transient: Vec::new() }
    }

    fn resident(mut self, name: &'static str, bytes: u64) -> Self {
        self.resident.push((name, bytes));
        self
    }

    fn transient(mut self, name: &'static str, bytes: u64) -> Self {
        self.transient.push((name, bytes));
        self
    }

    /// Bytes per counted item: the resident buffers plus the largest phase.
    pub fn per_item(&self) -> u64 {
        let resident: u64 = self.resident.iter().map(|&(_, b)| b).sum();
        resident + self.transient.iter().map(|&(_, b)| b).max().unwrap_or(0)
    }

    /// Bytes needed for `count` items (u128: 2^40 particles × a kilobyte does not overflow).
    pub fn bytes(&self, count: u64) -> u128 {
        self.fixed as u128 + count as u128 * self.per_item() as u128
    }

    /// The largest count that fits in `available` bytes, rounded down to a multiple of
    /// `per_option` (0 when not even the fixed part fits).
    pub fn largest_count(&self, available: u64) -> u64 {
        let room = available.saturating_sub(self.fixed);
        let count = room / self.per_item().max(1);
        count - count % self.per_option
    }

    /// The buffers, largest first, for the message: "positions 512 GiB, gather 640 GiB".
    fn breakdown(&self, count: u64) -> String {
        let phase = self.transient.iter().max_by_key(|&&(_, b)| b);
        let mut parts: Vec<(&str, u64)> = self.resident.iter().chain(phase).copied().collect();
        parts.sort_by_key(|&(_, b)| std::cmp::Reverse(b));
        parts.iter().map(|&(name, b)| format!("{name} {}", bytes_text(count as u128 * b as u128))).collect::<Vec<_>>().join(", ")
    }
}

/// Steering on `side`: `dim`-dimensional particles, `points` resampling points, with the
/// optional `--ancestry` rows, the unsteered baseline and `--init` rows (docs/steering.md).
pub fn steer(side: Side, dim: usize, points: usize, ancestry: bool, baseline: bool, init: bool, groups: usize) -> Estimate {
    let d = dim as u64;
    let mut e = Estimate::new(format!("steer on the {}", side_name(side)), "particles (N·G)", "--particles", groups as u64);
    if side == Side::Host {
        e = e
            .resident("positions", d * F32)
            .resident("potential state", 2 * F64)
            .resident("log-weights and root ids", F64 + U32)
            // A resampling gathers into new buffers: positions, state, log-weights, roots, plus
            // the ancestor indices and their global source slots.
            .transient("resampling gather", d * F32 + 2 * F64 + F64 + U32 + U32 + USIZE)
            // Rewards on x̂1: velocities, x̂1 and the rewards.
            .transient("reward scratch", 2 * d * F32 + F32);
    }
    // The end of the run: positions, log-weights, rewards and roots read back, then staged as
    // samples.npy and log_weights.npy with the normalised weights of the summary.
    e = e.transient("results and output files", d * F32 + F64 + F32 + U32 + d * F32 + F64 + F64);
    if ancestry {
        // One u32 row per point, held during the run and concatenated for ancestry.npy.
        e = e.resident("ancestry", 2 * points as u64 * U32);
    }
    if baseline {
        e = e.resident("unsteered baseline", d * F32 + F32);
    }
    with_init(e, d, init)
}

/// Plain sampling (docs/samplers.md).
pub fn sample(side: Side, dim: usize, init: bool) -> Estimate {
    let d = dim as u64;
    let mut e = Estimate::new(format!("sample on the {}", side_name(side)), "particles", "--particles", 1);
    if side == Side::Host {
        e = e.resident("positions", d * F32);
    }
    e = e.transient("results and samples.npy", 2 * d * F32);
    with_init(e, d, init)
}

/// Best-of-N and zeroth-order search: `count` = N·G samples or M·G candidates (docs/search.md).
pub fn search_select(side: Side, dim: usize, init: bool, option: &'static str, groups: usize) -> Estimate {
    let d = dim as u64;
    let mut e = Estimate::new(format!("search on the {}", side_name(side)), "particles", option, groups as u64);
    if side == Side::Host {
        e = e
            .resident("positions", d * F32)
            .resident("potential state", 2 * F64)
            .resident("log-weights and root ids", F64 + U32)
            // Scores, the sort order (usize), the chosen indices, the gather of the kept ones.
            .transient("top-k selection", F32 + USIZE + U32 + USIZE + d * F32 + 2 * F64 + F64 + U32)
            .transient("reward scratch", 2 * d * F32 + F32);
    }
    e = e.transient("results and output files", 2 * (d * F32 + F64 + F32 + U32));
    with_init(e, d, init)
}

/// Search over paths: a beam of N·G states, each copied `copies` = M times per round; the count is
/// the beam N·G (docs/search.md).
pub fn search_paths(side: Side, dim: usize, copies: usize, init: bool, groups: usize) -> Estimate {
    let (d, m) = (dim as u64, copies.max(1) as u64);
    let mut e = Estimate::new(format!("search paths on the {}", side_name(side)), "beam states", "--particles", groups as u64);
    if side == Side::Host {
        e = e
            .resident("beam", d * F32 + 2 * F64 + F64 + U32)
            // The M copies of a round with their source slots, and their renoising noise (one
            // Vec per copy).
            .resident("copies", m * (d * F32 + 2 * F64 + F64 + U32 + USIZE))
            .transient("renoising noise", m * (d * F32 + VEC_OVERHEAD))
            .transient("scoring and top-N", m * (2 * d * F32 + F32 + USIZE + U32 + USIZE));
    }
    e = e.transient("results and output files", 2 * (d * F32 + F64 + F32 + U32));
    with_init(e, d, init)
}

/// `bench` of the hot loop: the FK state and its phases, no outputs.
pub fn bench(side: Side, dim: usize) -> Estimate {
    let mut e = steer(side, dim, 0, false, false, false, 1);
    e.what = format!("bench on the {}", side_name(side));
    e.transient.retain(|&(name, _)| name != "results and output files");
    e
}

/// `train` of a D-dimensional MLP with L hidden layers of width H: per batch row the checkerboard
/// draw, x1, x0 and t, the loss's per-row values, and the share of one gradient copy per
/// chunk of `crate::train::CHUNK` rows (the chunks' gradients are summed afterwards, so that the
/// result does not depend on the thread count).
pub fn train(dim: usize, hidden: usize, layers: usize) -> Estimate {
    let (d, h, l) = (dim as u64, hidden as u64, layers.max(1) as u64);
    let params = (d + 1) * h + h + (l - 1) * (h * h + h) + h * d + d;
    let chunk = crate::train::CHUNK as u64;
    Estimate::new("train", "batch rows", "--batch", 1)
        .resident("batch (data, noise, times)", 3 * d * F32 + F32)
        .resident("per-chunk gradients", (params * F32 + F64).div_ceil(chunk))
        .transient("loss terms", 2 * F64)
}

/// `--init` rows: the file's bytes (at most f64) and the f32 rows made from them.
fn with_init(e: Estimate, d: u64, init: bool) -> Estimate {
    if init {
        e.resident("--init rows", d * F64 + d * F32)
    } else {
        e
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Host => "CPU",
        Side::Device => "GPU (host copies)",
    }
}

/// Memory a run may use, and where the number comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Available {
    pub bytes: u64,
    pub source: &'static str,
}

impl fmt::Display for Available {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", bytes_text(self.bytes as u128), self.source)
    }
}

/// `MemAvailable` from the text of /proc/meminfo, in bytes.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut it = line.split_whitespace().skip(1);
    let value: u64 = it.next()?.parse().ok()?;
    match it.next() {
        Some("kB") | None => Some(value * 1024),
        _ => None,
    }
}

/// A cgroup's headroom `limit − usage` from the texts of its limit file (`memory.max` of v2,
/// `memory.limit_in_bytes` of v1) and usage file; None when unlimited ("max", or v1's
/// near-2^63 "no limit") or unreadable.
pub fn cgroup_headroom(limit: &str, usage: &str) -> Option<u64> {
    let limit: u64 = limit.trim().parse().ok()?;
    if limit >= 1 << 60 {
        return None;
    }
    let usage: u64 = usage.trim().parse().ok()?;
    Some(limit.saturating_sub(usage))
}

/// Available memory now: MemAvailable, or the cgroup's headroom when lower. None where neither
/// can be read (not Linux): then nothing is refused.
pub fn available() -> Option<Available> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let mut best: Option<Available> = read("/proc/meminfo").and_then(|t| parse_meminfo(&t)).map(|bytes| Available { bytes, source: "MemAvailable" });
    let own = read("/proc/self/cgroup").unwrap_or_default();
    let mut candidates: Vec<(String, String)> = Vec::new();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or("").trim_end_matches('/'));
        if controllers.is_empty() {
            candidates.push((format!("/sys/fs/cgroup{path}/memory.max"), format!("/sys/fs/cgroup{path}/memory.current")));
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates.push((format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"), format!("/sys/fs/cgroup/memory{path}/memory.usage_in_bytes")));
        }
    }
    // Inside a container the own path is often not mounted; the mount's root is the container's.
    candidates.push(("/sys/fs/cgroup/memory.max".into(), "/sys/fs/cgroup/memory.current".into()));
    candidates.push(("/sys/fs/cgroup/memory/memory.limit_in_bytes".into(), "/sys/fs/cgroup/memory/memory.usage_in_bytes".into()));
    for (limit, usage) in candidates {
        if let (Some(l), Some(u)) = (read(&limit), read(&usage)) {
            if let Some(bytes) = cgroup_headroom(&l, &u) {
                if best.as_ref().is_none_or(|b| bytes < b.bytes) {
                    best = Some(Available { bytes, source: "cgroup memory limit" });
                }
            }
        }
    }
    best
}

/// Refuses `count` when `estimate` says it needs more than `available`: the message gives the
/// bytes needed, the largest value of the option that fits, and the fix.
pub fn check_against(estimate: &Estimate, count: u64, available: &Available) -> anyhow::Result<()> {
    let need = estimate.bytes(count);
    if need <= available.bytes as u128 {
        return Ok(());
    }
    let largest = estimate.largest_count(available.bytes) / estimate.per_option;
    let fits = if largest == 0 {
        format!("not even {} = 1 fits", estimate.option)
    } else {
        format!("the largest {} that fits is {}", estimate.option, crate::format::count(largest))
    };
    anyhow::bail!(
        "{} with {} {} needs about {} of memory ({}), but {} is available: {fits}. \
         Lower {}, or run where more memory is free.",
        estimate.what,
        crate::format::count(count),
        estimate.count_name,
        bytes_text(need),
        estimate.breakdown(count),
        available,
        estimate.option
    )
}

/// [`check_against`] with the memory available now; passes where it cannot be read.
pub fn check(estimate: &Estimate, count: u64) -> anyhow::Result<()> {
    match available() {
        Some(a) => check_against(estimate, count, &a),
        None => Ok(()),
    }
}

/// `1.5 GiB`, `640 MiB`, `12 KiB`, `100 B`; `1.0 TiB` and up for impossible requests.
pub fn bytes_text(b: u128) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else if v < 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn avail(bytes: u64) -> Available {
        Available { bytes, source: "test" }
    }

    #[test]
    fn steer_on_the_cpu_is_the_sum_of_its_buffers() {
        // D = 2: resident 8 (positions) + 16 (f64 state) + 12 (f64 log-w, roots) = 36; transient
        // phases: gather 8+16+8+4+4+8 = 48, reward 16+4 = 20, results 8+8+4+4+8+8+8 = 48 → max 48.
        let e = steer(Side::Host, 2, 6, false, false, false, 1);
        assert_eq!(e.per_item(), 36 + 48);
        assert_eq!(e.bytes(1000), FIXED_BYTES as u128 + 84_000);
        // Ancestry (2 × 6 points × 4) and the baseline (8 + 4) are resident on top.
        let e = steer(Side::Host, 2, 6, true, true, false, 1);
        assert_eq!(e.per_item(), 36 + 48 + 12 + 48);
    }

    #[test]
    fn train_counts_the_gradient_copies() {
        // The default model has 8,706 parameters: (8,706·4 + 8)/256 = 137 bytes per row, on top
        // of 28 for the batch and 16 for the loss.
        assert_eq!(train(2, 64, 3).per_item(), 28 + 137 + 16);
    }

    #[test]
    fn the_gpu_is_charged_only_its_host_copies() {
        let host = steer(Side::Host, 2, 6, false, false, false, 1);
        let dev = steer(Side::Device, 2, 6, false, false, false, 1);
        assert_eq!(dev.per_item(), 48);
        assert!(dev.per_item() < host.per_item());
    }

    #[test]
    fn largest_count_fits_and_one_more_group_does_not() {
        for groups in [1usize, 3, 7] {
            let e = steer(Side::Host, 2, 6, true, true, true, groups);
            let a = 5 * GIB;
            let c = e.largest_count(a);
            assert_eq!(c % groups as u64, 0);
            assert!(e.bytes(c) <= a as u128, "{c} does not fit");
            assert!(e.bytes(c + groups as u64) > a as u128, "{} would fit too", c + groups as u64);
        }
        assert_eq!(sample(Side::Host, 2, false).largest_count(FIXED_BYTES - 1), 0);
    }

    #[test]
    fn refusal_names_bytes_largest_n_and_fix() {
        let e = steer(Side::Host, 2, 6, false, true, false, 1);
        let err = check_against(&e, 1 << 34, &avail(16 * GIB)).unwrap_err().to_string();
        let largest = e.largest_count(16 * GIB);
        assert!(err.contains("steer on the CPU with 17,179,869,184 particles (N·G) needs about 1.5 TiB"), "{err}");
        assert!(err.contains(&format!("the largest --particles that fits is {}", crate::format::count(largest))), "{err}");
        assert!(err.contains("16 GiB (test) is available") && err.contains("Lower --particles"), "{err}");
        assert!(err.contains("positions 128 GiB"), "{err}");
        // With groups the largest value is per group.
        let e3 = steer(Side::Host, 2, 6, false, true, false, 4);
        let err = check_against(&e3, 1 << 34, &avail(16 * GIB)).unwrap_err().to_string();
        assert!(err.contains(&format!("is {}", crate::format::count(e3.largest_count(16 * GIB) / 4))), "{err}");
        assert!(check_against(&e, 1 << 20, &avail(16 * GIB)).is_ok());
    }

    #[test]
    fn every_command_grows_with_its_count() {
        for e in [
            sample(Side::Host, 2, true),
            search_select(Side::Host, 2, false, "--candidates", 1),
            search_paths(Side::Host, 2, 4, false, 1),
            bench(Side::Host, 2),
            train(2, 64, 3),
        ] {
            assert!(e.per_item() >= 8, "{}: {} bytes per item", e.what, e.per_item());
            assert!(check_against(&e, 1 << 40, &avail(64 * GIB)).is_err(), "{}", e.what);
        }
        // Paths hold M copies of every beam state: more than best-of-N per state.
        assert!(search_paths(Side::Host, 2, 4, false, 1).per_item() > 4 * search_select(Side::Host, 2, false, "--particles", 1).per_item() / 2);
    }

    #[test]
    fn meminfo_and_cgroup_parsing() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   23402388 kB\n";
        assert_eq!(parse_meminfo(text), Some(23402388 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
        assert_eq!(cgroup_headroom("max\n", "100"), None);
        assert_eq!(cgroup_headroom("9223372036854771712\n", "8347414528\n"), None);
        assert_eq!(cgroup_headroom("8589934592\n", "1073741824\n"), Some(7 * GIB));
        assert_eq!(cgroup_headroom("100", "200"), Some(0));
    }

    #[test]
    fn available_reads_this_machine() {
        // Linux test machines have /proc/meminfo; the number must be positive and plausible.
        if cfg!(target_os = "linux") {
            let a = available().expect("MemAvailable readable on Linux");
            assert!(a.bytes > 0 && a.bytes < 1 << 50, "{a}");
        }
    }

    #[test]
    fn bytes_are_readable() {
        assert_eq!(bytes_text(100), "100 B");
        assert_eq!(bytes_text(1536), "1.5 KiB");
        assert_eq!(bytes_text(16 << 30), "16 GiB");
        assert_eq!(bytes_text(1 << 40), "1.0 TiB");
    }
}
