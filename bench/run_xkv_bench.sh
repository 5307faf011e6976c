#!/usr/bin/env bash
# xkv benchmark, both sides in one run on the same machine and thread count:
#   build/bench/bench_xkv (kvlab: Gram + ?syevr, f64 and f32; randomized HMT; 8-rank sweep)
#   vs bench/reference/xkv_ref.py (the authors' route: torch.linalg.svd in fp32 per group)
# on `kvlab synth` with LAYERS layers, 8 KV heads, head dim 128, TOKENS tokens, f16.
# For each (G, rk) pair: reference JSON, then bench_xkv with --ref, which prints per-group
# errors, their difference from torch's, and the speed-ups. Results go to bench/out/.
#   bench/run_xkv_bench.sh [TOKENS] [LAYERS]        (defaults 16384 32; the lead's run)
#   bench/run_xkv_bench.sh 2048 8                   (small validation, ≈3 min on 2 cores)
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

[[ -f "$DUMP" ]] || "$KVLAB" --quiet synth --layers "$LAYERS" --kv-heads 8 --head-dim 128 --tokens "$TOKENS" \
  --dtype f16 --out "$DUMP"

for cfg in "4 384" "1 96"; do
  read -r G RK <<<"$cfg"
  TAG="xkv_L${LAYERS}_T${TOKENS}_g${G}_rk${RK}"
  echo "== torch reference G=$G rk=$RK"
  /usr/bin/time -f "reference: %e s wall, peak RSS %M KiB" \
    /usr/bin/python3 bench/reference/xkv_ref.py "$DUMP" --g "$G" --rk "$RK" --threads "$THREADS" --out "$OUT/$TAG.ref.json"
  echo "== bench_xkv G=$G rk=$RK"
  /usr/bin/time -f "bench_xkv: %e s wall, peak RSS %M KiB" \
    build/bench/bench_xkv "$DUMP" --g "$G" --rk "$RK" --threads "$THREADS" --ref "$OUT/$TAG.ref.json" \
    --out "$OUT/$TAG.json" | tee "$OUT/$TAG.txt"
done
