#include "datasets/task_metrics.h"

#include <numeric>

#include "core/error.h"
#include "datasets/longbench.h"
#include "datasets/py_str.h"
#include "datasets/ruler_metrics.h"
#include "datasets/ruler_tasks.h"

namespace kvlab::datasets {

ScoringVariant parse_scoring_variant(std::string_view name) {
  if (name == "official") return ScoringVariant::official;
  if (name == "xkv") return ScoringVariant::xkv;
  fail("unknown scoring variant '{}'; known: official, xkv", name);
}

std::string_view scoring_variant_name(ScoringVariant variant) {
  return variant == ScoringVariant::xkv ? "xkv" : "official";
}

namespace {

double score_xkv_ruler(RulerTask task, const TaskSample& s, std::string_view prediction) {
  switch (task) {
    case RulerTask::niah_single_1:
    case RulerTask::niah_single_2:
    case RulerTask::niah_single_3:
    case RulerTask::niah_multikey_1:
    case RulerTask::niah_multikey_2:
    case RulerTask::niah_multikey_3:
      // xKV unwraps a one-element reference list and its needle_score asserts a single string.
      if (s.answers.size() != 1) fail("{}: xkv needle_score needs exactly one reference, got {}", s.id, s.answers.size());
      return xkv_needle_score(prediction, s.answers[0]);
    case RulerTask::niah_multivalue:
    case RulerTask::niah_multiquery:
      return xkv_multi_number(prediction, s.answers);
    case RulerTask::vt:
    case RulerTask::cwe:
    case RulerTask::fwe:
      return xkv_multi_words(prediction, s.answers);
    case RulerTask::qa_1:
    case RulerTask::qa_2:
      return xkv_string_match_part(prediction, s.answers);
  }
  fail("{}: no xkv scorer for this task", s.id);
}

}  // namespace

double score_prediction(const TaskSample& sample, std::string_view prediction, const ScoreOptions& options) {
  const std::string_view task = sample.task;
  if (task.starts_with("ruler:")) {
    if (options.variant == ScoringVariant::xkv) return score_xkv_ruler(parse_ruler_task(task), sample, prediction);
    if (sample.metric == "string_match_all") return string_match_all(prediction, sample.answers);
    if (sample.metric == "string_match_part") return string_match_part(prediction, sample.answers);
    fail("{}: unknown RULER metric '{}'", sample.id, sample.metric);
  }
  if (task.starts_with("longbench:")) {
    return longbench_score(task, prediction, sample.answers, sample.all_classes,
                           options.zh_segmenter ? &options.zh_segmenter : nullptr);
  }
  fail("{}: unknown task '{}' (expected ruler:* or longbench:*)", sample.id, task);
}

double task_score(const std::vector<double>& per_sample) {
  if (per_sample.empty()) fail("task score of no samples");
  const double mean = std::accumulate(per_sample.begin(), per_sample.end(), 0.0) / static_cast<double>(per_sample.size());
  return py::round2(100.0 * mean);
}

TaskRef parse_task_ref(std::string_view text) {
  if (text.starts_with("ruler:")) {
    return {TaskRef::Suite::ruler, std::string(ruler_task_spec(parse_ruler_task(text)).name)};
  }
  if (text.starts_with("longbench:")) {
    return {TaskRef::Suite::longbench, std::string(longbench_dataset(text).name)};
  }
  fail("unknown task '{}': expected ruler:<task> (e.g. ruler:niah_single_1) or longbench:<dataset> (e.g. "
       "longbench:hotpotqa)",
       text);
}

}  // namespace kvlab::datasets
