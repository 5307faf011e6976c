// SentencePiece-style tokenizer.json (docs/tokenizers.md §11) against sentencepiece itself:
// reference_spm.py trains a tiny SentencePiece BPE model with Debian's python3-sentencepiece in
// Llama-2's settings, converts it to tokenizer.json as transformers' LlamaConverter does (legacy
// and non-legacy), and encodes every case with sentencepiece. Here kvlab's tokenizer.json path
// must give the same ids (the legacy rule included: a segment after a literal <s> is encoded
// with its own dummy prefix), decode as HF does, agree with kvlab's own tokenizer.model path,
// and the non-legacy file (Metaspace "first") must equal libsentencepiece's encode with the dummy
// prefix only at the text start. Skips when python3 or python3-sentencepiece is missing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "core/read_file.h"
#include "harness/tokenizer/added_tokens.h"
#include "harness/tokenizer/sentencepiece_library.h"
#include "harness/tokenizer/sentencepiece_tokenizer.h"
#include "harness/tokenizer/sp_model_proto.h"
#include "harness/tokenizer/test_util.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;
using testing::TempDir;
using Ids = std::vector<std::int32_t>;

std::vector<std::string> cases() {
  std::vector<std::string> out = {
      "", " ", "  ", "hello world", " leading space", "  two leading", "trailing  ", "a  b   c", "line\nbreak\n\n",
      "\ttab\r\nwindows", "digits 1234567890 3.14159", "Der Schlüssel-Wert-Cache wächst.", "Кэш ключей", "键值缓存",
      "emoji 🙂🚀 and ZWJ 👩‍💻", "unknown \xE1\xBF\xBF \xEA\x99\xAE chars", "<s>", "<s>hello", "<s> hello", "hello<s>",
      "hello <s> world</s>", "a<s>b</s>c<unk>d", "</s></s>", "<s>[INST] hi [/INST]", "< s > <s", "#include <string>",
      "std::vector<std::int32_t> ids;"};
  std::mt19937_64 rng(22);
  for (int i = 0; i < 300; ++i) out.push_back(testing::random_utf8(rng, 1 + static_cast<int>(rng() % 40)));
  // Random text with literal special tokens spliced in.
  const char* specials[] = {"<s>", "</s>", "<unk>"};
  for (int i = 0; i < 100; ++i) {
    std::string t;
    for (int k = 0; k < 4; ++k) {
      t += testing::random_utf8(rng, static_cast<int>(rng() % 8));
      if (rng() % 2) t += specials[rng() % 3];
    }
    out.push_back(t);
  }
  return out;
}

struct Oracle {
  std::string skip_reason;
  std::unique_ptr<TempDir> dir;
  json results;
};

const Oracle& oracle() {
  static const Oracle o = [] {
    Oracle r;
    r.dir = std::make_unique<TempDir>();
    const auto& d = r.dir->path();
    r.dir->write("corpus.txt", testing::project_corpus());
    r.dir->write("cases.json", json(cases()).dump());
    const std::string script = std::string(KVLAB_SOURCE_DIR) + "/harness/tokenizer/reference_spm.py";
    const std::string cmd = "/usr/bin/python3 '" + script + "' '" + (d / "corpus.txt").string() + "' '" + d.string() +
                            "' 800 '" + (d / "cases.json").string() + "' '" + (d / "results.json").string() + "' 2> '" +
                            (d / "stderr.txt").string() + "'";
    const int status = std::system(cmd.c_str());
    const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (rc == 127) {
      r.skip_reason = "python3 not found";
    } else if (rc == 4) {
      r.skip_reason = "python3-sentencepiece not installed (scripts/setup.sh installs it)";
    } else if (rc != 0) {
      r.skip_reason = "reference_spm.py failed: " + core::read_file(d / "stderr.txt");
    } else {
      r.results = json::parse(core::read_file(d / "results.json"));
    }
    return r;
  }();
  return o;
}

bool has_special(const std::string& text) {
  for (const char* s : {"<s>", "</s>", "<unk>"}) {
    if (text.find(s) != std::string::npos) return true;
  }
  return false;
}

