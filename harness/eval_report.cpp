#include "harness/eval_report.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "core/atomic_file.h"
#include "core/content_hash.h"
#include "core/fnv1a.h"
#include "core/version.h"
#include "harness/run_setup.h"
#include "linalg/cpu/blas_core.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;

// Sums over the samples of one method's figures; the report divides them by the sample count.
struct MethodTotals {
  double agreement = 0, exact = 0, kl = 0, accuracy = 0, seconds = 0, compress_seconds = 0;
  std::int64_t bytes = 0, dense_bytes = 0;
  double loaded_bytes = 0;  // per decode step, summed over the samples as bytes are (= bytes but for quest)
  std::set<std::string> routes = {};  // CompressionResult::route of every sample
  double ratio() const { return bytes ? static_cast<double>(dense_bytes) / bytes : 0.0; }
};

MethodTotals method_totals(const std::vector<SampleDecode>& samples, std::size_t m) {
  MethodTotals t;
  for (const auto& s : samples) {
    const auto& d = s.methods[m];
    t.accuracy += d.score;
    t.agreement += d.agreement;
    t.exact += d.tokens == s.base_tokens;
    t.kl += d.kl;
    t.bytes += d.compression.bytes;
    t.dense_bytes += d.compression.dense_bytes;
    t.loaded_bytes += d.compression.loaded_bytes_per_step();
    t.seconds += d.seconds;
    t.compress_seconds += d.compress_seconds;
    t.routes.insert(d.compression.route);
  }
  return t;
}

// Where the answer sits, for depth × length figures, in percent of the haystack: the requested
// depth when one was fixed (--depth), else the measured depth of the first needle that carries a
// reference answer, else of the first needle; none without needles.
std::optional<double> needle_depth_percent(const datasets::TaskSample& sample) {
  if (sample.needles.empty()) return std::nullopt;
  if (sample.depth_percent >= 0) return sample.depth_percent;
  for (const auto& needle : sample.needles)
    for (const auto& answer : sample.answers)
      if (!answer.empty() && needle.text.find(answer) != std::string::npos) return 100.0 * needle.depth;
  return 100.0 * sample.needles.front().depth;
}

// Prompt i's record in eval.json: its tokens, the baseline's answer and every method's.
json sample_record(const EvalPlan& plan, std::size_t i, const SampleDecode& d) {
  const auto& t = plan.tokenized[i];
  json sample = {{"id", plan.prompts[i].id},
                 {"prompt_tokens", t.tokens.size()},
                 {"context_tokens", t.context_end},
                 {"prompt_hash", prompt_hash(t.tokens)},
                 {"prefill_seconds", d.prefill_seconds},
                 {"baseline", {{"tokens", d.base_tokens}, {"text", d.base_text}}},
                 {"methods", json::array()}};
  if (plan.scored()) {
    const auto& task = plan.tasks[i];
    sample["answers"] = task.answers;
    sample["baseline"]["score"] = d.base_score;
    if (task.target_tokens > 0) sample["target_tokens"] = task.target_tokens;
    if (const auto depth = needle_depth_percent(task)) sample["needle_depth"] = *depth;
  }
  for (std::size_t m = 0; m < plan.methods.size(); ++m) {
    const auto& run = d.methods[m];
    sample["methods"].push_back({{"spec", plan.methods[m].spec},
                                 {"tokens", run.tokens},
                                 {"text", run.text},
                                 {"agreement", run.agreement},
                                 {"exact", run.tokens == d.base_tokens},
                                 {"kl", run.kl},
                                 {"bytes", run.compression.bytes},
                                 {"loaded_bytes_per_step", run.compression.loaded_bytes_per_step()},
                                 {"compression_ratio", run.compression.ratio()},
                                 {"compress_seconds", run.compress_seconds},
                                 {"compress_route", run.compression.route}});
    if (plan.scored()) sample["methods"].back()["score"] = run.score;
  }
  return sample;
}

