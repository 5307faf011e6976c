// The CUDA backend as a module that linalg::backend_for("cuda") opens with dlopen on first use,
// so programs built with CUDA do not load cuBLAS and cuSOLVER (≈ 0.5 s and 400 MB of resident
// pages at start-up) unless a run asks for the GPU. No exception crosses the C boundary: the
// entry point returns the backend, or null with the reason in *error.
#include <string>

#include "linalg/cuda/cuda_backend.h"

extern "C" __attribute__((visibility("default"))) kvlab::linalg::Backend* kvlab_cuda_backend(std::string* error) {
  try {
    return &kvlab::linalg::cuda_backend();
  } catch (const std::exception& e) {
    if (error) *error = e.what();
    return nullptr;
  }
}
