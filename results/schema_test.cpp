#include "results/schema.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sqlite3.h>

#include "core/error.h"
#include "results/store.h"
#include "results/test_support.h"

namespace kvlab::results {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

// Schema v1 exactly as the first kvlab with a results store wrote it, typed out here (not
// taken from schema.cpp) so that a change to the v1 step cannot hide a broken migration.
constexpr const char* kSchemaV1 = R"sql(
CREATE TABLE runs (
  id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL CHECK (kind IN ('analyze', 'compress', 'eval', 'other')),
  created TEXT NOT NULL, kvlab_version TEXT NOT NULL DEFAULT '', revision TEXT NOT NULL DEFAULT '',
  command_line TEXT NOT NULL DEFAULT '', host TEXT NOT NULL DEFAULT '', device TEXT NOT NULL DEFAULT '',
  seeds TEXT NOT NULL DEFAULT '[]', model TEXT NOT NULL DEFAULT '', model_hash TEXT NOT NULL DEFAULT '',
  dump TEXT NOT NULL DEFAULT '', dump_hash TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'ok',
  provenance TEXT NOT NULL DEFAULT '{}');
CREATE TABLE metrics (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, method TEXT NOT NULL DEFAULT '',
  scope TEXT NOT NULL CHECK (scope IN ('run', 'layer', 'task', 'sample')),
  layer INTEGER, task TEXT, sample TEXT, name TEXT NOT NULL, value REAL NOT NULL);
CREATE INDEX metrics_by_run ON metrics(run_id, method, name);
CREATE INDEX metrics_by_name ON metrics(name, scope);
CREATE TABLE matrices (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, name TEXT NOT NULL,
  rows INTEGER NOT NULL, cols INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (run_id, name));
INSERT INTO runs (id, uuid, kind, created, revision, seeds, provenance)
  VALUES (7, 'old-run-uuid', 'compress', '2024-12-01T00:00:00Z', 'r1', '[3]', '{"from": "v1"}');
INSERT INTO metrics VALUES (7, 'svd:rk=4', 'run', NULL, NULL, NULL, 'key_error', 0.25);
INSERT INTO metrics VALUES (7, 'svd:rk=4', 'layer', 0, NULL, NULL, 'key_error', 0.5);
PRAGMA user_version = 1;
)sql";

void raw_sql(const std::filesystem::path& path, const char* sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &error);
  EXPECT_EQ(rc, SQLITE_OK) << (error ? error : "");
  sqlite3_free(error);
  sqlite3_close(db);
}

TEST(Schema, AFreshDatabaseIsAtTheCurrentVersion) {
  TempDir dir;
  Store store(dir / "r.sqlite");
  EXPECT_EQ(store.schema_version(), kSchemaVersion);
  EXPECT_EQ(migrations().back().to_version, kSchemaVersion);
  for (std::size_t i = 0; i < migrations().size(); ++i) EXPECT_EQ(migrations()[i].to_version, static_cast<int>(i) + 1);
}

TEST(Schema, MigratesAVersion1DatabaseKeepingItsRuns) {
  TempDir dir;
  const auto path = dir / "v1.sqlite";
  raw_sql(path, kSchemaV1);

  Store store(path);
  EXPECT_EQ(store.schema_version(), 2);
  EXPECT_TRUE(store.database().table_has_column("runs", "tags"));
  EXPECT_TRUE(store.database().table_has_column("runs", "notes"));
  const auto run = store.resolve("old-run-uuid");
  EXPECT_EQ(run.id, 7);
  EXPECT_EQ(run.kind, RunKind::compress);
  EXPECT_EQ(run.seeds, std::vector<std::uint64_t>{3});
  EXPECT_TRUE(run.tags.empty());  // the v2 column's default
  EXPECT_EQ(run.notes, "");
  EXPECT_EQ(run.provenance["from"], "v1");
  EXPECT_EQ(store.metrics(7).size(), 2u);

  // What v2 added is in force: a duplicate metric identity is refused (the unique index).
  auto w = store.begin_run(RunInfo{});
  w.add_metric("a", "bytes", 1);
  w.add_metric("a", "bytes", 2);
  EXPECT_THROW(w.commit(), Error);
  // New runs carry tags.
  RunInfo tagged;
  tagged.tags = {"x"};
  const RunId id = store.write_run(tagged, [](RunWriter&) {});
  EXPECT_EQ(store.find_run(id)->tags, std::vector<std::string>{"x"});

  // Reopening does not migrate again.
  Store again(path);
  EXPECT_EQ(again.counts().runs, 2);
}

TEST(Schema, RefusesADatabaseFromANewerKvlab) {
  TempDir dir;
  const auto path = dir / "new.sqlite";
  raw_sql(path, "CREATE TABLE t (x); PRAGMA user_version = 99;");
  EXPECT_THAT([&] { Store s(path); }, ::testing::ThrowsMessage<Error>(HasSubstr("newer")));
}

TEST(Schema, AFailedMigrationLeavesTheFileAtItsOldVersion) {
  TempDir dir;
  const auto path = dir / "bad.sqlite";
  // A v1 file whose runs table already has a tags column: the v2 ALTER fails half-way.
  raw_sql(path, "CREATE TABLE runs (id INTEGER PRIMARY KEY, tags TEXT); CREATE TABLE metrics (x); "
                "PRAGMA user_version = 1;");
  EXPECT_THAT([&] { Store s(path); }, ::testing::ThrowsMessage<Error>(HasSubstr("schema version 2")));
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &s, nullptr);
  ASSERT_EQ(sqlite3_step(s), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(s, 0), 1);
  sqlite3_finalize(s);
  sqlite3_close(db);
}

}  // namespace
}  // namespace kvlab::results
