// SentencePiece-style tokenizer.json (docs/tokenizers.md §11) on a hand-written file whose ids
// follow by hand from its merges, so the pipeline is tested without Python: the legacy Llama-2
// layout (Prepend + Replace normalizer, no pre-tokenizer), the non-legacy one (Metaspace with
// prepend_scheme "first"), byte fallback, fused unk, the decoder chain and the errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "harness/tokenizer/test_util.h"
#include "harness/tokenizer/tokenizer.h"
#include "harness/tokenizer/tokenizer_json.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;
using ::testing::AllOf;
using ::testing::HasSubstr;
using testing::TempDir;
using Ids = std::vector<std::int32_t>;

// ▁ is U+2581, "\xE2\x96\x81".
#define SP "\xE2\x96\x81"

json added(int id, const std::string& content) {
  return {{"id", id},         {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},  {"normalized", false}, {"special", true}};
}

// What transformers' LlamaConverter writes for Llama-2 (legacy: true).
json legacy_file() {
  const json vocab = {{"<unk>", 0}, {"<s>", 1},  {"</s>", 2}, {"<0x0A>", 3}, {"<0xC3>", 4}, {"<0xA9>", 5},
                      {SP, 6},      {"a", 7},    {"b", 8},    {"c", 9},      {SP "a", 10}, {"ab", 11},
                      {SP "ab", 12}, {"bc", 13}, {SP SP, 14}};
  return {
      {"version", "1.0"},
      {"added_tokens", {added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")}},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", SP}}, {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", SP}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", json::array()},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", SP}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        // Ranks: "▁ a" 0, "b c" 1, "a b" 2, "▁a b" 3, "▁ ▁" 4 (both merge formats).
        {"merges", {SP " a", json::array({"b", "c"}), "a b", SP "a b", json::array({SP, SP})}}}}};
}

// The non-legacy conversion (legacy: false): no normalizer, Metaspace prepend_scheme "first".
json first_file() {
  json j = legacy_file();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", SP}, {"prepend_scheme", "first"}, {"split", false}};
  return j;
}

std::unique_ptr<Tokenizer> load(const json& j) {
  TempDir dir;
  dir.write("tokenizer.json", j.dump());
  return load_tokenizer(dir.path());
}

TEST(SpmJson, LegacyMergesByHand) {
  const auto tok = load(legacy_file());
  EXPECT_THAT(tok->describe(), AllOf(HasSubstr("sentencepiece-style BPE"), HasSubstr("Prepend+Replace"), HasSubstr("byte_fallback"),
                                     HasSubstr("BOS <s>")));
  // "ab c" → "▁ab▁c": ▁+a (rank 0) → ▁a; ▁a+b (rank 3) → ▁ab; "▁ c" has no merge.
  EXPECT_EQ(tok->encode("ab c", false), (Ids{12, 6, 9}));
  EXPECT_EQ(tok->encode("ab c"), (Ids{1, 12, 6, 9}));
  // "abc" → "▁abc": ▁a (0), then b+c (1) beats ▁a+b (3): ▁a bc.
  EXPECT_EQ(tok->encode("abc", false), (Ids{10, 13}));
  // Two spaces: "▁▁a" → ▁+a (rank 0) first, so ▁ ▁a; not ▁▁ (rank 4) + a.
  EXPECT_EQ(tok->encode(" a", false), (Ids{6, 10}));
  EXPECT_EQ(tok->encode("  ", false), (Ids{14, 6}));  // "▁▁▁": the leftmost ▁▁ first
  EXPECT_EQ(tok->encode("", false), Ids{});           // Prepend leaves an empty text empty
}

