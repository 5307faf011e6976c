#!/usr/bin/env bash
# End-to-end checks of the kvlab binary: the demo runs and writes its files; synth + analyze
# produce the documented outputs; bad input is one line on stderr with exit code 2 and
# leaves nothing behind.
set -uo pipefail
SCRIPT_DIR=$(realpath "$(dirname "$0")")  # before test_lib.sh changes into its scratch folder
source "$SCRIPT_DIR/test_lib.sh"
expect_error() {  # expect_error NAME PATTERN ARGS... : exit 2, one stderr line matching PATTERN
  local name=$1 pattern=$2; shift 2
  "$KVLAB" --quiet "$@" >"$WORK/out" 2>"$WORK/err"
  local rc=$?
  check "$name exits 2 (got $rc)" test "$rc" = 2
  check "$name names the problem" grep -q -- "$pattern" "$WORK/err"
  check "$name is one line, a user error" bash -c "test \$(wc -l <'$WORK/err') = 1 && ! grep -q 'internal error' '$WORK/err'"
}

"$KVLAB" --quiet demo >demo.txt 2>demo.err
check "demo exits 0" test $? = 0
check "demo prints CKA" grep -q "CKA" demo.txt
for f in synthetic.h5 analysis/analysis.json analysis/key_cka.csv analysis/value_spectra.csv analysis/key_eigen_rank_mean.csv; do
  check "demo wrote $f" test -s "kvlab-demo/$f"
done
check "demo prints the compressor table" grep -q "snapkv:keep=0.5" demo.txt
for f in compress/compress.json compress/methods.csv compress/layers.csv; do
  check "demo wrote $f" test -s "kvlab-demo/$f"
done
if "$KVLAB" --help 2>&1 | grep -q make-tiny-model; then
  check "demo dumped the tiny model" test -s kvlab-demo/tiny-llama.h5
  check "demo scored the tiny model's cache" test -s kvlab-demo/tiny-llama-compress/methods.csv
  check "demo decoded from compressed caches" test -s kvlab-demo/tiny-llama-eval/eval.json
fi
check "demo recorded its runs in the results store" \
  bash -c "\"$KVLAB\" results ls --db kvlab-demo/kvlab-results.sqlite | grep -q compress"
if command -v gnuplot >/dev/null 2>&1; then
  check "demo drew its figures" test -s kvlab-demo/figures/key_cka.png
  check "demo's report links them" grep -q "figures/kl_vs_ratio.png" kvlab-demo/report.md
  "$KVLAB" plot error-vs-ratio --db kvlab-demo/kvlab-results.sqlite --run 2 --out figs/kl.svg >/dev/null
  check "plot writes the figure with its script and data" bash -c "test -s figs/kl.svg && test -s figs/kl.gp && test -s figs/kl.dat"
  expect_error "plot of a missing matrix" "no matrix" plot heatmap --db kvlab-demo/kvlab-results.sqlite --run 1 --matrix nope --out figs/x.pdf
fi
check "demo left no temporary files" test -z "$(find kvlab-demo -name '*.tmp-*')"
# The metrics table (results/metrics.h) knows every metric the demo recorded (compress, analyze
# and, with the model runner, eval runs), at each scope it recorded it.
if command -v sqlite3 >/dev/null 2>&1; then
  sqlite3 -separator ' ' kvlab-demo/kvlab-results.sqlite "SELECT DISTINCT name, scope FROM metrics" >recorded.txt
  check "the demo recorded metrics" test -s recorded.txt
  while read -r name scope; do
    "$KVLAB" --quiet results metrics "$name" 2>&1 | tail -1 | awk '{print $4}' | tr , '\n' | grep -qx "$scope" \
      || echo "$name at $scope"
  done <recorded.txt >unlisted.txt
  check "the metrics table lists every metric the demo recorded, at its scope" test ! -s unlisted.txt
fi
expect_error "metrics of a name the table lacks" "not in the metrics table: nope" results metrics key_error nope

