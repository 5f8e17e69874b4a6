#!/usr/bin/env bash
# Checks that tests/gpu.rs can fail: applies one small bug at a time to kernels/ (in a scratch
# worktree of HEAD), runs the GPU test that should catch it — on the host emulator where there is
# no GPU — and reports "killed" or "SURVIVED" for each. A survivor is a hole in the tests (or a
# mutation that changes nothing observable: say which in the log). About 2 minutes per mutant on
# 2 cores, most of it rebuilding the crate.
#
#   bash scripts/kernel_mutants.sh            # all mutants
#   bash scripts/kernel_mutants.sh philox     # the ones whose name contains "philox"
set -uo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
scratch="$(mktemp -d)/flowsteer-mutants"
git worktree add --detach -q "$scratch" HEAD || exit 1
trap 'git -C "$repo" worktree remove --force "$scratch"' EXIT
export CARGO_TARGET_DIR="$repo/target/mutants"
export FLOWSTEER_CACHE_DIR="$CARGO_TARGET_DIR/kernel-cache"
filter="${1:-}"

# name | file | sed expression | test that must fail
mutants=(
    "midpoint-probe|kernels/propagate.cu|s/probe.c\[d\] = xs.c\[d\] + 0.5f \* h \* v0.c\[d\]/&*1.001f/|propagate_matches"
    "philox-key-bump|kernels/philox.cuh|s/k1 += 0xBB67AE85u;/k1 += 0xBB67AE84u;/|propagate_matches"
    "block-scan-offset|kernels/block.cuh|s/if (warp > 0) v += part\[warp - 1\];/if (warp > 1) v += part[warp - 1];/|resampling_gives"
    "warp-sum-half|kernels/block.cuh|s/for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync/for (int o = 8; o > 0; o >>= 1) v += __shfl_down_sync/|weigh_matches"
    "multinomial-extra-spacing|kernels/resample.cu|s/const double denom = e_total\[g\] + extra;/const double denom = e_total[g] + 0.999 * extra;/|resampling_gives"
    "potential-max-as-min|kernels/potential.cu|s/\*carried = fmaxf(\*carried, r);/*carried = fminf(*carried, r);/|weigh_matches"
    "argmax-tie-break|kernels/search.cu|s/    return i < k;/    return i > k;/|search_primitives"
    "gather-acc-from-carried|kernels/resample.cu|s/alt\[(dim + 1) \* stride + i\] = acc\[src\];/alt[(dim + 1) * stride + i] = carried[src];/|resampling_gives"
)

for m in "${mutants[@]}"; do
    IFS='|' read -r name file expr test <<<"$m"
    [[ -n "$filter" && "$name" != *"$filter"* ]] && continue
    git -C "$scratch" checkout -q -- kernels
    sed -i "$expr" "$scratch/$file"
    if git -C "$scratch" diff --quiet -- kernels; then
        echo "$name: the mutation did not apply (kernels changed?)"
        continue
    fi
    log="$CARGO_TARGET_DIR/$name.log"
    mkdir -p "$CARGO_TARGET_DIR"
    if (cd "$scratch" && cargo test --release --test gpu -- --test-threads=1 "$test") >"$log" 2>&1; then
        echo "$name: SURVIVED ($test passed; log $log)"
    else
        echo "$name: killed by $test ($(grep -m1 -A1 'panicked' "$log" | tail -1 | cut -c1-100))"
    fi
done
