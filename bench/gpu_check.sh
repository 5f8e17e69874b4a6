#!/usr/bin/env bash
# bench/gpu_check.sh — everything the CUDA backend must show on a GPU machine, in < 9 minutes.
#
# Runs in the repository root of the GPU machine (no Rust there) with .carry/ packed by
# scripts/device_pack.sh. Writes at most 8 logs to $OUT (default ./gpu_check_out):
#   00_summary.log    the table printed at the end
#   01_env.log        nvidia-smi, driver/CUDA/NVRTC/NVTX libraries found, glibc
#   02_gpu_tests.log  tests/gpu.rs: every kernel against the CPU backend (--test-threads=1)
#   03_info.log       flowsteer info --kernels (registers / shared / spills per kernel), --json
#   04_runs.log       small sample / steer / search runs with --backend cuda (graph and --no-graph)
#   05_sanitizer.log  compute-sanitizer memcheck, racecheck, initcheck, synccheck on small runs
#   06_bench.log      flowsteer bench --backend cuda (if the command exists)
#   07_compile.log    tests/kernels_compile.rs for sm_90 and sm_80 on this machine's NVRTC
# Command lines for the CLI runs can be overridden: GPU_CHECK_SAMPLE, GPU_CHECK_STEER,
# GPU_CHECK_SEARCH (arguments after the subcommand; MODEL and RUN are substituted).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-530}   # 8 min 50 s: the caller's limit is 9 minutes
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
BIN=$PWD/.carry/bin
FS=$BIN/flowsteer
export FLOWSTEER_CACHE_DIR=${FLOWSTEER_CACHE_DIR:-/tmp/flowsteer-kernel-cache}
export RUST_BACKTRACE=1
declare -a SUMMARY=()

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
# t LIMIT: a timeout no longer than what is left of the budget (minus 10 s for the summary).
t() { local l; l=$(( $(left) - 10 )); (( l < 1 )) && l=1; (( $1 < l )) && echo "$1" || echo "$l"; }
record() { SUMMARY+=("$(printf '%-34s %-6s %s' "$1" "$2" "$3")"); }

# run_step NAME LOG LIMIT CMD...: runs CMD with a timeout, tees into LOG, records the result.
run_step() {
    local name=$1 log=$2 limit=$3; shift 3
    if (( $(left) < 20 )); then record "$name" "SKIP" "out of time budget"; return 0; fi
    local lim; lim=$(t "$limit")
    echo "=== $name ($(date -u +%H:%M:%S), limit ${lim}s): $*" | tee -a "$log"
    local s=$(date +%s)
    timeout --kill-after=5 "$lim" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    local dt=$(( $(date +%s) - s ))
    echo "=== $name: exit $rc after ${dt}s" | tee -a "$log"
    if (( rc == 0 )); then record "$name" "ok" "${dt}s"
    elif (( rc == 124 || rc == 137 )); then record "$name" "TIME" "killed after ${dt}s"
    else record "$name" "FAIL" "exit $rc after ${dt}s"; fi
    return 0
}

# ---- libraries: NVRTC 13 from the toolkit, else from pip wheels (nvidia/cu13/lib) ----
LIBS=""
for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib; do
    [ -e "$d/libnvrtc.so.13" ] && LIBS="$LIBS:$d"
done
for d in $(python3 -c 'import site, glob; print(" ".join(g for p in site.getsitepackages() for g in glob.glob(p + "/nvidia/*/lib")))' 2>/dev/null); do
    ls "$d"/libnvrtc.so* >/dev/null 2>&1 && LIBS="$LIBS:$d"
    ls "$d"/libnvtx3interop.so* "$d"/libnvToolsExt.so* >/dev/null 2>&1 && LIBS="$LIBS:$d"
