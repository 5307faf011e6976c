// libFuzzer target: config.json text through harness::parse_model_config (and the rope rule it
// builds), from memory.
#include <cstdint>

#include "fuzz/fuzz_common.h"
#include "harness/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto text = kvlab_fuzz::bytes(data, size);
  kvlab_fuzz::run([&] {
    const auto config = kvlab::harness::parse_model_config(text);
    (void)config.describe();
    (void)config.n_rep();
  });
  return 0;
}
