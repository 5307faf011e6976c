#!/usr/bin/env bash
# A GPU session's work for issue 8 in device-tool calls of at most 10 minutes each, from what the
# first session on an H200 learned: build the CUDA programs here and carry them, build the
# harness there into /tmp (the checkout is fresh at every call; /tmp lives while the machine stays
# warm, 30 s after a call), keep every step under its own deadline, and bring the logs back as
# one archive (the tool returns at most 8 files).
#
#   here:  KVLAB_HARNESS=ON scripts/build-cuda.sh fetch            # .debs/, 50 MiB
#          scripts/build-cuda.sh prebuild && cp /usr/share/dict/american-english .prebuilt/words
#   there, one device call each (carry [".debs", ".prebuilt"]):
#     bench/gpu_session.sh 1    CUDA parity tests, analyze 16k, xkv f32 at 128k vs torch.linalg.svd
#     bench/gpu_session.sh 2    harness build, transformers parity, the hook's two routes on CUDA,
#                               eval 32k (prefill vs compression, resident and host routes)
#     bench/gpu_session.sh 3    analyze 128k, xkv tf32 and randomized at 128k
#     bench/gpu_session.sh 4    eval 128k (harness rebuilt if the machine went cold)
#     bench/gpu_session.sh 5    eval 32k of snapkv (+kivi, +xkv), kivi, minicache, commonkv and
#                               xkv+kivi, resident vs host
# A session has 30 device minutes and each call starts a machine (minutes), so four full calls
# may not fit: run 1, 2 and 4 first (parity; the hook's routes and prefill vs compression), then 5, 3.
# The fair xkv-vs-torch ratio at equal shapes (32 layers, 8 × 128 KV heads, g=4, rk=384): phase
# 1's xkv_ref.py svd_seconds (torch.linalg.svd + rebuild, each group already on the GPU) against
# phase 4's eval compress_seconds for xkv precision=f32 (the resident route: the cache already on
# the GPU, Gram + eigenpairs + A + rebuild + write-back), both at 128k tokens.
# Each call writes $OUT/session-N.tgz. KVLAB_PROFILE=1 is set: every kvlab / bench_xkv log ends
# with per-stage times (for xkv, "low-rank: decompose (backend)" is the part to set beside
# torch.linalg.svd's time; for eval, the hook's resident stages).
set -uo pipefail
cd "$(dirname "$0")/.."
phase=${1:-}
[[ $phase =~ ^[1-5]$ ]] || { sed -n '2,26p' "$0"; exit 2; }
LOGS=/tmp/kvlab-session-$phase
mkdir -p "$LOGS"
start=$(date +%s)
left() { echo $(( ${1:-570} - ($(date +%s) - start) )); }  # seconds to the call's own deadline
step() {  # step NAME DEADLINE CMD...: CMD's output in $LOGS/NAME.log, cut at DEADLINE s into the call
  local name=$1 deadline=$2 budget rc=0
  shift 2
  budget=$(left "$deadline")
  if ((budget < 20)); then echo "$name: skipped, no time left"; return; fi
  timeout "$budget" "$@" >"$LOGS/$name.log" 2>&1 || rc=$?
  echo "[$(( $(date +%s) - start )) s] $name: rc=$rc$( ((rc == 124)) && echo ' (deadline)') $(tail -1 "$LOGS/$name.log")"
}
RESULTS=${OUT:-/tmp}  # the device tool's folder; run_gpu_bench.sh's own OUT goes under the logs
finish() {
  tar czf "$RESULTS/session-$phase.tgz" -C "$LOGS" . 2>/dev/null
  echo "logs: $RESULTS/session-$phase.tgz"
}
trap finish EXIT
export KVLAB_BUILD_DIR=.prebuilt OUT=$LOGS/bench KVLAB_PROFILE=1
scripts/build-cuda.sh unpack >"$LOGS/unpack.log" 2>&1 || { cat "$LOGS/unpack.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$LOGS/gpu.txt" 2>&1
R="scripts/build-cuda.sh run"
harness() {  # the harness against the image's CUDA PyTorch, into /tmp (kept while warm)
  [[ -x /tmp/build-cuda/cli/kvlab ]] && return
  step harness_build "$1" env KVLAB_HARNESS=ON KVLAB_BUILD_DIR=/tmp/build-cuda scripts/build-cuda.sh build kvlab \
    harness_model_tests harness_jobs_tests
}
evaluate() {  # evaluate LENGTH DEADLINE [ROUTES]
  step "eval_$1" "$2" env HARNESS_BUILD=/tmp/build-cuda WORDS=.prebuilt/words ROUTES="${3:-auto}" \
    bench/run_gpu_bench.sh eval "$1"
}
case $phase in
  1)
    for t in linalg analysis compressors; do step "test_$t" 200 $R .prebuilt/$t/${t}_cuda_tests; done
    step analyze_16k 300 bench/run_gpu_bench.sh analyze 16384
    step xkv_128k 580 env XKV_SPECS=precision=f32 bench/run_gpu_bench.sh xkv 131072
    ;;
  2)
    harness 200
    step transformers_parity 280 env KVLAB_BUILD_DIR=/tmp/build-cuda $R /tmp/build-cuda/harness/model/harness_model_tests \
      --gtest_filter='*LogitsMatch*'
    step hook_routes 320 env KVLAB_BUILD_DIR=/tmp/build-cuda $R /tmp/build-cuda/harness/harness_jobs_tests \
      --gtest_filter='CompressionHook*:WindowScores*:KiviOnDevice*:MinicacheOnDevice*'
    evaluate 32768 580 "auto host"
    ;;
  3)
    step analyze_128k 330 bench/run_gpu_bench.sh analyze 131072
    step xkv_variants 580 env XKV_SPECS="precision=tf32 solver=randomized" bench/run_gpu_bench.sh xkv 131072
    ;;
  4)
    harness 200
    evaluate 131072 580
    ;;
  5)
    harness 200
    step eval_32768_others 580 env HARNESS_BUILD=/tmp/build-cuda WORDS=.prebuilt/words ROUTES="resident host" \
      EVAL_METHODS="snapkv:keep=0.25 snapkv:keep=0.25+kivi:bits=2 kivi:bits=2 minicache commonkv:g=4 \
      xkv:g=4,rk=384,rv=576+kivi:bits=4 snapkv:keep=0.5+xkv:g=4,rk=384,rv=576" \
      bench/run_gpu_bench.sh eval 32768
    ;;
esac
