#!/usr/bin/env bash
# kvlab dump (the harness's prefill, every layer streamed into an HDF5 dump) against an HF-style
# eager PyTorch forward of the same checkpoint (harness/model/reference_llama.py: full S×S
# attention per layer, as transformers' eager path), run side by side on this machine.
# Both use the same libtorch 1.13 CPU kernels, so the ratio measures kvlab's own choices
# (causal key prefix per query chunk, heap-sized temporaries), not a different BLAS.
#   bench/run_dump_bench.sh            # 8 layers, d=1024, 4096 tokens (about a minute)
# Environment: KVLAB (binary), OUT (bench/out/dump), TOKENS (4096), LAYERS (8), HIDDEN (1024).
set -euo pipefail
cd "$(dirname "$0")/.."
KVLAB=${KVLAB:-build/cli/kvlab}
OUT=${OUT:-bench/out/dump}
TOKENS=${TOKENS:-4096}
LAYERS=${LAYERS:-8}
HIDDEN=${HIDDEN:-1024}
mkdir -p "$OUT"

"$KVLAB" --quiet make-tiny-model --arch llama --layers "$LAYERS" --hidden "$HIDDEN" --heads 16 --kv-heads 4 \
  --intermediate $((HIDDEN * 11 / 4)) --vocab 2000 --dtype bfloat16 --max-position 32768 --out "$OUT/model" >/dev/null
/usr/bin/python3 - "$OUT/text.txt" <<'PY'
import random, sys
random.seed(0)
words = open("README.md").read().split()
open(sys.argv[1], "w").write(" ".join(random.choice(words) for _ in range(3 * 4096)))
PY

echo "== kvlab dump ($TOKENS tokens, $LAYERS layers, d=$HIDDEN)"
/usr/bin/time -f "kvlab: %e s wall, %M KiB peak RSS" \
  "$KVLAB" --quiet dump --model "$OUT/model" --text "$OUT/text.txt" --max-tokens "$TOKENS" --chat-template none \
  --query-window 64 --out "$OUT/dump.h5"
IDS=$(/usr/bin/python3 -c "import h5py,sys; print(','.join(map(str, h5py.File(sys.argv[1])['samples/s0/tokens'][:])))" "$OUT/dump.h5")
echo "== HF-style eager PyTorch forward (same tokens)"
/usr/bin/time -f "reference: %e s wall, %M KiB peak RSS" \
  /usr/bin/python3 harness/model/reference_llama.py "$OUT/model" "$IDS" "$OUT/reference.f32"
