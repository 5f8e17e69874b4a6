#!/usr/bin/env bash
# Strong and weak scaling of `flowsteer steer` across MPI ranks (issue 10, docs/distributed.md).
# Usage: bash bench/mpi_scaling.sh [MAX_P] > bench/results/mpi_scaling_cpu.md
# Needs a build with `cargo build --release --features mpi` and Open MPI's mpirun. Each rank gets
# one rayon thread (RAYON_NUM_THREADS=1), so P ranks use P cores; the times are those in
# summary.json (rank 0's view; communication = seconds inside collectives, waits included).
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_P="${1:-2}"
STRONG_N="${STRONG_N:-32768}"   # particles, strong scaling
WEAK_N="${WEAK_N:-16384}"       # particles per rank, weak scaling
STEPS="${STEPS:-50}"
BIN=target/release/flowsteer
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 RAYON_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

row() { # kind P N
    local out="$tmp/$1-$2"
    mpirun --oversubscribe --allow-run-as-root -n "$2" "$BIN" steer --particles "$3" --steps "$STEPS" --sampler sde \
        --reward "gaussian([2,0.5], 0.5)" --lambda 1 --potential rt --backend cpu --no-baseline --quiet --out "$out" >/dev/null
    python3 - "$out/summary.json" "$1" "$2" "$3" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); m = s["config"]["run"]["mpi"]; t = s["times_s"]
total = t["total"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {int(sys.argv[4]):,} | {total:.3f} | {m['comm_seconds']:.4f} | {m['compute_seconds']:.3f} | "
      f"{100*m['comm_seconds']/total:.2f} % | {m['bytes_per_resampling']:,.0f} | {s['throughput']['particle_steps_per_s']:.3e} |")
PY
}

echo "# flowsteer steer across MPI ranks: strong and weak scaling"
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), Open MPI $(mpirun --version | head -1 | awk '{print $NF}'),"
echo "one rayon thread per rank, $STEPS steps of the SDE (steer's default), 5 resamplings + final, potential rt, multinomial."
echo "Command: \`bash bench/mpi_scaling.sh $MAX_P\` (STRONG_N=$STRONG_N, WEAK_N=$WEAK_N)."
echo
echo "| scaling | P | particles | total s | comm s (rank 0) | compute s | comm share | bytes per resampling | particle-steps/s |"
echo "|---|---|---|---|---|---|---|---|---|"
for p in $(seq 1 "$MAX_P"); do row strong "$p" "$STRONG_N"; done
for p in $(seq 1 "$MAX_P"); do row weak "$p" $((WEAK_N * p)); done
