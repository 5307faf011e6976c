#!/usr/bin/env bash
# Issue 8's GPU measurements on the device machine, logs and JSON under $OUT (the device tool
# brings them back). One step per call, each meant to stay inside the tool's 10-minute limit:
#   bench/run_gpu_bench.sh analyze [TOKENS...]  kvlab analyze --device cuda of the 32-layer bench
#                                               dump at each length (default 16384 131072): f32
#                                               Gram, plus bf16 and f64 at the first length, and
#                                               f32 again with 4 eigen-rank solves in flight
#   bench/run_gpu_bench.sh xkv [TOKENS]         xkv:g=4,rk=384 (default 131072 tokens): bench_xkv
#                                               --device cuda vs bench/reference/xkv_ref.py --device
#                                               cuda (torch.linalg.svd, the authors' route); the
#                                               variants in $XKV_SPECS (default "precision=f32
#                                               precision=tf32": at 128k each takes about 80 s and
#                                               its errors 75 s more on an H200)
#   bench/run_gpu_bench.sh eval [LENGTHS...]    prefill vs xKV compression (default 32768 131072):
#                                               kvlab eval of a random model with Llama-3.1-8B's
#                                               shapes (bench/reference/random_checkpoint.py, bf16)
#                                               on one RULER niah_single_1 prompt of each length,
#                                               xkv:g=4,rk=384,rv=576 exact in f32 and tf32 and
#                                               randomized (HMT, ℓ = r + 10, 2 iterations), for each
#                                               eval --compress-route in $ROUTES (default "auto":
#                                               on the model's tensors; "auto host" adds the host
#                                               round trip for the ratio); $EVAL_METHODS (space-
#                                               separated specs) replaces the three xkv methods
# Dumps and the checkpoint are made on first use in $DUMPS (default /tmp/kvlab-gpu-bench; the
# 128k dump is 16 GiB of f16, about 90 s on 16 cores; the checkpoint 14 GiB, about 25 s: a warm
# machine keeps them between calls). Build first, or build here and carry (scripts/build-cuda.sh):
#   scripts/build-cuda.sh build kvlab bench_xkv      (device tool: carry [".debs"])
#   KVLAB_BUILD_DIR=.prebuilt bench/run_gpu_bench.sh ...   (carry [".debs", ".prebuilt"])
# eval needs the harness, built there against the machine's CUDA PyTorch, and a word list:
#   KVLAB_HARNESS=ON KVLAB_BUILD_DIR=/tmp/build-cuda scripts/build-cuda.sh build kvlab
#   HARNESS_BUILD=/tmp/build-cuda WORDS=.prebuilt/words bench/run_gpu_bench.sh eval 32768
# (if the image lacks /usr/share/dict, copy Debian's american-english into the carried .prebuilt/).
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
      # The eigen-rank solves 4 at a time (a stream each) against the f32 run above.
      timed "$OUT/analyze_T${T}_f32_x4.log" $RUN "$BUILD/cli/kvlab" analyze "$dump" --device cuda --precision f32 \
        --threads 4 --db '' --out "$OUT/analysis_T${T}_f32_x4"
    done
    ;;
  xkv)
    T=${1:-131072}
    dump=$(dump_of "$T" | tail -1)
    ref=$DUMPS/xkv_ref_T$T.json  # kept beside the dump: a warm machine's next call reuses it
    [[ -f $ref ]] || timed "$OUT/xkv_ref_T$T.log" python3 bench/reference/xkv_ref.py "$dump" --g 4 --rk 384 \
      --device cuda --out "$ref"
    cp "$ref" "$OUT/"
    specs=()
    for extra in ${XKV_SPECS:-precision=f32 precision=tf32}; do
      specs+=(--spec "g=4,rk=384,$extra")
    done
    timed "$OUT/bench_xkv_T$T.log" $RUN "$BUILD/bench/bench_xkv" "$dump" --device cuda "${specs[@]}" --sweep 0 \
      --ref "$ref" --out "$OUT/bench_xkv_T$T.json"
    grep -E "compress|max \|error" "$OUT/bench_xkv_T$T.log"
    ;;
  eval)
    lengths=("$@")
    ((${#lengths[@]})) || lengths=(32768 131072)
    kvlab=${HARNESS_BUILD:-/tmp/build-cuda}/cli/kvlab
    [[ -x $kvlab ]] || { echo "eval: no $kvlab (KVLAB_HARNESS=ON scripts/build-cuda.sh build kvlab)" >&2; exit 2; }
    words=${WORDS:-/usr/share/dict/american-english}
    [[ -f $words ]] || { echo "eval: no word list $words (set WORDS)" >&2; exit 2; }
    model=$DUMPS/random-llama-3.1-8b
    if [[ ! -f $model/config.json ]]; then
      $RUN "$kvlab" make-tiny-model --arch llama --layers 1 --hidden 64 --heads 2 --kv-heads 1 --intermediate 64 \
        --vocab 8192 --out "$DUMPS/tokenizer" >"$OUT/tokenizer.log"
      timed "$OUT/checkpoint.log" python3 bench/reference/random_checkpoint.py "$DUMPS/tokenizer" "$model"
    fi
    methods=()
    for m in ${EVAL_METHODS:-xkv:g=4,rk=384,rv=576,precision=f32 xkv:g=4,rk=384,rv=576,precision=tf32 \
      xkv:g=4,rk=384,rv=576,solver=randomized,precision=f32}; do methods+=(--method "$m"); done
    for L in "${lengths[@]}"; do
      for route in ${ROUTES:-auto}; do
        timed "$OUT/eval_${L}_$route.log" $RUN "$kvlab" eval --model "$model" --task ruler:niah_single_1 \
          --length "$L" --samples 1 --words "$words" --device cuda --max-new-tokens 4 --db '' \
          --out "$OUT/eval_${L}_$route" --compress-route "$route" "${methods[@]}"
        tail -4 "$OUT/eval_${L}_$route.log"
      done
    done
    ;;
  *) sed -n '2,31p' "$0"; exit 2 ;;
esac
