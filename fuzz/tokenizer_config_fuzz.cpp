// libFuzzer target: tokenizer_config.json read by harness::detect_chat_template (the
// "--chat-template auto" rule; it takes the model folder, so each input goes to a scratch
// folder's tokenizer_config.json; the folder has no tokenizer, so a Mistral-style template
// without added_tokens_decoder ends in load_tokenizer's "no tokenizer" error).
#include <cstdint>

#include "fuzz/fuzz_common.h"
#include "harness/tokenizer/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kvlab_fuzz::scratch().write("tokenizer_config.json", kvlab_fuzz::bytes(data, size));
  kvlab_fuzz::run([&] {
    const auto t = kvlab::harness::detect_chat_template(kvlab_fuzz::scratch().path(), "llama");
    (void)kvlab::harness::render_chat(t, "context", "question?", "system");
  });
  return 0;
}
