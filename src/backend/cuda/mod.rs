//! The CUDA backend (issue 4): NVRTC-compiled kernels from `kernels/`, driven through cudarc.

/// Whether `--backend auto` may pick CUDA. Stays false until every kernel has run on a GPU
/// against the CPU reference (the project's rule for GPU code paths).
pub const AUTO_SELECTS_CUDA: bool = false;

/// Probes for a usable CUDA device without panicking: `Ok(device description)` or
/// `Err(reason)` that says what is missing and how to fix it.
pub fn availability() -> Result<String, String> {
    Err("the CUDA backend is not built yet (issue 4)".into())
}
