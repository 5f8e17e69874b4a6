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
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-530}   # 8 min 50 s: the caller's limit is 9 minutes
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
BIN=$PWD/.carry/bin
FS=$BIN/flowsteer
export FLOWSTEER_BIN=$FS  # tests/gpu.rs runs the binary too; cargo's path does not exist here
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
RESULT=$(grep -E "^test result:" "$OUT/02_gpu_tests.log" | tail -1)
SKIPS=$(grep -c "SKIPPED" "$OUT/02_gpu_tests.log" || true)
record "  gpu tests" "-" "${RESULT:-no result line (crashed or timed out)}; ${SKIPS} skipped"
while read -r l; do SUMMARY+=("    FAILED: $l"); done < <(grep -E "^    [a-z_]+$" "$OUT/02_gpu_tests.log" | sort -u)

# ---- 2. kernel resource report ----
run_step "info --kernels" "$OUT/03_info.log" 90 "$FS" info --kernels --model "$MODEL"
run_step "info --kernels --json" "$OUT/03_info.log" 30 "$FS" info --kernels --json

# ---- 3. small CLI runs on the GPU ----
# Each entry: a label and the arguments after `flowsteer` (RUN = output root, MODEL = model).
# `--no-graph`: plain launches instead of CUDA-graph replay (steer --fused replays graphs).
RUNS=$OUT/04_runs.log
RUN=/tmp/flowsteer-gpu-runs; rm -rf "$RUN"; mkdir -p "$RUN"
set -f   # reward strings hold [ ] that must not glob
REWARD='gaussian([2,0.5],0.5)+0.5*obstacle([1,0],0.4,0.5,1.0)'
CLI_RUNS=(
    "sample|sample --model MODEL --particles 65536 --steps 50 --out RUN/sample"
    "steer max multinomial|steer --model MODEL --particles 65536 --steps 50 --reward $REWARD --out RUN/steer"
    "steer max multinomial fused (graphs)|steer --model MODEL --particles 65536 --steps 50 --reward $REWARD --fused --out RUN/steer_fused"
    "steer groups=8 systematic adaptive|steer --model MODEL --particles 4096 --groups 8 --steps 50 --reward $REWARD --resample systematic --adaptive-ess 0.5 --fused --out RUN/steer_groups"
    "steer diff residual sde|steer --model MODEL --particles 20000 --steps 50 --sampler sde --potential diff --resample residual --reward $REWARD --out RUN/steer_residual"
    "steer rt stratified xt|steer --model MODEL --particles 20000 --steps 50 --potential rt --resample stratified --reward-on xt --reward $REWARD --out RUN/steer_strat"
    "search bon|search bon --model MODEL --particles 65536 --steps 50 --top-k 4 --reward $REWARD --out RUN/bon"
    "search zeroth|search zeroth --model MODEL --candidates 512 --cycles 3 --steps 50 --reward $REWARD --out RUN/zeroth"
    "search paths|search paths --model MODEL --particles 256 --candidates 4 --steps 50 --reward $REWARD --out RUN/paths"
)
sub() { echo "$1" | sed "s#MODEL#$MODEL#g; s#RUN#$RUN#g"; }
for entry in "${CLI_RUNS[@]}"; do
    label=${entry%%|*}; A=$(sub "${entry#*|}")
    # shellcheck disable=SC2086
    run_step "$label (cuda)" "$RUNS" 40 "$FS" $A --backend cuda
    if [[ "${SUMMARY[-1]}" == *FAIL* ]]; then "$FS" ${A%% --*} --help >> "$RUNS" 2>&1; fi
done
# The same steer run with plain launches, and on the CPU, for comparison.
A=$(sub "steer --model MODEL --particles 65536 --steps 50 --reward $REWARD --fused --out RUN/steer_nograph")
# shellcheck disable=SC2086
run_step "steer max multinomial fused (cuda, --no-graph)" "$RUNS" 40 "$FS" $A --backend cuda --no-graph
A=$(sub "steer --model MODEL --particles 65536 --steps 50 --reward $REWARD --out RUN/steer_cpu")
# shellcheck disable=SC2086
run_step "steer max multinomial (cpu)" "$RUNS" 60 "$FS" $A --backend cpu
for f in "$RUN"/*/summary.json; do [ -e "$f" ] && { echo "--- $f"; head -c 2500 "$f"; echo; } >> "$RUNS"; done

# ---- 4. compute-sanitizer on a small run of each command ----
SAN=$OUT/05_sanitizer.log
# Tiny sizes: racecheck and synccheck instrument every shared-memory access of the MLP.
SMALL_RUNS=(
    "sample|sample --model MODEL --particles 300 --steps 4 --out RUN/san"
    "steer|steer --model MODEL --particles 300 --groups 2 --steps 4 --t-start 0.25 --t-end 0.75 --resample-count 2 --reward $REWARD --resample residual --out RUN/san"
    "steer fused|steer --model MODEL --particles 300 --groups 2 --steps 4 --t-start 0.25 --t-end 0.75 --resample-count 2 --reward $REWARD --adaptive-ess 0.7 --fused --out RUN/san"
    "search bon|search bon --model MODEL --particles 300 --steps 4 --top-k 3 --reward $REWARD --out RUN/san"
    "search zeroth|search zeroth --model MODEL --candidates 64 --cycles 2 --steps 4 --reward $REWARD --out RUN/san"
    "search paths|search paths --model MODEL --particles 16 --candidates 2 --steps 20 --reward $REWARD --out RUN/san"
)
if command -v compute-sanitizer >/dev/null; then
    for tool in memcheck initcheck synccheck racecheck; do
        for entry in "${SMALL_RUNS[@]}"; do
            label=${entry%%|*}; A=$(sub "${entry#*|}")
            rm -rf "$RUN/san"
            # shellcheck disable=SC2086
            run_step "sanitizer $tool $label" "$SAN" 30 compute-sanitizer --tool "$tool" --error-exitcode 3 \
                --print-limit 20 "$FS" $A --backend cuda
        done
    done
else
    record "compute-sanitizer" "SKIP" "not installed"
fi
set +f

# ---- 5. benchmark ----
if "$FS" bench --help 2>/dev/null | grep -q -- "--backend"; then
    run_step "bench --backend cuda" "$OUT/06_bench.log" 90 "$FS" bench --backend cuda --particles '2^16,2^20' --repeats 3 --warmup 1
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
    echo "sanitizer findings: $(grep -cE 'SUMMARY: [1-9]' "$SAN" 2>/dev/null || echo n/a)"
} | tee "$OUT/00_summary.log"
