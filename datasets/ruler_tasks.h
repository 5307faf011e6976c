// RULER's 13 synthetic tasks: names, per-task configuration (scripts/synthetic.yaml and
// scripts/data/synthetic/constants.py in NVIDIA/RULER) and their prompt templates, verbatim.
#pragma once

#include <string_view>
#include <vector>

namespace kvlab::datasets {

enum class RulerTask {
  niah_single_1,
  niah_single_2,
  niah_single_3,
  niah_multikey_1,
  niah_multikey_2,
  niah_multikey_3,
  niah_multivalue,
  niah_multiquery,
  vt,
  cwe,
  fwe,
  qa_1,
  qa_2,
};

enum class RulerFamily { niah, variable_tracking, common_words, freq_words, qa };
enum class HaystackKind { noise, essay, needle, none };  // none: cwe, fwe, qa build their own text
enum class NeedleType { numbers, words, uuids };

struct RulerTaskSpec {
  RulerTask task;
  std::string_view name;  // "niah_single_1"
  RulerFamily family;
  HaystackKind haystack;
  int tokens_to_generate;  // RULER's per-family default
  std::string_view metric;  // "string_match_all" | "string_match_part"
  // niah
  NeedleType key_type = NeedleType::words;
  NeedleType value_type = NeedleType::numbers;
  int num_keys = 1;     // before RULER's max(num_keys, num_queries)
  int num_values = 1;
  int num_queries = 1;
  // vt
  int num_chains = 1;
  int num_hops = 4;
  // cwe
  int freq_cw = 30;
  int freq_ucw = 3;
  int num_cw = 10;
  // fwe
  double alpha = 2.0;
  // qa: qa_1 SQuAD, qa_2 HotpotQA (QaFormat)
};

const std::vector<RulerTaskSpec>& ruler_task_specs();  // all 13, in RULER's order
const RulerTaskSpec& ruler_task_spec(RulerTask task);
// "niah_single_1" or "ruler:niah_single_1"; kvlab::Error listing the known tasks otherwise.
RulerTask parse_ruler_task(std::string_view name);

// The templates of constants.py, verbatim ({context}, {query}, {type_needle_v}, {num_v} placeholders).
struct RulerTemplate {
  std::string_view task_template;
  std::string_view answer_prefix;
};
RulerTemplate ruler_template(RulerFamily family);

}  // namespace kvlab::datasets
