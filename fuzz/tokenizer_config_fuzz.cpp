// libFuzzer target: tokenizer_config.json read by harness::choose_chat_format (the
// "--chat-template auto" rule; it takes the model folder, so each input goes to a scratch
// folder's tokenizer_config.json) and the template it finds rendered.
#include <cstdint>

#include "fuzz/fuzz_common.h"
#include "harness/tokenizer/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kvlab_fuzz::scratch().write("tokenizer_config.json", kvlab_fuzz::bytes(data, size));
  kvlab_fuzz::run([&] {
    const auto t = kvlab::harness::choose_chat_format(kvlab_fuzz::scratch().path(), "auto");
    (void)kvlab::harness::render_chat(t, "context", "question?", "system");
  });
  return 0;
}
