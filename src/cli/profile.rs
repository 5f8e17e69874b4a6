//! `--profile [N]` on `steer` and `bench` (design: bench/PROFILING.md): a run cut to its first N
//! resampling intervals, quick to trace with Nsight, with NVTX ranges on (CUDA backend only; NVTX
//! is loaded at run time and optional) and no output files (a cut run's numbers are not results).

use crate::backend::cuda::{nvtx, AnyBackend};

/// Intervals run by a bare `--profile`.
pub const DEFAULT_INTERVALS: &str = "2";

/// Parses the value of `--profile`.
pub fn parse_intervals(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("--profile takes a number of intervals ≥ 1, got `{s}`; e.g. --profile 2 (or a bare --profile for {DEFAULT_INTERVALS})")),
    }
}

/// Turns profiling on for `backend`: NVTX ranges and plain launches (no graphs, whose ranges
/// would mark only the graph launch) on CUDA; on the CPU only the run is cut short. Says so on
/// stderr.
pub fn start(backend: &mut AnyBackend, intervals: usize) {
    match backend {
        AnyBackend::Cuda(c) => {
            c.use_graph = false;
            let ranges = if nvtx::enable() { "NVTX ranges on" } else { "NVTX library not found; ranges off" };
            eprintln!("--profile: running the first {intervals} resampling interval(s) only, plain launches, {ranges}; no output files are written");
        }
        AnyBackend::Cpu(_) => {
            eprintln!("--profile: running the first {intervals} resampling interval(s) only; NVTX ranges are GPU-only (the CPU backend has none); no output files are written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_intervals;

    #[test]
    fn intervals_are_at_least_one() {
        assert_eq!(parse_intervals("3"), Ok(3));
        assert_eq!(parse_intervals(super::DEFAULT_INTERVALS), Ok(2));
        for bad in ["0", "-1", "x", ""] {
            assert!(parse_intervals(bad).unwrap_err().contains("≥ 1"), "{bad}");
        }
    }
}
