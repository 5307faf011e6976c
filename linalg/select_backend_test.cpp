// backend_for: the CPU backend by name, one clear error for anything else, and for "cuda" the
// module loaded at run time: a bad $KVLAB_CUDA_MODULE says it cannot be loaded, the module the
// build made either gives the GPU backend or (no device) the module's own "no CUDA device".
#include "linalg/select_backend.h"

#include <gtest/gtest.h>

#include <cstdlib>

#include "core/error.h"
#include "core/error_of.h"

namespace kvlab::linalg {
namespace {

using core::error_of;

TEST(BackendFor, NamesTheCpuBackendAndRejectsUnknownDevices) {
  EXPECT_EQ(&backend_for("cpu"), &cpu_backend());
  EXPECT_EQ(error_of([] { backend_for("tpu"); }), "--device 'tpu': expected cpu or cuda");
}

TEST(BackendFor, CudaLoadsTheModuleOrSaysWhyNot) {
  if (!cuda_backend_built()) {
    EXPECT_NE(error_of([] { backend_for("cuda"); }).find("built without the CUDA backend"), std::string::npos);
    return;
  }
  ::setenv("KVLAB_CUDA_MODULE", "/nonexistent/libkvlab_cuda_module.so", 1);
  EXPECT_NE(error_of([] { backend_for("cuda"); }).find("cannot load kvlab's CUDA module /nonexistent/"),
            std::string::npos);
  ::unsetenv("KVLAB_CUDA_MODULE");
  std::string error;
  try {
    EXPECT_EQ(backend_for("cuda").name(), "cuda");  // a device is present
  } catch (const Error& e) {
    error = e.what();
    EXPECT_NE(error.find("--device cuda: no CUDA device"), std::string::npos) << error;
  }
}

}  // namespace
}  // namespace kvlab::linalg
