#!/usr/bin/env bash
# Builds kvlab with the CUDA backend on a machine that has the CUDA toolkit, a compiler,
# CMake and Ninja but no package access (the device tool's GPU machine): kvlab's Debian 12
# dependencies travel as .deb files, downloaded beforehand on a Debian 12 machine with apt,
# and are unpacked with `dpkg -x` (or ar + tar) into a prefix that the CMake build points at.
#
#   scripts/build-cuda.sh fetch              # on Debian 12: apt-get download the .debs into .debs/
#   scripts/build-cuda.sh build [TARGET...]  # on the CUDA machine: unpack into $KVLAB_DEPS,
#                                            # configure build-cuda/ (KVLAB_CUDA=ON) and build
#   scripts/build-cuda.sh test [ARGS...]     # there: ctest in build-cuda/ (ARGS go to ctest)
#   scripts/build-cuda.sh run PROGRAM [ARGS...]   # there: run a built program with the library path
#   scripts/build-cuda.sh prebuild           # here, on Debian 12 with the CUDA toolkit: build the
#                                            # CUDA programs (no harness, KVLAB_NATIVE=OFF) and copy
#                                            # them, stripped, into .prebuilt/ (8 MiB, ignored by git)
#   scripts/build-cuda.sh unpack             # there: only unpack, for programs built here; then
#                                            # KVLAB_BUILD_DIR=.prebuilt scripts/build-cuda.sh run ...
#
# Environment: KVLAB_DEBS (default .debs), KVLAB_DEPS (prefix, default /tmp/kvlab-deps),
# KVLAB_BUILD_DIR (default build-cuda), KVLAB_JOBS (default nproc), KVLAB_NATIVE (default OFF),
# KVLAB_HARNESS (default OFF): ON, for both fetch and build, also carries the harness's PCRE2,
# sentencepiece and ICU and builds harness/ (dump, eval) against the libtorch of the machine's
# python3 (Torch_DIR from torch.utils.cmake_prefix_path): the CUDA PyTorch of the device image.
# Tried on an H200 (2026-11-24): it configured and built against torch 2.11.0+cu130 there with
# KVLAB_JOBS=12 in under 2 minutes.
# With the device tool: .debs/ is ignored by git, so name it in `carry` (about 27 MiB; 50 with
# the harness), and .prebuilt/ too when the programs were built here: a device call then spends
# nothing on building them. The checkout there is fresh at every call (only /tmp survives while
# the machine stays warm), so point KVLAB_BUILD_DIR at /tmp for a build meant to outlive a call.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=${KVLAB_DEBS:-.debs}
PREFIX=${KVLAB_DEPS:-/tmp/kvlab-deps}
BUILD=${KVLAB_BUILD_DIR:-build-cuda}
JOBS=${KVLAB_JOBS:-$(nproc)}
ARCH=x86_64-linux-gnu

# What kvlab's CMake finds, includes or links: always unpacked.
CORE_PACKAGES=(
  libhdf5-dev libhdf5-103-1                                     # KV dump format (HDF5 1.10, C API)
  libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread  # CPU backend BLAS (+ openblas.pc)
  liblapacke-dev liblapacke libtmglib3                          # LAPACKE (liblapacke needs libtmglib.so.3)
  libfmt-dev libfmt9 libeigen3-dev nlohmann-json3-dev libcli11-dev
  libxxhash-dev libxxhash0                                      # content hashes in run provenance
  libyaml-cpp-dev libyaml-cpp0.7                                # sweep grids
  libsqlite3-dev libsqlite3-0                                   # the results store (the .so its -dev links)
  libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian
  pkgconf pkgconf-bin libpkgconf3                               # pkg_check_modules(openblas), if no pkg-config there
)
# Runtime libraries the above need (libhdf5 → libsz, libcurl → TLS/Kerberos/LDAP; OpenBLAS →
# libgfortran). Unpacked only when the machine lacks the library's soname, so that the
# system's own (often newer) copies win and nothing the system runs is shadowed.
# From: apt-cache depends --recurse --no-recommends libhdf5-103-1 libopenblas0-pthread,
# less the base system (libc6, libgcc-s1, libstdc++6, zlib1g, gcc-12-base).
GAP_PACKAGES=(
  libsz2 libaec0 libgfortran5 libquadmath0
  libcurl4 libbrotli1 libcom-err2 libdb5.3 libffi8 libgmp10 libgnutls30 libgssapi-krb5-2 libhogweed6
  libidn2-0 libk5crypto3 libkeyutils1 libkrb5-3 libkrb5support0 libldap-2.5-0 libnettle8 libnghttp2-14
  libp11-kit0 libpsl5 librtmp1 libsasl2-2 libsasl2-modules-db libssh2-1 libssl3 libtasn1-6 libunistring2
  libzstd1
  libprotobuf-lite32                                            # sentencepiece's (KVLAB_HARNESS=ON)
)
# The harness's own libraries (KVLAB_HARNESS=ON); libtorch comes from the machine's python3.
HARNESS_PACKAGES=(
  libpcre2-dev libpcre2-8-0                                     # byte-level BPE pre-tokenizer regexes
  libsentencepiece-dev libsentencepiece0                        # sentencepiece tokenizers
  libicu-dev libicu72                                           # NFC normalisation
)
HARNESS=${KVLAB_HARNESS:-OFF}
harness_packages() { [[ $HARNESS == ON ]] && printf '%s\n' "${HARNESS_PACKAGES[@]}"; true; }

