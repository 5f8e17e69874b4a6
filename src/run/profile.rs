//! Profiling a run (`--profile N`, design: bench/PROFILING.md): a run cut to its first N
//! resampling intervals, quick to trace with Nsight, with NVTX ranges on (CUDA backend only;
//! NVTX is loaded at run time and optional) and no output files.

use crate::backend::cuda::{nvtx, AnyBackend};

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
