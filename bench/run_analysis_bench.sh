#!/usr/bin/env bash
# The issue's analysis benchmark, both sides in one run on the same machine and thread count:
#   kvlab analyze  vs  bench/reference/analysis_ref.py (numpy/h5py)
# on `kvlab synth` with 32 layers, 8 KV heads, head dim 128, 16384 tokens, f16 (≈2 GiB).
# Prints wall time and peak RSS of each, the speed ratio, the result differences, and the
# BLAS rates of this machine (bench_linalg). Results go to bench/out/ (not committed).
#   bench/run_analysis_bench.sh [TOKENS] [LAYERS]
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS=${1:-16384}
LAYERS=${2:-32}
THREADS=${THREADS:-$(nproc)}
OUT=bench/out
KVLAB=build/cli/kvlab
mkdir -p "$OUT"
DUMP="$OUT/bench_L${LAYERS}_T${TOKENS}.h5"
export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS

[[ -f "$DUMP" ]] || /usr/bin/time -f "synth: %e s, peak RSS %M KiB" \
  "$KVLAB" --quiet synth --layers "$LAYERS" --kv-heads 8 --head-dim 128 --tokens "$TOKENS" --dtype f16 --out "$DUMP"

echo "== BLAS rates (threads=$THREADS)"
build/bench/bench_linalg --benchmark_filter='sgemm/4096|sgemm/1024' --benchmark_min_time=2 2>/dev/null | grep -E "BM_"

echo "== kvlab analyze"
/usr/bin/time -f "kvlab: %e s wall, peak RSS %M KiB" -o "$OUT/kvlab.time" \
  "$KVLAB" --quiet analyze "$DUMP" --kind both --threads "$THREADS" --out "$OUT/kvlab" | tee "$OUT/kvlab.txt"
cat "$OUT/kvlab.time"

echo "== numpy reference"
/usr/bin/time -f "reference: %e s wall, peak RSS %M KiB" -o "$OUT/ref.time" \
  /usr/bin/python3 bench/reference/analysis_ref.py "$DUMP" --kind both --out "$OUT/ref.json"
cat "$OUT/ref.time"

kv=$(grep -oP '[0-9.]+(?= s wall)' "$OUT/kvlab.time")
ref=$(grep -oP '[0-9.]+(?= s wall)' "$OUT/ref.time")
echo "== speed-up (reference / kvlab): $(python3 -c "print(f'{$ref/$kv:.2f}x')")"
python3 - "$OUT/kvlab/analysis.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for kind, k in d["kinds"].items():
    t = k["timings"]
    print(f"{kind}: stage seconds {json.dumps(t)}; cross-product rate {k['cross_product_gflops']:.0f} GFLOP/s")
PY
echo "== result differences (kvlab vs reference)"
/usr/bin/python3 bench/compare_analysis.py "$OUT/kvlab" "$OUT/ref.json"
