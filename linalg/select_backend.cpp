#include "linalg/select_backend.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include "core/error.h"

namespace kvlab::linalg {
namespace {

#ifdef KVLAB_CUDA_MODULE_PATH
// The CUDA backend from kvlab_cuda_module ($KVLAB_CUDA_MODULE, else the path the build wrote
// in). Success is kept; a failure is tried afresh on the next call (dlopen of a loaded module
// is a reference count, and the module's own "no CUDA device" is cheap to repeat).
Backend& cuda_module_backend() {
  static std::mutex mutex;
  static Backend* backend = nullptr;
  std::lock_guard lock(mutex);
  if (backend) return *backend;
  const char* env = std::getenv("KVLAB_CUDA_MODULE");
  const std::string path = env && *env ? env : KVLAB_CUDA_MODULE_PATH;
  // RTLD_LOCAL: the module's own copies of kvlab's code stay out of the global scope.
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle)
    fail("--device cuda: cannot load kvlab's CUDA module {} ({}); rebuild kvlab or set KVLAB_CUDA_MODULE", path,
         ::dlerror());
  using Entry = Backend* (*)(std::string*);
  auto entry = reinterpret_cast<Entry>(::dlsym(handle, "kvlab_cuda_backend"));
  if (!entry) fail("--device cuda: {} has no kvlab_cuda_backend symbol ({})", path, ::dlerror());
  std::string error;
  backend = entry(&error);
  if (!backend) fail("--device cuda: {}", error);
  return *backend;
}
#endif

}  // namespace

bool cuda_backend_built() {
#ifdef KVLAB_CUDA_MODULE_PATH
  return true;
#else
  return false;
#endif
}

Backend& backend_for(std::string_view device, int threads) {
  if (device == "cpu") {
    auto& cpu = cpu_backend();
    if (threads > 0) cpu.set_threads(threads);
    return cpu;
  }
  if (device != "cuda") fail("--device '{}': expected cpu or cuda", device);
#ifdef KVLAB_CUDA_MODULE_PATH
  {
    auto& cuda = cuda_module_backend();  // "no CUDA device: …" without a GPU
    if (threads > 0) cuda.set_threads(threads);  // independent solves in flight (CudaBackend)
    return cuda;
  }
#else
  fail("--device cuda: this kvlab was built without the CUDA backend (no CUDA toolkit found, or KVLAB_CUDA=OFF)");
#endif
}

}  // namespace kvlab::linalg
