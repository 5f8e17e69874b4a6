#!/usr/bin/env python3
"""Cost model of one resampling interval of `flowsteer steer` across P GPUs (docs/distributed.md).

Bytes are those the implementation sends (src/distributed/resample.rs, population.rs):
  per particle whose ancestor lives on another rank: a 16-byte point (group, threshold) and a
  (4·D + 24)-byte reply (ancestor index, position, f64 potential state, root id);
  per resampling: 3 all-gathers of per-group records (40 + 72 + 8 bytes per group and rank), each
  preceded by an all-gather of lengths, and 2 all-to-all-v, each preceded by an all-to-all of
  counts: about 10 collectives, each costing α·⌈log2 P⌉ (tree/recursive-doubling latency).
Compute: (N/P)·k particle-steps at R particle-steps/s per GPU, k = grid steps per interval.
Usage: python3 bench/mpi_cost_model.py  (prints the markdown tables of docs/distributed.md)
"""
import math

D = 2                      # dimension of the default model
K = 7                      # grid steps between resamplings (default schedule: 60, 67, ..., 88, 100)
R = 1.5e9                  # particle-steps/s per GPU, assumed (34 kflop per midpoint step of the
                           # default MLP at ~50 Tflop/s of FP32 FMA on an H100; not measured here)
COLLECTIVES = 10
NETS = {                   # (α per collective hop, β bytes/s per GPU, one direction)
    "NVLink (H100 node, 8 GPUs)": (3e-6, 300e9),
    "InfiniBand NDR 400 Gb/s": (5e-6, 50e9),
}
REPLY = 4 * D + 24
POINT = 16


def interval(n_per_rank, p, alpha, beta, moved):
    compute = n_per_rank * K / R
    latency = COLLECTIVES * alpha * max(1, math.ceil(math.log2(p)))
    volume = moved * n_per_rank * (POINT + REPLY) + 3 * 120 * p  # + group records (G = 1)
    return compute, latency + volume / beta


def table(title, sizes):
    print(f"\n{title}\n")
    print("| network | P | particles per GPU | compute ms | communication ms | comm share |")
    print("|---|---|---|---|---|---|")
    for net, (alpha, beta) in NETS.items():
        for p, n in sizes:
            if net.startswith("NVLink") and p > 8:
                continue
            c, m = interval(n, p, alpha, beta, moved=(p - 1) / p / 2)
            print(f"| {net} | {p} | {n:,.0f} | {1e3*c:.3f} | {1e3*m:.3f} | {100*m/(c+m):.1f} % |")


def crossover(alpha, beta, p, moved):
    # compute = comm:  n·K/R = L + moved·n·b/β  →  n = L / (K/R − moved·b/β)
    lat = COLLECTIVES * alpha * max(1, math.ceil(math.log2(p)))
    per = K / R - moved * (POINT + REPLY) / beta
    return lat / per if per > 0 else math.inf


if __name__ == "__main__":
    table("Weak scaling, 10^8 particles per GPU (half of the off-rank particles move):",
          [(p, 1e8) for p in (8, 64, 256, 1024)])
    table("Strong scaling, 10^9 particles in all:", [(p, 1e9 / p) for p in (8, 64, 256, 1024)])
    print("\nCrossover (communication = compute), particles per GPU below which communication dominates:\n")
    print("| network | P | moved fraction | particles per GPU |")
    print("|---|---|---|---|")
    for net, (alpha, beta) in NETS.items():
        for p in (8, 64, 1024):
            if net.startswith("NVLink") and p > 8:
                continue
            for moved in (0.5, 1.0):
                print(f"| {net} | {p} | {moved} | {crossover(alpha, beta, p, moved):,.0f} |")
