// RULER's and xKV's scorers against hand-worked examples (the arithmetic is in the comments).
#include "datasets/ruler_metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "datasets/py_str.h"
#include "datasets/task_metrics.h"

namespace kvlab::datasets {
namespace {

using ::testing::HasSubstr;
using V = std::vector<std::string>;

TEST(RulerMetrics, PostprocessStripsAndTurnsControlsIntoNewlines) {
  // strip → "a\x01b"; \x01 → "\n"; strip again.
  EXPECT_EQ(ruler_postprocess("  a\x01" "b \t"), "a\nb");
  EXPECT_EQ(ruler_postprocess("\x02 x \x1f"), "x");  // \x02, \x1f become "\n", then stripped
  EXPECT_EQ(ruler_postprocess("\xC2\xA0" "x"), "x");   // U+00A0 is whitespace to str.strip()
}

TEST(RulerMetrics, StringMatchAllCountsEveryReference) {
  // 2 of the 3 references are substrings of the prediction: 2/3.
  EXPECT_DOUBLE_EQ(string_match_all(" The numbers are 1234567 and 7654321.\n", {"1234567", "7654321", "1111111"}), 2.0 / 3.0);
  // Case-insensitive both ways: lower("ABC-def") ⊂ lower("the key is abc-DEF").
  EXPECT_DOUBLE_EQ(string_match_all("the key is abc-DEF", {"ABC-def"}), 1.0);
  EXPECT_DOUBLE_EQ(string_match_all("", {"x"}), 0.0);
  EXPECT_THROW(string_match_all("x", {}), Error);
}

TEST(RulerMetrics, StringMatchPartTakesTheBestReference) {
  // "in 1871" is not in "It was 1871.", "1871" is: max(0, 1) = 1.
  EXPECT_DOUBLE_EQ(string_match_part("It was 1871.", {"in 1871", "1871"}), 1.0);
  EXPECT_DOUBLE_EQ(string_match_part("Wren", {"the Wren"}), 0.0);  // only reference ⊂ prediction counts
  EXPECT_DOUBLE_EQ(string_match_part("", {"the Wren"}), 0.0);
}

TEST(RulerMetrics, TaskScoreIsRoundedPercent) {
  // mean(1, 0.5, 0) = 0.5 → 50.0; mean(1, 0, 0) = 1/3 → 33.33; 2/3 → 66.67.
  EXPECT_DOUBLE_EQ(task_score({1, 0.5, 0}), 50.0);
  EXPECT_DOUBLE_EQ(task_score({1, 0, 0}), 33.33);
  EXPECT_DOUBLE_EQ(task_score({1, 1, 0}), 66.67);
  // Python's round(0.125, 2) = 0.12: 0.125 is exact in binary, a tie, rounded to even.
  EXPECT_DOUBLE_EQ(py::round2(0.125), 0.12);
  EXPECT_DOUBLE_EQ(py::round2(0.375), 0.38);
  EXPECT_THROW(task_score({}), Error);
}

TEST(XkvMetrics, NeedleScore) {
  // normalize("1234567.") = "1234567" starts with "1234567": 1.
  EXPECT_DOUBLE_EQ(xkv_needle_score("1234567.", "1234567"), 1.0);
  // "The number is 1234567" → "number is 1234567": no prefix match, but a whitespace token: 1.
  EXPECT_DOUBLE_EQ(xkv_needle_score("The number is 1234567", "1234567"), 1.0);
  // Prefix rule quirk: "12345678"[:7] == "1234567": 1 (string_match_all would also say 1).
  EXPECT_DOUBLE_EQ(xkv_needle_score("12345678", "1234567"), 1.0);
  EXPECT_DOUBLE_EQ(xkv_needle_score("7654321", "1234567"), 0.0);
  // "1234567</s>" → special token removed → "1234567".
  EXPECT_DOUBLE_EQ(xkv_needle_score("  1234567</s>", "1234567"), 1.0);
  // UUIDs lose their hyphens on both sides; the answer inside a sentence is still a token.
  EXPECT_DOUBLE_EQ(xkv_needle_score("It is a1b2c3d4-0000-4000-8000-000000000000.", "a1b2c3d4-0000-4000-8000-000000000000"), 1.0);
}

TEST(XkvMetrics, MultiNumberAndMultiWords) {
  // \d+ of normalize("1234567, 7654321 and 42") = [1234567, 7654321, 42]: 3 of 4 references.
  EXPECT_DOUBLE_EQ(xkv_multi_number("1234567, 7654321 and 42", {"1234567", "7654321", "1111111", "42"}), 0.75);
  // Exact numbers only: "12345678" does not contain the number "1234567".
  EXPECT_DOUBLE_EQ(xkv_multi_number("12345678", {"1234567"}), 0.0);
  // words of lower("Answer: XYZAB, QWERT") = [answer, xyzab, qwert]; references lowered: 2 of 3.
  EXPECT_DOUBLE_EQ(xkv_multi_words("Answer: XYZAB, QWERT", {"xyzab", "QWERT", "zzzzz"}), 2.0 / 3.0);
  // string_match_all would count "ab" inside "xyzab"; multi_words does not.
  EXPECT_DOUBLE_EQ(xkv_multi_words("xyzab", {"ab"}), 0.0);
  EXPECT_DOUBLE_EQ(string_match_all("xyzab", {"ab"}), 1.0);
}

TEST(XkvMetrics, StringMatchPartGoesBothWays) {
  // "wren" ⊂ "the wren": 1 for xKV, 0 for RULER.
  EXPECT_DOUBLE_EQ(xkv_string_match_part("Wren", {"the Wren"}), 1.0);
  // The empty prediction is inside every reference: 1.
  EXPECT_DOUBLE_EQ(xkv_string_match_part("", {"the Wren"}), 1.0);
  EXPECT_DOUBLE_EQ(xkv_string_match_part("a heron", {"the Wren"}), 0.0);
  EXPECT_EQ(xkv_postprocess(" 1871<|eot_id|>"), "1871");
}

TEST(TaskMetrics, DispatchByTaskAndVariant) {
  TaskSample s;
  s.id = "t";
  s.task = "ruler:niah_multivalue";
  s.metric = "string_match_all";
  s.answers = {"1234567", "7654321"};
  // official: both substrings of "12345678 7654321" → 1; xkv multi_number: only 7654321 → 0.5.
  EXPECT_DOUBLE_EQ(score_prediction(s, "12345678 7654321"), 1.0);
  EXPECT_DOUBLE_EQ(score_prediction(s, "12345678 7654321", {ScoringVariant::xkv, {}}), 0.5);
  s.task = "ruler:qa_1";
  s.metric = "string_match_part";
  EXPECT_DOUBLE_EQ(score_prediction(s, ""), 0.0);
  EXPECT_DOUBLE_EQ(score_prediction(s, "", {ScoringVariant::xkv, {}}), 1.0);
  s.task = "ruler:niah_single_1";
  EXPECT_THROW(score_prediction(s, "x", {ScoringVariant::xkv, {}}), Error);  // needle_score wants one reference
  s.task = "other:thing";
  EXPECT_THROW(score_prediction(s, "x"), Error);
  EXPECT_EQ(parse_scoring_variant("xkv"), ScoringVariant::xkv);
  EXPECT_THAT([] { try { parse_scoring_variant("shadowkv"); } catch (const Error& e) { return std::string(e.what()); } return std::string(); }(),
              HasSubstr("official, xkv"));
}

TEST(TaskMetrics, TaskReferences) {
  EXPECT_EQ(parse_task_ref("ruler:vt").suite, TaskRef::Suite::ruler);
  EXPECT_EQ(parse_task_ref("ruler:vt").name, "vt");
  EXPECT_EQ(parse_task_ref("longbench:hotpotqa_e").name, "hotpotqa");
  try {
    parse_task_ref("niah_single_1");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("ruler:<task>"));
  }
  EXPECT_THROW(parse_task_ref("longbench:nope"), Error);
}

TEST(PyStr, PythonStringSemantics) {
  EXPECT_EQ(py::lower("ÉCOLE Ünïcode İ ΣΑ Д"), "école ünïcode i\xCC\x87 σα д");
  EXPECT_EQ(py::split(" a\u00a0b\u3000c\n"), (V{"a", "b", "c"}));
  EXPECT_EQ(py::split_on("a..b.", "."), (V{"a", "", "b", ""}));
  EXPECT_EQ(py::find_decimal_runs("x12y３4 5"), (V{"12", "３4", "5"}));
  EXPECT_EQ(py::find_word_runs("it's a_b, café!"), (V{"it", "s", "a_b", "café"}));
  EXPECT_EQ(py::strip("\u2003 x \u3000"), "x");
}

}  // namespace
}  // namespace kvlab::datasets
