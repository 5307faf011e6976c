// libFuzzer target: tokenizer.json text through harness::parse_any_tokenizer_json (from memory:
// the byte-level parser or the SentencePiece-style one, as load_tokenizer chooses) and the checks
// that choose; a tokenizer that loads then encodes and decodes a short text (its vocab, merges,
// regexes, normalizers and added tokens all came from the input).
#include <cstdint>
#include <vector>

#include "fuzz/fuzz_common.h"
#include "harness/tokenizer/tokenizer_json.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto text = kvlab_fuzz::bytes(data, size);
  kvlab_fuzz::run([&] {
    (void)kvlab::harness::tokenizer_json_is_byte_level(text);
    (void)kvlab::harness::tokenizer_json_is_spm_style(text);
    const auto tokenizer = kvlab::harness::parse_any_tokenizer_json(text);
    (void)tokenizer->describe();
    const auto ids = tokenizer->encode("Hello, world! 123 h\xc3\xa9llo <|endoftext|>\n  x", true);
    (void)tokenizer->decode(ids, false);
    (void)tokenizer->decode(ids, true);
    (void)tokenizer->encode_continuation(" and more");
  });
  return 0;
}