TEST(SpmJson, ByteFallbackAndFusedUnk) {
  const auto tok = load(legacy_file());
  // "é" (C3 A9) is no vocab entry but both bytes are: <0xC3> <0xA9>; "\n" → <0x0A>.
  EXPECT_EQ(tok->encode("\xC3\xA9\n", false), (Ids{6, 4, 5, 3}));
  // "xy" has no byte tokens (<0x78> absent): one fused <unk>; "x" then "é" → unk then bytes.
  EXPECT_EQ(tok->encode("axyb", false), (Ids{10, 0, 8}));
  EXPECT_EQ(tok->encode("x\xC3\xA9", false), (Ids{6, 0, 4, 5}));
  json no_fuse = legacy_file();
  no_fuse["model"]["fuse_unk"] = false;
  EXPECT_EQ(load(no_fuse)->encode("axyb", false), (Ids{10, 0, 0, 8}));
}

TEST(SpmJson, LegacyRuleAfterALiteralSpecialToken) {
  const auto legacy = load(legacy_file());
  const auto first = load(first_file());
  // Legacy: every segment after a special token is normalized alone, so it gets the "▁".
  EXPECT_EQ(legacy->encode("<s>ab", false), (Ids{1, 12}));
  EXPECT_EQ(legacy->encode("ab</s>ab", false), (Ids{12, 2, 12}));
  // Metaspace "first": only the text at offset 0 gets it.
  EXPECT_EQ(first->encode("<s>ab", false), (Ids{1, 11}));
  EXPECT_EQ(first->encode("ab</s>ab", false), (Ids{12, 2, 11}));
  // ... and a text that starts with a space is not given a second one (metaspace.rs).
  EXPECT_EQ(first->encode(" ab", false), (Ids{12}));
  EXPECT_EQ(legacy->encode(" ab", false), (Ids{6, 12}));
  EXPECT_EQ(first->encode_continuation("ab"), (Ids{11}));
  // A continuation's start is mid-text: no Prepend either; after a special token inside it, the
  // legacy rule again.
  EXPECT_EQ(legacy->encode_continuation("ab"), (Ids{11}));
  EXPECT_EQ(legacy->encode_continuation(" ab"), (Ids{12}));
  EXPECT_EQ(legacy->encode_continuation("ab<s>ab"), (Ids{11, 1, 12}));
  EXPECT_EQ(first->encode_continuation("ab<s>ab"), (Ids{11, 1, 11}));
}

TEST(SpmJson, DecoderChainRoundTrips) {
  const auto tok = load(legacy_file());
  for (const std::string text : {"ab c", "abc", " a", "  ", "\xC3\xA9\n", "a b  c\n\nab"}) {
    EXPECT_EQ(tok->decode(tok->encode(text, false)), text) << text;
    EXPECT_EQ(tok->decode(tok->encode(text), true), text) << text;
  }
  // Special tokens decode as their text, through the chain: "<s>" then " ab" → "<s> ab".
  EXPECT_EQ(tok->decode(Ids{1, 12, 6, 9}), "<s> ab c");
  EXPECT_EQ(tok->decode(Ids{1, 12, 6, 9}, true), "ab c");
  // A byte run that is not UTF-8 gives one U+FFFD per byte (decoders/byte_fallback.rs).
  EXPECT_EQ(tok->decode(Ids{7, 4, 4, 7}), "a\xEF\xBF\xBD\xEF\xBF\xBD" "a");
  EXPECT_EQ(tok->decode(Ids{4}), "\xEF\xBF\xBD");
  // Strip removes one leading space of the whole text only.
  EXPECT_EQ(tok->decode(Ids{6, 6, 7}), " a");
}

TEST(SpmJson, MetaspaceSplitAndDecoder) {
  json j = first_file();
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", SP}, {"add_prefix_space", true}};  // old form: always, split
  j["decoder"] = {{"type", "Metaspace"}, {"replacement", SP}, {"add_prefix_space", true}};
  const auto tok = load(j);
  // split: "▁ab▁▁c" → "▁ab", "▁", "▁c" → no ▁▁ merge across words.
  EXPECT_EQ(tok->encode("ab  c", false), (Ids{12, 6, 6, 9}));
  EXPECT_EQ(tok->encode("<s>ab", false), (Ids{1, 12}));  // always
  // Metaspace decoder: the first token loses its ▁ (only when prepending).
  EXPECT_EQ(tok->decode(tok->encode("ab  c", false)), "ab  c");
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", SP}, {"prepend_scheme", "never"}, {"split", true}};
  EXPECT_EQ(load(j)->encode("ab c", false), (Ids{11, 6, 9}));
}

