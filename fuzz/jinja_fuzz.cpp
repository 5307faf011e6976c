// libFuzzer target: a checkpoint's chat template (tokenizer_config.json's "chat_template", or
// chat_template.jinja) rendered by harness::render_jinja with a conversation of every role, a
// tool list and the flags templates read. Seeds: the chat templates of jinja_tests
// (harness/tokenizer/jinja_testdata/). Limits far below the defaults keep each run short; a
// template that hits them must fail cleanly like any other.
#include <cstdint>

#include "fuzz/fuzz_common.h"
#include "harness/tokenizer/jinja.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using nlohmann::ordered_json;
  static const ordered_json context = {
      {"messages",
       {{{"role", "system"}, {"content", "Be brief."}},
        {{"role", "user"}, {"content", "What is 2+2?\n"}},
        {{"role", "assistant"}, {"content", "<think>easy</think>4"}},
        {{"role", "user"}, {"content", "And 3+3?"}}}},
      {"tools", {{{"type", "function"}, {"function", {{"name", "add"}, {"parameters", {{"a", 1}, {"b", 2.5}}}}}}}},
      {"add_generation_prompt", true},
      {"enable_thinking", false},
      {"bos_token", "<s>"},
      {"eos_token", "</s>"}};
  kvlab::harness::JinjaLimits limits;
  limits.max_steps = 200'000;
  limits.max_output_bytes = 1u << 20;
  kvlab_fuzz::run([&] { (void)kvlab::harness::render_jinja(kvlab_fuzz::bytes(data, size), context, limits); });
  return 0;
}
