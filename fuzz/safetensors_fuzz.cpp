// libFuzzer target: a .safetensors file (8-byte header size, JSON header, tensor bytes), opened
// with core::Checkpoint and read back through every accessor. The Checkpoint API takes paths
// only (it maps the file), so each input goes to a scratch file first.
#include <cstdint>

#include "core/safetensors.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = kvlab_fuzz::scratch().write("model.safetensors", kvlab_fuzz::bytes(data, size));
  kvlab_fuzz::run([&] {
    const kvlab::core::Checkpoint checkpoint(file);
    for (const auto& name : checkpoint.names()) {
      (void)checkpoint.shape(name);
      (void)checkpoint.raw(name);
      const std::string& dtype = checkpoint.dtype(name);
      if (dtype == "F32" || dtype == "F16" || dtype == "BF16") (void)checkpoint.tensor(name);
    }
    (void)checkpoint.metadata();
  });
  return 0;
}
