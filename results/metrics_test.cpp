// The metrics table: every metric the importers record is in it, with the scopes it is
// recorded at; each known metric has the direction compare, check and export judge it by;
// names the table lacks are judged by their suffix, as before the table existed.
#include "results/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>

#include "results/import.h"
#include "results/test_support.h"

namespace kvlab::results {
namespace {

using testing::fixture;
using testing::TempDir;

// cli/cli_test.sh checks the same of a whole demo store (compress, analyze and eval runs)
// through `kvlab results metrics`.
TEST(Metrics, EveryImportedMetricIsInTheTableAtItsScope) {
  TempDir dir;
  Store store(dir / "r.sqlite");
  std::set<std::string> seen;
  for (const auto& run : {import_compress_json(store, fixture("compress.json")),
                          import_analysis_json(store, fixture("analysis.json"))})
    for (const auto& m : store.metrics(run)) {
      seen.insert(m.name);
      const MetricInfo* info = find_metric(m.name);
      ASSERT_NE(info, nullptr) << m.name;
      EXPECT_TRUE(info->recorded_at(m.scope)) << m.name << " at " << to_string(m.scope);
    }
  // The fixtures exercise each kind of row: exact names, the analysis families, per layer.
  for (const char* name : {"key_error", "authors_ratio", "score_seconds", "cka_adjacent", "token_cosine_next",
                           "min_kept_sigma_ratio", "analysis_seconds"})
    EXPECT_TRUE(seen.contains(name)) << name;
  EXPECT_TRUE(std::any_of(seen.begin(), seen.end(), [](const auto& n) { return n.starts_with("eigen_rank_fraction_g"); }));
}

TEST(Metrics, KnownDirections) {
  using D = Direction;
  for (const char* name : {"key_error", "value_error", "attn_output_error", "attn_kl", "answer_kl", "bytes"})
    EXPECT_EQ(metric_direction(name), D::lower_better) << name;
  for (const char* name : {"compression_ratio", "authors_ratio", "accuracy", "agreement", "exact_match", "f1", "rouge_l",
                           "score"})
    EXPECT_EQ(metric_direction(name), D::higher_better) << name;
  // Settings, properties of the input, diagnostics, timings, similarities: informational.
  for (const char* name : {"kept_fraction", "dense_fp16_bytes", "min_kept_sigma_ratio", "compress_seconds", "score_seconds",
                           "seconds", "prefill_seconds", "analysis_seconds", "zero_rows", "needle_depth", "target_tokens",
                           "cka_adjacent", "token_cosine_next", "eigen_rank_fraction_g2_e0.9"})
    EXPECT_EQ(metric_direction(name), D::none) << name;
}

TEST(Metrics, TimingsNeverGate) {  // they depend on the machine and its load
  for (const auto& info : metric_table())
    EXPECT_TRUE(info.unit != Unit::seconds || info.direction == Direction::none) << info.name;
}

TEST(Metrics, NamesAreUniqueAndLabelled) {
  std::set<std::string_view> names;
  for (const auto& info : metric_table()) {
    EXPECT_TRUE(names.insert(info.name).second) << info.name;
    EXPECT_FALSE(info.label.empty()) << info.name;
    EXPECT_EQ(find_metric(info.name), &info) << info.name;
  }
}

TEST(Metrics, FamiliesMatchNumbersOnly) {
  const auto* family = find_metric("eigen_rank_fraction_g4_e0.9");
  ASSERT_NE(family, nullptr);
  EXPECT_EQ(family->name, "eigen_rank_fraction_g<G>_e<E>");
  EXPECT_EQ(find_metric("eigen_rank_fraction_g16_e1"), family);
  EXPECT_EQ(find_metric("eigen_rank_fraction_g2_e1e-05"), family);
  EXPECT_EQ(find_metric("eigen_rank_fraction_g_e0.9"), nullptr);   // a placeholder is never empty
  EXPECT_EQ(find_metric("eigen_rank_fraction_gx_e0.9"), nullptr);  // nor anything but a number
  EXPECT_EQ(find_metric("eigen_rank_fraction_g4_e0.9_x"), nullptr);
}

// Names the table lacks: the suffix rules, else informational.
TEST(Metrics, UnknownNamesAreJudgedByTheirSuffix) {
  for (const char* name : {"niah_accuracy", "head_error", "step_kl", "cache_bytes", "rank_ratio", "token_agreement",
                           "task_score", "decode_seconds", "whatever", "kl", "error"})
    EXPECT_EQ(find_metric(name), nullptr) << name;
  EXPECT_EQ(metric_direction("niah_accuracy"), Direction::higher_better);
  EXPECT_EQ(metric_direction("token_agreement"), Direction::higher_better);
  EXPECT_EQ(metric_direction("task_score"), Direction::higher_better);
  EXPECT_EQ(metric_direction("rank_ratio"), Direction::higher_better);
  EXPECT_EQ(metric_direction("head_error"), Direction::lower_better);
  EXPECT_EQ(metric_direction("step_kl"), Direction::lower_better);
  EXPECT_EQ(metric_direction("cache_bytes"), Direction::lower_better);
  EXPECT_EQ(metric_direction("decode_seconds"), Direction::none);
  EXPECT_EQ(metric_direction("whatever"), Direction::none);
  // A suffix needs something before it: "kl" and "error" alone are not families.
  EXPECT_EQ(metric_direction("kl"), Direction::none);
  EXPECT_EQ(metric_direction("error"), Direction::none);
}

}  // namespace
}  // namespace kvlab::results
