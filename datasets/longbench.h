// LongBench (v1, THUDM/LongBench): the JSONL format, the per-dataset configuration (prompt of
// config/dataset2prompt.json, max new tokens of config/dataset2maxlen.json, metric of eval.py,
// chat-template and first-line rules of pred.py / eval.py) and the middle-truncation rule.
//
// JSONL line fields: input (question / instruction), context (long text), answers (list of
// strings), length (words for en and code, characters for zh), dataset, language ("en" | "zh"),
// all_classes (list or null), _id. LongBench-E files use the same fields ("<dataset>_e" names).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "datasets/task_sample.h"

namespace kvlab::datasets {

struct LongBenchDataset {
  std::string_view name;      // "hotpotqa"
  std::string_view language;  // "en" | "zh"
  std::string_view prompt;    // dataset2prompt, verbatim: {context} and {input} placeholders
  int max_new_tokens;         // dataset2maxlen
  std::string_view metric;    // dataset2metric: "qa_f1_score", "rouge_score", ...
  bool chat_template;         // pred.py applies the chat template (all but trec, triviaqa, samsum, lsht, lcc, repobench-p)
  bool first_line_only;       // eval.py scores the first line only (trec, triviaqa, samsum, lsht)
  bool stop_at_newline;       // pred.py stops samsum at "\n" (and sets min_length = context + 1)
};

const std::vector<LongBenchDataset>& longbench_datasets();  // the 21 datasets
// "hotpotqa", "hotpotqa_e" or "longbench:hotpotqa"; kvlab::Error listing the known datasets.
const LongBenchDataset& longbench_dataset(std::string_view name);

struct LongBenchRecord {
  std::string input;
  std::string context;
  std::vector<std::string> answers;
  std::int64_t length = 0;
  std::string dataset;
  std::string language;
  std::optional<std::vector<std::string>> all_classes;  // null in the file → nullopt
  std::string id;                                       // _id
  std::int64_t line = 0;                                // 1-based line in the file
};

// Every non-blank line; kvlab::Error "FILE:LINE: ..." naming the missing or mistyped field.
// input, context and answers are required; the other fields default to empty / 0 / null.
std::vector<LongBenchRecord> load_longbench_jsonl(const std::filesystem::path& path);
LongBenchRecord parse_longbench_line(std::string_view line, std::string_view file, std::int64_t line_number);

// The record as a sample: context = the prompt up to and including the context text, question =
// the rest of the prompt with the input, answer_prefix = "" (LongBench puts the whole prompt in
// the user turn), so context + question is exactly pred.py's prompt. `dataset` defaults to the
// record's own field. id = the record's _id, or "<dataset>-<index>" when it has none.
TaskSample longbench_sample(const LongBenchRecord& record, std::int64_t index, std::string_view dataset = {});

// LongBench-E's length bucket: "0-4k" (< 4000), "4-8k" (< 8000) or "8k+".
std::string_view longbench_e_bucket(std::int64_t length);

// ---- truncation (pred.py) ----
// pred.py tokenizes the whole prompt and, when it has more than max_length tokens, keeps the first
// max_length/2 and the last max_length/2 token ids (integer halves), decodes each half back to text
// (skipping special tokens) and joins the two texts; the chat template is applied afterwards.

// The ids kept: [0, h) and [n − h, n) with h = max_length / 2; all of them when n ≤ max_length.
std::vector<std::int32_t> longbench_middle_truncate(std::span<const std::int32_t> ids, std::int64_t max_length);

using EncodeText = std::function<std::vector<std::int32_t>(std::string_view text)>;   // no BOS, no template
using DecodeIds = std::function<std::string(std::span<const std::int32_t> ids)>;      // skip special tokens

// The rule applied to a sample's prompt (context + question) with the evaluated model's tokenizer.
// When it is cut, the sample's text becomes decode(head) + decode(tail); the question stays the
// question when the tail still ends with it (the usual case: the question is shorter than
// max_length/2 tokens), else the whole tail becomes the question. Returns whether it was cut.
bool longbench_truncate(TaskSample& sample, std::int64_t max_length, const EncodeText& encode, const DecodeIds& decode);

}  // namespace kvlab::datasets