TEST(SpmOracle, LegacyJsonEqualsSentencePiece) {
  const Oracle& o = oracle();
  if (!o.skip_reason.empty()) GTEST_SKIP() << o.skip_reason;
  TempDir legacy_dir;  // tokenizer.json alone: beside tokenizer.model, load_tokenizer prefers the model
  legacy_dir.write("tokenizer.json", core::read_file(o.dir->path() / "legacy/tokenizer.json"));
  const auto tok = load_tokenizer(legacy_dir.path());
  ASSERT_THAT(tok->describe(), ::testing::HasSubstr("sentencepiece-style"));
  const auto model = load_sentencepiece(o.dir->path() / "tokenizer.model");
  EXPECT_EQ(tok->vocab_size(), o.results["vocab_size"].get<int>());
  int compared = 0, round_trips = 0;
  for (const json& c : o.results["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const Ids want = c["legacy"].get<Ids>();
    const Ids got = tok->encode(text, false);
    EXPECT_EQ(got, want) << "text: " << text;
    EXPECT_EQ(tok->encode(text), [&] { Ids b{1}; b.insert(b.end(), want.begin(), want.end()); return b; }()) << text;
    EXPECT_EQ(tok->decode(got, /*skip_special=*/true), c["decode_skip_special"].get<std::string>()) << "text: " << text;
    if (!has_special(text)) {
      // No special token: one segment, sentencepiece's own encoding of the whole text, which
      // kvlab's tokenizer.model path also gives; and HF's decoder chain returns the text.
      EXPECT_EQ(got, c["sp"].get<Ids>()) << text;
      EXPECT_EQ(model->encode(text, false), got) << text;
      EXPECT_EQ(tok->encode_continuation(text), model->encode_continuation(text)) << text;  // no dummy prefix
      EXPECT_EQ(tok->decode(got), text);
      ++round_trips;
    }
    ++compared;
  }
  std::printf("%d texts equal to sentencepiece, %d round trips\n", compared, round_trips);
  EXPECT_GE(compared, 400);
}

TEST(SpmOracle, NonLegacyJsonPrependsOnlyAtTheTextStart) {
  const Oracle& o = oracle();
  if (!o.skip_reason.empty()) GTEST_SKIP() << o.skip_reason;
  TempDir first_dir;
  first_dir.write("tokenizer.json", core::read_file(o.dir->path() / "first/tokenizer.json"));
  const auto tok = load_tokenizer(first_dir.path());
  ASSERT_THAT(tok->describe(), ::testing::HasSubstr("Metaspace(first)"));
  // libsentencepiece with and without the dummy prefix, as the expected encoder of a segment.
  const std::string model = core::read_file(o.dir->path() / "tokenizer.model");
  std::string error;
  const auto with_prefix = spm::library().load(model, &error);
  ASSERT_TRUE(with_prefix) << error;
  const auto without_prefix = spm::library().load(sp_model_without_dummy_prefix(model, "tokenizer.model"), &error);
  ASSERT_TRUE(without_prefix) << error;
  const AddedTokenMatcher specials({{.id = 0, .content = "<unk>"}, {.id = 1, .content = "<s>"}, {.id = 2, .content = "</s>"}});
  int compared = 0;
  for (const json& c : o.results["cases"]) {
    const std::string text = c["text"].get<std::string>();
    Ids want;
    for (const TextSegment& seg : specials.split(text)) {
      if (seg.token >= 0) {
        want.push_back(seg.token);
        continue;
      }
      const std::string_view s = std::string_view(text).substr(seg.begin, seg.end - seg.begin);
      // Metaspace "first": the "▁" only at offset 0 and only when the text does not start with one.
      const auto& sp = seg.begin == 0 && !s.starts_with(' ') ? *with_prefix : *without_prefix;
      std::vector<int> ids;
      ASSERT_EQ(sp.encode(s, &ids), "");
      want.insert(want.end(), ids.begin(), ids.end());
    }
    EXPECT_EQ(tok->encode(text, false), want) << "text: " << text;
    if (!has_special(text) && !text.starts_with(' ')) {
      EXPECT_EQ(tok->decode(want), text);
    }
    ++compared;
  }
  EXPECT_GE(compared, 400);
}

}  // namespace
}  // namespace kvlab::harness
