// Token byte offsets (token_offsets.h) and decode's clean-up (clean_up_decoding.h).
// Oracles: offsets against decode of every prefix of the ids (a separate code path: decode is
// checked against HF and sentencepiece in the other tokenizer tests), on the three tiny tokenizer
// families; clean_up_tokenization against a transcription of transformers'
// PreTrainedTokenizerBase.clean_up_tokenization run by /usr/bin/python3.
#include <sys/wait.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "core/read_file.h"
#include "harness/tokenizer/clean_up_decoding.h"
#include "harness/tokenizer/nfc.h"
#include "harness/tokenizer/test_util.h"
#include "harness/tokenizer/tiny_tokenizer.h"
#include "harness/tokenizer/token_offsets.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {
namespace {

using testing::TempDir;
using ::testing::HasSubstr;

class TokenOffsets : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    for (const std::string family : {"llama", "qwen2", "mistral"})
      write_tiny_tokenizer(dir_->path() / family, family, testing::project_corpus(), 512, 7);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::filesystem::path folder(const std::string& family) { return dir_->path() / family; }
  static TempDir* dir_;
};
TempDir* TokenOffsets::dir_ = nullptr;

// Whether text[0, n) ends between two UTF-8 characters (decode repairs a split one).
bool on_char_boundary(std::string_view text, std::size_t n) {
  return n == text.size() || (static_cast<unsigned char>(text[n]) & 0xC0) != 0x80;
}

TEST_P(TokenOffsets, SpansCoverTheTextAndAgreeWithDecodedPrefixes) {
  const auto tok = load_tokenizer(folder(GetParam()));
  std::mt19937_64 rng(11);
  for (int sample = 0; sample < 40; ++sample) {
    // NFC input (Qwen2's normalizer would change other text) that starts with a letter (a leading
    // space is where sentencepiece's decode and the text legitimately differ).
    const std::string text = to_nfc("x" + testing::random_utf8(rng, 60));
    const auto ids = tok->encode(text, /*add_special=*/true);
    const auto spans = token_offsets(*tok, ids, text);
    ASSERT_EQ(spans.size(), ids.size());
    std::size_t at = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      ASSERT_EQ(spans[i].begin, at) << "sample " << sample << " token " << i;
      at = spans[i].end;
      // decode(ids[0, i]) is the text up to the span's end, wherever that is a whole character;
      // special tokens the text lacks (the BOS) are skipped on both sides.
      if (!on_char_boundary(text, at)) continue;
      const std::vector<std::int32_t> prefix(ids.begin(), ids.begin() + i + 1);
      ASSERT_EQ(tok->decode(prefix, /*skip_special=*/true), text.substr(0, at)) << "sample " << sample << " token " << i;
    }
    EXPECT_EQ(at, text.size());
  }
}

TEST_P(TokenOffsets, TokenAtByteIsTheOneHoldingIt) {
  const auto tok = load_tokenizer(folder(GetParam()));
  const std::string text = "kvlab dumps the cache of every layer.";
  const auto ids = tok->encode(text, false);
  const auto spans = token_offsets(*tok, ids, text);
  for (std::size_t b = 0; b < text.size(); ++b) {
    const std::size_t i = token_at_byte(spans, b);
    ASSERT_LT(i, spans.size());
    EXPECT_TRUE(spans[i].begin <= b && b < spans[i].end) << b;
  }
  EXPECT_EQ(token_at_byte(spans, text.size()), spans.size());
}

TEST_P(TokenOffsets, IdsOfAnotherTextAreAnError) {
  const auto tok = load_tokenizer(folder(GetParam()));
  const auto ids = tok->encode("the cache of every layer", false);
  EXPECT_THROW(token_offsets(*tok, ids, "a different text entirely"), Error);
  EXPECT_THROW(token_offsets(*tok, ids, "the cache of every layer and more"), Error);  // bytes left over
}

INSTANTIATE_TEST_SUITE_P(Families, TokenOffsets, ::testing::Values("llama", "qwen2", "mistral"));

TEST(MetaspacePieceBytes, SpacesAndBytePieces) {
  EXPECT_EQ(metaspace_piece_bytes("\xE2\x96\x81the", kMetaspaceMarker, false), " the");
  EXPECT_EQ(metaspace_piece_bytes("<0x41>", kMetaspaceMarker, true), "A");
  EXPECT_EQ(metaspace_piece_bytes("<0x41>", kMetaspaceMarker, false), "<0x41>");  // a piece that only looks like one
}

