#include "results/store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "core/error.h"
#include "results/sqlite.h"
#include "results/test_support.h"

namespace kvlab::results {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

RunInfo sample_info() {
  RunInfo info;
  info.uuid = "11111111-2222-4333-8444-555555555555";
  info.kind = RunKind::eval;
  info.created = "2025-01-31T12:00:00Z";
  info.kvlab_version = "0.1.0";
  info.revision = "abc123";
  info.command_line = "kvlab eval --task niah";
  info.host = "node7";
  info.device = "cuda:0";
  info.seeds = {1, 18446744073709551615ULL};
  info.model = "tiny-llama";
  info.model_hash = "m-hash";
  info.dump = "x.h5";
  info.dump_hash = "d-hash";
  info.tags = {"sweep:a", "g=4"};
  info.notes = "first try";
  info.provenance = {{"spec", "xkv:g=4"}, {"nested", {{"k", 1}}}};
  return info;
}

TEST(Store, RoundTripsARunWithEveryScopeAndAMatrix) {
  TempDir dir;
  Store store(dir / "r.sqlite");
  const RunId id = store.write_run(sample_info(), [](RunWriter& w) {
    w.add_metric("svd:rk=4", "key_error", 0.125);
    w.add_layer_metric("svd:rk=4", 3, "key_error", 0.25);
    w.add_metric(Metric{"svd:rk=4", Scope::task, -1, "niah", "", "accuracy", 0.5});
    w.add_sample_metric("svd:rk=4", "niah", "s-01", "accuracy", 1.0);
    w.add_matrix({"key.cka", 2, 3, {1, 2, 3, 4, std::nan(""), 6}});
  });

  const auto run = store.find_run(id);
  ASSERT_TRUE(run);
  const RunInfo expected = sample_info();
  EXPECT_EQ(run->uuid, expected.uuid);
  EXPECT_EQ(run->kind, RunKind::eval);
  EXPECT_EQ(run->created, expected.created);
  EXPECT_EQ(run->revision, "abc123");
  EXPECT_EQ(run->command_line, expected.command_line);
  EXPECT_EQ(run->host, "node7");
  EXPECT_EQ(run->device, "cuda:0");
  EXPECT_EQ(run->seeds, expected.seeds);
  EXPECT_EQ(run->model_hash, "m-hash");
  EXPECT_EQ(run->dump_hash, "d-hash");
  EXPECT_EQ(run->tags, expected.tags);
  EXPECT_EQ(run->notes, "first try");
  EXPECT_EQ(run->provenance, expected.provenance);

  const auto rows = store.metrics(id);
  ASSERT_EQ(rows.size(), 4u);
  // Ordered by method, scope, task, layer, sample, name.
  EXPECT_EQ(rows[0].scope, Scope::layer);
  EXPECT_EQ(rows[0].layer, 3);
  EXPECT_EQ(rows[1].scope, Scope::run);
  EXPECT_EQ(rows[1].value, 0.125);
  EXPECT_EQ(rows[1].layer, -1);
  EXPECT_EQ(rows[2].scope, Scope::sample);
  EXPECT_EQ(rows[2].task, "niah");
  EXPECT_EQ(rows[2].sample, "s-01");
  EXPECT_EQ(rows[3].scope, Scope::task);
  EXPECT_EQ(store.metrics(id, {.scope = Scope::run}).size(), 1u);
  EXPECT_EQ(store.metrics(id, {.name = "accuracy"}).size(), 2u);

  const auto matrices = store.matrices(id);
  ASSERT_EQ(matrices.size(), 1u);
  EXPECT_EQ(matrices[0].rows, 2);
  EXPECT_EQ(matrices[0].cols, 3);
  EXPECT_EQ(matrices[0].data[5], 6);
  EXPECT_TRUE(std::isnan(matrices[0].data[4]));
}

TEST(Store, FillsUuidAndTimeAndDropsNonFiniteValues) {
  TempDir dir;
  Store store(dir / "r.sqlite");
  RunInfo info;
  const RunId id = store.write_run(info, [](RunWriter& w) {
    w.add_metric("m", "attn_kl", std::nan(""));
    w.add_metric("m", "compression_ratio", INFINITY);
    w.add_metric("m", "bytes", 10);
  });
  const auto run = store.find_run(id);
  EXPECT_EQ(run->uuid.size(), 36u);
  EXPECT_EQ(run->uuid[14], '4');
  EXPECT_EQ(run->created.size(), 20u);
  EXPECT_EQ(store.metrics(id).size(), 1u);
  EXPECT_NE(random_uuid(), random_uuid());
}

TEST(Store, AnInterruptedWriterLeavesNoTrace) {
  TempDir dir;
  Store store(dir / "r.sqlite");
  EXPECT_THROW(store.write_run(sample_info(),
                               [](RunWriter& w) {
                                 w.add_metric("a", "key_error", 0.1);
                                 w.add_matrix({"key.cka", 1, 1, {1}});
                                 throw Error("killed half-way");
                               }),
               Error);
  // A writer dropped without commit (the process moved on after an exception) also writes nothing.
  { auto w = store.begin_run(sample_info()); w.add_metric("a", "key_error", 0.1); }
  const auto counts = store.counts();
  EXPECT_EQ(counts.runs, 0);
  EXPECT_EQ(counts.metrics, 0);
  EXPECT_EQ(counts.matrices, 0);
}

TEST(Store, AFailureInsideTheCommitRollsBackTheRowsAlreadyInserted) {
  TempDir dir;
  Store store(dir / "r.sqlite");
  auto w = store.begin_run(sample_info());
  for (int l = 0; l < 5; ++l) w.add_layer_metric("svd", l, "key_error", 0.1 * l);
  w.add_layer_metric("svd", 2, "key_error", 0.5);  // the same identity twice: the 6th insert fails
  try {
    w.commit();
    FAIL() << "a duplicate metric row was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("key_error"));
    EXPECT_THAT(e.what(), HasSubstr("svd"));
  }
  EXPECT_EQ(store.counts().runs, 0);
  EXPECT_EQ(store.counts().metrics, 0);
  // The store is still usable, and the uuid was not taken.
  store.write_run(sample_info(), [](RunWriter& x) { x.add_metric("svd", "key_error", 0.1); });
  EXPECT_EQ(store.counts().runs, 1);
}

TEST(Store, RefusesASecondRunWithTheSameUuid) {
  TempDir dir;
  Store store(dir / "r.sqlite");
  store.write_run(sample_info(), [](RunWriter&) {});
  try {
    store.write_run(sample_info(), [](RunWriter& w) { w.add_metric("a", "bytes", 1); });
    FAIL();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("already in"));
  }
  EXPECT_EQ(store.counts().metrics, 0);
}

