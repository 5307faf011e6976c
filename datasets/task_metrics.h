// Scoring a prediction against a TaskSample with its suite's scorer, and aggregating a task.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "datasets/longbench_metrics.h"
#include "datasets/task_sample.h"

namespace kvlab::datasets {

// official: RULER's string_match_all / string_match_part, LongBench's dataset2metric.
// xkv: xKV's RULER scorers (needle_score, multi_number, multi_words, two-way string_match_part;
//      see ruler_metrics.h); LongBench samples score as official (xKV uses LongBench's metrics).
enum class ScoringVariant { official, xkv };
ScoringVariant parse_scoring_variant(std::string_view name);  // "official" | "xkv"
std::string_view scoring_variant_name(ScoringVariant variant);

struct ScoreOptions {
  ScoringVariant variant = ScoringVariant::official;
  Segmenter zh_segmenter;  // jieba-like, for LongBench's zh datasets; empty: those are errors
};

// The sample's score in [0, 1] for `prediction`, the generated continuation after the answer prefix.
// Dispatch: ruler:* tasks by task name (xkv) or sample.metric; longbench:* by dataset (first-line
// rule included). kvlab::Error for an unknown task or metric.
double score_prediction(const TaskSample& sample, std::string_view prediction, const ScoreOptions& options = {});

// A task's score as RULER and LongBench report it: round(100 · mean, 2). kvlab::Error when empty.
double task_score(const std::vector<double>& per_sample);

// A task reference as `kvlab eval --task` takes it: "ruler:<task>" or "longbench:<dataset>".
struct TaskRef {
  enum class Suite { ruler, longbench } suite;
  std::string name;  // "niah_single_1", "hotpotqa"
};
// kvlab::Error listing the suites, or the suite's known tasks, when the name is not one.
TaskRef parse_task_ref(std::string_view text);

}  // namespace kvlab::datasets
