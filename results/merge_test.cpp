#include "results/merge.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "results/import.h"
#include "results/test_support.h"

namespace kvlab::results {
namespace {

using testing::fixture;
using testing::TempDir;

void add_runs(Store& store, const std::string& prefix, int n) {
  for (int i = 0; i < n; ++i) {
    RunInfo info;
    info.uuid = fmt::format("{}-{}", prefix, i);
    info.kind = RunKind::eval;
    store.write_run(info, [&](RunWriter& w) {
      for (int s = 0; s < 10; ++s) w.add_sample_metric("full", "niah", fmt::format("s{}", s), "accuracy", s % 2);
      w.add_matrix({"m", 1, 2, {1, 2}});
    });
  }
}

TEST(Merge, MergingShardsTwiceAddsNothingTheSecondTime) {
  TempDir dir;
  {
    Store a(dir / "a.sqlite"), b(dir / "b.sqlite");
    add_runs(a, "shard-a", 3);
    add_runs(b, "shard-b", 2);
    // The same report imported on both machines: one run after the merge.
    import_compress_json(a, fixture("compress.json"));
    import_compress_json(b, fixture("compress.json"));
  }
  Store out(dir / "all.sqlite");
  const auto first_a = merge_into(out, dir / "a.sqlite");
  const auto first_b = merge_into(out, dir / "b.sqlite");
  EXPECT_EQ(first_a.added, 4);
  EXPECT_EQ(first_b.added, 2);
  EXPECT_EQ(first_b.skipped, 1);
  const auto counts = out.counts();
  EXPECT_EQ(counts.runs, 3 + 2 + 1);

  const auto again_a = merge_into(out, dir / "a.sqlite");
  const auto again_b = merge_into(out, dir / "b.sqlite");
  EXPECT_EQ(again_a.added + again_b.added, 0);
  EXPECT_EQ(again_a.skipped + again_b.skipped, 4 + 3);
  const auto after = out.counts();
  EXPECT_EQ(after.runs, counts.runs);
  EXPECT_EQ(after.metrics, counts.metrics);
  EXPECT_EQ(after.matrices, counts.matrices);
  EXPECT_EQ(after.matrices, 5);

  // Rows and provenance came across intact.
  const auto run = out.resolve("shard-b-1");
  EXPECT_EQ(run.kind, RunKind::eval);
  EXPECT_EQ(out.metrics(run.id).size(), 10u);
  Store a(dir / "a.sqlite");
  const auto original = a.resolve("shard-a-0");
  EXPECT_EQ(out.resolve("shard-a-0").created, original.created);
}

TEST(Merge, RefusesToMergeADatabaseIntoItself) {
  TempDir dir;
  Store out(dir / "all.sqlite");
  EXPECT_THROW(merge_into(out, dir / "all.sqlite"), Error);
  EXPECT_THROW(merge_into(out, dir / "missing.sqlite"), Error);
}

}  // namespace
}  // namespace kvlab::results
