// Every malformed tokenizer.json is a kvlab::Error naming the file and what is wrong; each
// case starts from a valid file and breaks one thing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "harness/tokenizer/byte_level.h"
#include "harness/tokenizer/test_util.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::TempDir;

json valid() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level_encode(std::string(1, static_cast<char>(b)))] = b;
  vocab["ab"] = 256;
  return {{"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"}, {"pattern", {{"Regex", "\\p{L}+|\\s+|."}}}, {"behavior", "Isolated"}, {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b"}}}}};
}

// The error loading `content` as dir/tokenizer.json, or "no error".
std::string error_of(const std::string& content) {
  TempDir dir;
  dir.write("tokenizer.json", content);
  try {
    load_tokenizer(dir.path());
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_THAT(message, HasSubstr((dir.path() / "tokenizer.json").string()));
    return message;
  }
  return "no error";
}

TEST(TokenizerJson, ValidFileLoads) {
  EXPECT_EQ(error_of(valid().dump()), "no error");
  TempDir dir;
  dir.write("tokenizer.json", valid().dump());
  EXPECT_EQ(load_tokenizer(dir.path())->encode("abc"), (std::vector<std::int32_t>{256, 'c'}));
}

TEST(TokenizerJson, NotJson) { EXPECT_THAT(error_of("{\"model\": "), HasSubstr("not valid JSON")); }

TEST(TokenizerJson, MissingModel) {
  json j = valid();
  j.erase("model");
  EXPECT_THAT(error_of(j.dump()), HasSubstr("model: missing"));
}

TEST(TokenizerJson, ModelTypeNotBpe) {
  json j = valid();
  j["model"]["type"] = "WordPiece";
  EXPECT_THAT(error_of(j.dump()), AllOf(HasSubstr("model.type"), HasSubstr("\"WordPiece\" is not supported")));
}

TEST(TokenizerJson, MergePartNotInVocab) {
  json j = valid();
  j["model"]["merges"] = {"a b", "ab zz"};
  EXPECT_THAT(error_of(j.dump()), AllOf(HasSubstr("model.merges[1]"), HasSubstr("part \"zz\" is not in the vocab")));
}

TEST(TokenizerJson, LegacyMergeWithoutExactlyTwoParts) {
  json j = valid();
  j["model"]["merges"] = {"a b c"};
  EXPECT_THAT(error_of(j.dump()), AllOf(HasSubstr("model.merges[0]"), HasSubstr("exactly 2 parts")));
  j["model"]["merges"] = {"ab"};
  EXPECT_THAT(error_of(j.dump()), HasSubstr("exactly 2 parts"));
  j["model"]["merges"] = {json::array({"a", "b", "c"})};
  EXPECT_THAT(error_of(j.dump()), HasSubstr("model.merges[0]"));
}

TEST(TokenizerJson, UnknownPreTokenizerType) {
  json j = valid();
  j["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Whitespace"}};
  EXPECT_THAT(error_of(j.dump()),
              AllOf(HasSubstr("pre_tokenizer.pretokenizers[0].type"), HasSubstr("pre-tokenizer \"Whitespace\"")));
}

TEST(TokenizerJson, PreTokenizerWithoutByteLevel) {
  json j = valid();
  j["pre_tokenizer"]["pretokenizers"].erase(1);
  EXPECT_THAT(error_of(j.dump()), HasSubstr("does not end with ByteLevel"));
}

TEST(TokenizerJson, UnknownNormalizerType) {
  json j = valid();
  j["normalizer"] = {{"type", "NFKC"}};
  EXPECT_THAT(error_of(j.dump()), AllOf(HasSubstr("normalizer.type"), HasSubstr("normalizer \"NFKC\"")));
}

TEST(TokenizerJson, RegexRejectedByPcre2) {
  json j = valid();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(\\p{L}+";
  EXPECT_THAT(error_of(j.dump()), AllOf(HasSubstr("rejected by PCRE2 at offset 7"), HasSubstr("missing closing parenthesis")));
}

TEST(TokenizerJson, UnknownPostProcessorAndDecoder) {
  json j = valid();
  j["post_processor"] = {{"type", "RobertaProcessing"}};
  EXPECT_THAT(error_of(j.dump()), HasSubstr("post-processor \"RobertaProcessing\""));
  j = valid();
  j["decoder"] = {{"type", "WordPiece"}};
  EXPECT_THAT(error_of(j.dump()), HasSubstr("decoder \"WordPiece\""));
}

TEST(TokenizerJson, BadAddedTokenAndTemplate) {
  json j = valid();
  j["added_tokens"] = {{{"content", "<x>"}}};
  EXPECT_THAT(error_of(j.dump()), HasSubstr("added_tokens[0].id: missing"));
  j = valid();
  j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", "<s> $A"}, {"special_tokens", json::object()}};
  EXPECT_THAT(error_of(j.dump()), HasSubstr("special token \"<s>\" is not in post_processor.special_tokens"));
}

TEST(LoadTokenizer, FolderWithoutTokenizerFiles) {
  TempDir dir;
  try {
    load_tokenizer(dir.path());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), AllOf(HasSubstr(dir.path().string()), HasSubstr("no tokenizer.json or tokenizer.model")));
  }
}

}  // namespace
}  // namespace kvlab::harness
