#!/usr/bin/env bash
# Packs what bench/gpu_check.sh runs on the GPU machine (which has no Rust) into .carry/:
#   .carry/bin/flowsteer          the release binary
#   .carry/bin/gpu                tests/gpu.rs (CPU ↔ GPU comparisons)
#   .carry/bin/kernels_compile    tests/kernels_compile.rs (NVRTC compile + ptxas budgets)
#   .carry/models/*.safetensors   models/ if present, else a PyTorch-initialised default model
# Builds with `cargo build --release` and `cargo test --release --no-run`; strips debug info so
# that the whole stays under 60 MiB. Run from anywhere: `bash scripts/device_pack.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bins --examples
cargo test --release --no-run --message-format=json > target/device_pack_tests.json

rm -rf .carry
mkdir -p .carry/bin .carry/models
cp target/release/flowsteer .carry/bin/flowsteer
python3 - <<'PY'
import json, shutil
want = {"gpu", "kernels_compile"}
found = {}
for line in open("target/device_pack_tests.json"):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in want \
            and "test" in m["target"]["kind"]:
        found[m["target"]["name"]] = m["executable"]
missing = want - set(found)
if missing:
    raise SystemExit(f"test binaries not built: {sorted(missing)}")
for name, exe in found.items():
    shutil.copy(exe, f".carry/bin/{name}")
    print(f"packed {name} <- {exe}")
PY

shopt -s nullglob
models=(models/*.safetensors)
if (( ${#models[@]} )); then
    cp "${models[@]}" .carry/models/
else
    target/release/examples/random_model .carry/models/random_default.safetensors
fi

for f in .carry/bin/*; do
    strip --strip-debug "$f" 2>/dev/null || true
done
# The oldest glibc the binaries need (the GPU machine's must be at least this).
need=$(objdump -T .carry/bin/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -V | tail -1 || true)
size=$(du -sm .carry | cut -f1)
echo "packed .carry: ${size} MiB, needs ${need:-unknown glibc}"
ls -la .carry/bin .carry/models
if (( size > 60 )); then
    echo "error: .carry is ${size} MiB, over the 60 MiB limit; drop models or strip harder" >&2
    exit 1
fi
