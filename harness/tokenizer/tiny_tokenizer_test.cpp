// Tokenizers trained by write_tiny_tokenizer, loaded back through load_tokenizer: decode∘encode
// is the identity on random UTF-8 (the NFC form for Qwen2) and on a long text, and training is
// deterministic. How fast long texts encode and training runs is measured by
// bench/bench_tokenizer.cpp, not asserted here: a wall-clock bound fails under the sanitizers and
// on a loaded machine.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "core/error.h"
#include "harness/tokenizer/chat_template.h"
#include "harness/tokenizer/nfc.h"
#include "harness/tokenizer/test_util.h"
#include "harness/tokenizer/tiny_tokenizer.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {
namespace {

using testing::TempDir;
using Ids = std::vector<std::int32_t>;

std::string read(const std::filesystem::path& p) {
  std::ostringstream s;
  s << std::ifstream(p, std::ios::binary).rdbuf();
  return s.str();
}

class TinyTokenizer : public ::testing::TestWithParam<std::string> {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    for (const std::string family : {"llama", "qwen2", "mistral"}) {
      infos_[family] = write_tiny_tokenizer(dir_->path() / family, family, testing::project_corpus(), 512, 7);
    }
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::filesystem::path folder(const std::string& family) { return dir_->path() / family; }

  static inline TempDir* dir_ = nullptr;
  static inline std::map<std::string, TinyTokenizerInfo> infos_;
};

TEST_P(TinyTokenizer, DecodeEncodeIsIdentityOnRandomUtf8) {
  const std::string family = GetParam();
  const auto tok = load_tokenizer(folder(family));
  std::mt19937_64 rng(20240726);
  for (int i = 0; i < 300; ++i) {
    const std::string s = testing::random_utf8(rng, 1 + i % 80);
    const std::string expected = family == "qwen2" ? to_nfc(s) : s;
    const Ids ids = tok->encode(s, /*add_special=*/false);
    ASSERT_EQ(tok->decode(ids), expected) << "sample " << i;
    for (const std::int32_t id : ids) ASSERT_FALSE(tok->is_special(id)) << "sample " << i;
    // With the post-processor's tokens (a BOS on llama and mistral) skipped again.
    ASSERT_EQ(tok->decode(tok->encode(s), /*skip_special=*/true), expected) << "sample " << i;
  }
}

TEST_P(TinyTokenizer, InfoMatchesTheLoadedTokenizer) {
  const std::string family = GetParam();
  const TinyTokenizerInfo& info = infos_.at(family);
  const auto tok = load_tokenizer(folder(family));
  EXPECT_EQ(tok->vocab_size(), info.vocab_size);
  EXPECT_EQ(info.vocab_size, 512);
  EXPECT_EQ(tok->bos_id(), info.bos_id ? std::optional<std::int32_t>(*info.bos_id) : std::nullopt);
  ASSERT_FALSE(info.eos_ids.empty());
  for (const int eos : info.eos_ids) EXPECT_TRUE(tok->is_special(eos)) << tok->token(eos);
  EXPECT_EQ(choose_chat_format(folder(family), "auto").layout, ChatTemplate::own);  // it ships one
}

TEST_P(TinyTokenizer, SpecialTokensInTheTextMapToTheirIds) {
  const std::string family = GetParam();
  const auto tok = load_tokenizer(folder(family));
  const std::string special = family == "llama" ? "<|eot_id|>" : family == "qwen2" ? "<|im_start|>" : "[INST]";
  const auto id = tok->token_id(special);
  ASSERT_TRUE(id);
  const Ids ids = tok->encode("abc" + special + "def", false);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), *id), 1);
  EXPECT_EQ(tok->decode(ids), "abc" + special + "def");
  EXPECT_EQ(tok->decode(ids, true), "abcdef");
}

