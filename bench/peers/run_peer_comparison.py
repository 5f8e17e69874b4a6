#!/usr/bin/env python3
"""flowsteer against the PyTorch peer, side by side on one device and the same particle counts.

For each particle count it runs the same FK steering job (the default `flowsteer steer` job with the
marginal SDE: point reward at (2, 0.5), `max` potential, λ = 10, multinomial resampling at 5 points
in [0.6, 0.95] and at t = 1, 100 steps) with the same model file, twice:
  - `flowsteer steer ... --out DIR`, `--repeats` times, reading each run's summary.json;
  - bench/peers/fk_peer.py, in each variant (eager, compile; and graphs on the GPU).
Both sides count particle-steps/s of a whole run (particles × steps / seconds), resampling included,
start-up excluded (flowsteer: its total less its compile phase; the peer: torch.compile and graph
capture are timed apart as setup). It prints the ratio flowsteer / peer per variant and writes a
markdown and a JSON table, with device, date and versions, to bench/results/.

Usage (repository root):
  python3 bench/peers/run_peer_comparison.py --device cpu                     # 2^10, 2^14
  python3 bench/peers/run_peer_comparison.py --device cuda                    # 2^10, 2^14, 2^20
  python3 bench/peers/run_peer_comparison.py --device cpu --particles 16384 --variants eager
flowsteer must be built (`cargo build --release`); pass --flowsteer PATH for another binary.
Nothing here needs the network.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from particles import parse_particles  # noqa: E402
from results_to_readme import SCHEMA, render_table  # noqa: E402  (one renderer for README and runner)

# The job both sides run (flowsteer's `steer` defaults, with the SDE sampler).
JOB = {
    "sampler": "sde",
    "steps": 100,
    "k": 0.1,
    "potential": "max",
    "lambda": 10.0,
    "reward": "point([2,0.5])",
    "resample": "multinomial",
    "resample_count": 5,
    "t_start": 0.6,
    "t_end": 0.95,
}


def steer_command(flowsteer: str, device: str, n: int, model: str, out: str, seed: int) -> list[str]:
    """The `flowsteer steer` command line for the shared job (issue 3's option names)."""
    return [
        flowsteer, "steer",
        "--backend", device,
        "--model", model,
        "--particles", str(n),
        "--sampler", JOB["sampler"],
        "--steps", str(JOB["steps"]),
        "--k", str(JOB["k"]),
        "--potential", JOB["potential"],
        "--lambda", str(JOB["lambda"]),
        "--reward", JOB["reward"],
        "--resample", JOB["resample"],
        "--resample-count", str(JOB["resample_count"]),
        "--t-start", str(JOB["t_start"]),
        "--t-end", str(JOB["t_end"]),
        "--seed", str(seed),
        "--fused",        # whole intervals per backend call: the fast path (a GPU graph per interval)
        "--no-baseline",  # no extra unsteered run for the summary's before/after comparison
        "--quiet",
        "--out", out,
    ]


def run_seconds(summary: dict) -> float:
    """Seconds of the run proper from a summary.json (docs/outputs.md per-phase times, `times_s`): the
    total less the compile phase (null on the CPU), so that both sides exclude one-off start-up."""
    times = summary.get("times_s") or {}
    if not isinstance(times.get("total"), (int, float)):
        raise KeyError("summary.json has no times_s.total (docs/outputs.md per-phase times); is this flowsteer too old?")
    return float(times["total"]) - float(times.get("compile") or 0.0)


def run_flowsteer(args, n: int, model: str) -> dict:
    times, last = [], {}
    for r in range(args.repeats + 1):  # the first run is a warm-up (disk caches, NVRTC cache)
        with tempfile.TemporaryDirectory(prefix="fs-peer-") as out:
            cmd = steer_command(args.flowsteer, args.device, n, model, out, seed=r)
            env = dict(os.environ, **({"RAYON_NUM_THREADS": str(args.threads)} if args.threads else {}))
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
            if p.returncode != 0:
                raise RuntimeError(f"flowsteer failed (exit {p.returncode}):\n  {shlex.join(cmd)}\n{p.stderr.strip()}")
            with open(os.path.join(out, "summary.json")) as f:
                last = json.load(f)
        if r > 0:
            times.append(run_seconds(last))
    med = statistics.median(times)
    return {
        "particles": n,
        "median_s": med,
        "min_s": min(times),
        "max_s": max(times),
        "particle_steps_per_s": n * JOB["steps"] / med,
        "final_reward_mean": (last.get("final_reward") or {}).get("mean"),
        "device": last.get("device"),
        "command": shlex.join(steer_command(args.flowsteer, args.device, n, model, "DIR", seed=0)),
    }


def run_peer(args, counts: list[int], variants: list[str], model: str) -> dict:
    cmd = [sys.executable, os.path.join(HERE, "fk_peer.py"), "--device", args.device, "--model", model,
           "--particles", ",".join(map(str, counts)), "--variants", ",".join(variants),
           "--repeats", str(args.repeats), "--steps", str(JOB["steps"]), "--threads", str(args.threads)]
    print("peer:", shlex.join(cmd), file=sys.stderr)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, timeout=args.timeout * len(counts) * len(variants))
    if p.returncode != 0:
        raise RuntimeError(f"the peer failed (exit {p.returncode}): {shlex.join(cmd)}")
    return json.loads(p.stdout)


