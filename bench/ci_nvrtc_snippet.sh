# --- CUDA backend (issue 4): NVRTC + ptxas from PyPI for tests/kernels_compile.rs ---
# Paste into .ci/run before `cargo test --release`. CUDA 13.0 to match the H100/H200 drivers
# (newer NVRTC output may not load there). The wheels hold libnvrtc.so.13 and
# libnvrtc-builtins.so.13.0 in nvidia/cu13/lib (NVRTC compiles cubins without an external ptxas;
# the nvcc wheel's ptxas is installed for manual checks). FLOWSTEER_NVRTC_LIB lets flowsteer
# preload both by full path; LD_LIBRARY_PATH covers everything else that dlopens NVRTC.
# With CI set, tests/kernels_compile.rs fails (instead of skipping) if NVRTC cannot be loaded.
python3 -m pip install --quiet --target "$PWD/.nvrtc" --no-deps \
    'nvidia-cuda-nvrtc==13.0.88' 'nvidia-cuda-nvcc==13.0.88'
export FLOWSTEER_NVRTC_LIB="$PWD/.nvrtc/nvidia/cu13/lib"
export LD_LIBRARY_PATH="$FLOWSTEER_NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$PWD/.nvrtc/nvidia/cu13/bin:$PATH"
export CI=${CI:-1}
