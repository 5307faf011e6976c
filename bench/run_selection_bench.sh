#!/usr/bin/env bash
# Selection methods against SnapKV (issue 21's budget: each at most 1.5× SnapKV's time), all in
# one `kvlab compress` run on the same dump, machine and thread count: compress.json's
# seconds.compress per method (the selection: scores, budgets, masks, stored form), not the
# attention scoring that follows. criticalkv is left out (it needs a checkpoint's o_proj);
# duoattention reads a pattern file this script writes (random per-head values, seeded).
#   bench/run_selection_bench.sh [TOKENS] [LAYERS]     (defaults 16384 32; 4096 8 in a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS=${1:-16384}
LAYERS=${2:-32}
THREADS=${THREADS:-$(nproc)}
OUT=bench/out
KVLAB=build/cli/kvlab
mkdir -p "$OUT"
DUMP="$OUT/select_L${LAYERS}_T${TOKENS}.h5"
PATTERN="$OUT/duo_pattern_L${LAYERS}.tsv"
export OPENBLAS_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS

[[ -f "$DUMP" ]] || "$KVLAB" --quiet synth --layers "$LAYERS" --kv-heads 8 --q-heads 32 --head-dim 128 \
  --tokens "$TOKENS" --dtype f16 --out "$DUMP"
/usr/bin/python3 -c "
import random, sys
random.seed(0)
print('\n'.join('\t'.join(f'{random.random():.4f}' for _ in range(8)) for _ in range($LAYERS)))" >"$PATTERN"

# streamingllm first: its scoring reads every layer, so no method pays for a cold page cache.
methods=(streamingllm:keep=0.25 snapkv:keep=0.25 h2o:keep=0.25 pyramidkv:keep=0.25 knorm:keep=0.25
  keydiff:keep=0.25 tova:keep=0.25 expected_attention:keep=0.25 random:keep=0.25 adakv:keep=0.25
  chunkkv:keep=0.25 "duoattention:pattern=$PATTERN,sparsity=0.75" quest:keep=0.25)
args=()
for m in "${methods[@]}"; do args+=(--method "$m"); done
"$KVLAB" --quiet compress "$DUMP" "${args[@]}" --threads "$THREADS" --db '' --out "$OUT/selection" --force >/dev/null
/usr/bin/python3 - "$OUT/selection/compress.json" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))["methods"]
snap = next(r["seconds"]["compress"] for r in runs if r["spec"].startswith("snapkv"))
print(f"{'method':<28} {'compress s':>10} {'/ snapkv':>9}")
for r in runs:
    s = r["seconds"]["compress"]
    print(f"{r['spec'].split(':')[0]:<28} {s:>10.3f} {s / snap:>9.2f}")
PY