// One row per sample and method.
std::string samples_csv(const EvalPlan& plan, const std::vector<SampleDecode>& samples) {
  std::string csv = "sample,method,score,agreement,exact,kl,compression_ratio\n";
  for (std::size_t i = 0; i < samples.size(); ++i)
    for (std::size_t m = 0; m < plan.methods.size(); ++m) {
      const auto& d = samples[i].methods[m];
      csv += fmt::format("{},\"{}\",{},{},{},{},{}\n", plan.prompts[i].id, plan.methods[m].spec,
                         plan.scored() ? fmt::format("{}", d.score) : "", d.agreement,
                         d.tokens == samples[i].base_tokens ? 1 : 0, d.kl, d.compression.ratio());
    }
  return csv;
}

// What eval.json says about the run besides its figures: kvlab, the model and where it ran, the
// tokenizer, the options and what the metrics mean.
json run_record(const EvalRequest& r, const EvalPlan& plan, const RunOptions& options) {
  return {
      {"kvlab", {{"version", kVersion}, {"git_revision", kGitRevision}, {"blas", linalg::blas::summary()}}},
      {"model", {{"id", model_id(r.model, plan.config)}, {"path", r.model.string()}, {"hash", core::checkpoint_hash(r.model)},
                 {"config", json::parse(plan.config.json)},
                 {"device", options.device.str()}, {"dtype", c10::toString(options.dtype)}}},
      {"tokenizer", plan.tokenizer->describe()},
      {"chat_template", describe(plan.chat)},
      {"options", {{"prompts", !r.task.empty() ? r.task : !r.longbench.empty() ? r.longbench.string() : r.prompts.string()}, {"question", r.question}, {"max_new_tokens", plan.max_new_tokens},
                   {"query_window", r.query_window}, {"max_tokens", r.max_tokens}, {"truncate", r.truncate}, {"tokenize", r.tokenize},
                   {"generated_tokens_cached", r.recompress_every > 0
                                                   ? fmt::format("recompressed every {} tokens", r.recompress_every)
                                                   : std::string("uncompressed")},
                   {"recompress_every", r.recompress_every}, {"compress_route", r.compress_route}}},
      {"metrics", {{"agreement", "share of the baseline's greedy tokens reproduced, position by position"},
                   {"exact_match", "share of samples whose greedy output equals the baseline's"},
                   {"kl", "mean over the baseline's answer steps of KL(p_baseline || p_method), nats, teacher-forced"},
                   {"loaded_bytes_per_step", "bytes a decode step reads, summed over layers: bytes, except for methods "
                                             "that select per decode step (quest: mean over the teacher-forced steps)"}}}};
}

// A method's row in eval.json: its means over the n samples.
json method_record(const EvalPlan& plan, const std::string& spec, const MethodTotals& run, double n) {
  json record = {{"spec", spec},
                 {"compression_ratio", run.ratio()},
                 {"bytes", run.bytes},
                 {"loaded_bytes_per_step", run.loaded_bytes},
                 {"agreement", run.agreement / n},
                 {"exact_match", run.exact / n},
                 {"kl", run.kl / n},
                 {"seconds", run.seconds},
                 {"compress_seconds", run.compress_seconds},
                 {"compress_routes", run.routes}};
  if (plan.scored()) record["accuracy"] = run.accuracy / n;
  return record;
}

// One row per method: its means over the n samples (seconds: totals).
std::string methods_csv(const EvalPlan& plan, const std::vector<MethodTotals>& totals, double n) {
  std::string csv = "method,compression_ratio,bytes,accuracy,agreement,exact_match,kl,seconds,compress_seconds\n";
  for (std::size_t m = 0; m < plan.methods.size(); ++m) {
    const auto& run = totals[m];
    csv += fmt::format("\"{}\",{},{},{},{},{},{},{:.3f},{:.4f}\n", plan.methods[m].spec, run.ratio(), run.bytes,
                       plan.scored() ? fmt::format("{}", run.accuracy / n) : "", run.agreement / n, run.exact / n,
                       run.kl / n, run.seconds, run.compress_seconds);
  }
  return csv;
}

