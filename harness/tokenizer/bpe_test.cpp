// Byte-level BPE on a hand-built vocabulary with hand-worked ids (docs/tokenizers.md §3–6):
// merge ranks and leftmost ties, both merges formats, ignore_merges, added tokens split first,
// the post-processor's BOS and the ByteLevel decoder.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "harness/tokenizer/byte_level.h"
#include "harness/tokenizer/tokenizer_json.h"
#include "harness/tokenizer/utf8.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;
using Ids = std::vector<std::int32_t>;

// Ids 0..255 are the byte symbols (id = byte value); then the merged tokens below.
json byte_vocab() {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level_encode(std::string(1, static_cast<char>(b)))] = b;
  return vocab;
}

// Merges in rank order with the ids of their results (Ġ = U+0120 = the space byte).
const std::vector<std::tuple<std::string, std::string, int>> kMerges = {
    {"a", "a", 256},          // rank 0
    {"a", "b", 257},          // rank 1
    {"Ġ", "h", 258},          // rank 2
    {"l", "l", 259},          // rank 3
    {"Ġh", "e", 260},         // rank 4
    {"Ġhe", "ll", 261},       // rank 5
    {"e", "l", 262},          // rank 6: loses to "l l" (rank 3) inside "hello"
};

json tokenizer(bool pair_merges, bool ignore_merges) {
  json vocab = byte_vocab();
  json merges = json::array();
  for (const auto& [a, b, id] : kMerges) {
    vocab[a + b] = id;
    merges.push_back(pair_merges ? json::array({a, b}) : json(a + " " + b));
  }
  vocab["Ġhello"] = 300;  // reachable only through ignore_merges: no merge builds it
  return {{"version", "1.0"},
          {"added_tokens",
           {{{"id", 400}, {"content", "<|x|>"}, {"special", true}},
            {{"id", 401}, {"content", "<a>"}, {"special", false}},
            {{"id", 402}, {"content", "<a>b"}, {"special", false}},
            {{"id", 403}, {"content", "<r>"}, {"special", true}, {"rstrip", true}, {"lstrip", true}}}},
          {"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single", json::array({json{{"SpecialToken", {{"id", "<|x|>"}, {"type_id", 0}}}},
                                    json{{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
            {"special_tokens", {{"<|x|>", {{"id", "<|x|>"}, {"ids", {400}}, {"tokens", {"<|x|>"}}}}}}}},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"ignore_merges", ignore_merges}, {"vocab", vocab}, {"merges", merges}}}};
}

TEST(ByteLevel, MapMatchesGpt2Examples) {
  EXPECT_EQ(byte_to_unicode(' '), U'\u0120');
  EXPECT_EQ(byte_to_unicode('\n'), U'\u010A');
  EXPECT_EQ(byte_to_unicode(0xAD), U'\u0143');
  EXPECT_EQ(byte_to_unicode('!'), U'!');
  EXPECT_EQ(byte_to_unicode(0xFF), U'\u00FF');
  for (int b = 0; b < 256; ++b) EXPECT_EQ(unicode_to_byte(byte_to_unicode(static_cast<unsigned char>(b))), b);
  EXPECT_FALSE(unicode_to_byte(U' '));  // a raw space is not in the mapped alphabet
}

TEST(Utf8, LossyReplacesEachMaximalInvalidSubpart) {
  EXPECT_EQ(utf8_lossy("a\xF0\x9F\x99" "b"), "a\uFFFD" "b");  // truncated 4-byte sequence → one U+FFFD
  EXPECT_EQ(utf8_lossy("\xC0\xAF"), "\uFFFD\uFFFD");         // overlong: two invalid bytes
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), "\uFFFD\uFFFD\uFFFD");  // a UTF-16 surrogate
  EXPECT_EQ(utf8_lossy("ok \xE2\x82\xAC"), "ok \u20AC");
  EXPECT_EQ(first_invalid_utf8("ab\xFF"), 2u);
  EXPECT_FALSE(first_invalid_utf8("日本"));
}

