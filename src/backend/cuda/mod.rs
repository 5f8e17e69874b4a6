//! The CUDA backend (issue 4): NVRTC-compiled kernels from `kernels/`, driven through cudarc.