def version_of(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def fmt_rate(v) -> str:
    return "—" if v is None else f"{v:.3g}"


def fmt_ratio(v) -> str:
    return "—" if v is None else f"{v:.2f}×"


def load_note(loads: list[float]) -> str:
    """How busy the machine was: a shared machine slows both sides, and not by the same factor
    (PyTorch's OpenMP threads spin while waiting for a core), so the README must say it."""
    cores = os.cpu_count() or 1
    busy = " (busy: the other load inflates both sides' times, unevenly)" if max(loads) > 0.5 * cores else ""
    return (f"Machine load (1-minute average) during the run: {min(loads):.1f}–{max(loads):.1f} on {cores} cores"
            f"{busy}; both sides run one after the other for each count.")


def build_table(args, counts, variants, fs_rows, peer) -> dict:
    by = {(r["particles"], r["variant"]): r for r in peer["results"]}
    columns = ["particles", "flowsteer (p-steps/s)"] + [f"{v} (p-steps/s)" for v in variants] + \
              [f"× {v}" for v in variants] + ["× best peer", f"final reward mean: flowsteer / {variants[0]}"]
    rows = []
    for fs in fs_rows:
        n = fs["particles"]
        mine = fs["particle_steps_per_s"]
        rates = [by.get((n, v), {}).get("particle_steps_per_s") for v in variants]
        ratios = [None if r is None or mine is None else mine / r for r in rates]
        best = max((r for r in rates if r is not None), default=None)
        rows.append([n, "failed" if mine is None else fmt_rate(mine)] +
                    ["failed" if "error" in by.get((n, v), {}) else fmt_rate(r) for v, r in zip(variants, rates)] +
                    [fmt_ratio(x) for x in ratios] + [fmt_ratio(None if best is None or mine is None else mine / best)] +
                    [f"{fmt_rate(fs.get('final_reward_mean'))} / {fmt_rate(by.get((n, variants[0]), {}).get('final_reward_mean'))}"])
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    device = next((r["device"] for r in fs_rows if r.get("device")), None) or peer["device"]
    return {
        "schema": SCHEMA,
        "kind": "peer_comparison",
        "title": f"flowsteer vs the PyTorch peer, FK steering ({args.device}"
                 + (f", {args.threads} thread{'s' if args.threads > 1 else ''})" if args.threads else ")"),
        "device": device,
        "device_type": args.device,
        "date": now.isoformat().replace("+00:00", "Z"),
        "command": "python3 bench/peers/run_peer_comparison.py " + shlex.join(sys.argv[1:]),
        "versions": {
            "flowsteer": version_of([args.flowsteer, "--version"]).removeprefix("flowsteer "),
            "git": version_of(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]),
            "torch": peer["torch"],
            "python": peer["python"],
            "os": platform.platform(),
        },
        "config": dict(JOB, peer_device=peer["device"], repeats=args.repeats, threads=args.threads or "default",
                       load_average_1min=[round(x, 2) for x in peer["load_average_1min"]]),
        "columns": columns,
        "rows": rows,
        "notes": [
            "particle-steps/s = particles × steps / seconds of one whole FK run (propagate, rewards, "
            "potentials, resampling), median of the repeats after a warm-up; start-up (flowsteer's "
            "compile phase, torch.compile, graph capture) excluded.",
            "× v = flowsteer's rate over the peer variant v's rate.",
            "The final reward means are a sanity check that both sides run the same job (same model, "
            "schedule and potential; different random numbers, so they agree in distribution only).",
        ] + (["failed: that side did not run at this count; its error is in the JSON's raw section."]
             if any(r[1] == "failed" or "failed" in r[2:2 + len(variants)] for r in rows) else []) + [
            load_note(peer["load_average_1min"]),
        ],
        "raw": {"flowsteer": fs_rows, "peer": peer["results"]},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--particles", help="list or range as in `flowsteer bench` (default cpu: 2^10,2^14; cuda: 2^10,2^14,2^20)")
    ap.add_argument("--variants", help="peer variants (default cpu: eager,compile; cuda: eager,graphs,compile)")
    ap.add_argument("--flowsteer", default=os.path.join(ROOT, "target", "release", "flowsteer"))
    ap.add_argument("--model", help="safetensors model (default models/checkerboard.safetensors if present, "
                    "else a seeded random model written for both sides)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for both sides (RAYON_NUM_THREADS and "
                    "torch.set_num_threads); 0: each side's default, all cores")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per flowsteer run / per peer job")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = ap.parse_args(argv)

    try:
        counts = parse_particles(args.particles or ("2^10,2^14" if args.device == "cpu" else "2^10,2^14,2^20"))
    except ValueError as e:
        ap.error(str(e))
    variants = [v.strip() for v in (args.variants or ("eager,compile" if args.device == "cpu" else "eager,graphs,compile")).split(",")]
    bad = [v for v in variants if v not in ("eager", "graphs", "compile")]
    if bad:
        ap.error(f"unknown peer variant {bad[0]!r}; choose from eager, graphs, compile")
    if args.device == "cpu" and "graphs" in variants:
        ap.error("the graphs variant needs --device cuda; drop it from --variants on the CPU")
    if not os.access(args.flowsteer, os.X_OK):
        ap.error(f"no flowsteer binary at {args.flowsteer}: run `cargo build --release` or pass --flowsteer PATH")

    with tempfile.TemporaryDirectory(prefix="fs-peer-model-") as tmp:
        model = args.model
        if model is None:
            default = os.path.join(ROOT, "models", "checkerboard.safetensors")
            model = default if os.path.exists(default) else os.path.join(tmp, "random.safetensors")
            if model != default:
                subprocess.run([sys.executable, os.path.join(HERE, "fk_peer.py"), "--save-model", model, "--check"],
                               check=True, stdout=subprocess.DEVNULL)
        print(f"model: {model}", file=sys.stderr)
        # Interleaved per count, so that both sides see the same machine load.
        fs_rows, peer, load = [], None, [os.getloadavg()[0]]
        for n in counts:
            try:
                fs_rows.append(run_flowsteer(args, n, model))
                print(f"flowsteer N={n}: {fs_rows[-1]['particle_steps_per_s']:.4g} particle-steps/s", file=sys.stderr)
            except (RuntimeError, KeyError, OSError, subprocess.SubprocessError) as e:
                # Keep going: the peer's numbers on this device are worth having on their own.
                print(f"flowsteer N={n}: FAILED: {e}", file=sys.stderr)
                fs_rows.append({"particles": n, "error": str(e)[:2000], "particle_steps_per_s": None})
            one = run_peer(args, [n], variants, model)
            if peer is None:
                peer = one
            else:
                peer["results"] += one["results"]
            load.append(os.getloadavg()[0])
        peer["load_average_1min"] = load

    table = build_table(args, counts, variants, fs_rows, peer)
    md = render_table(table)
    print(md)
    os.makedirs(args.out, exist_ok=True)
    slug = "cpu" if args.device == "cpu" else "".join(c if c.isalnum() else "-" for c in table["device"].lower()).strip("-")
    if args.threads:
        slug += f"_{args.threads}thread" + ("s" if args.threads > 1 else "")
    stem = os.path.join(args.out, f"peer_comparison_{slug}")
    for path, text in ((stem + ".json", json.dumps(table, indent=1) + "\n"), (stem + ".md", md)):
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    print(f"wrote {stem}.json and {stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