die() { echo "build-cuda.sh: $*" >&2; exit 2; }

fetch() {
  command -v apt-get >/dev/null || die "fetch needs apt-get (run it on Debian 12, the project's build machine)"
  mkdir -p "$DEBS"
  rm -f "$DEBS"/*.deb
  local extra
  mapfile -t extra < <(harness_packages)
  (cd "$DEBS" && apt-get download "${CORE_PACKAGES[@]}" "${GAP_PACKAGES[@]}" "${extra[@]}")
  echo "build-cuda.sh: $(ls "$DEBS"/*.deb | wc -l) packages, $(du -sh "$DEBS" | cut -f1) in $DEBS"
}

is_gap() {
  local p
  for p in "${GAP_PACKAGES[@]}"; do [[ $p == "$1" ]] && return 0; done
  return 1
}

# The .deb's file system as an uncompressed tar on stdout (dpkg-deb where present, else ar).
fsys_tar() {
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb --fsys-tarfile "$1"
    return
  fi
  local member
  member=$(ar t "$1" | grep '^data\.tar')
  case $member in
    *.xz) ar p "$1" "$member" | xz -dc ;;
    *.zst) ar p "$1" "$member" | zstd -dc ;;
    *.gz) ar p "$1" "$member" | gzip -dc ;;
    *) ar p "$1" "$member" ;;
  esac
}

unpack() {
  local marker="$PREFIX/.kvlab-unpacked"
  [[ -f $marker ]] && return
  compgen -G "$DEBS/*.deb" >/dev/null || die "no .deb files in $DEBS: run 'scripts/build-cuda.sh fetch' on Debian 12 first (and carry $DEBS)"
  mkdir -p "$PREFIX"
  local known deb pkg sonames s missing unpacked=() skipped=()
  known=$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null) | awk 'NR > 1 {print $1}' | sort -u)
  for deb in "$DEBS"/*.deb; do
    pkg=$(basename "$deb")
    pkg=${pkg%%_*}
    if is_gap "$pkg"; then
      sonames=$(fsys_tar "$deb" | tar -t | sed 's|.*/||' | grep -E '^lib.*\.so\.[0-9]+$' | sort -u || true)
      missing=0
      for s in $sonames; do grep -qxF "$s" <<<"$known" || missing=1; done
      if [[ -n $sonames && $missing == 0 ]]; then
        skipped+=("$pkg")
        continue
      fi
    fi
    fsys_tar "$deb" | tar -x -C "$PREFIX"
    unpacked+=("$pkg")
  done
  # Absolute symlinks point at the host's /usr: re-aim them inside the prefix.
  local link target
  while IFS= read -r link; do
    target=$(readlink "$link")
    ln -sfn "$PREFIX$target" "$link"
  done < <(find "$PREFIX" -type l -lname '/*')
  # pkg-config files name /usr: make them name the prefix.
  find "$PREFIX" -name '*.pc' -exec sed -i "s|/usr|$PREFIX/usr|g" {} +
  echo "build-cuda.sh: unpacked ${#unpacked[@]} packages into $PREFIX; the system already has: ${skipped[*]:-none}"
  touch "$marker"
}

