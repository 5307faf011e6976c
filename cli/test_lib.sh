# Shared by the end-to-end shell tests (cli/cli_test.sh, results/cli_test.sh); source it with the
# kvlab binary as $1. Sets KVLAB (absolute) and WORK (a temporary folder removed on exit, the
# current directory afterwards) and defines:
#   check NAME CONDITION...   run CONDITION, print ok/FAIL NAME and count it
#   finish LABEL              print the counts and exit 1 when anything failed
KVLAB=$(realpath "$1")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0
passes=0
check() {
  local name=$1; shift
  if "$@"; then echo "ok   $name"; passes=$((passes + 1)); else echo "FAIL $name"; failures=$((failures + 1)); fi
}
finish() {
  echo "$1: $passes passed, $failures failed"
  exit $((failures > 0))
}
cd "$WORK"