TEST(Bpe, LowestRankFirstAndTiesLeftmost) {
  const auto tok = parse_tokenizer_json(tokenizer(true, false).dump());
  // "aaab": (a,a) at 0 and at 1 both rank 0 → the leftmost merges: [aa][a][b] → [aa][ab].
  EXPECT_EQ(tok->encode("aaab", false), (Ids{256, 257}));
  // " hello" = Ġ h e l l o: Ġh (2) → ll (3) beats el (6) → Ġhe (4) → Ġhell (5); o stays.
  EXPECT_EQ(tok->encode(" hello", false), (Ids{261, 'o'}));
  // The GPT-2 regex cuts "aaab hello" into "aaab" and " hello".
  EXPECT_EQ(tok->encode("aaab hello", false), (Ids{256, 257, 261, 'o'}));
  EXPECT_EQ(tok->decode(Ids{256, 257, 261, 'o'}), "aaab hello");
}

TEST(Bpe, BothMergesFormatsGiveIdenticalIds) {
  const auto pairs = parse_tokenizer_json(tokenizer(true, false).dump());
  const auto legacy = parse_tokenizer_json(tokenizer(false, false).dump());
  for (const std::string text : {"aaab hello", "hello hello aaaa", " abab ll el  he"}) {
    EXPECT_EQ(pairs->encode(text), legacy->encode(text)) << text;
  }
}

TEST(Bpe, IgnoreMergesEmitsAWholeWordVocabEntry) {
  const auto with = parse_tokenizer_json(tokenizer(true, true).dump());
  const auto without = parse_tokenizer_json(tokenizer(true, false).dump());
  EXPECT_EQ(with->encode(" hello", false), (Ids{300}));
  EXPECT_EQ(without->encode(" hello", false), (Ids{261, 'o'}));
  EXPECT_EQ(with->decode(Ids{300}), " hello");
  EXPECT_THAT(with->describe(), ::testing::HasSubstr("ignore_merges"));
}

TEST(Bpe, AddedTokensAreSplitOutFirstLongestMatch) {
  const auto tok = parse_tokenizer_json(tokenizer(true, false).dump());
  // "<|x|>" inside a word is still matched; the text around it is encoded on its own.
  EXPECT_EQ(tok->encode("aaab<|x|> hello", false), (Ids{256, 257, 400, 261, 'o'}));
  // Two added tokens start at the same place: the longer wins.
  EXPECT_EQ(tok->encode("<a>bc", false), (Ids{402, 'c'}));
  EXPECT_EQ(tok->encode("<a>c", false), (Ids{401, 'c'}));
  // lstrip/rstrip swallow the surrounding whitespace.
  EXPECT_EQ(tok->encode("ab  <r>  ab", false), (Ids{257, 403, 257}));
  EXPECT_EQ(tok->token_id("<|x|>"), 400);
  EXPECT_EQ(tok->token(402), "<a>b");
  EXPECT_TRUE(tok->is_special(400));
  EXPECT_FALSE(tok->is_special(401));
}

TEST(Bpe, TemplateProcessingAddsBosAndDecodeCanSkipIt) {
  const auto tok = parse_tokenizer_json(tokenizer(true, false).dump());
  EXPECT_EQ(tok->bos_id(), 400);
  const Ids ids = tok->encode("aaab");
  EXPECT_EQ(ids, (Ids{400, 256, 257}));
  EXPECT_EQ(tok->decode(ids), "<|x|>aaab");
  EXPECT_EQ(tok->decode(ids, /*skip_special=*/true), "aaab");
  EXPECT_EQ(tok->vocab_size(), 404);
}

TEST(Bpe, DecodeRepairsSplitCharactersAndRejectsUnknownIds) {
  const auto tok = parse_tokenizer_json(tokenizer(true, false).dump());
  const Ids euro = tok->encode("€", false);  // three byte symbols
  ASSERT_EQ(euro.size(), 3u);
  EXPECT_EQ(tok->decode(euro), "€");
  EXPECT_EQ(tok->decode(Ids{euro[0], euro[1]}), "\uFFFD");
  EXPECT_THROW(tok->decode(Ids{404}), Error);
  EXPECT_THROW(tok->encode("bad \xFF byte"), Error);
}

}  // namespace
}  // namespace kvlab::harness
