#!/usr/bin/env bash
# Issue 8's GPU measurements on the device machine, logs and JSON under $OUT (the device tool
# brings them back). One step per call, each meant to stay inside the tool's 10-minute limit:
#   bench/run_gpu_bench.sh analyze [TOKENS...]  kvlab analyze --device cuda of the 32-layer bench
#                                               dump at each length (default 16384 131072): f32
#                                               Gram, plus bf16 and f64 at the first length
#   bench/run_gpu_bench.sh xkv [TOKENS]         xkv:g=4,rk=384 (default 131072 tokens): bench_xkv
#                                               --device cuda (exact f32/tf32/bf16/f64, randomized)
#                                               vs bench/reference/xkv_ref.py --device cuda
#                                               (torch.linalg.svd, the authors' route)
# Dumps are made on first use in $DUMPS (default /tmp/kvlab-gpu-bench; the 128k one is 16 GiB of
# f16 and takes minutes: a warm machine keeps it between calls). Build first:
#   scripts/build-cuda.sh build kvlab bench_xkv      (device tool: carry [".debs"])
# Prefill vs compression (issue 8's third figure) needs the harness on CUDA:
# KVLAB_HARNESS=ON scripts/build-cuda.sh build, then `kvlab eval` prints both (not scripted yet).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${KVLAB_BUILD_DIR:-build-cuda}
RUN="scripts/build-cuda.sh run"
OUT=${OUT:-bench/out/gpu}
DUMPS=${DUMPS:-/tmp/kvlab-gpu-bench}
mkdir -p "$OUT" "$DUMPS"
step=${1:-}
shift || true

timed() {  # timed LOG CMD...: wall and peak RSS of CMD, its output into LOG
  local log=$1
  shift
  /usr/bin/time -f "%e s wall, peak RSS %M KiB" -o "$log.time" "$@" >"$log" 2>&1 || { cat "$log"; exit 1; }
  echo "$(basename "$log"): $(cat "$log.time")"
}

dump_of() {  # dump_of TOKENS: the bench dump's path, made if missing
  local dump="$DUMPS/bench_L32_T$1.h5"
  [[ -f $dump ]] || timed "$OUT/synth_T$1.log" $RUN "$BUILD/cli/kvlab" --quiet synth --layers 32 --kv-heads 8 \
    --head-dim 128 --tokens "$1" --dtype f16 --out "$dump"
  echo "$dump"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/gpu.txt" 2>&1 || true
case $step in
  analyze)
    tokens=("$@")
    ((${#tokens[@]})) || tokens=(16384 131072)
    for T in "${tokens[@]}"; do
      dump=$(dump_of "$T" | tail -1)
      precisions=(f32)
      [[ $T == "${tokens[0]}" ]] && precisions=(f32 bf16 f64)
      for p in "${precisions[@]}"; do
        timed "$OUT/analyze_T${T}_$p.log" $RUN "$BUILD/cli/kvlab" analyze "$dump" --device cuda --precision "$p" \
          --db '' --out "$OUT/analysis_T${T}_$p"
      done
    done
    ;;
  xkv)
    T=${1:-131072}
    dump=$(dump_of "$T" | tail -1)
    timed "$OUT/xkv_ref_T$T.log" python3 bench/reference/xkv_ref.py "$dump" --g 4 --rk 384 --device cuda \
      --out "$OUT/xkv_ref_T$T.json"
    specs=()
    for extra in precision=f32 precision=tf32 precision=bf16 precision=f64 solver=randomized; do
      specs+=(--spec "g=4,rk=384,$extra")
    done
    timed "$OUT/bench_xkv_T$T.log" $RUN "$BUILD/bench/bench_xkv" "$dump" --device cuda "${specs[@]}" --sweep 0 \
      --ref "$OUT/xkv_ref_T$T.json" --out "$OUT/bench_xkv_T$T.json"
    grep -E "compress|max \|error" "$OUT/bench_xkv_T$T.log"
    ;;
  *) sed -n '2,18p' "$0"; exit 2 ;;
esac