# Library path for building (gtest_discover_tests runs the tests) and running.
library_path() {
  local lib="$PREFIX/usr/lib/$ARCH" cuda="" d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib; do [[ -d $d ]] && cuda+=":$d"; done
  echo "$lib/openblas-pthread:$lib:$lib/hdf5/serial$cuda${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

# Programs built on Debian 12 for the device (prebuild): what bench/run_gpu_bench.sh and the CUDA
# parity tests need, at the same relative paths as in a build folder.
PREBUILT_PROGRAMS=(cli/kvlab bench/bench_xkv linalg/linalg_cuda_tests analysis/analysis_cuda_tests
                   compressors/compressors_cuda_tests linalg/libkvlab_cuda_module.so)
prebuild() {
  local dir=${KVLAB_PREBUILD_DIR:-build-prebuilt} f targets=()
  for f in "${PREBUILT_PROGRAMS[@]}"; do f=${f##*/}; f=${f#lib}; targets+=("${f%.so}"); done
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVLAB_CUDA=ON -DKVLAB_HARNESS=OFF -DKVLAB_NATIVE=OFF
  cmake --build "$dir" -j "$JOBS" --target "${targets[@]}"
  rm -rf .prebuilt
  for f in "${PREBUILT_PROGRAMS[@]}"; do
    mkdir -p ".prebuilt/$(dirname "$f")"
    strip -o ".prebuilt/$f" "$dir/$f"
  done
  echo "build-cuda.sh: $(du -sh .prebuilt | cut -f1) in .prebuilt/; on the device: KVLAB_BUILD_DIR=.prebuilt"
}

configure() {
  local pkgconfig=() cuda=()
  if ! command -v pkg-config >/dev/null; then pkgconfig=(-DPKG_CONFIG_EXECUTABLE="$PREFIX/usr/bin/pkgconf"); fi
  if ! command -v nvcc >/dev/null && [[ -d /usr/local/cuda ]]; then cuda=(-DCUDAToolkit_ROOT=/usr/local/cuda); fi
  export PKG_CONFIG_PATH="$PREFIX/usr/lib/$ARCH/openblas-pthread/pkgconfig:$PREFIX/usr/lib/$ARCH/pkgconfig"
  # KVLAB_NATIVE=OFF: the carried Eigen 3.4.0 meets an unknown host CPU; the CPU timings come
  # from OpenBLAS, which picks its kernels at run time either way.
  # The harness: libtorch's Debian packages are far beyond what `carry` takes, so it builds against
  # the CUDA libtorch of the machine's python3 (KVLAB_HARNESS=ON), or not at all.
  local harness=(-DKVLAB_HARNESS=OFF)
  if [[ $HARNESS == ON ]]; then
    local torch_dir
    torch_dir=$(python3 -c 'import os, torch.utils; print(os.path.join(torch.utils.cmake_prefix_path, "Torch"))') ||
      die "KVLAB_HARNESS=ON needs a python3 with torch (for Torch_DIR)"
    harness=(-DKVLAB_HARNESS=ON -DTorch_DIR="$torch_dir")
  fi
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVLAB_CUDA=ON "${harness[@]}" -DKVLAB_NATIVE="${KVLAB_NATIVE:-OFF}" \
    -DCMAKE_PREFIX_PATH="$PREFIX/usr" "${pkgconfig[@]}" "${cuda[@]}"
}

cmd=${1:-}
shift || true
case $cmd in
  fetch) fetch ;;
  prebuild) prebuild ;;
  unpack) unpack ;;
  build)
    unpack
    export LD_LIBRARY_PATH; LD_LIBRARY_PATH=$(library_path)
    configure
    if (($#)); then cmake --build "$BUILD" -j "$JOBS" --target "$@"; else cmake --build "$BUILD" -j "$JOBS"; fi
    ;;
  test)
    export LD_LIBRARY_PATH; LD_LIBRARY_PATH=$(library_path)
    ctest --test-dir "$BUILD" --output-on-failure "$@"
    ;;
  run)
    (($#)) || die "run needs a program"
    export LD_LIBRARY_PATH; LD_LIBRARY_PATH=$(library_path)
    # The CUDA module's path compiled into kvlab is the build machine's; use this build's.
    module="$PWD/$BUILD/linalg/libkvlab_cuda_module.so"
    [[ -z ${KVLAB_CUDA_MODULE:-} && -f $module ]] && export KVLAB_CUDA_MODULE=$module
    exec "$@"
    ;;
  *) sed -n '2,28p' "$0"; exit 2 ;;
esac
