#!/usr/bin/env bash
# Compares the files two flowsteer binaries write for the same commands and seeds: every file
# byte for byte, except the fields that measure time (summary.json's times and throughput,
# sweep.csv's wall_s and rates, the scaling plot drawn from them, and stdout's time lines).
# Used to check that a refactoring changes no output.
#
#   scripts/compare_outputs.sh OLD_BINARY NEW_BINARY [WORKDIR]
#
# Run from the repository root (the default model is read from models/). Exit 0 when all agree.
set -euo pipefail
old=$1 new=$2 work=${3:-$(mktemp -d)}
mkdir -p "$work"
model=models/checkerboard.safetensors
cases=(
  "steer|steer --backend cpu --particles 256 --steps 40 --seed 3 --ancestry --plot --out OUT"
  "steer-fused|steer --backend cpu --particles 128 --groups 2 --steps 30 --seed 1 --fused --potential add --lambda 1 --reward gaussian([2,0.5],0.5) --out OUT"
  "steer-quiet|steer --backend cpu --particles 64 --steps 20 --no-baseline --quiet --resample systematic --adaptive-ess --out OUT"
  "bon|search bon --backend cpu --particles 256 --steps 30 --seed 2 --top-k 4 --plot --out OUT"
  "zeroth|search zeroth --backend cpu --candidates 8 --cycles 3 --steps 20 --seed 5 --groups 2 --out OUT"
  "paths|search paths --backend cpu --particles 32 --steps 30 --seed 7 --top-k 2 --out OUT"
  "sample|sample --backend cpu --particles 2000 --steps 30 --seed 4 --out OUT"
  "sample-sde|sample --backend cpu --particles 500 --steps 25 --sampler sde --k 0.5 --seed 9 --out OUT"
  "sweep|sweep --backend cpu --particles 8,16 --seeds 2 --steps 20 --cycles 2 --out OUT"
)
# Timing fields removed before comparing summary.json and sweep.csv.
strip_json='import json,sys
j=json.load(open(sys.argv[1]))
for k in ("times_s","throughput"): j.pop(k,None)
print(json.dumps(j,sort_keys=True,indent=1))'
strip_csv='import csv,sys
for r in csv.DictReader(open(sys.argv[1])):
    for k in ("wall_s","nfe_per_s","particle_steps_per_s"): r.pop(k)
    print(r)'
fail=0
for c in "${cases[@]}"; do
  name=${c%%|*} cmd=${c#*|}
  for which in old new; do
    bin=$old; [ $which = new ] && bin=$new
    rm -rf "$work/out"
    # shellcheck disable=SC2086
    "$bin" ${cmd//OUT/$work/out} >"$work/$which-$name.stdout" 2>"$work/$which-$name.stderr" || { echo "$name: $which failed"; cat "$work/$which-$name.stderr"; fail=1; }
    rm -rf "$work/$which-$name"; mv "$work/out" "$work/$which-$name" 2>/dev/null || mkdir -p "$work/$which-$name"
  done
  for f in $(cd "$work/old-$name" && find . -type f | sort); do
    a=$work/old-$name/$f b=$work/new-$name/$f
    case $f in
      */summary.json) diff <(python3 -c "$strip_json" "$a") <(python3 -c "$strip_json" "$b") >/dev/null || { echo "$name: $f differs"; fail=1; } ;;
      */sweep.csv) diff <(python3 -c "$strip_csv" "$a") <(python3 -c "$strip_csv" "$b") >/dev/null || { echo "$name: $f differs"; fail=1; } ;;
      */scaling.png) [ -s "$b" ] || { echo "$name: $f missing"; fail=1; } ;;
      *) cmp -s "$a" "$b" || { echo "$name: $f differs"; fail=1; } ;;
    esac
  done
  [ "$(cd "$work/old-$name" && find . -type f | sort)" = "$(cd "$work/new-$name" && find . -type f | sort)" ] || { echo "$name: other files"; fail=1; }
  notime='/time |particle-steps\/s|NFE\/s|points run in|profile:/d'
  for s in stdout stderr; do
    diff <(sed -E "$notime" "$work/old-$name.$s") <(sed -E "$notime" "$work/new-$name.$s") >/dev/null || { echo "$name: $s differs"; fail=1; }
  done
  echo "$name: compared $(cd "$work/old-$name" && find . -type f | wc -l) files, stdout and stderr"
done
[ $fail = 0 ] && echo "all outputs agree" || echo "OUTPUTS DIFFER (see $work)"
exit $fail
