# >>> cuda: NVRTC for the kernel-compilation tests (issue 4) >>>
# Replaces the placeholder block of the same name in .ci/run (after PIP=(...) is defined).
# CUDA 13.0.x to match the H100/H200 drivers (newer NVRTC output may not load there). The wheels
# put libnvrtc.so.13 and libnvrtc-builtins.so.13.0 in nvidia/cu13/lib; NVRTC compiles cubins
# with its built-in ptxas (the nvcc wheel's ptxas is installed too, same version, for manual
# checks). FLOWSTEER_NVRTC_LIB makes flowsteer preload both libraries by full path;
# LD_LIBRARY_PATH covers anything else that dlopens NVRTC. Under CI=true (FLOWSTEER_CI=1)
# tests/kernels_compile.rs fails instead of skipping when NVRTC cannot be loaded.
NVRTC_DIR="$PWD/target/nvrtc"
if [ ! -e "$NVRTC_DIR/nvidia/cu13/lib/libnvrtc.so.13" ]; then
    log "installing NVRTC 13.0 from PyPI into $NVRTC_DIR"
    "${PIP[@]}" --no-deps --target "$NVRTC_DIR" 'nvidia-cuda-nvrtc==13.0.88' 'nvidia-cuda-nvcc==13.0.88'
fi
export FLOWSTEER_NVRTC_LIB="$NVRTC_DIR/nvidia/cu13/lib"
export LD_LIBRARY_PATH="$FLOWSTEER_NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# <<< cuda <<<
