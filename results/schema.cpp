#include "results/schema.h"

#include "core/error.h"

namespace kvlab::results {

namespace {

// v1: runs, metrics, matrices. Absent layer/task/sample are NULL.
constexpr std::string_view kV1 = R"sql(
CREATE TABLE runs (
  id            INTEGER PRIMARY KEY,
  uuid          TEXT NOT NULL UNIQUE,
  kind          TEXT NOT NULL CHECK (kind IN ('analyze', 'compress', 'eval', 'other')),
  created       TEXT NOT NULL,
  kvlab_version TEXT NOT NULL DEFAULT '',
  revision      TEXT NOT NULL DEFAULT '',
  command_line  TEXT NOT NULL DEFAULT '',
  host          TEXT NOT NULL DEFAULT '',
  device        TEXT NOT NULL DEFAULT '',
  seeds         TEXT NOT NULL DEFAULT '[]',
  model         TEXT NOT NULL DEFAULT '',
  model_hash    TEXT NOT NULL DEFAULT '',
  dump          TEXT NOT NULL DEFAULT '',
  dump_hash     TEXT NOT NULL DEFAULT '',
  status        TEXT NOT NULL DEFAULT 'ok',
  provenance    TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE metrics (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  method TEXT NOT NULL DEFAULT '',
  scope  TEXT NOT NULL CHECK (scope IN ('run', 'layer', 'task', 'sample')),
  layer  INTEGER,
  task   TEXT,
  sample TEXT,
  name   TEXT NOT NULL,
  value  REAL NOT NULL
);
CREATE INDEX metrics_by_run ON metrics(run_id, method, name);
CREATE INDEX metrics_by_name ON metrics(name, scope);
CREATE TABLE matrices (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  name   TEXT NOT NULL,
  rows   INTEGER NOT NULL,
  cols   INTEGER NOT NULL,
  data   BLOB NOT NULL,
  PRIMARY KEY (run_id, name)
);
)sql";

// v2: tags and notes on runs (sweeps label their cells), runs listed by kind and time, and
// one row per metric identity: a writer that emits a metric twice is an error, not a
// silent duplicate that would skew means. NULLs are distinct in a UNIQUE index, hence ifnull.
constexpr std::string_view kV2 = R"sql(
ALTER TABLE runs ADD COLUMN tags  TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN notes TEXT NOT NULL DEFAULT '';
CREATE INDEX runs_by_kind ON runs(kind, created);
CREATE UNIQUE INDEX metrics_identity
  ON metrics(run_id, method, scope, ifnull(layer, -1), ifnull(task, ''), ifnull(sample, ''), name);
)sql";

}  // namespace

const std::vector<Migration>& migrations() {
  static const std::vector<Migration> steps{
      {1, "runs, metrics and matrices", kV1},
      {2, "run tags and notes; unique metric identity; runs by kind", kV2},
  };
  return steps;
}

void migrate(sql::Database& db) {
  // WAL: readers never block the writer and vice versa (sweep shards, a plot while a run
  // writes). The mode is persistent in the file; setting it again is a no-op.
  db.exec("PRAGMA journal_mode = WAL");
  // In WAL mode NORMAL is still safe against a crashed process (a commit is atomic); only a
  // power cut may lose the last commits. It saves an fsync per run written.
  db.exec("PRAGMA synchronous = NORMAL");
  db.exec("PRAGMA foreign_keys = ON");
  if (db.scalar("PRAGMA user_version") == kSchemaVersion) return;
  // Read the version inside the write transaction: two processes opening a fresh file at
  // once must not both create the tables.
  sql::Transaction tx(db);
  const int version = static_cast<int>(db.scalar("PRAGMA user_version"));
  if (version > kSchemaVersion)
    fail("results database {} has schema version {}, newer than this kvlab's {}; use a newer kvlab",
         db.path().string(), version, kSchemaVersion);
  for (const auto& step : migrations()) {
    if (step.to_version <= version) continue;
    try {
      db.exec(step.sql);
    } catch (const Error& e) {
      fail("results database {}: migration to schema version {} ({}) failed: {}", db.path().string(),
           step.to_version, step.why, e.what());
    }
  }
  db.exec(fmt::format("PRAGMA user_version = {}", kSchemaVersion));
  tx.commit();
}

}  // namespace kvlab::results
