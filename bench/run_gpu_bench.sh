#!/usr/bin/env bash
# Issue 8's GPU measurements, in one run on the device machine, logs under $OUT (the device
# tool brings them back):
#   1. kvlab analyze --device cuda of the 32-layer bench dump at each TOKENS (16k and 128k by
#      default; f32 Gram, plus bf16 and f64 at the first length), peak RSS and wall time;
#   2. xkv:g=4,rk=384 at the last TOKENS: bench_xkv --device cuda (exact f32/tf32/bf16/f64 and
#      randomized) against bench/reference/xkv_ref.py --device cuda (torch.linalg.svd, the
#      authors' route), errors side by side.
# Prefill vs compression (issue 8's third figure) needs the harness on CUDA:
# KVLAB_HARNESS=ON scripts/build-cuda.sh build, then `kvlab eval` prints both (not scripted yet).
#
#   scripts/build-cuda.sh build kvlab bench_xkv        # once per machine (carry [".debs"])
#   bench/run_gpu_bench.sh [TOKENS...]                  # default: 16384 131072
# The 128k dump is 16 GiB of f16 (64 GiB disk there); analyze reads it twice.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${KVLAB_BUILD_DIR:-build-cuda}
RUN="scripts/build-cuda.sh run"
OUT=${OUT:-bench/out/gpu}
DUMPS=${DUMPS:-/tmp/kvlab-gpu-bench}
mkdir -p "$OUT" "$DUMPS"
TOKENS=("$@")
((${#TOKENS[@]})) || TOKENS=(16384 131072)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

timed() {  # timed LOG CMD...: wall and peak RSS of CMD, its output into LOG
  local log=$1
  shift
  /usr/bin/time -f "%e s wall, peak RSS %M KiB" -o "$log.time" "$@" >"$log" 2>&1 || { cat "$log"; exit 1; }
  echo "$(basename "$log"): $(cat "$log.time")"
}

for T in "${TOKENS[@]}"; do
  dump="$DUMPS/bench_L32_T$T.h5"
  [[ -f $dump ]] || timed "$OUT/synth_T$T.log" $RUN "$BUILD/cli/kvlab" --quiet synth --layers 32 --kv-heads 8 \
    --head-dim 128 --tokens "$T" --dtype f16 --out "$dump"
  precisions=(f32)
  [[ $T == "${TOKENS[0]}" ]] && precisions=(f32 bf16 f64)
  for p in "${precisions[@]}"; do
    timed "$OUT/analyze_T${T}_$p.log" $RUN "$BUILD/cli/kvlab" analyze "$dump" --device cuda --precision "$p" \
      --db '' --out "$OUT/analysis_T${T}_$p"
  done
done

T=${TOKENS[-1]}
dump="$DUMPS/bench_L32_T$T.h5"
timed "$OUT/xkv_ref_T$T.log" python3 bench/reference/xkv_ref.py "$dump" --g 4 --rk 384 --device cuda \
  --out "$OUT/xkv_ref_T$T.json"
specs=()
for extra in precision=f32 precision=tf32 precision=bf16 precision=f64 solver=randomized; do
  specs+=(--spec "g=4,rk=384,$extra")
done
timed "$OUT/bench_xkv_T$T.log" $RUN "$BUILD/bench/bench_xkv" "$dump" --device cuda "${specs[@]}" --sweep 0 \
  --ref "$OUT/xkv_ref_T$T.json" --out "$OUT/bench_xkv_T$T.json"
grep -E "compress|max \|error" "$OUT/bench_xkv_T$T.log"