TEST(Store, ResolvesIdsLatestAndUuidPrefixes) {
  TempDir dir;
  Store store(dir / "r.sqlite");
  RunInfo a;
  a.uuid = "aaaa1111-0000-4000-8000-000000000000";
  a.kind = RunKind::compress;
  RunInfo b = a;
  b.uuid = "aaaa2222-0000-4000-8000-000000000000";
  b.kind = RunKind::analyze;
  const RunId ia = store.write_run(a, [](RunWriter&) {});
  const RunId ib = store.write_run(b, [](RunWriter&) {});
  EXPECT_EQ(store.resolve(std::to_string(ia)).id, ia);
  EXPECT_EQ(store.resolve("latest").id, ib);
  EXPECT_EQ(store.resolve("latest", RunKind::compress).id, ia);
  EXPECT_EQ(store.resolve("aaaa2").id, ib);
  EXPECT_EQ(store.resolve(b.uuid).id, ib);
  EXPECT_THAT([&] { store.resolve("aaaa"); }, ::testing::ThrowsMessage<Error>(HasSubstr("ambiguous")));
  EXPECT_THAT([&] { store.resolve("99"); }, ::testing::ThrowsMessage<Error>(HasSubstr("no run 99")));
  EXPECT_THAT([&] { store.resolve("latest", RunKind::eval); }, ::testing::ThrowsMessage<Error>(HasSubstr("no eval")));
  EXPECT_EQ(store.runs(RunKind::analyze).size(), 1u);
  EXPECT_EQ(store.runs().size(), 2u);
}

TEST(Store, AMissingDatabaseIsAnErrorNamingItWhenItMustExist) {
  TempDir dir;
  EXPECT_THAT([&] { Store s(dir / "nope.sqlite", true); },
              ::testing::ThrowsMessage<Error>(HasSubstr("nope.sqlite")));
  EXPECT_FALSE(std::filesystem::exists(dir / "nope.sqlite"));
}

TEST(Store, UsesWalSoConcurrentWritersAllLand) {
  TempDir dir;
  const auto path = dir / "r.sqlite";
  { Store init(path); }
  constexpr int kPerThread = 15;
  auto work = [&](int t) {
    Store store(path);  // one connection per writer, as separate processes would have
    for (int i = 0; i < kPerThread; ++i)
      store.write_run(RunInfo{}, [&](RunWriter& w) {
        for (int l = 0; l < 20; ++l) w.add_layer_metric(fmt::format("m{}", t), l, "key_error", i + 0.01 * l);
      });
  };
  std::thread a(work, 0), b(work, 1);
  a.join();
  b.join();
  Store store(path);
  EXPECT_EQ(store.counts().runs, 2 * kPerThread);
  EXPECT_EQ(store.counts().metrics, 2 * kPerThread * 20);
  sql::Statement mode(store.database(), "PRAGMA journal_mode");
  ASSERT_TRUE(mode.step());
  EXPECT_EQ(mode.text(0), "wal");
}

}  // namespace
}  // namespace kvlab::results