TEST(SpmJson, NormalizedAddedTokensMatchTheirNormalizedForm) {
  json j = legacy_file();
  j["added_tokens"][2]["normalized"] = true;  // "</s>" is matched as "▁</s>" in the normalized text
  const auto tok = load(j);
  EXPECT_EQ(tok->encode("ab </s>", false), (Ids{12, 2}));
  EXPECT_EQ(tok->encode("ab</s>", false), (Ids{12, 0}));  // no "▁" before it: "</s>" is text, four unknown characters fused
}

TEST(SpmJson, GemmaLayoutAndOtherNormalizers) {
  // GemmaConverter: normalizer Replace(" " → "▁") only (no dummy prefix), pre-tokenizer
  // Split(" ", merged_with_previous) — a no-op once the spaces are gone — and no Strip decoder.
  json j = legacy_file();
  j["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", SP}};
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "MergedWithPrevious"}, {"invert", false}};
  j["decoder"]["decoders"].erase(3);
  const auto tok = load(j);
  EXPECT_EQ(tok->encode("ab c", false), (Ids{11, 6, 9}));
  EXPECT_EQ(tok->encode(" ab", false), (Ids{12}));
  EXPECT_EQ(tok->decode(tok->encode(" ab c", false)), " ab c");
  EXPECT_THAT(tok->describe(), HasSubstr("normalizer Replace, pre-tokenizer Split,"));
  // NFKC and NFC as normalizer steps.
  EXPECT_EQ(spm_normalize({{SpmNormalizerStep::Kind::nfkc, "", ""}}, "\xEF\xAC\x81"), "fi");  // U+FB01 ﬁ
  EXPECT_EQ(spm_normalize({{SpmNormalizerStep::Kind::nfc, "", ""}}, "e\xCC\x81"), "\xC3\xA9");
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFKC"}}, j["normalizer"]}}};
  EXPECT_EQ(load(j)->encode("\xEF\xBC\xA1", false), load(j)->encode("A", false));  // fullwidth Ａ → A
}

std::string error_of(const json& j) {
  try {
    load(j);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(SpmJson, Errors) {
  json j = legacy_file();
  j["normalizer"]["normalizers"][0] = {{"type", "Precompiled"}, {"precompiled_charsmap", "AAAA"}};
  EXPECT_THAT(error_of(j), AllOf(HasSubstr("normalizer.normalizers[0].type"), HasSubstr("normalizer \"Precompiled\" is not supported")));
  j = legacy_file();
  j["normalizer"]["normalizers"][1]["pattern"] = {{"Regex", " {2,}"}};
  EXPECT_THAT(error_of(j), HasSubstr("a Regex pattern is not supported"));
  j = first_file();
  j["pre_tokenizer"]["prepend_scheme"] = "sometimes";
  EXPECT_THAT(error_of(j), HasSubstr("unknown prepend_scheme \"sometimes\""));
  j = first_file();
  j["pre_tokenizer"]["add_prefix_space"] = false;
  EXPECT_THAT(error_of(j), HasSubstr("does not match the declared prepend_scheme"));
  j = first_file();
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {j["pre_tokenizer"], {{"type", "Whitespace"}}}}};
  EXPECT_THAT(error_of(j), HasSubstr("Metaspace must come last"));
  j = legacy_file();
  j["decoder"]["decoders"][3] = {{"type", "CTC"}};
  EXPECT_THAT(error_of(j), HasSubstr("decoder \"CTC\" is not supported"));
  j = legacy_file();
  j["model"]["type"] = "Unigram";
  EXPECT_THAT(error_of(j), HasSubstr("\"Unigram\" is not supported"));
  j = legacy_file();
  j["model"]["unk_token"] = "<nope>";
  EXPECT_THAT(error_of(j), HasSubstr("model.unk_token"));
}

}  // namespace
}  // namespace kvlab::harness