"$KVLAB" --quiet synth --layers 4 --kv-heads 2 --q-heads 4 --head-dim 16 --tokens 300 --query-window 8 --seed 3 --out a.h5 >/dev/null
check "synth exits 0" test $? = 0
"$KVLAB" --quiet synth --layers 4 --kv-heads 2 --q-heads 4 --head-dim 16 --tokens 300 --query-window 8 --seed 3 --out b.h5 >/dev/null
check "synth is deterministic (same seed, same data)" \
  bash -c "\"$KVLAB\" --quiet analyze a.h5 --out ra >/dev/null && \"$KVLAB\" --quiet analyze b.h5 --out rb >/dev/null && cmp -s ra/key_spectra.csv rb/key_spectra.csv"
"$KVLAB" --quiet analyze a.h5 --kind value --groups 1,2 --energy 0.5,0.9 --token-block 64 --out r2 >/dev/null
check "analyze --kind value writes only values" bash -c "test -s r2/value_cka.csv && ! test -e r2/key_cka.csv"
check "analyze records the options" grep -q '"token_block": 64' r2/analysis.json

expect_error "missing dump" "nope.h5" analyze nope.h5 --out x
expect_error "group larger than the model" "group size 8" analyze a.h5 --groups 8 --out x
expect_error "unknown sample" "no sample 'zz'" analyze a.h5 --sample zz --out x
expect_error "bad option value" "kind" analyze a.h5 --kind keys --out x
"$KVLAB" --quiet compress a.h5 --method "xkv:g=2,rk=[4,8]" --method "snapkv:keep=0.5,window=4+kivi:bits=4" --out c1 >c1.txt
check "compress exits 0" test $? = 0
check "compress expands the rank sweep" test "$(grep -c '^"xkv:g=2' c1/methods.csv)" = 2
check "compress prints canonical specs" grep -q "kivi:bits=4,group=32" c1.txt
check "compress records per-layer rows" test "$(grep -c '^"snapkv' c1/layers.csv)" = 4
expect_error "unknown compression method" "known: full, svd" compress a.h5 --method svdd --out c2
expect_error "unknown spec key" "allowed:" compress a.h5 --method "xkv:gg=2" --out c2
expect_error "chain in the wrong order" "comes after" compress a.h5 --method "kivi+svd" --out c2
expect_error "a weight-based method without --model" "needs the model's weights" compress a.h5 --method commonkv --out c2
check "failed compress wrote nothing" test ! -e c2
if ! command -v nvidia-smi >/dev/null 2>&1; then  # no GPU here: --device cuda must say so, not crash
  expect_error "analyze --device cuda without a GPU" "CUDA" analyze a.h5 --device cuda --out xc
  expect_error "compress --device cuda without a GPU" "CUDA" compress a.h5 --method svd --device cuda --out xc
