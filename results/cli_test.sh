#!/usr/bin/env bash
# End-to-end checks of `kvlab results|compare|check` on the report fixtures: import is
# idempotent, export writes booktabs LaTeX, check exits 0 on an unchanged run, 1 on a planted
# regression (from a baseline run or a baseline file) and 2 on errors, merge is idempotent, a
# sweep store from before the cell ids were versioned resumes, `results ruler` explains its
# numbers and (with the model runner) tabulates RULER evals.
# Usage: cli_test.sh KVLAB
set -uo pipefail
FIXTURES=$(cd "$(dirname "$0")/testdata" && pwd)
source "$(dirname "$0")/../cli/test_lib.sh"
run() {  # run ARGS...: stdout to out, stderr to err, exit code to $rc
  "$KVLAB" --quiet "$@" >"$WORK/out" 2>"$WORK/err"
  rc=$?
}

mkdir same worse
cp "$FIXTURES/compress.json" same/compress.json
echo >>same/compress.json  # other bytes, same numbers: a second run, not a re-import
# Plant a regression: svd rk=4 key error 0.129 -> 0.2.
sed 's/"key_error": 0.1289995652915975/"key_error": 0.2/' "$FIXTURES/compress.json" >worse/compress.json

run results ls
check "ls without a database exits 2 (got $rc)" test "$rc" = 2
check "ls names the missing database" grep -q "kvlab-results.sqlite" err

run results import "$FIXTURES/compress.json" "$FIXTURES/analysis.json"
check "import exits 0 (got $rc)" test "$rc" = 0
run results import "$FIXTURES/compress.json"
check "re-import is a no-op" grep -q "already imported" out
run results import same worse
run results ls
check "ls lists 4 runs" test "$(grep -c -E '^ +[0-9]+ ' out)" = 4
run results ls --kind analyze
check "ls --kind filters" test "$(grep -c -E '^ +[0-9]+ ' out)" = 1

run results show 1
check "show prints provenance" grep -q "7c9327ce2abc" out
run results export 1 --format latex --metric key_error --metric compression_ratio --out t.tex
check "export latex exits 0" test "$rc" = 0
check "export latex is booktabs" bash -c 'grep -q "\\\\toprule" t.tex && grep -q "\\\\midrule" t.tex && grep -q "\\\\bottomrule" t.tex'
check "export latex escapes underscores" grep -q 'key\\_error' t.tex
check "export latex bolds the best ratio (svd rk=4)" grep -q 'svd:rk=4.*\\textbf{2.56}' t.tex
run results export 1 --format csv --metric nope
check "export of an unknown metric exits 2 (got $rc)" test "$rc" = 2

run check --baseline 1 --run 3
check "check of an unchanged run exits 0 (got $rc)" test "$rc" = 0
run check --baseline 1 --run 4
check "check of a planted regression exits 1 (got $rc)" test "$rc" = 1
check "check names the worse metric" grep -q "key_error.*WORSE" out
run check --baseline 1 --run 4 --tolerance-for key_error=1
check "a per-metric tolerance lets it pass (got $rc)" test "$rc" = 0
run compare 1 4
check "compare exits 1 on a regression (got $rc)" test "$rc" = 1
run compare 1 3
check "compare exits 0 without one (got $rc)" test "$rc" = 0

run results baseline 1 --out baseline.json
check "baseline exits 0" test "$rc" = 0
run check --baseline baseline.json
check "check against the file and the latest run (the regression) exits 1 (got $rc)" test "$rc" = 1
run check --baseline baseline.json --run 3
check "check against the file exits 0 on the unchanged run (got $rc)" test "$rc" = 0
run check --baseline missing.json
check "a missing baseline file exits 2 (got $rc)" test "$rc" = 2
run check --baseline 1 --run 2
check "checking an analyze run against a compress baseline exits 2 (got $rc)" test "$rc" = 2
run check --baseline 1 --run 99
check "a missing run exits 2 (got $rc)" test "$rc" = 2
check "the error names the run" grep -q "no run 99" err

