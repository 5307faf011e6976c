// libFuzzer target: a SentencePiece tokenizer.model's ModelProto wire format, as kvlab's own
// protobuf reader (harness/tokenizer/sp_model_proto.h) reads its flags and rewrites it, from memory.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fuzz/fuzz_common.h"
#include "harness/tokenizer/sp_model_proto.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto bytes = kvlab_fuzz::bytes(data, size);
  // As SentencePieceTokenizer does: the flags first (a malformed model stops there), ...
  bool readable = false;
  kvlab_fuzz::run([&] {
    (void)kvlab::harness::read_sp_model_flags(bytes, "tokenizer.model");
    readable = true;
  });
  if (!readable) return 0;
  // ... then the copy without the dummy prefix, which must read back (no exception at all
  // from here: the model was well-formed) with add_dummy_prefix off.
  const std::string rewritten = kvlab::harness::sp_model_without_dummy_prefix(bytes, "tokenizer.model");
  if (kvlab::harness::read_sp_model_flags(rewritten, "rewritten").add_dummy_prefix) {
    std::fprintf(stderr, "kvlab fuzz: sp_model_without_dummy_prefix left add_dummy_prefix on\n");
    std::abort();
  }
  return 0;
}