fi
# Output directories are written whole: a reused --out is refused, or with --force replaced, so no
# file of an earlier run survives (a --kind key run into a --kind both directory kept 7 value_*.csv).
"$KVLAB" --quiet analyze a.h5 --kind both --out reuse >/dev/null
expect_error "analyze into a directory holding files" "pass --force" analyze a.h5 --kind key --out reuse
check "a refused analyze left the directory as it was" test "$(ls reuse | grep -c '^value_')" = 7
"$KVLAB" --quiet analyze a.h5 --kind key --out reuse --force >/dev/null
check "analyze --force replaces the directory whole" bash -c "test -s reuse/key_cka.csv && test \$(ls reuse | grep -c '^value_') = 0"
"$KVLAB" --quiet compress a.h5 --method "svd:rk=4" --out reuse --force >/dev/null
check "compress --force leaves only its own files" test "$(ls reuse | sort | tr '\n' ' ')" = "compress.json layers.csv methods.csv "
mkdir empty-out
"$KVLAB" --quiet compress a.h5 --method "svd:rk=4" --out empty-out/ >/dev/null
check "an empty directory is written into" test -s empty-out/methods.csv
check "no staging folder is left behind" test -z "$(find . -name '*.tmp-*')"
# A kill at any moment leaves the previous directory or the new one whole, never a mix and never
# nothing (OutputDir commits with one atomic exchange). The kills land at several points of a
# run; whatever point each hits, methods.csv and compress.json must describe the same methods.
"$KVLAB" --quiet compress a.h5 --method "svd:rk=4" --out killed >/dev/null
whole_dir() {
  python3 - "$1" <<'PY'
import csv, json, sys
d = sys.argv[1]
methods = json.load(open(f"{d}/compress.json"))["methods"]
rows = list(csv.DictReader(open(f"{d}/methods.csv")))
sys.exit(0 if len(methods) == len(rows) >= 1 else 1)
PY
}
for delay in 0 0.05 0.1 0.2 0.4 0.8 1.6; do
  "$KVLAB" --quiet compress a.h5 --method "svd:rk=4" --method "kivi" --out killed --force >/dev/null 2>&1 &
  pid=$!
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  check "a kill after ${delay} s leaves killed/ whole" whole_dir killed
done
rm -rf killed killed.tmp-*
# Plain user errors: one line naming the input, never "internal error".
touch afile
expect_error "compress --out under a file" "afile" compress a.h5 --method svd:rk=4 --out afile/x
expect_error "analyze --out onto a file" "afile: exists and is not a directory" analyze a.h5 --out afile
expect_error "a directory given as a dump" "is a directory, not a KV dump" analyze reuse --out x
expect_error "a directory given to compress" "is a directory, not a KV dump" compress reuse --method svd --out x
expect_error "an unknown command" "unknown command 'foo'" foo
expect_error "an unknown sweep command" "unknown command 'foo'" sweep foo
expect_error "a non-positive option" "must be positive (got 0)" analyze a.h5 --token-block 0 --out x
check "the option error is short (no range to DBL_MAX)" test "$(wc -c <err)" -lt 120
expect_error "synth --layers 0" "must be positive (got 0)" synth --layers 0 --out x.h5
check "synth's option error is short too" test "$(wc -c <err)" -lt 120
printf 'not hdf5' >bad.h5
expect_error "not an HDF5 file" "bad.h5" analyze bad.h5 --out x
check "failed runs wrote no report" test ! -e x
expect_error "synth with bad shape" "q" synth --kv-heads 3 --q-heads 4 --out c.h5
check "failed synth left no file" bash -c "! ls c.h5* >/dev/null 2>&1"

# The real-model path on a generated checkpoint: make-tiny-model → dump → analyze and compress.
# (Built only with KVLAB_HARNESS=ON, the default.)
if "$KVLAB" --help 2>&1 | grep -q make-tiny-model; then
  "$KVLAB" --quiet make-tiny-model --arch qwen2 --layers 4 --layer-similarity 0.8 --seed 1 --out tiny >/dev/null
  check "make-tiny-model exits 0" test $? = 0
  for f in config.json generation_config.json model.safetensors tokenizer.json tokenizer_config.json; do
    check "make-tiny-model wrote $f" test -s "tiny/$f"
  done
  printf '%s\n' '{"id": "p1", "context": "kvlab dumps the KV cache of every layer.", "question": "What?"}' \
    '{"id": "p2", "context": "Keys are stored before RoPE, values as they are.", "question": "How?"}' >prompts.jsonl
  "$KVLAB" --quiet dump --model tiny --prompts prompts.jsonl --query-window 4 --out tiny.h5 >dump.txt
  check "dump exits 0" test $? = 0
  check "dump reports both samples" grep -q "2 sample(s)" dump.txt
  # kvzip runs the model on the dumped tokens (harness/live_model_probe_test.cpp checks its cells).
  "$KVLAB" --quiet compress tiny.h5 --model tiny --method kvzip:keep=0.5,chunk=8 --db "" --out kvzip >/dev/null
  check "compress --model runs kvzip on a dump" grep -q '"kvzip:keep=0.5' kvzip/compress.json
  expect_error "kvzip without --model" "runs the model while compressing" compress tiny.h5 --method kvzip --out kvzip2
  # kvlab tokenize and --chat-template auto on the tiny checkpoint, which ships a Jinja template.
  # Oracles: jinja2 rendering the template as apply_chat_template calls it (reference_jinja.py's
  # environment: python3-jinja2 set up as transformers sets it up), the tokens' texts joining to
  # the rendered prompt, and decoding the ids giving it back.
  check "dump renders the checkpoint's own template (auto)" grep -q "chat template: own" dump.txt
  cat >tok_check.py <<'PY'
