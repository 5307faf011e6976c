#!/usr/bin/env bash
# Installs kvlab's dependencies from Debian packages and builds kvlab in Release into build/.
# Safe to run again: apt-get skips what is installed and the build is incremental.
#   scripts/setup.sh            install + build
#   KVLAB_SKIP_APT=1 scripts/setup.sh   build only (no package manager calls)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libeigen3-dev liblapacke-dev libopenblas-dev   # linear algebra (Eigen for data handling, LAPACKE/OpenBLAS for the work)
  libhdf5-dev                                     # the KV dump format
  libtorch-dev libpcre2-dev libsentencepiece-dev libicu-dev  # harness: the model, BPE pre-tokenizer regexes, Mistral's tokenizer.model, NFC
  libfmt-dev libcli11-dev nlohmann-json3-dev libyaml-cpp-dev libsqlite3-dev
  libgtest-dev libgmock-dev libbenchmark-dev      # tests and benchmarks
  python3-numpy python3-h5py python3-torch        # h5py interoperability test, the bench and model references
  wamerican                                       # word lists of the RULER-style task generators
  python3-jieba                                   # jieba's dictionary and HMM tables, for LongBench's Chinese metrics
  python3-jinja2                                  # the oracle of the chat-template interpreter's tests
  python3-sentencepiece                           # the oracle of the SentencePiece-style tokenizer.json tests
  libxxhash-dev xxhash                            # content hashes in run provenance (xxhsum: the tests' oracle)
  gnuplot-nox                                     # kvlab plot
)

if [[ "${KVLAB_SKIP_APT:-0}" != 1 ]]; then
  SUDO=""
  if [[ $(id -u) != 0 ]]; then SUDO="sudo"; fi
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

JOBS=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$JOBS"
echo "setup: built build/cli/kvlab — try: build/cli/kvlab demo"