run results import same --db shard.sqlite
run results merge kvlab-results.sqlite shard.sqlite --out all.sqlite
check "merge exits 0" test "$rc" = 0
first=$(tail -1 out)
run results merge kvlab-results.sqlite shard.sqlite --out all.sqlite
check "merging again adds nothing" test "$(tail -1 out)" = "$first"
check "merge dedups the shared run" grep -q "all.sqlite: 4 runs" out

# A sweep store written before the cell ids were versioned (testdata/legacy-sweep, by kvlab
# b94864a) resumes with every cell done: nothing reruns (its dump and model are not even
# there), nothing is recorded twice.
mkdir legacy-sweep
cp "$FIXTURES/legacy-sweep/sweep.yaml" "$FIXTURES/legacy-sweep/legacy.sqlite" legacy-sweep/
(cd legacy-sweep && "$KVLAB" --quiet sweep run sweep.yaml >"$WORK/out" 2>"$WORK/err")
rc=$?
check "resuming a legacy sweep exits 0 (got $rc)" test "$rc" = 0
check "a legacy sweep's cells are all done" grep -q "4 already done, 0 to run" out
run results ls --db legacy-sweep/legacy.sqlite
check "resuming a legacy sweep recorded no run" test "$(grep -c -E '^ +[0-9]+ ' out)" = 4

# RULER tables: the help teaches the numbers; a store without RULER eval runs is an error.
run results ruler --help
check "ruler --help defines wAvg" grep -q "wAvg inc" out
check "ruler --help names the default threshold" grep -q "85.6" out
run results ruler
check "ruler without RULER eval runs exits 2 (got $rc)" test "$rc" = 2
check "ruler says there are no RULER eval runs" grep -q "no RULER eval runs" err
# With the model runner (KVLAB_HARNESS=ON): RULER evals of a generated checkpoint. The tiny
# random model scores what it scores; the checks are about the table's shape and notes.
if "$KVLAB" --help 2>&1 | grep -q make-tiny-model; then
  "$KVLAB" --quiet make-tiny-model --arch qwen2 --layers 2 --seed 1 --out tiny >/dev/null
  ruler_eval() {  # ruler_eval TASK LENGTH
    "$KVLAB" --quiet eval --model tiny --task "ruler:$1" --length "$2" --samples 2 --method full --query-window 4 \
      --max-new-tokens 4 --out "eval-$1-$2-$RANDOM" --db ruler.sqlite >/dev/null
  }
  ruler_eval niah_single_1 512 && ruler_eval niah_multikey_2 512 && ruler_eval niah_single_1 1024 && ruler_eval niah_single_1 512
  check "ruler evals exit 0" test $? = 0
  run results ruler --db ruler.sqlite
  check "ruler exits 0 (got $rc)" test "$rc" = 0
  check "ruler prints the task columns" grep -q "niah_single_1 *niah_multikey_2 *Avg" out
  check "ruler prints the summary columns" grep -q "wAvg inc *wAvg dec *Eff. length" out
  check "ruler flags the length without niah_multikey_2" grep -q "1024 lacks niah_multikey_2" out
  check "ruler says which run was newest" grep -q "ruler:niah_single_1 at 512 .*: newest run 4 .* used over run(s) 1" out
  run results ruler --db ruler.sqlite --run 1 --run 2 --format csv --table summary --out ruler.csv
  check "ruler --out writes the CSV (got $rc)" test "$rc" = 0
  check "ruler CSV summary header" grep -q "^method,tasks,512,avg,wavg_inc,wavg_dec,effective_length,complete$" ruler.csv
  check "ruler CSV: one row per method" test "$(grep -c -E '^(baseline|full),2,' ruler.csv)" = 2
  run results ruler --db ruler.sqlite --model nope
  check "ruler --model of no run exits 2 (got $rc)" test "$rc" = 2
  check "ruler --model names the models it has" grep -q "models with RULER runs" err
fi

finish results
