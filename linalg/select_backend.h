// The linalg backend a `--device` option names, for every program that offers the choice
// (the CLI, the harness's eval, the benchmarks). Lives in its own library, kvlab_linalg_select,
// which opens the CUDA backend (the kvlab_cuda_module built beside it) with dlopen on first use,
// so neither kvlab_linalg nor a CPU run loads cuBLAS/cuSOLVER.
#pragma once

#include <string_view>

#include "linalg/backend.h"

namespace kvlab::linalg {

// "cpu": OpenBLAS + LAPACKE, with `threads` BLAS threads (0 keeps the current setting);
// "cuda": cuBLAS + cuSOLVER on device 0, `threads` independent solves in flight (0 keeps it). Fails with one clear message for anything else, for
// "cuda" in a build without the CUDA backend, and for "cuda" on a machine without a device.
Backend& backend_for(std::string_view device, int threads = 0);

// Whether this build has the CUDA backend compiled in (a device may still be absent).
bool cuda_backend_built();

}  // namespace kvlab::linalg