TEST_P(TinyTokenizer, LongTextRoundTrips) {
  // The text BM_Encode times at 400000 bytes. Its repeated words come from the BPE model's
  // per-word cache after their first merge; they must decode as the merged ones do.
  const std::string family = GetParam();
  const auto tok = load_tokenizer(folder(family));
  const std::string text = testing::project_corpus_prefix(400'000);
  const Ids ids = tok->encode(text, false);
  EXPECT_GT(ids.size(), 100'000u);
  std::string expected = family == "qwen2" ? to_nfc(text) : text;
  // The corpus quotes sentencepiece's space stand-in U+2581, which decodes as a space
  // (sentencepiece_tokenizer.h).
  if (family == "mistral") {
    for (std::size_t at; (at = expected.find("\u2581")) != std::string::npos;) expected.replace(at, 3, 1, ' ');
  }
  EXPECT_EQ(tok->decode(ids), expected);
}

TEST_P(TinyTokenizer, ConcurrentEncodesAgree) {
  // The per-word cache is shared between threads; every thread must see the same ids.
  const auto tok = load_tokenizer(folder(GetParam()));
  const std::string text = testing::project_corpus();
  const Ids expected = tok->encode(text);
  std::vector<Ids> results(4);
  std::vector<std::thread> threads;
  for (auto& r : results) threads.emplace_back([&] { r = tok->encode(text); });
  for (auto& t : threads) t.join();
  for (const Ids& r : results) EXPECT_EQ(r, expected);
}

INSTANTIATE_TEST_SUITE_P(Families, TinyTokenizer, ::testing::Values("llama", "qwen2", "mistral"));

TEST(TinyTokenizerFiles, LayoutOfTheLlamaAndQwenFiles) {
  TempDir dir;
  std::string corpus = testing::project_corpus();
  for (int i = 0; i < 200; ++i) corpus += " 12345";  // so that digit merges are learned
  write_tiny_tokenizer(dir.path() / "l", "llama", corpus, 400, 0);
  write_tiny_tokenizer(dir.path() / "q", "qwen2", corpus, 400, 0);
  const auto llama = nlohmann::json::parse(read(dir.path() / "l/tokenizer.json"));
  const auto qwen = nlohmann::json::parse(read(dir.path() / "q/tokenizer.json"));
  EXPECT_TRUE(llama["model"]["ignore_merges"].get<bool>());
  EXPECT_TRUE(llama["model"]["merges"][0].is_array());
  EXPECT_TRUE(qwen["model"]["merges"][0].is_string());
  EXPECT_EQ(qwen["normalizer"]["type"], "NFC");
  EXPECT_EQ(llama["pre_tokenizer"]["pretokenizers"][0]["behavior"], "Isolated");
  EXPECT_EQ(llama["post_processor"]["processors"][1]["type"], "TemplateProcessing");
  EXPECT_EQ(llama["added_tokens"].size(), 5u);
  EXPECT_EQ(qwen["added_tokens"].size(), 3u);
  // Digits: Llama's regex groups up to three, Qwen's takes one per pre-token.
  const auto l = load_tokenizer(dir.path() / "l");
  const auto q = load_tokenizer(dir.path() / "q");
  const Ids llama_ids = l->encode("12345", false);
  ASSERT_EQ(llama_ids.size(), 2u);
  EXPECT_EQ(l->decode(std::span(llama_ids).first(1)), "123");
  EXPECT_EQ(q->encode("12345", false).size(), 5u);
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "l/tokenizer.model"));
}

TEST(TinyTokenizerFiles, QwenNormalizesToNfcLlamaDoesNot) {
  TempDir dir;
  write_tiny_tokenizer(dir.path() / "l", "llama", testing::project_corpus(), 400, 0);
  write_tiny_tokenizer(dir.path() / "q", "qwen2", testing::project_corpus(), 400, 0);
  const std::string composed = "Caf\u00E9", decomposed = "Cafe\u0301";
  const auto q = load_tokenizer(dir.path() / "q");
  const auto l = load_tokenizer(dir.path() / "l");
  EXPECT_EQ(q->encode(decomposed), q->encode(composed));
  EXPECT_NE(l->encode(decomposed), l->encode(composed));
  EXPECT_EQ(l->decode(l->encode(decomposed, false)), decomposed);
}

TEST(TinyTokenizerFiles, TrainingIsDeterministic) {
  TempDir a, b;
  const std::string corpus = testing::project_corpus_prefix(50'000);  // what BM_Train times
  for (const std::string family : {"llama", "qwen2", "mistral"}) {
    write_tiny_tokenizer(a.path() / family, family, corpus, 512, 3);
    write_tiny_tokenizer(b.path() / family, family, corpus, 512, 3);
    const std::string file = family == "mistral" ? "tokenizer.model" : "tokenizer.json";
    EXPECT_EQ(read(a.path() / family / file), read(b.path() / family / file)) << family;
  }
}

TEST(TinyTokenizerFiles, BadArguments) {
  TempDir dir;
  EXPECT_THROW(write_tiny_tokenizer(dir.path(), "gpt2", "text", 512, 0), Error);
  EXPECT_THROW(write_tiny_tokenizer(dir.path(), "llama", "text", 260, 0), Error);
  EXPECT_THROW(write_tiny_tokenizer(dir.path(), "mistral", "text", 8, 0), Error);
}

}  // namespace
}  // namespace kvlab::harness
