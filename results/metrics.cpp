#include "results/metrics.h"

#include <array>
#include <utility>

namespace kvlab::results {

namespace {

namespace n = metric_name;
using D = Direction;
using U = Unit;
constexpr unsigned run = kPerRun, layer = kPerLayer, sample = kPerSample;
constexpr bool column = true, no = false;

// Timings are informational on purpose: they depend on the machine and its load, so gating on
// them would make `kvlab check` flaky; kept_fraction and dense bytes are settings or properties
// of the input, not quality. Definitions: compressors/score.h (compress), harness/eval_job.cpp
// (eval), analysis/cross_layer.h (analyze).
constexpr std::array<MetricInfo, 33> kTable{{
    //  name                  unit           direction         label                                               rows         export column
    {n::key_error,            U::relative,   D::lower_better,  "key error (relative Frobenius, kept cells)",        run | layer,  column},
    {n::value_error,          U::relative,   D::lower_better,  "value error (relative Frobenius, kept cells)",      run | layer,  column},
    {n::attn_output_error,    U::relative,   D::lower_better,  "attention-output error (relative Frobenius)",      run | layer,  column},
    {n::attn_kl,              U::nats,       D::lower_better,  "attention KL(p̂ ‖ p) (nats)",                       run | layer,  column},
    {n::compression_ratio,    U::ratio,      D::higher_better, "compression ratio (16-bit dense / stored bytes)",   run,          column},
    {n::authors_ratio,        U::ratio,      D::higher_better, "compression ratio as the method's paper counts it", run,          column},
    {n::bytes,                U::bytes,      D::lower_better,  "stored bytes",                                      run,          column},
    {n::loaded_bytes_per_step, U::bytes,     D::lower_better,  "bytes read per decode step (mean over window queries or decode steps)", run, column},
    {n::kept_fraction,        U::fraction,   D::none,          "share of (token, KV head) cells kept",              run | layer,  column},
    {n::accuracy,             U::fraction,   D::higher_better, "task accuracy",                                     run | sample, column},
    {n::agreement,            U::fraction,   D::higher_better, "share of the baseline's greedy tokens reproduced",  run | sample, column},
    {n::exact_match,          U::fraction,   D::higher_better, "share of outputs equal to the baseline's",          run | sample, no},
    {n::answer_kl,            U::nats,       D::lower_better,  "answer KL(p_baseline ‖ p_method) (nats)",           run | sample, no},
    {n::dense_fp16_bytes,     U::bytes,      D::none,          "16-bit dense cache bytes",                          run,          no},
    {n::compress_seconds,     U::seconds,    D::none,          "compression time (s)",                              run,          no},
    {n::score_seconds,        U::seconds,    D::none,          "scoring time (s)",                                  run,          no},
    {n::seconds,              U::seconds,    D::none,          "the method's wall time over all samples (s)",       run,          no},
    {n::prefill_seconds,      U::seconds,    D::none,          "prefill time per prompt (s)",                       run,          no},
    {n::needle_depth,         U::percent,    D::none,          "needle depth (%)",                                  sample,       no},
    {n::target_tokens,        U::tokens,     D::none,          "context length (tokens)",                           sample,       no},
    {n::min_kept_sigma_ratio, U::ratio,      D::none,          "smallest kept σ_r / σ₁ (Gram precision check)",     run,          no},
    {n::zero_rows,            U::count,      D::none,          "token rows of zero norm",                           run,          no},
    {n::analysis_seconds,     U::seconds,    D::none,          "analysis time (s)",                                 run,          no},
    // analyze: the mean similarity of adjacent layers, and per layer l that of l and l + 1
    {"cka_adjacent",            U::similarity, D::none,        "CKA of adjacent layers (mean)",                     run,          no},
    {"token_cosine_adjacent",   U::similarity, D::none,        "token cosine of adjacent layers (mean)",            run,          no},
    {"channel_cosine_adjacent", U::similarity, D::none,        "channel cosine of adjacent layers (mean)",          run,          no},
    {"cka_next",                U::similarity, D::none,        "CKA with the next layer",                           layer,        no},
    {"token_cosine_next",       U::similarity, D::none,        "token cosine with the next layer",                  layer,        no},
    {"channel_cosine_next",     U::similarity, D::none,        "channel cosine with the next layer",                layer,        no},
    {"eigen_rank_fraction_g<G>_e<E>", U::fraction, D::none,    "rank fraction for energy E, groups of G layers",    run | layer,  no},
    // Not recorded by kvlab (task scores are recorded as accuracy); kept so that stores and
    // baseline files naming them are judged as before.
    {"f1",                      U::fraction,   D::higher_better, "F1",                                              run,          no},
    {"rouge_l",                 U::fraction,   D::higher_better, "ROUGE-L",                                         run,          no},
    {"score",                   U::fraction,   D::higher_better, "task score",                                      run,          no},
}};

// For names the table lacks: families by suffix ("niah_accuracy", "head_error", "rank_fraction_…").
constexpr std::array<std::pair<std::string_view, D>, 8> kSuffix{{
    {"_error", D::lower_better},
    {"_kl", D::lower_better},
    {"_bytes", D::lower_better},
    {"_ratio", D::higher_better},
    {"_accuracy", D::higher_better},
    {"_agreement", D::higher_better},
    {"_score", D::higher_better},
    {"_seconds", D::none},
}};

bool is_number_char(char c) { return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == '-' || c == '+'; }

// `name` against a pattern whose <X> parts each match one or more characters of a number
// (as fmt's {:g} writes them: 4, 0.9, 1e-05).
bool matches(std::string_view pattern, std::string_view name) {
  if (pattern.empty()) return name.empty();
  if (pattern.front() != '<') return !name.empty() && name.front() == pattern.front() && matches(pattern.substr(1), name.substr(1));
  const auto close = pattern.find('>');
  const auto rest = pattern.substr(close + 1);
  for (std::size_t k = 1; k <= name.size() && is_number_char(name[k - 1]); ++k)
    if (matches(rest, name.substr(k))) return true;
  return false;
}

}  // namespace

bool MetricInfo::recorded_at(Scope scope) const {
  switch (scope) {
    case Scope::run: return rows & kPerRun;
    case Scope::layer: return rows & kPerLayer;
    case Scope::sample: return rows & kPerSample;
    case Scope::task: return false;
  }
  return false;
}

std::span<const MetricInfo> metric_table() { return kTable; }

const MetricInfo* find_metric(std::string_view name) {
  for (const auto& info : kTable)
    if (info.name == name) return &info;
  for (const auto& info : kTable)
    if (info.name.find('<') != std::string_view::npos && matches(info.name, name)) return &info;
  return nullptr;
}

std::string_view metric_label(std::string_view name) {
  const auto* info = find_metric(name);
  return info ? info->label : name;
}

Direction metric_direction(std::string_view metric) {
  if (const auto* info = find_metric(metric)) return info->direction;
  for (const auto& [suffix, d] : kSuffix)
    if (metric.size() > suffix.size() && metric.substr(metric.size() - suffix.size()) == suffix) return d;
  return D::none;  // anything new: informational
}

std::string_view direction_arrow(Direction direction) {
  switch (direction) {
    case D::lower_better: return "↓";
    case D::higher_better: return "↑";
    case D::none: return "";
  }
  return "";
}

std::string_view to_string(Direction direction) {
  switch (direction) {
    case D::lower_better: return "lower";
    case D::higher_better: return "higher";
    case D::none: return "none";
  }
  return "none";
}

std::string_view to_string(Unit unit) {
  switch (unit) {
    case U::relative: return "relative";
    case U::nats: return "nats";
    case U::fraction: return "fraction";
    case U::ratio: return "ratio";
    case U::bytes: return "bytes";
    case U::seconds: return "seconds";
    case U::count: return "count";
    case U::percent: return "percent";
    case U::tokens: return "tokens";
    case U::similarity: return "similarity";
  }
  return "";
}

}  // namespace kvlab::results
