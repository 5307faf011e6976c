// libFuzzer target: a prompts JSONL file (`kvlab dump --prompts`) through
// harness::load_prompts_jsonl, which takes a path: each input goes to a scratch file.
#include <cstdint>

#include "fuzz/fuzz_common.h"
#include "harness/prompts.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = kvlab_fuzz::scratch().write("prompts.jsonl", kvlab_fuzz::bytes(data, size));
  kvlab_fuzz::run([&] { (void)kvlab::harness::load_prompts_jsonl(file); });
  return 0;
}
