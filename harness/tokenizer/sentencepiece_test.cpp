// SentencePiece (Mistral layout, docs/tokenizers.md §7/§9) against the raw sentencepiece processor
// (spm::Processor: sentencepiece's own Encode on the model as stored, through the dlopen'ed
// module) as the oracle: control pieces in the text are split out first, only the text start
// gets the dummy prefix, and the v3 chat layout equals mistral-common's
// [BOS, [INST], content, [/INST]]. Also: a missing module fails only sentencepiece models.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <stdlib.h>

#include <fstream>
#include <iostream>
#include <sstream>

#include "core/error.h"
#include "harness/tokenizer/chat_template.h"
#include "harness/tokenizer/sentencepiece_library.h"
#include "harness/tokenizer/sp_model_proto.h"
#include "harness/tokenizer/test_util.h"
#include "harness/tokenizer/tiny_tokenizer.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;
using Ids = std::vector<std::int32_t>;

class SentencePiece : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    write_tiny_tokenizer(dir_->path(), "mistral", testing::project_corpus(), 600, 1);
    std::ostringstream bytes;
    bytes << std::ifstream(dir_->path() / "tokenizer.model", std::ios::binary).rdbuf();
    model_ = new std::string(bytes.str());
    std::string error;
    raw_ = spm::library().load(*model_, &error).release();
    ASSERT_NE(raw_, nullptr) << error;
  }
  static void TearDownTestSuite() {
    delete raw_;
    delete model_;
    delete dir_;
  }
  // The raw processor's ids: the model as stored, dummy prefix included.
  static Ids sp(std::string_view text) {
    std::vector<int> ids;
    EXPECT_EQ(raw_->encode(text, &ids), "");
    return Ids(ids.begin(), ids.end());
  }
  static Ids cat(std::initializer_list<Ids> parts) {
    Ids out;
    for (const Ids& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  }

  static inline TempDir* dir_ = nullptr;
  static inline std::string* model_ = nullptr;
  static inline spm::Processor* raw_ = nullptr;
};

TEST_F(SentencePiece, V3LayoutIdsAndFlags) {
  const auto tok = load_tokenizer(dir_->path());
  EXPECT_EQ(tok->token_id("<unk>"), 0);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->token_id("</s>"), 2);
  EXPECT_EQ(tok->token_id("[INST]"), 3);
  EXPECT_EQ(tok->token_id("[/INST]"), 4);
  EXPECT_TRUE(tok->is_special(3));
  EXPECT_FALSE(tok->token_id("no such piece"));
  EXPECT_THAT(tok->describe(), HasSubstr("sentencepiece BPE"));
  EXPECT_THAT(tok->describe(), HasSubstr("byte_fallback"));

  const SpModelFlags flags = read_sp_model_flags(*model_, "tokenizer.model");
  EXPECT_EQ(flags.model_type, 2);
  EXPECT_TRUE(flags.byte_fallback);
  EXPECT_TRUE(flags.add_dummy_prefix);
  EXPECT_FALSE(flags.remove_extra_whitespaces);
  EXPECT_FALSE(read_sp_model_flags(sp_model_without_dummy_prefix(*model_, "m"), "m").add_dummy_prefix);
}

TEST_F(SentencePiece, EncodeAddsBosAndMatchesTheRawProcessor) {
  const auto tok = load_tokenizer(dir_->path());
  EXPECT_EQ(tok->encode("hello world"), cat({{1}, sp("hello world")}));
  EXPECT_EQ(tok->encode("hello world", false), sp("hello world"));
  EXPECT_EQ(tok->decode(tok->encode("hello world"), true), "hello world");
}

TEST_F(SentencePiece, ControlPiecesInTheTextAreSplitOutFirst) {
  const auto tok = load_tokenizer(dir_->path());
  // The text after a control piece is not a text start: no dummy prefix, so " hello" gives the
  // same pieces as the raw processor's "hello" (whose "▁" is the dummy prefix).
  EXPECT_EQ(tok->encode("<s>[INST] hello[/INST]", false), cat({{1, 3}, sp("hello"), {4}}));
  EXPECT_EQ(tok->encode_continuation(" hello"), sp("hello"));
  EXPECT_EQ(tok->decode(tok->encode("a<s> b[INST]c", false)), "a<s> b[INST]c");
}

TEST_F(SentencePiece, MistralV3ChatEqualsMistralCommonLayout) {
  const auto tok = load_tokenizer(dir_->path());
  const std::string context = "The key-value cache grows with the context.";
  const std::string question = "\nWhat grows?";
  std::int64_t context_end = -1;
  const Ids ids = encode_chat(*tok, ChatTemplate::mistral_v3, render_chat(ChatTemplate::mistral_v3, context, question),
                              &context_end);
  // mistral-common: [BOS, [INST]] + encode(content) + [[/INST]], encode adding the dummy prefix.
  EXPECT_EQ(ids, cat({{1, 3}, sp(context + question), {4}}));
  EXPECT_EQ(context_end, static_cast<std::int64_t>(2 + sp(context).size()));
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 1), 1);
}

TEST_F(SentencePiece, JsonBesideAModelThatIsNotByteLevelDefersToIt) {
  TempDir dir;
  dir.write("tokenizer.model", *model_);
  dir.write("tokenizer.json", R"({"model": {"type": "BPE", "vocab": {}, "merges": []},
                                  "pre_tokenizer": {"type": "Metaspace", "replacement": "▁"}})");
  EXPECT_THAT(load_tokenizer(dir.path())->describe(), HasSubstr("tokenizer.model sentencepiece BPE"));
}

TEST_F(SentencePiece, MalformedModelNamesTheFile) {
  TempDir dir;
  dir.write("tokenizer.model", "this is not a protobuf");
  try {
    load_tokenizer(dir.path());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr((dir.path() / "tokenizer.model").string()));
    EXPECT_THAT(e.what(), HasSubstr("not a sentencepiece model"));
  }
}

// The module is opened once per process, so this runs in a freshly exec'ed child (the
// "threadsafe" death-test style re-runs the binary for this one test) with
// KVLAB_SENTENCEPIECE_MODULE pointing nowhere: byte-level BPE must still work, and a
// sentencepiece model must fail with a kvlab::Error naming the module's path.
TEST(SentencePieceModule, MissingModuleFailsOnlySentencePieceModels) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const auto child = [] {
    const std::string bogus = "/nonexistent/kvlab-no-such-module.so";
    ::setenv("KVLAB_SENTENCEPIECE_MODULE", bogus.c_str(), 1);
    TempDir bpe;
    write_tiny_tokenizer(bpe.path(), "llama", testing::project_corpus(), 400, 1);
    const auto tok = load_tokenizer(bpe.path());
    const std::string text = "byte-level BPE needs no sentencepiece 🙂";
    if (tok->decode(tok->encode(text, false)) != text) {
      std::cerr << "byte-level round trip failed\n";
      std::exit(2);
    }
    TempDir sp;
    sp.write("tokenizer.model", "");  // a well-formed (empty) ModelProto: gets as far as the module
    try {
      load_tokenizer(sp.path());
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.find(bogus) != std::string::npos && what.find("sentencepiece module") != std::string::npos) {
        std::exit(0);
      }
      std::cerr << "unexpected error: " << what << "\n";
      std::exit(3);
    }
    std::cerr << "no error without the module\n";
    std::exit(4);
  };
  EXPECT_EXIT(child(), ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace kvlab::harness
