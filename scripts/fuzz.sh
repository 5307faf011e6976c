#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang, ASan + UBSan, in build-fuzz/) and runs each on
# its seed corpus fuzz/corpus/<name>/ (docs/fuzzing.md). Fails on any crash, leak, timeout,
# out-of-memory or sanitizer report, and on any input of fuzz/crashes/<name>/ (crashes found
# before: each must now be a clean rejection).
#
#   scripts/fuzz.sh                      CI: every target, -seed=1 and a fixed number of runs
#                                        each (deterministic; under 5 minutes on 2 cores)
#   scripts/fuzz.sh spec_fuzz ...        only these targets
#   FUZZ_RUNS=N scripts/fuzz.sh          N runs per target instead of the CI table below
#   FUZZ_SECONDS=S scripts/fuzz.sh       a longer local run: S seconds per target, a random
#                                        seed, corpus kept and grown in build-fuzz/corpus-long/
#   FUZZ_PARALLEL=P                      targets run P at a time (default: nproc)
#   FUZZ_SKIP_BUILD=1                    run what build-fuzz/ holds
#
# Crashes are written to build-fuzz/artifacts/<name>/ (reproduce: build-fuzz/fuzz/<name> FILE).
set -euo pipefail
cd "$(dirname "$0")/.."

# Runs per target in CI: about 40 s each at the rate measured on a loaded 2-core machine with
# two targets at a time (docs/fuzzing.md §4), so that all of them take under 5 minutes in CI.
declare -A CI_RUNS=(
  [generation_config_fuzz]=14000
  [jinja_fuzz]=100000
  [kv_dump_fuzz]=15000
  [longbench_fuzz]=26000
  [model_config_fuzz]=110000
  [prompts_fuzz]=110000
  [safetensors_fuzz]=38000
  [sp_model_fuzz]=290000
  [spec_fuzz]=55000
  [sweep_yaml_fuzz]=40000
  [tokenizer_config_fuzz]=80000
  [tokenizer_json_fuzz]=55000
)
# Largest input each target tries (bytes); seeds are smaller.
declare -A MAX_LEN=([jinja_fuzz]=8192 [kv_dump_fuzz]=16384 [tokenizer_json_fuzz]=16384 [tokenizer_config_fuzz]=8192)

