// LongBench: the JSONL loader (errors name file and line), the prompt split, the dataset table,
// truncation, and the metrics against hand-worked examples (arithmetic in the comments).
#include "datasets/longbench.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "core/error.h"
#include "core/error_of.h"
#include "datasets/longbench_metrics.h"
#include "datasets/py_str.h"
#include "datasets/task_metrics.h"

namespace kvlab::datasets {
namespace {

using ::testing::HasSubstr;
using V = std::vector<std::string>;

const std::string kTestData = std::string(KVLAB_SOURCE_DIR) + "/datasets/testdata/";

using core::error_of;

std::filesystem::path write_temp(const std::string& name, const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / fmt::format("kvlab_{}_{}", ::getpid(), name);
  std::ofstream(path) << text;
  return path;
}

// ---- loader and samples ----

TEST(LongBench, LoadsTheFixtureSkippingBlankLines) {
  const auto records = load_longbench_jsonl(kTestData + "longbench_tiny.jsonl");
  ASSERT_EQ(records.size(), 4u);
  EXPECT_EQ(records[0].dataset, "hotpotqa");
  EXPECT_EQ(records[0].answers, (V{"the Wren"}));
  EXPECT_EQ(records[0].length, 17);
  EXPECT_FALSE(records[0].all_classes.has_value());
  EXPECT_EQ(records[1].all_classes, (V{"Individual", "Distance", "City", "Country"}));
  EXPECT_EQ(records[2].line, 4);  // line 3 is blank
  EXPECT_EQ(records[3].id, "lb-lcc-0");
}

TEST(LongBench, LoaderErrorsNameFileAndLine) {
  const auto missing = write_temp("missing.jsonl", "{\"input\": \"q\", \"context\": \"c\", \"answers\": [\"a\"]}\n"
                                                   "{\"input\": \"q\", \"context\": \"c\"}\n");
  EXPECT_THAT(error_of([&] { load_longbench_jsonl(missing); }), HasSubstr(missing.string() + ":2: missing field 'answers'"));
  const auto mistyped = write_temp("mistyped.jsonl", "{\"input\": \"q\", \"context\": \"c\", \"answers\": \"a\"}\n");
  EXPECT_THAT(error_of([&] { load_longbench_jsonl(mistyped); }), HasSubstr(mistyped.string() + ":1: field 'answers' must be a list of strings"));
  const auto broken = write_temp("broken.jsonl", "\n\n{\"input\": \n");
  EXPECT_THAT(error_of([&] { load_longbench_jsonl(broken); }), HasSubstr(broken.string() + ":3: not valid JSON"));
  const auto classes = write_temp("classes.jsonl", "{\"input\": \"q\", \"context\": \"c\", \"answers\": [\"a\"], \"all_classes\": [1]}\n");
  EXPECT_THAT(error_of([&] { load_longbench_jsonl(classes); }), HasSubstr(":1: field 'all_classes' must be a list of strings"));
  const auto length = write_temp("length.jsonl", "{\"input\": \"q\", \"context\": \"c\", \"answers\": [\"a\"], \"length\": \"long\"}\n");
  EXPECT_THAT(error_of([&] { load_longbench_jsonl(length); }), HasSubstr(":1: field 'length' must be an integer"));
  EXPECT_THAT(error_of([] { load_longbench_jsonl("/nonexistent/x.jsonl"); }), HasSubstr("/nonexistent/x.jsonl: cannot open"));
  for (const auto& p : {missing, mistyped, broken, classes, length}) std::filesystem::remove(p);
}

TEST(LongBench, SampleSplitsThePromptAtTheContext) {
  const auto records = load_longbench_jsonl(kTestData + "longbench_tiny.jsonl");
  const TaskSample s = longbench_sample(records[0], 0);
  // pred.py's prompt is dataset2prompt["hotpotqa"].format(context=..., input=...): context + question.
  const std::string expected =
      "Answer the question based on the given passages. Only give me the answer and do not output any other words.\n\n"
      "The following are given passages.\n" + records[0].context +
      "\n\nAnswer the question based on the given passages. Only give me the answer and do not output any other words."
      "\n\nQuestion: Which river flows past Marlow Ferry?\nAnswer:";
  EXPECT_EQ(s.context + s.question, expected);
  EXPECT_TRUE(s.context.ends_with(records[0].context));
  EXPECT_TRUE(s.question.starts_with("\n\nAnswer the question"));
  EXPECT_EQ(s.answer_prefix, "");
  EXPECT_EQ(s.task, "longbench:hotpotqa");
  EXPECT_EQ(s.metric, "qa_f1_score");
  EXPECT_EQ(s.max_new_tokens, 32);
  EXPECT_EQ(s.id, "lb-hotpot-0");
  EXPECT_EQ(s.context.substr(static_cast<std::size_t>(s.haystack_begin)), records[0].context);
  // lcc has no {input}: the question is the tail of the template.
  const TaskSample code = longbench_sample(records[3], 3);
  EXPECT_EQ(code.context, "Please complete the code given below. \ndef add(a, b):\n");
  EXPECT_EQ(code.question, "Next line of code:\n");
  // Braces in the data are not placeholders.
  LongBenchRecord r = records[0];
  r.context = "{input} {context}";
  r.input = "{context}?";
  const TaskSample braces = longbench_sample(r, 0);
  EXPECT_TRUE(braces.context.ends_with("{input} {context}"));
  EXPECT_THAT(braces.question, HasSubstr("Question: {context}?\nAnswer:"));
}

TEST(LongBench, DatasetTable) {
  EXPECT_EQ(longbench_datasets().size(), 21u);
  const std::map<std::string, int> maxlen = {{"narrativeqa", 128}, {"qasper", 128}, {"dureader", 128}, {"samsum", 128},
                                             {"multifieldqa_en", 64}, {"trec", 64}, {"lcc", 64}, {"repobench-p", 64},
                                             {"hotpotqa", 32}, {"passage_count", 32}, {"passage_retrieval_zh", 32},
                                             {"gov_report", 512}, {"qmsum", 512}, {"multi_news", 512}, {"vcsum", 512}};
  for (const auto& [name, n] : maxlen) EXPECT_EQ(longbench_dataset(name).max_new_tokens, n) << name;
  int no_template = 0;
  int first_line = 0;
  for (const auto& d : longbench_datasets()) {
    no_template += d.chat_template ? 0 : 1;
    first_line += d.first_line_only ? 1 : 0;
  }
  EXPECT_EQ(no_template, 6);  // trec, triviaqa, samsum, lsht, lcc, repobench-p
  EXPECT_EQ(first_line, 4);   // trec, triviaqa, samsum, lsht
  EXPECT_TRUE(longbench_dataset("samsum").stop_at_newline);
  EXPECT_EQ(longbench_dataset("longbench:gov_report_e").name, "gov_report");
  EXPECT_THAT(error_of([] { longbench_dataset("hotpot"); }), HasSubstr("known datasets: narrativeqa, qasper"));
  EXPECT_EQ(longbench_e_bucket(3999), "0-4k");
  EXPECT_EQ(longbench_e_bucket(4000), "4-8k");
  EXPECT_EQ(longbench_e_bucket(8000), "8k+");
}

TEST(LongBench, MiddleTruncationKeepsIntegerHalves) {
  const std::vector<std::int32_t> ids = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  EXPECT_EQ(longbench_middle_truncate(ids, 6), (std::vector<std::int32_t>{0, 1, 2, 7, 8, 9}));
  // max_length 7: half = int(7 / 2) = 3 per side, so 6 ids (pred.py's rule, not 7).
  EXPECT_EQ(longbench_middle_truncate(ids, 7), (std::vector<std::int32_t>{0, 1, 2, 7, 8, 9}));
  EXPECT_EQ(longbench_middle_truncate(ids, 10), ids);
}

TEST(LongBench, TruncatingASampleKeepsItsQuestion) {
  // A word-level "tokenizer": one id per whitespace-separated word.
  std::vector<std::string> vocab;
  std::map<std::string, std::int32_t> index;
  const EncodeText encode = [&](std::string_view text) {
    std::vector<std::int32_t> ids;
    for (const auto& w : py::split(text)) {
      auto [it, fresh] = index.emplace(w, static_cast<std::int32_t>(vocab.size()));
      if (fresh) vocab.push_back(w);
      ids.push_back(it->second);
    }
    return ids;
  };
  const DecodeIds decode = [&](std::span<const std::int32_t> ids) {
    std::string out;
    for (const auto id : ids) out += vocab[static_cast<std::size_t>(id)] + " ";
    return out;
  };
  TaskSample s;
  s.id = "t";
  s.context = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 ";
  s.question = "q1 q2 ";
  s.haystack_end = static_cast<std::int64_t>(s.context.size());
  EXPECT_FALSE(longbench_truncate(s, 14, encode, decode));  // 14 words: fits
  ASSERT_TRUE(longbench_truncate(s, 8, encode, decode));
  // Head: the first 4 words; tail: the last 4 words = "w11 w12 q1 q2 ", which ends with the question.
  EXPECT_EQ(s.context, "w1 w2 w3 w4 w11 w12 ");
  EXPECT_EQ(s.question, "q1 q2 ");
  // A question longer than half the budget is cut with the context; the tail becomes the question.
  s.question = "q1 q2 q3 q4 q5 q6 ";
  ASSERT_TRUE(longbench_truncate(s, 6, encode, decode));
  EXPECT_EQ(s.context, "w1 w2 w3 ");
  EXPECT_EQ(s.question, "q4 q5 q6 ");
}

// ---- metrics ----

TEST(LongBenchMetrics, SquadNormalization) {
  // lower → "the quick, brown fox!" → no punctuation → "the quick brown fox" → " " for "the" → collapse.
  EXPECT_EQ(normalize_answer("The Quick, brown fox!"), "quick brown fox");
  EXPECT_EQ(normalize_answer("an apple a day"), "apple day");
  EXPECT_EQ(normalize_answer("theatre, anthem"), "theatre anthem");  // articles only as whole words
  EXPECT_EQ(normalize_answer("A-B"), "ab");                          // "-" removed first: "ab" is one word
  EXPECT_EQ(normalize_zh_answer("你好，World！ "), "你好world");
}

TEST(LongBenchMetrics, QaF1) {
  // pred → [cat, sat, on, mat], gt → [cat, on, mat]: 3 shared, P = 3/4, R = 1, F1 = 2·(3/4)/(7/4) = 6/7.
  EXPECT_NEAR(qa_f1_score("The cat sat on the mat", "a cat on a mat"), 6.0 / 7.0, 1e-12);
  // Counter intersection: pred [a1, a1, b] vs gt [a1]: 1 shared, P = 1/3, R = 1 → 0.5.
  EXPECT_NEAR(token_f1({"a1", "a1", "b"}, {"a1"}), 0.5, 1e-12);
  EXPECT_EQ(qa_f1_score("nothing", "else"), 0.0);
  EXPECT_EQ(qa_f1_score("the", "a"), 0.0);  // both normalize to nothing
}

TEST(LongBenchMetrics, RougeL) {
  // One sentence each. Word sets: hyp {the, cat, sat, on, mat} (n = 5), ref {the, cat, is, on, mat}
  // (m = 5). LCS of [the cat is on the mat] and [the cat sat on the mat] = the cat on the mat, as a
  // set {the, cat, on, mat} = 4. p = r = 4/5, f = 2·(16/25)/(8/5 + 1e-8).
  EXPECT_NEAR(rouge_score("the cat sat on the mat", "the cat is on the mat"), 2 * 0.64 / (1.6 + 1e-8), 1e-12);
  // Sentences split on ".": hyp [a b, c d], ref [a c, b d]. LCS words per (ref, hyp) pair:
  // (a c, a b) {a}, (a c, c d) {c}, (b d, a b) {b}, (b d, c d) {d}; union {a, b, c, d} = 4 = m = n,
  // so f = 2/(2 + 1e-8) although no sentence matches: the package's set union at work.
  EXPECT_NEAR(rouge_score("a b. c d.", "a c. b d."), 2.0 / (2.0 + 1e-8), 1e-12);
  // Case-sensitive: {The, cat} vs {the, cat}: LCS {cat}, p = r = 1/2, f = 2·(1/4)/(1 + 1e-8).
  EXPECT_NEAR(rouge_score("The cat", "the cat"), 0.5 / (1 + 1e-8), 1e-12);
  EXPECT_EQ(rouge_score("...", "abc"), 0.0);  // no sentences: the package raises, LongBench gives 0
  EXPECT_EQ(rouge_score("", "abc"), 0.0);
}

TEST(LongBenchMetrics, Classification) {
  const V classes = {"Individual", "Distance", "City", "Country"};
  EXPECT_EQ(classification_score("City", "City", classes), 1.0);
  // Matches [City, Country]; neither is a strict substring of "City" except City itself: 1/2.
  EXPECT_EQ(classification_score("City or Country", "City", classes), 0.5);
  EXPECT_EQ(classification_score("Distance", "City", classes), 0.0);
  EXPECT_EQ(classification_score("nothing", "City", classes), 0.0);
  // The removal-while-iterating quirk: matches [ab, abc, b, abcd] for gt "abcd". i = 0 removes "ab"
  // ([abc, b, abcd]); i = 1 sees "b" (skipping "abc") and removes it ([abc, abcd]); done. 1/2, not 1.
  EXPECT_EQ(classification_score("abcd", "abcd", {"ab", "abc", "b", "abcd"}), 0.5);
}

TEST(LongBenchMetrics, RetrievalAndCount) {
  // Numbers in the prediction: [3, 12]; one equals 3: 1/2.
  EXPECT_EQ(retrieval_score("Paragraph 3, not paragraph 12", "Paragraph 3"), 0.5);
  EXPECT_EQ(retrieval_score("none", "Paragraph 3"), 0.0);
  EXPECT_THAT(error_of([] { retrieval_score("3", "Section 3"); }), HasSubstr("no 'Paragraph N'"));
  EXPECT_EQ(retrieval_zh_score("答案是段落5", "段落5"), 1.0);
  // [2, 3]: one equals "2": 1/2.
  EXPECT_EQ(count_score("There are 2 unique paragraphs out of 3", "2"), 0.5);
  EXPECT_EQ(count_score("none", "2"), 0.0);
}

TEST(LongBenchMetrics, CodeSimilarity) {
  // kitten / sitting: LCS "ittn" = 4, 2·4/13 = 0.615 → 62.
  EXPECT_EQ(fuzz_ratio("kitten", "sitting"), 62);
  // "abcdefgh" / "aXXXXXXX": LCS 1, 2/16 = 12.5% → round half to even → 12 (Python's round).
  EXPECT_EQ(fuzz_ratio("abcdefgh", "aXXXXXXX"), 12);
  EXPECT_EQ(fuzz_ratio("", ""), 100);  // equal before empty
  EXPECT_EQ(fuzz_ratio("", "x"), 0);
  // The first line without `, # or //.
  EXPECT_EQ(code_sim_score("\n# comment\n    return a + b\nfoo", "    return a + b"), 1.0);
  EXPECT_EQ(code_sim_score("```python", "x = 1"), 0.0);
}

TEST(LongBenchMetrics, ScoreWithEvalPyRules) {
  const V classes = {"Individual", "Distance", "City", "Country"};
  // trec scores the first line only: "City" → 1 (the whole text would give 1/2).
  EXPECT_EQ(longbench_score("trec", "\nCity\nCountry", {"City"}, classes), 1.0);
  EXPECT_EQ(classification_score("City\nCountry", "City", classes), 0.5);
  // Max over ground truths: F1 with "Wren" is 1, with "the river" 0.
  EXPECT_EQ(longbench_score("hotpotqa", "the Wren", {"the river", "Wren"}, {}), 1.0);
  EXPECT_EQ(longbench_score("hotpotqa", "x", {}, {}), 0.0);
  EXPECT_THAT(error_of([] { longbench_score("dureader", "x", {"y"}, {}); }), HasSubstr("jieba"));
  // With a segmenter (one token per character here): [北, 京, 市] vs [北, 京]: P = 2/3, R = 1 → 0.8.
  const Segmenter chars = [](std::string_view t) {
    V out;
    for (const auto& cp : py::decode(t)) out.emplace_back(t.substr(cp.begin, cp.size));
    return out;
  };
  EXPECT_NEAR(longbench_score("multifieldqa_zh", "北京市", {"北京"}, {}, &chars), 0.8, 1e-12);
  // Through a sample: same path as `kvlab eval` would take.
  const auto records = load_longbench_jsonl(kTestData + "longbench_tiny.jsonl");
  const TaskSample trec = longbench_sample(records[1], 1);
  EXPECT_EQ(score_prediction(trec, "City\nIndividual"), 1.0);
  EXPECT_EQ(score_prediction(longbench_sample(records[2], 2), "2"), 1.0);
}

}  // namespace
}  // namespace kvlab::datasets