done
for d in /usr/local/cuda*/lib64 /opt/nvidia/nsight-systems/*/target-linux-x64; do
    ls "$d"/libnvtx3interop.so* "$d"/libnvToolsExt.so* >/dev/null 2>&1 && LIBS="$LIBS:$d"
done
export LD_LIBRARY_PATH="${LIBS#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="/usr/local/cuda/bin:$PATH"

ENV=$OUT/01_env.log
{
    date -u; echo "budget ${BUDGET}s"
    nvidia-smi || echo "nvidia-smi failed"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    for l in libcuda.so.1 libnvrtc.so.13 libnvtx3interop.so.1 libnvToolsExt.so.1; do
        printf '%-22s ' "$l"; (ldconfig -p | grep -m1 "$l" || (IFS=:; for d in $LD_LIBRARY_PATH; do ls "$d/$l" 2>/dev/null; done) | head -1) || echo "not found"; echo
    done
    ldd --version | head -1
    which compute-sanitizer ncu nsys nvcc 2>&1
    ls -la .carry/bin .carry/models
} 2>&1 | tee "$ENV"
MODEL=$(ls .carry/models/*.safetensors 2>/dev/null | head -1)
record "environment" "ok" "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"

# ---- 1. CPU ↔ GPU comparisons ----
run_step "gpu tests (tests/gpu.rs)" "$OUT/02_gpu_tests.log" 240 "$BIN/gpu" --nocapture --test-threads=1
while read -r l; do SUMMARY+=("    $l"); done < <(grep -E "^test .* (ok|FAILED)$|SKIPPED" "$OUT/02_gpu_tests.log")
TESTS=$(grep -cE "^test .* ok$" "$OUT/02_gpu_tests.log" || true); FAILS=$(grep -cE "^test .* FAILED$" "$OUT/02_gpu_tests.log" || true)
record "  gpu tests passed / failed" "-" "${TESTS} / ${FAILS}"

# ---- 2. kernel resource report ----
run_step "info --kernels" "$OUT/03_info.log" 90 "$FS" info --kernels --model "$MODEL"
run_step "info --kernels --json" "$OUT/03_info.log" 30 "$FS" info --kernels --json

# ---- 3. small CLI runs on the GPU ----
RUNS=$OUT/04_runs.log
RUN=/tmp/flowsteer-gpu-runs; rm -rf "$RUN"; mkdir -p "$RUN"
sub() { echo "$1" | sed "s#MODEL#$MODEL#g; s#RUN#$RUN#g"; }
SAMPLE_ARGS=$(sub "${GPU_CHECK_SAMPLE:---model MODEL -n 65536 --steps 50 --out RUN/sample}")
STEER_ARGS=$(sub "${GPU_CHECK_STEER:---model MODEL -n 65536 --steps 50 --reward point(1.5,1.5) --out RUN/steer}")
SEARCH_ARGS=$(sub "${GPU_CHECK_SEARCH:---model MODEL -n 4096 --steps 50 --method best-of-n --reward point(1.5,1.5) --out RUN/search}")
for cmd in sample steer search; do
    case $cmd in sample) A=$SAMPLE_ARGS;; steer) A=$STEER_ARGS;; search) A=$SEARCH_ARGS;; esac
    # shellcheck disable=SC2086
    run_step "$cmd --backend cuda" "$RUNS" 45 "$FS" $cmd --backend cuda $A
    if [[ "${SUMMARY[-1]}" == *FAIL* ]]; then "$FS" $cmd --help >> "$RUNS" 2>&1; fi
    # shellcheck disable=SC2086
    run_step "$cmd --backend cuda --no-graph" "$RUNS" 45 "$FS" $cmd --backend cuda --no-graph ${A//--out RUN/--out $RUN/nograph}
done
for f in "$RUN"/*/summary.json; do [ -e "$f" ] && { echo "--- $f"; head -c 3000 "$f"; echo; } >> "$RUNS"; done

# ---- 4. compute-sanitizer on a small run of each command ----
SAN=$OUT/05_sanitizer.log
if command -v compute-sanitizer >/dev/null; then
    SMALL_SAMPLE=$(sub "${GPU_CHECK_SAMPLE_SMALL:---model MODEL -n 1000 --steps 10 --out RUN/san_sample}")
    SMALL_STEER=$(sub "${GPU_CHECK_STEER_SMALL:---model MODEL -n 1000 --steps 10 --reward point(1.5,1.5) --out RUN/san_steer}")
    SMALL_SEARCH=$(sub "${GPU_CHECK_SEARCH_SMALL:---model MODEL -n 200 --steps 10 --method best-of-n --reward point(1.5,1.5) --out RUN/san_search}")
    for tool in memcheck racecheck initcheck synccheck; do
        for cmd in sample steer search; do
            case $cmd in sample) A=$SMALL_SAMPLE;; steer) A=$SMALL_STEER;; search) A=$SMALL_SEARCH;; esac
            rm -rf "$RUN"/san_*
            # shellcheck disable=SC2086
            run_step "sanitizer $tool $cmd" "$SAN" 40 compute-sanitizer --tool "$tool" --error-exitcode 3 \
                --print-limit 20 "$FS" $cmd --backend cuda $A
        done
    done
    # The GPU test binary's resampling test under memcheck covers every resampling kernel.
    run_step "sanitizer memcheck resampling test" "$SAN" 60 compute-sanitizer --tool memcheck --error-exitcode 3 \
        --print-limit 20 "$BIN/gpu" --test-threads=1 adaptive_resampling
else
    record "compute-sanitizer" "SKIP" "not installed"
fi

# ---- 5. benchmark ----
if "$FS" bench --help 2>/dev/null | grep -q -- "--backend"; then
    run_step "bench --backend cuda" "$OUT/06_bench.log" 90 "$FS" bench --backend cuda
else
    record "bench --backend cuda" "SKIP" "flowsteer bench has no --backend option yet"
fi

# ---- 6. compile budgets with this machine's NVRTC ----
run_step "kernels_compile (sm_90, sm_80)" "$OUT/07_compile.log" 120 "$BIN/kernels_compile" --nocapture

# ---- summary ----
{
    echo "flowsteer gpu_check on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), $(date -u), $(( $(date +%s) - START ))s"
    printf '%-34s %-6s %s\n' "step" "result" "detail"
    for l in "${SUMMARY[@]}"; do echo "$l"; done
    echo "sanitizer findings: $(grep -cE 'ERROR SUMMARY: [1-9]|Race reported|Uninitialized|Barrier error' "$SAN" 2>/dev/null || echo n/a)"
} | tee "$OUT/00_summary.log"
