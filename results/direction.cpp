#include "results/direction.h"

#include <array>
#include <string_view>
#include <utility>

namespace kvlab::results {

namespace {

using D = Direction;

// Exact names. Timings are informational on purpose: they depend on the machine and its load,
// so gating on them would make `kvlab check` flaky; kept_fraction and dense bytes are settings
// or properties of the input, not quality.
constexpr std::array<std::pair<std::string_view, D>, 18> kExact{{
    {"key_error", D::lower_better},
    {"value_error", D::lower_better},
    {"attn_output_error", D::lower_better},
    {"attn_kl", D::lower_better},
    {"bytes", D::lower_better},
    {"compression_ratio", D::higher_better},
    {"authors_ratio", D::higher_better},
    {"accuracy", D::higher_better},
    {"agreement", D::higher_better},
    {"exact_match", D::higher_better},
    {"f1", D::higher_better},
    {"rouge_l", D::higher_better},
    {"score", D::higher_better},
    {"kept_fraction", D::none},
    {"min_kept_sigma_ratio", D::none},  // an analysis precision diagnostic, not a compression ratio
    {"dense_fp16_bytes", D::none},
    {"compress_seconds", D::none},
    {"score_seconds", D::none},
}};

// Suffix rules, for families of names ("niah_accuracy", "head_error", "rank_fraction_…").
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

}  // namespace

Direction metric_direction(std::string_view metric) {
  for (const auto& [name, d] : kExact)
    if (metric == name) return d;
  for (const auto& [suffix, d] : kSuffix)
    if (metric.size() > suffix.size() && metric.substr(metric.size() - suffix.size()) == suffix) return d;
  return D::none;  // analysis similarities, eigen-rank fractions, anything new: informational
}

std::string_view direction_arrow(Direction direction) {
  switch (direction) {
    case D::lower_better: return "↓";
    case D::higher_better: return "↑";
    case D::none: return "";
  }
  return "";
}

}  // namespace kvlab::results
