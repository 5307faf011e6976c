#include "harness/tokenizer/sentencepiece_library.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>

#include "core/error.h"

namespace kvlab::harness::spm {

const Library& library() {
  static std::mutex mutex;
  static const Library* loaded = nullptr;
  std::lock_guard lock(mutex);
  if (loaded) return *loaded;
  const char* env = std::getenv("KVLAB_SENTENCEPIECE_MODULE");
  const std::string path = env && *env ? env : KVLAB_SENTENCEPIECE_MODULE_PATH;
  // RTLD_LOCAL keeps sentencepiece's protobuf out of the global scope; RTLD_DEEPBIND makes the
  // module and libsentencepiece bind to their own copies first. AddressSanitizer aborts on any
  // RTLD_DEEPBIND dlopen (google/sanitizers#611), so sanitizer builds go without it: the suites
  // they run (scripts/asan_tests.sh) do not link libtorch, whose protobuf it keeps apart.
#if defined(__SANITIZE_ADDRESS__)
  constexpr int kDeepBind = 0;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  constexpr int kDeepBind = 0;
#else
  constexpr int kDeepBind = RTLD_DEEPBIND;
#endif
#else
  constexpr int kDeepBind = RTLD_DEEPBIND;
#endif
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | kDeepBind);
  if (!handle)
    fail("cannot load kvlab's sentencepiece module {} ({}); rebuild kvlab or set KVLAB_SENTENCEPIECE_MODULE", path,
         ::dlerror());
  auto* entry = reinterpret_cast<const Library* (*)()>(::dlsym(handle, "kvlab_sentencepiece_library"));
  if (!entry) fail("{}: no kvlab_sentencepiece_library symbol ({})", path, ::dlerror());
  loaded = entry();
  return *loaded;
}

}  // namespace kvlab::harness::spm
