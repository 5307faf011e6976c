// The regression gate: planted regressions are caught, noise within the bootstrap interval is
// not, point metrics follow their direction and tolerance, mismatches are errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "results/compare.h"
#include "results/snapshot.h"
#include "results/test_support.h"

namespace kvlab::results {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

// 50 samples, correct (1) unless listed as wrong.
std::map<SampleKey, double> accuracy_rows(const std::set<int>& wrong, int n = 50) {
  std::map<SampleKey, double> rows;
  for (int i = 0; i < n; ++i) rows[{"niah", fmt::format("s{:02}", i)}] = wrong.contains(i) ? 0.0 : 1.0;
  return rows;
}

std::set<int> every(int step, std::initializer_list<int> residues) {
  std::set<int> out;
  for (int i = 0; i < 50; ++i)
    for (int r : residues)
      if (i % step == r) out.insert(i);
  return out;
}

Snapshot with_samples(const std::map<SampleKey, double>& rows, const std::string& label) {
  Snapshot s;
  s.label = label;
  s.methods["xkv:g=4"].samples["accuracy"] = rows;
  return s;
}

Snapshot with_points(std::map<std::string, double> values) {
  Snapshot s;
  s.label = "points";
  for (const auto& [name, v] : values) s.methods["svd:rk=4"].points[{"", name}] = v;
  return s;
}

const Delta& only(const Comparison& c, const std::string& metric, const std::string& task = "") {
  for (const auto& d : c.deltas)
    if (d.metric == metric && d.task == task) return d;
  throw std::runtime_error("no delta for " + metric);
}

TEST(Check, APlantedAccuracyDropIsARegression) {
  const auto baseline = with_samples(accuracy_rows(every(10, {0})), "base");       // 45/50 = 0.9
  const auto candidate = with_samples(accuracy_rows(every(5, {0, 1})), "cand");    // 30/50 = 0.6
  const auto c = compare(baseline, candidate, {});
  const auto& d = only(c, "accuracy");
  EXPECT_TRUE(d.paired);
  EXPECT_EQ(d.samples, 50u);
  EXPECT_DOUBLE_EQ(d.baseline, 0.9);
  EXPECT_DOUBLE_EQ(d.candidate, 0.6);
  EXPECT_NEAR(d.delta, -0.3, 1e-12);
  EXPECT_LT(d.ci.high, -0.02);
  EXPECT_EQ(d.verdict, Verdict::worse);
  EXPECT_TRUE(c.regressed());
}

TEST(Check, NoiseWithinTheIntervalIsNotARegression) {
  // Same accuracy level, different samples wrong: 0.90 → 0.88. As bare numbers that is a
  // 2.2% relative drop, past a 2% tolerance; paired over 50 samples it is noise.
  const auto baseline = with_samples(accuracy_rows(every(10, {0})), "base");
  const auto candidate = with_samples(accuracy_rows({3, 7, 13, 23, 33, 48}), "cand");
  const auto c = compare(baseline, candidate, {});
  const auto& d = only(c, "accuracy");
  EXPECT_NEAR(d.delta, -0.02, 1e-12);
  EXPECT_LT(d.ci.low, 0.0);
  EXPECT_GT(d.ci.high, 0.0);
  EXPECT_EQ(d.verdict, Verdict::within);
  EXPECT_FALSE(c.regressed());

  const auto points = compare(with_points({{"accuracy", 0.90}}), with_points({{"accuracy", 0.88}}), {});
  EXPECT_TRUE(points.regressed()) << "the point comparison this test contrasts with";
}

TEST(Check, IdenticalRunsAreWithinAndTheVerdictIsSeeded) {
  const auto rows = accuracy_rows(every(10, {0}));
  const auto c = compare(with_samples(rows, "a"), with_samples(rows, "b"), {.seed = 3});
  const auto& d = only(c, "accuracy");
  EXPECT_EQ(d.ci.low, 0.0);
  EXPECT_EQ(d.ci.high, 0.0);
  EXPECT_EQ(d.verdict, Verdict::within);

  const auto baseline = with_samples(rows, "base");
  const auto candidate = with_samples(accuracy_rows(every(5, {0, 1})), "cand");
  const auto x = compare(baseline, candidate, {.seed = 11}), y = compare(baseline, candidate, {.seed = 11});
  EXPECT_EQ(only(x, "accuracy").ci.low, only(y, "accuracy").ci.low);
  EXPECT_EQ(only(x, "accuracy").ci.high, only(y, "accuracy").ci.high);
}

TEST(Check, AClearImprovementIsBetterAndPerTaskRowsAppearForSeveralTasks) {
  auto base = accuracy_rows(every(5, {0, 1}));
  auto cand = accuracy_rows({});
  base[{"vt", "s00"}] = 0;
  cand[{"vt", "s00"}] = 1;
  const auto c = compare(with_samples(base, "b"), with_samples(cand, "c"), {});
  EXPECT_EQ(only(c, "accuracy").verdict, Verdict::better);
  EXPECT_EQ(only(c, "accuracy", "niah").samples, 50u);
  EXPECT_EQ(only(c, "accuracy", "vt").samples, 1u);
}

TEST(Check, PointMetricsFollowDirectionAndRelativeTolerance) {
  const auto base = with_points({{"key_error", 0.100},
                                 {"attn_kl", 0.5},
                                 {"compression_ratio", 2.0},
                                 {"value_error", 0.0},
                                 {"attn_output_error", 0.0},
                                 {"kept_fraction", 1.0},
                                 {"bytes", 1000}});
  const auto cand = with_points({{"key_error", 0.101},       // +1%: within 2%
                                 {"attn_kl", 0.45},          // lower KL: better
                                 {"compression_ratio", 1.9}, // −5%: worse
                                 {"value_error", 0.0},       // exact zero stays exact
                                 {"attn_output_error", 1e-6},  // from zero: worse
                                 {"kept_fraction", 0.5},     // no direction
                                 {"bytes", 1010}});          // +1%: within
  const auto c = compare(base, cand, {});
  EXPECT_EQ(only(c, "key_error").verdict, Verdict::within);
  EXPECT_NEAR(only(c, "key_error").relative, 0.01, 1e-9);
  EXPECT_EQ(only(c, "attn_kl").verdict, Verdict::better);
  EXPECT_EQ(only(c, "compression_ratio").verdict, Verdict::worse);
  EXPECT_EQ(only(c, "value_error").verdict, Verdict::within);
  EXPECT_TRUE(std::isnan(only(c, "value_error").relative));
  EXPECT_EQ(only(c, "attn_output_error").verdict, Verdict::worse);
  EXPECT_EQ(only(c, "kept_fraction").verdict, Verdict::info);
  EXPECT_EQ(only(c, "bytes").verdict, Verdict::within);
  EXPECT_EQ(c.count(Verdict::worse), 2u);

  // A per-metric tolerance overrides the global one.
  const auto loose = compare(with_points({{"key_error", 0.1}}), with_points({{"key_error", 0.104}}),
                             {.tolerance_for = {{"key_error", 0.05}}});
  EXPECT_FALSE(loose.regressed());
  EXPECT_TRUE(compare(with_points({{"key_error", 0.1}}), with_points({{"key_error", 0.104}}), {}).regressed());
}

TEST(Check, MismatchedMethodsOrMetricsAreErrors) {
  auto base = with_points({{"key_error", 0.1}, {"attn_kl", 0.2}});
  base.methods["kivi:bits=2"].points[{"", "key_error"}] = 0.3;
  EXPECT_THAT([&] { compare(base, with_points({{"key_error", 0.1}, {"attn_kl", 0.2}}), {}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("kivi:bits=2")));
  EXPECT_THAT([&] { compare(with_points({{"key_error", 0.1}, {"attn_kl", 0.2}}), with_points({{"key_error", 0.1}}), {}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("attn_kl of svd:rk=4")));
  // Extra methods and metrics in the candidate are notes, not errors.
  const auto c = compare(with_points({{"key_error", 0.1}}), base, {});
  EXPECT_EQ(c.notes.size(), 2u);
  // Runs of different kinds are not comparable.
  auto analysis = with_points({{"key_error", 0.1}});
  analysis.kind = RunKind::analyze;
  auto compressed = with_points({{"key_error", 0.1}});
  compressed.kind = RunKind::compress;
  EXPECT_THAT([&] { compare(compressed, analysis, {}); }, ::testing::ThrowsMessage<Error>(HasSubstr("analyze run")));
  // Per-sample metrics with no shared ids are an error too.
  std::map<SampleKey, double> other{{{"niah", "zz"}, 1.0}};
  EXPECT_THAT([&] { compare(with_samples(accuracy_rows({}), "a"), with_samples(other, "b"), {}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("shares no sample ids")));
}

TEST(Check, ABaselineFileRoundTripsAndIsStable) {
  TempDir dir;
  Store store(dir / "r.sqlite");
  RunInfo info;
  info.kind = RunKind::eval;
  const RunId id = store.write_run(info, [](RunWriter& w) {
    w.add_metric("svd:rk=4", "key_error", 0.125);
    w.add_metric(Metric{"svd:rk=4", Scope::task, -1, "niah", "", "accuracy", 0.75});
    for (int i = 0; i < 4; ++i) w.add_sample_metric("svd:rk=4", "niah", fmt::format("s{}", i), "accuracy", i != 0);
    w.add_layer_metric("svd:rk=4", 0, "key_error", 0.5);  // layers are not part of a baseline
  });
  const auto snap = snapshot_of(store, *store.find_run(id));
  write_baseline(dir / "b1.json", snap);
  write_baseline(dir / "b2.json", snapshot_of(store, *store.find_run(id)));
  auto text = [](const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  EXPECT_EQ(text(dir / "b1.json"), text(dir / "b2.json"));
  EXPECT_THAT(text(dir / "b1.json"), HasSubstr("\"kvlab_baseline\": 1"));

  const auto loaded = read_baseline(dir / "b1.json");
  EXPECT_EQ(loaded.kind, RunKind::eval);
  EXPECT_EQ(loaded.methods.at("svd:rk=4").points.size(), 2u);
  EXPECT_EQ(loaded.methods.at("svd:rk=4").samples.at("accuracy").size(), 4u);
  const auto c = compare(loaded, snap, {});
  EXPECT_FALSE(c.regressed());
  EXPECT_EQ(c.count(Verdict::within), 3u);  // key_error (point), accuracy of the run and of task niah (paired)
  EXPECT_TRUE(only(c, "accuracy", "niah").paired);
  EXPECT_THAT([&] { read_baseline(dir / "missing.json"); }, ::testing::ThrowsMessage<Error>(HasSubstr("missing.json")));
}

}  // namespace
}  // namespace kvlab::results