BUILD=build-fuzz
if [[ $# -gt 0 ]]; then TARGETS=("$@"); else TARGETS=($(printf '%s\n' "${!CI_RUNS[@]}" | sort)); fi
for t in "${TARGETS[@]}"; do
  [[ -n "${CI_RUNS[$t]:-}" ]] || { echo "fuzz: unknown target '$t' (known: ${!CI_RUNS[*]})" >&2; exit 2; }
done

if [[ "${FUZZ_SKIP_BUILD:-0}" != 1 ]]; then
  command -v clang++ >/dev/null || { echo "fuzz: clang++ not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
  launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  fi
  # -O1 -g: what libFuzzer's documentation recommends; assertions stay on (no NDEBUG).
  cmake -S . -B "$BUILD" -G Ninja -DKVLAB_FUZZ=ON \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_C_FLAGS_DEBUG=-O1 -g" "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g" \
    -DKVLAB_HARNESS=OFF -DKVLAB_BUILD_TESTS=OFF -DKVLAB_BUILD_BENCH=OFF -DKVLAB_NATIVE=OFF -DKVLAB_CUDA=OFF \
    "${launcher[@]}" >/dev/null
  cmake --build "$BUILD" --target "${TARGETS[@]}" -j "$(nproc)"
fi

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:symbolize=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan_suppressions.txt:${LSAN_OPTIONS:-}"
LOGS="$BUILD/logs"
mkdir -p "$LOGS"

# run_target NAME: fuzzes NAME (exit status: libFuzzer's), log in $LOGS/NAME.log.
run_target() {
  local t=$1 bin="$BUILD/fuzz/$1" seeds="fuzz/corpus/${1%_fuzz}" corpus mode
  local art="$BUILD/artifacts/$t/"
  rm -rf "$art" && mkdir -p "$art"
  local args=(-artifact_prefix="$art" -print_final_stats=1 -timeout=25 -rss_limit_mb=2048
              -max_len="${MAX_LEN[$t]:-4096}")
  if [[ -n "${FUZZ_SECONDS:-}" ]]; then
    corpus="$BUILD/corpus-long/$t"; mkdir -p "$corpus"
    args+=(-seed=0 -max_total_time="$FUZZ_SECONDS")
  else
    # New inputs go to the first folder: a fresh scratch one, so the seeds stay as committed
    # and every CI run starts from the same state.
    corpus="$BUILD/corpus/$t"; rm -rf "$corpus" && mkdir -p "$corpus"
    # -reload=0: no re-reading of the corpus folder on a timer. With the fixed seed and address
    # space layout (NO_ASLR below; comparison operands feed the mutator), runs repeat exactly.
    args+=(-seed=1 -runs="${FUZZ_RUNS:-${CI_RUNS[$t]}}" -reload=0)
  fi
  $NO_ASLR "$bin" "${args[@]}" "$corpus" "$seeds" >"$LOGS/$t.log" 2>&1
}
# Without address-space randomization where the system allows it (setarch -R; a container's
# seccomp profile may not), so that a CI run repeats exactly; otherwise runs may differ slightly.
NO_ASLR=""
if [[ -z "${FUZZ_SECONDS:-}" ]]; then
  if setarch "$(uname -m)" -R true 2>/dev/null; then
    NO_ASLR="setarch $(uname -m) -R"
  else
    echo "fuzz: note: cannot turn off address-space randomization (setarch -R); runs may not repeat exactly"
  fi
fi
export -f run_target
export BUILD LOGS FUZZ_SECONDS FUZZ_RUNS NO_ASLR
export CI_RUNS_DECL="$(declare -p CI_RUNS MAX_LEN)"

start=$SECONDS
printf '%s\n' "${TARGETS[@]}" |
  xargs -P "${FUZZ_PARALLEL:-$(nproc)}" -I{} bash -c 'eval "$CI_RUNS_DECL"; run_target {} || true'

# A crash found earlier stays fixed: every file of fuzz/crashes/<name>/ runs once and must pass.
status=0
for t in "${TARGETS[@]}"; do
  dir="fuzz/crashes/${t%_fuzz}"
  if [[ -d "$dir" ]] && compgen -G "$dir/*" >/dev/null; then
    if ! "$BUILD/fuzz/$t" "$dir"/* >"$LOGS/$t.regressions.log" 2>&1; then
      echo "fuzz: $t fails on a recorded crash of $dir/ (log: $LOGS/$t.regressions.log)"
      tail -30 "$LOGS/$t.regressions.log"
      status=1
    fi
  fi
done

printf '%-24s %12s %8s %8s  %s\n' target executions seconds exec/s result
total=0
for t in "${TARGETS[@]}"; do
  log="$LOGS/$t.log"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  result=ok
  if [[ -z "$execs" ]] || grep -qE '^==[0-9]+==ERROR|runtime error:|deadly signal|Test unit written|kvlab fuzz:' "$log"; then
    result="FAILED (log: $log)"
    status=1
  fi
  total=$((total + ${execs:-0}))
  printf '%-24s %12s %8s %8s  %s\n' "$t" "${execs:--}" "${secs:--}" "${speed:--}" "$result"
done
echo "fuzz: $total executions in $((SECONDS - start)) s"
for t in "${TARGETS[@]}"; do
  log="$LOGS/$t.log"
  if ! grep -q '^stat::number_of_executed_units' "$log" || grep -qE '^==[0-9]+==ERROR|runtime error:|deadly signal|Test unit written|kvlab fuzz:' "$log"; then
    echo "---- $t: last lines of $log"
    tail -40 "$log"
  fi
done
exit $status