// The table the CLI prints: the baseline's row, then every method's means over the n samples.
std::string summary_table(const EvalPlan& plan, const std::vector<MethodTotals>& totals, double baseline_accuracy,
                          double n) {
  const auto accuracy_cell = [&](double sum) {
    return plan.scored() ? fmt::format("{:>8.3f}", sum / n) : fmt::format("{:>8}", "-");
  };
  std::string table = fmt::format("{:>8} {:>8} {:>9} {:>7} {:>10} {:>11}  method (canonical spec)\n", "ratio",
                                  "accuracy", "agreement", "exact", "KL", "compress s");
  table += fmt::format("{:>7.2f}x {} {:>9.3f} {:>7.3f} {:>10.3g} {:>11}  baseline (uncompressed)\n", 1.0,
                       accuracy_cell(baseline_accuracy), 1.0, 1.0, 0.0, "-");
  for (std::size_t m = 0; m < plan.methods.size(); ++m) {
    const auto& run = totals[m];
    table += fmt::format("{:>7.2f}x {} {:>9.3f} {:>7.3f} {:>10.3g} {:>11.4f}  {}\n", run.ratio(),
                         accuracy_cell(run.accuracy), run.agreement / n, run.exact / n, run.kl / n,
                         run.compress_seconds / n, plan.methods[m].spec);
  }
  return table;
}

// The generated or LongBench task eval.json names, with the baseline's accuracy on it.
json task_record(const EvalRequest& r, const EvalPlan& plan, double baseline_accuracy) {
  const auto& first = plan.tasks.front();
  return {{"name", r.task.empty() ? first.task : r.task},
          {"length", r.length},
          {"depth_percent", r.depth_percent ? json(*r.depth_percent) : json(nullptr)},
          {"samples", plan.prompts.size()},
          {"seed", r.seed},
          {"scoring", r.scoring},
          {"metric", first.metric},
          {"baseline_accuracy", baseline_accuracy}};
}

}  // namespace

std::string prompt_hash(const std::vector<std::int32_t>& tokens) {
  std::uint64_t h = core::kFnv1a64Offset;
  for (const std::int32_t t : tokens) {
    const auto u = static_cast<std::uint32_t>(t);
    const char bytes[4] = {static_cast<char>(u), static_cast<char>(u >> 8), static_cast<char>(u >> 16),
                           static_cast<char>(u >> 24)};
    h = core::fnv1a64_update(h, std::string_view(bytes, 4));
  }
  return fmt::format("fnv1a64:{:016x}", h);
}

EvalOutcome write_eval_report(const EvalRequest& r, const EvalPlan& plan, const RunOptions& options,
                              const std::vector<SampleDecode>& samples) {
  const double n = static_cast<double>(samples.size());
  double baseline_accuracy = 0, prefill_seconds = 0;
  json sample_records = json::array();
  for (std::size_t i = 0; i < samples.size(); ++i) {
    baseline_accuracy += samples[i].base_score;
    prefill_seconds += samples[i].prefill_seconds;
    sample_records.push_back(sample_record(plan, i, samples[i]));
  }
  std::vector<MethodTotals> totals;
  json method_records = json::array();
  for (std::size_t m = 0; m < plan.methods.size(); ++m) {
    totals.push_back(method_totals(samples, m));
    method_records.push_back(method_record(plan, plan.methods[m].spec, totals.back(), n));
  }
  json report = run_record(r, plan, options);
  report["task"] = plan.scored() ? task_record(r, plan, baseline_accuracy / n) : json(nullptr);
  report["timing"] = {{"prefill_seconds", prefill_seconds},
                      {"note", "prefill: once per prompt, shared by the baseline and every method; compress_seconds: "
                               "time inside the chain during the teacher-forced decode; seconds: a method's decodes"}};
  report["methods"] = std::move(method_records);
  report["samples"] = std::move(sample_records);
  std::filesystem::create_directories(r.out);
  core::write_file_atomic(r.out / "samples.csv", samples_csv(plan, samples));
  core::write_file_atomic(r.out / "methods.csv", methods_csv(plan, totals, n));
  core::write_file_atomic(r.out / "eval.json", report.dump(2) + "\n");  // last: its presence means complete
  return {summary_table(plan, totals, baseline_accuracy, n) +
              fmt::format("{} prompt(s), prefill {:.3f} s each (shared by every method; compress s is per prompt), "
                          "{} new tokens at most, question {}; wrote {}\n",
                          samples.size(), prefill_seconds / n, plan.max_new_tokens, r.question, r.out.string()),
          report};
}

}  // namespace kvlab::harness