// --- clean_up_tokenization_spaces ------------------------------------------------------------

// transformers/tokenization_utils_base.py, PreTrainedTokenizerBase.clean_up_tokenization,
// transcribed: the oracle the C++ is compared with.
constexpr const char* kPythonCleanUp = R"PY(
import json, sys
def clean_up_tokenization(out_string):
    out_string = (
        out_string.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )
    return out_string
cases = json.load(open(sys.argv[1], encoding="utf-8"))
json.dump([clean_up_tokenization(c) for c in cases], open(sys.argv[2], "w", encoding="utf-8"))
)PY";

TEST(CleanUpTokenization, MatchesTransformersTranscription) {
  std::vector<std::string> cases = {"Hello , world . Is it ? Yes !", "I 'm sure they 're here , aren 't they ?",
                                    "don 't  .", " ' ' ' ", "it ' s", "a  ,b", "we 've  's 're", "", " .", "..  ..",
                                    "Kl\xC3\xA4ger , caf\xC3\xA9 ."};
  std::mt19937_64 rng(3);
  const std::vector<std::string> pieces = {" ", ".", "'", "n", "t", "s", "m", "v", "e", "r", "?", "!", ",", "a", "é"};
  std::uniform_int_distribution<std::size_t> pick(0, pieces.size() - 1);
  for (int i = 0; i < 300; ++i) {
    std::string s;
    for (int k = 0; k < 24; ++k) s += pieces[pick(rng)];
    cases.push_back(s);
  }
  TempDir dir;
  dir.write("cases.json", nlohmann::json(cases).dump());
  dir.write("clean_up.py", kPythonCleanUp);
  const std::string cmd = "/usr/bin/python3 '" + (dir.path() / "clean_up.py").string() + "' '" +
                          (dir.path() / "cases.json").string() + "' '" + (dir.path() / "out.json").string() + "'";
  const int status = std::system(cmd.c_str());
  if (!WIFEXITED(status) || WEXITSTATUS(status) == 127) GTEST_SKIP() << "/usr/bin/python3 not available";
  ASSERT_EQ(WEXITSTATUS(status), 0);
  const auto want = nlohmann::json::parse(core::read_file(dir.path() / "out.json"));
  ASSERT_EQ(want.size(), cases.size());
  int changed = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(clean_up_tokenization(cases[i]), want[i].get<std::string>()) << "case " << i << ": '" << cases[i] << "'";
    changed += want[i].get<std::string>() != cases[i];
  }
  EXPECT_GT(changed, 100);  // the cases exercise the replacements
}

TEST(CleanUpTokenization, DecodeHonoursTheTokenizerConfig) {
  TempDir dir;
  write_tiny_tokenizer(dir.path(), "llama", testing::project_corpus(), 512, 7);
  const std::string text = "Hello , world . It 's done !";
  const auto config = nlohmann::json::parse(core::read_file(dir.path() / "tokenizer_config.json"));
  ASSERT_EQ(config["clean_up_tokenization_spaces"], false);  // the tiny tokenizer's own setting
  const auto plain = load_tokenizer(dir.path());
  EXPECT_EQ(plain->decode(plain->encode(text, false)), text);
  auto on = config;
  on["clean_up_tokenization_spaces"] = true;
  dir.write("tokenizer_config.json", on.dump());
  const auto cleaned = load_tokenizer(dir.path());
  EXPECT_EQ(cleaned->encode(text, false), plain->encode(text, false));  // encoding is untouched
  EXPECT_EQ(cleaned->decode(cleaned->encode(text, false)), clean_up_tokenization(text));
  EXPECT_EQ(clean_up_tokenization(text), "Hello, world. It's done!");
  EXPECT_THAT(cleaned->describe(), HasSubstr("clean_up_tokenization_spaces"));
  on["clean_up_tokenization_spaces"] = "yes";
  dir.write("tokenizer_config.json", on.dump());
  try {
    load_tokenizer(dir.path());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("clean_up_tokenization_spaces must be true or false"));
  }
}

}  // namespace
}  // namespace kvlab::harness
