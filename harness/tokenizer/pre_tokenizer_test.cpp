// The pre-tokenizer regexes of docs/tokenizers.md §2 run through PCRE2, against pieces
// worked out by hand from the regex alternatives.
#include <gtest/gtest.h>

#include "harness/tokenizer/pre_tokenizer.h"

namespace kvlab::harness {
namespace {

using Pieces = std::vector<std::string>;

PreTokenizer split_with(std::string_view regex, SplitBehavior behavior = SplitBehavior::isolated, bool invert = false) {
  PreTokenizer p;
  p.add_split(RegexSplitter(regex, "test"), behavior, invert);
  p.add_byte_level(false, false);
  return p;
}

TEST(PreTokenizer, Llama3SplitOfContractionsSpacesAndNewlines) {
  // "I" letter run; "'m" contraction; " here" optional non-letter + letters; "," punctuation;
  // "  world": \s+(?!\S) takes one space and leaves " world"; "\n\n" via \s*[\r\n]+; " 12345"
  // falls to \s+ then digits in threes; (?i:'T) matches upper case; "!\n" punctuation takes
  // trailing newlines; a tab is a non-letter the letter alternative may take in front.
  const Pieces expected = {"I", "'m", " here", ",", " you", "'ll", " see", " ", " world", "\n\n", " ",
                           " ok", " ", "123", "45", " DON", "'T", "!\n", "\tx"};
  EXPECT_EQ(split_with(kLlama3Regex).split("I'm here, you'll see  world\n\n  ok 12345 DON'T!\n\tx"), expected);
}

TEST(PreTokenizer, QwenSplitsDigitsOneByOneLlamaInThrees) {
  EXPECT_EQ(split_with(kLlama3Regex).split("12345"), (Pieces{"123", "45"}));
  EXPECT_EQ(split_with(kQwen2Regex).split("12345"), (Pieces{"1", "2", "3", "4", "5"}));
}

TEST(PreTokenizer, RemovedInvertEqualsIsolated) {
  // llama.cpp's Llama-3-derived files write the split as Removed + invert (docs/tokenizers.md §2).
  const std::string text = "Hello  world!! 2024年の\r\n  test's   ";
  EXPECT_EQ(split_with(kLlama3Regex, SplitBehavior::removed, true).split(text), split_with(kLlama3Regex).split(text));
}

TEST(PreTokenizer, Gpt2RegexAndDelimiterBehaviours) {
  PreTokenizer gpt2;
  gpt2.add_byte_level(false, true);
  EXPECT_EQ(gpt2.split("Hello world's  2024!"), (Pieces{"Hello", " world", "'s", " ", " 2024", "!"}));
  EXPECT_EQ(split_with("-", SplitBehavior::removed).split("a-b--c"), (Pieces{"a", "b", "c"}));
  PreTokenizer literal;  // {"String": "."}: the dot is not a regex wildcard
  literal.add_split(RegexSplitter(".", "test", /*literal=*/true), SplitBehavior::removed, false);
  EXPECT_EQ(literal.split("a.b-c"), (Pieces{"a", "b-c"}));
  EXPECT_EQ(split_with("-", SplitBehavior::merged_with_previous).split("a-b--c"), (Pieces{"a-", "b-", "-", "c"}));
  EXPECT_EQ(split_with("-", SplitBehavior::merged_with_next).split("a-b--c"), (Pieces{"a", "-b", "-", "-c"}));
  EXPECT_EQ(split_with("-", SplitBehavior::contiguous).split("a-b--c"), (Pieces{"a", "-", "b", "--", "c"}));
}

TEST(PreTokenizer, LongWhitespaceRunSurvivesTheJitStack) {
  const std::string spaces(200000, ' ');
  const Pieces pieces = split_with(kLlama3Regex).split(spaces + "x");
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0].size(), spaces.size() - 1);
  EXPECT_EQ(pieces[1], " x");
}

TEST(PreTokenizer, DescribeNamesTheKnownRegexes) {
  EXPECT_EQ(split_with(kLlama3Regex).describe(), "llama3");
  EXPECT_EQ(split_with(kQwen2Regex).describe(), "qwen2");
  EXPECT_EQ(split_with("x").describe(), "custom regex");
}

}  // namespace
}  // namespace kvlab::harness
