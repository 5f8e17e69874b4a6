#!/usr/bin/env python3
"""Runs `flowsteer bench --json` and keeps its report as a results table in bench/results/.

The table (schema flowsteer-results/1, see results_to_readme.py) carries the device, the date, the
exact command and the versions, so that `scripts/results_to_readme.py` can put it in the README.
Standard library only.

Usage (repository root, after `cargo build --release`):
  python3 scripts/bench_to_results.py -- --backend cpu --particles 2^10..2^16
  python3 scripts/bench_to_results.py --from report.json --command "flowsteer bench ..."   # an earlier report
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from results_to_readme import SCHEMA, render_table  # noqa: E402


def _g(v, fmt="{:.3g}"):
    return "—" if v is None else fmt.format(v)


def table_from_report(report: dict, command: str, date: str, versions: dict) -> dict:
    """The results table of one `flowsteer bench --json` report."""
    rows = []
    for r in report["rows"]:
        if r.get("median_s") is None:
            rows.append([r["particles"], r["phase"], "—", "—", f"n/a ({r.get('note') or 'not run'})", "—", "—", "—"])
            continue
        frac = r.get("fraction_of_fp32_limit")
        rows.append([
            r["particles"], r["phase"],
            _g(r["median_s"] * 1e3, "{:.3f}"),
            f"{r['min_s'] * 1e3:.3f}–{r['max_s'] * 1e3:.3f}",
            f"{_g(r.get('rate'))} {r.get('rate_unit', '')}".strip(),
            _g(r.get("gflops")), _g(r.get("gbytes_per_s")),
            "—" if frac is None else f"{100 * frac:.1f} %",
        ])
    return {
        "schema": SCHEMA,
        "kind": "bench",
        "title": f"flowsteer bench ({report['backend']})",
        "device": report["device"],
        "date": date,
        "command": command,
        "versions": versions,
        "config": {k: report.get(k) for k in ("backend", "kernels", "threads", "model", "sampler",
                                              "fp32_limit_gflops", "fp32_limit_source")},
        "columns": ["particles", "phase", "median ms", "min–max ms", "rate", "GFLOP/s", "GB/s", "of FP32 limit"],
        "rows": rows,
        "notes": [f"FP32 limit: {_g(report.get('fp32_limit_gflops'))} GFLOP/s ({report.get('fp32_limit_source', '?')}); "
                  f"sampler {report.get('sampler')}, {report.get('threads')} threads, kernels {report.get('kernels')}."],
        "raw": report,
    }


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60] or "device"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flowsteer", default=os.path.join(ROOT, "target", "release", "flowsteer"))
    ap.add_argument("--from", dest="from_file", help="read a saved `flowsteer bench --json` report instead of running it")
    ap.add_argument("--command", help="with --from: the command that produced the report (shown in the README)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("bench_args", nargs="*", help="arguments for `flowsteer bench` (after --)")
    args = ap.parse_args(argv)

    if args.from_file:
        with open(args.from_file) as f:
            report = json.load(f)
        command = args.command or f"flowsteer bench --json (saved in {os.path.basename(args.from_file)})"
    else:
        cmd = [args.flowsteer, "bench", "--json"] + args.bench_args
        p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if p.returncode != 0:
            print(f"error: `{shlex.join(cmd)}` failed (exit {p.returncode})", file=sys.stderr)
            return 2
        report = json.loads(p.stdout)
        command = "flowsteer bench --json " + shlex.join(args.bench_args)
    try:
        version = subprocess.run([args.flowsteer, "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        version = "?"
    git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    date = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    versions = {"flowsteer": version.removeprefix("flowsteer ") or "?", "git": git or "?", "os": platform.platform()}
    table = table_from_report(report, command, date, versions)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"bench_{report['backend']}_{slug(report['device'])}" if report["backend"] != "cpu"
                        else f"bench_cpu")
    for path, text in ((stem + ".json", json.dumps(table, indent=1) + "\n"), (stem + ".md", render_table(table))):
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    print(render_table(table))
    print(f"wrote {stem}.json and {stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