import json, sys
mode, ref_dir, model, tok_file = sys.argv[1:5]
tok = json.load(open(tok_file))
if mode == "render":  # rendered == jinja2's rendering; argv[5]: content, argv[6]: kwargs
    sys.path.insert(0, ref_dir)
    from reference_jinja import environment
    config = json.load(open(f"{model}/tokenizer_config.json"))
    ctx = {"messages": [{"role": "user", "content": sys.argv[5]}], "tools": None, "documents": None,
           "add_generation_prompt": True, "bos_token": config.get("bos_token") or "", "eos_token": config.get("eos_token") or ""}
    ctx.update(json.loads(sys.argv[6]))
    want = environment().from_string(config["chat_template"]).render(**ctx)
    ok = tok["rendered"] == want
    if not ok: print(repr(tok["rendered"]), "!=", repr(want))
elif mode == "cover":  # spans are contiguous and the texts join to the rendered prompt
    t = tok["tokens"]
    ok = "".join(x["text"] for x in t) == tok["rendered"] and all(a["end"] == b["begin"] for a, b in zip(t, t[1:]))
elif mode == "apart":  # apart: the context tokens end exactly at the context part's end
    t, n = tok["tokens"], tok["context_end"]
    ok = t[n - 1]["end"] == tok["context_bytes"] == t[n]["begin"]
elif mode == "whole":  # whole: the first question token holds the question's first byte, straddling here
    t, n, b = tok["tokens"], tok["context_end"], tok["context_bytes"]
    ok = t[n]["begin"] < b < t[n]["end"]
elif mode == "ids":
    print(" ".join(str(x["id"]) for x in tok["tokens"])); ok = True
sys.exit(0 if ok else 1)
PY
  ref_dir=$(dirname "$(realpath "$SCRIPT_DIR/../harness/tokenizer/reference_jinja.py")")
  "$KVLAB" tokenize --model tiny --question " What is dumped?" "kvlab dumps the KV cache." --json >tok.json
  check "tokenize exits 0" test $? = 0
  if /usr/bin/python3 -c "import jinja2" 2>/dev/null; then
    check "tokenize: the rendered prompt is jinja2's" /usr/bin/python3 tok_check.py render "$ref_dir" tiny tok.json \
      "kvlab dumps the KV cache. What is dumped?" "{}"
  fi
  check "tokenize: the tokens' byte ranges cover the rendered prompt" /usr/bin/python3 tok_check.py cover "$ref_dir" tiny tok.json
  check "tokenize: the context ends where the context part does" /usr/bin/python3 tok_check.py apart "$ref_dir" tiny tok.json
  "$KVLAB" tokenize --model tiny --decode "$(/usr/bin/python3 tok_check.py ids "$ref_dir" tiny tok.json)" >decoded.txt
  check "tokenize --decode of the ids gives the rendered prompt back" \
    /usr/bin/python3 -c "import json,sys; sys.exit(open('decoded.txt').read() != json.load(open('tok.json'))['rendered'] + '\n')"
  "$KVLAB" tokenize --model tiny --question " What is dumped?" "kvlab dumps the KV cache." >tok.txt
  check "tokenize prints the boundary a dump records" grep -q "a dump's context_end is" tok.txt
  check "tokenize --help teaches with examples" bash -c "\"$KVLAB\" tokenize --help | grep -q -- '--decode'"
  # A word across the boundary: apart gives " th" + "e", whole one token that straddles it.
  for mode in apart whole; do
    "$KVLAB" tokenize --model tiny --tokenize $mode --question "e cache is dumped." "kvlab dumps th" --json >tok-$mode.json
  done
  check "--tokenize apart ends the context at the boundary" /usr/bin/python3 tok_check.py apart "$ref_dir" tiny tok-apart.json
  check "--tokenize whole puts the straddling token in the question" /usr/bin/python3 tok_check.py whole "$ref_dir" tiny tok-whole.json
  # Template kwargs: a copy of the checkpoint whose template branches on enable_thinking.
  cp -r tiny tiny-kw
  /usr/bin/python3 - tiny-kw/tokenizer_config.json <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["chat_template"] = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                      "{% if add_generation_prompt %}<|im_start|>assistant\n"
                      "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")
