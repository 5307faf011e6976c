// libtorch and a sentencepiece tokenizer in one process. Linking libsentencepiece directly
// crashed such a binary before main (its bundled protobuf against libtorch's); the module
// loaded with dlopen must make both work side by side.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "harness/tokenizer/test_util.h"
#include "harness/tokenizer/tiny_tokenizer.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {
namespace {

TEST(SentencePieceWithTorch, BothWorkInOneProcess) {
  const auto x = at::arange(1, 5, at::kFloat);
  EXPECT_EQ(x.sum().item<float>(), 10.f);
  testing::TempDir dir;
  write_tiny_tokenizer(dir.path(), "mistral", testing::project_corpus(), 600, 3);
  const auto tokenizer = load_tokenizer(dir.path());
  const std::string text = "kvlab runs Mistral's tokenizer beside libtorch. 日本語 🙂";
  EXPECT_EQ(tokenizer->decode(tokenizer->encode(text, false)), text);
  EXPECT_EQ(tokenizer->encode(text).front(), *tokenizer->bos_id());
}

}  // namespace
}  // namespace kvlab::harness
