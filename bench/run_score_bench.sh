#!/usr/bin/env bash
# Scoring against its numpy floor, both sides in one run on the same machine and thread count:
#   kvlab compress DUMP --method full   vs   bench/reference/attention_floor.py (numpy/h5py:
#   the window attention twice, the output error and the KL: the least a scorer must do)
# on `kvlab synth` with 16 layers, 8 KV heads, 32 query heads, head dim 128, 2048 tokens, f32
# (so the fp16 store of `full` is lossy and the KL is computed on real differences).
# Alternates the two REPEAT times and prints each time, the medians and their ratio; with
# KVLAB_BEFORE=path/to/an/older/kvlab it times that binary in the same rounds too.
#   bench/run_score_bench.sh [TOKENS] [LAYERS] [REPEAT]
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS=${1:-2048}
LAYERS=${2:-16}
REPEAT=${3:-5}
THREADS=${THREADS:-$(nproc)}
OUT=bench/out
KVLAB=build/cli/kvlab
mkdir -p "$OUT"
DUMP="$OUT/score_L${LAYERS}_T${TOKENS}.h5"
export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS

[[ -f "$DUMP" ]] || "$KVLAB" --quiet synth --layers "$LAYERS" --kv-heads 8 --q-heads 32 --head-dim 128 \
  --tokens "$TOKENS" --dtype f32 --out "$DUMP"

declare -A times
sides=(kvlab floor)
[[ -n "${KVLAB_BEFORE:-}" ]] && sides+=(before)
for ((i = 0; i < REPEAT; ++i)); do
  for side in "${sides[@]}"; do
    case $side in
      kvlab) cmd=("$KVLAB" --quiet compress "$DUMP" --method full --threads "$THREADS" --db '' --out "$OUT/score-kvlab" --force) ;;
      before) cmd=("$KVLAB_BEFORE" --quiet compress "$DUMP" --method full --threads "$THREADS" --db '' --out "$OUT/score-before" --force) ;;
      floor) cmd=(/usr/bin/python3 bench/reference/attention_floor.py "$DUMP" --json "$OUT/score-floor.json") ;;
    esac
    /usr/bin/time -f "%e" -o "$OUT/score.time" "${cmd[@]}" >/dev/null
    t=$(cat "$OUT/score.time")
    times[$side]+="$t "
    echo "round $i $side: $t s"
  done
done
python3 - "${times[kvlab]}" "${times[floor]}" "${times[before]:-}" <<'PY'
import statistics, sys
kvlab, floor = (statistics.median(map(float, s.split())) for s in sys.argv[1:3])
print(f"median: kvlab {kvlab:.2f} s, numpy floor {floor:.2f} s, floor / kvlab = {floor / kvlab:.2f}")
if sys.argv[3].strip():
    before = statistics.median(map(float, sys.argv[3].split()))
    print(f"median: kvlab before {before:.2f} s, before / now = {before / kvlab:.2f}")
PY
python3 - "$OUT/score-kvlab/compress.json" "$OUT/score-floor.json" <<'PY'
import json, sys
k = json.load(open(sys.argv[1]))["methods"][0]
f = json.load(open(sys.argv[2]))
print(f"attn_kl: kvlab {k['attn_kl']:.9g}, floor {f['attn_kl']:.9g}; "
      f"attn_output_error: kvlab {k['attn_output_error']:.9g}, floor {f['attn_output_error']:.9g}")
PY