json.dump(c, open(sys.argv[1], "w"))
PY
  "$KVLAB" tokenize --model tiny-kw --chat-template-kwargs '{"enable_thinking": false}' "Some context." --json >tok-kw.json
  check "--chat-template-kwargs reaches the template" grep -q '<think>' tok-kw.json
  if /usr/bin/python3 -c "import jinja2" 2>/dev/null; then
    check "--chat-template-kwargs: the rendering is jinja2's with the kwarg" \
      /usr/bin/python3 tok_check.py render "$ref_dir" tiny-kw tok-kw.json "Some context." '{"enable_thinking": false}'
  fi
  "$KVLAB" --quiet dump --model tiny-kw --chat-template-kwargs '{"enable_thinking": false}' --prompts prompts.jsonl \
    --query-window 4 --out kw.h5 >dump-kw.txt
  check "dump records the template kwargs with the template" grep -q 'chat template: own {"enable_thinking":false}' dump-kw.txt
  expect_error "template kwargs that are not an object" "expected a JSON object" tokenize --model tiny-kw --chat-template-kwargs '[1]' x
  expect_error "template kwargs that are not JSON" "not valid JSON" dump --model tiny-kw --chat-template-kwargs '{enable' --prompts prompts.jsonl --out y.h5
  expect_error "template kwargs with a literal layout" "nothing reads the kwargs" tokenize --model tiny-kw --chat-template qwen2 --chat-template-kwargs '{"a": 1}' x
  # A base model (no template): auto is none, own an error.
  cp -r tiny tiny-base
  /usr/bin/python3 -c "import json,sys; c=json.load(open(sys.argv[1])); del c['chat_template']; json.dump(c, open(sys.argv[1],'w'))" tiny-base/tokenizer_config.json
  "$KVLAB" tokenize --model tiny-base "Plain text." >tok-base.txt
  check "auto on a base model is none" grep -q "chat template: none" tok-base.txt
  expect_error "own on a base model" "ships no chat template" tokenize --model tiny-base --chat-template own x
  expect_error "tokenize without a text" "exactly one of TEXT and --file" tokenize --model tiny
  expect_error "tokenize --decode of words" "expected token ids" tokenize --model tiny --decode "one two"
  "$KVLAB" --quiet analyze tiny.h5 --sample p1 --out tiny-analysis >/dev/null
  check "analyze reads a model dump" test -s tiny-analysis/key_cka.csv
  "$KVLAB" --quiet compress tiny.h5 --sample p2 --method "xkv:g=2,rk=8" --method "kivi:bits=4" --out tiny-compress >/dev/null
  expect_error "commonkv on a dump without attn_in" "dump it with --attn-in" compress tiny.h5 --model tiny --method commonkv --out c3
  check "compress reads a model dump" test -s tiny-compress/methods.csv
  "$KVLAB" results show latest >show-compress.txt
  if command -v xxhsum >/dev/null; then  # the oracle: xxhsum's hash of the dump file
    check "compress recorded the dump's content hash" grep -q "tiny.h5 #$(xxhsum -H2 tiny.h5 | cut -c1-32)" show-compress.txt
  fi
  model_hash=$(grep -o "model .*#[0-9a-f]\{32\}" show-compress.txt | grep -o "[0-9a-f]\{32\}$")
  check "compress recorded the model hash the dump carries" test -n "$model_hash"
  "$KVLAB" --quiet eval --model tiny --prompts prompts.jsonl --method full --method "snapkv:keep=0.5,window=4" \
    --query-window 4 --max-new-tokens 4 --out tiny-eval >eval.txt
  check "eval exits 0" test $? = 0
  check "eval writes one row per method" test "$(grep -c '^"' tiny-eval/methods.csv)" = 2
  check "eval: the exact method agrees with the baseline" grep -q '^"full",1,.*,1,1,' tiny-eval/methods.csv
  check "eval recorded its run in the store" bash -c "\"$KVLAB\" results ls --kind eval | grep -q eval"
  check "eval recorded the same model hash as the dump" bash -c "\"$KVLAB\" results show latest | grep -q '#$model_hash'"
  for run in 3 4; do  # the same eval twice: check must call the second one no regression
    "$KVLAB" --quiet eval --model tiny --prompts prompts.jsonl --method full --query-window 4 --max-new-tokens 4 \
      --out tiny-eval$run >/dev/null
  done
  "$KVLAB" check --baseline "$("$KVLAB" results ls --kind eval | tail -2 | head -1 | awk '{print $1}')" --run latest >check.txt 2>&1
  check "check passes an identical eval run (exit 0)" test $? = 0
  # A needle task at a fixed depth, two lengths: the depth × length figure.
  for len in 512 1024; do
    "$KVLAB" --quiet eval --model tiny --task ruler:niah_single_1 --length $len --samples 2 --depth 50 --method full \
      --query-window 4 --max-new-tokens 4 --out needle$len --db needle.sqlite >/dev/null
  done
  check "eval --depth puts the needle at that depth" grep -q '"needle_depth": 50' needle1024/eval.json
  "$KVLAB" plot needle --run 1 --run 2 --db needle.sqlite --metric agreement --out needle.png >/dev/null
  check "plot needle draws the depth × length heatmap" test -s needle.png
  check "needle data: one depth row, two lengths (full agrees everywhere)" grep -q "^1 1 $" needle.dat
  expect_error "eval with an unknown method" "known: full" eval --model tiny --prompts prompts.jsonl --method nope --out tiny-eval2
  check "failed eval wrote nothing" test ! -e tiny-eval2
  # A sweep interrupted after one cell and resumed runs every cell exactly once.
  printf '%s\n' 'name: sw' 'compress:' '  dumps: [a.h5]' '  methods: ["svd:rk=[4,8]", "kivi:bits=4"]' 'eval:' \
    '  models: [tiny]' '  prompts: [prompts.jsonl]' '  methods: [full, "snapkv:keep=0.5,window=4"]' \
    '  options: {max_new_tokens: 4, query_window: 4, compress_route: host, tokenize: whole,' \
    '            chat_template_kwargs: '"'"'{"enable_thinking": false}'"'"'}' >sweep.yaml
  "$KVLAB" --quiet sweep run sweep.yaml --max-cells 1 >sweep1.txt
  check "sweep stops after --max-cells" grep -q "stopping after 1 cell" sweep1.txt
  "$KVLAB" --quiet sweep run sweep.yaml >sweep2.txt
  check "resumed sweep runs only the missing cells" grep -q "1 already done, 2 to run" sweep2.txt
  check "sweep recorded each cell once" test "$("$KVLAB" results ls --db sw/results.sqlite | tail -n +2 | wc -l)" = 3
  check "sweep passes eval options through" bash -c "grep -q '\"compress_route\": \"host\"' sw/*/eval.json"
  check "sweep passes the tokenization through" bash -c "grep -q '\"tokenize\": \"whole\"' sw/*/eval.json"
  check "sweep passes the template kwargs through" bash -c "grep -q 'enable_thinking' sw/*/eval.json"
  "$KVLAB" --quiet sweep run sweep.yaml >sweep3.txt
  check "a finished sweep has nothing to run" grep -q "3 already done, 0 to run" sweep3.txt
  "$KVLAB" sweep slurm sweep.yaml --shards 2 --out job.sbatch >/dev/null
  check "sweep slurm writes a job array" grep -q "#SBATCH --array=0-1" job.sbatch
  expect_error "sweep with an unknown key" "unknown key" sweep run <(printf 'compres: {}\n')
  # A bad cell does not stop the sweep: the good cells run, the failure is recorded and the
  # sweep exits 2 at the end; a rerun retries only the failed cells. Entries listed twice are
  # one cell. --dry-run checks specs, inputs and options without writing anything.
  printf '%s\n' 'name: bad' 'compress:' '  dumps: [a.h5, missing.h5, a.h5]' '  methods: [nope, "svd:rk=4", "svd:rk=4"]' \
    'eval:' '  models: [tiny]' '  prompts: [prompts.jsonl]' '  methods: [full]' '  options: {max_new_tokens: 2, query_window: 4}' >bad.yaml
  "$KVLAB" --quiet sweep run bad.yaml --dry-run >dry.txt 2>dry.err
  check "sweep --dry-run of bad cells exits 2 (got $?)" test $? = 2
  check "sweep --dry-run names the unknown method" grep -q "unknown compression method 'nope'" dry.err
  check "sweep --dry-run names the missing dump" grep -q "missing.h5" dry.err
  check "sweep --dry-run counts 3 bad cells of 5 (duplicates dropped)" grep -q "3 of 5 cell(s) would fail" dry.err
  check "sweep --dry-run wrote nothing" test ! -e bad
  "$KVLAB" --quiet sweep run bad.yaml >bad1.txt 2>bad1.err
  check "a sweep with bad cells exits 2 at the end (got $?)" test $? = 2
  check "the good cells after a bad one ran" test "$("$KVLAB" results ls --db bad/results.sqlite | tail -n +2 | wc -l)" = 2
  check "each failure is recorded beside the cells" test "$(ls bad/*.failed.txt | wc -l)" = 3
  check "the summary error is the last stderr line" bash -c "tail -1 bad1.err | grep -q '3 of 5 cell(s) failed'"
  "$KVLAB" --quiet sweep run bad.yaml >bad2.txt 2>/dev/null
  check "a rerun retries only the failed cells" grep -q "2 already done, 3 to run" bad2.txt
  expect_error "sweep --dry-run of an option typo" "unknown key 'max_new_token'" sweep run --dry-run \
    <(printf '%s\n' 'eval: {models: [tiny], prompts: [prompts.jsonl], methods: [full], options: {max_new_token: 2}}')
  expect_error "sweep with a list where a name belongs" "name: expected a single value" sweep run \
    <(printf '%s\n' 'name: [a]' 'compress: {dumps: [a.h5], methods: [svd]}')
  # config.json values the model cannot run: named, not a crash or "internal error".
  cp -r tiny tiny-bad
  sed -i 's/"model_type": *"qwen2"/"model_type": 7/' tiny-bad/config.json
  expect_error "a config with a numeric model_type" "'model_type' must be a string" dump --model tiny-bad --prompts prompts.jsonl --out y.h5
  sed -i 's/"model_type": *7/"model_type": "qwen2"/; s/"num_attention_heads": *[0-9]*/"num_attention_heads": 1099511627776/' tiny-bad/config.json
  expect_error "a config integer past int's range" "'num_attention_heads' = 1099511627776 is outside" eval --model tiny-bad --prompts prompts.jsonl --method full --out y
  sed -i 's/"num_attention_heads": *[0-9]*/"num_attention_heads": 4/; s/"hidden_act": *"silu"/"hidden_act": "quick_gelu"/' tiny-bad/config.json
  expect_error "a config with an activation kvlab lacks" "hidden_act 'quick_gelu' is not supported" dump --model tiny-bad --prompts prompts.jsonl --out y.h5
  expect_error "make-tiny-model onto a file" "afile: exists and is not a directory" make-tiny-model --out afile
  expect_error "eval into a directory holding files" "pass --force" eval --model tiny --prompts prompts.jsonl --method full --out tiny-eval
  expect_error "eval --samples 0" "must be positive (got 0)" eval --model tiny --task ruler:vt --samples 0 --method full --out y
  expect_error "dump of a folder without a model" "config.json" dump --model nowhere --prompts prompts.jsonl --out y.h5
  expect_error "dump with two prompt sources" "excludes" dump --model tiny --prompts prompts.jsonl --text prompts.jsonl --out y.h5
  printf '{"context": "a"}\n{broken\n' >bad.jsonl
  expect_error "dump of a broken prompts file" "bad.jsonl:2" dump --model tiny --prompts bad.jsonl --out y.h5
  check "failed dumps left no file" bash -c "! ls y.h5* >/dev/null 2>&1"
fi

"$KVLAB" --help >help.txt 2>&1
check "--help lists the commands" bash -c "grep -q analyze help.txt && grep -q compress help.txt && grep -q synth help.txt && grep -q demo help.txt"

finish cli
