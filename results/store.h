// The results store: one SQLite file (default ./kvlab-results.sqlite) holding every run of
// analyze/compress/eval with its provenance, metric rows and analysis matrices.
//
// Writing a run: a RunWriter buffers the rows in memory and commit() writes the run and all
// its rows in one transaction. Nothing touches the file before commit(), so a run that
// throws or is killed half-way leaves no trace, and no lock is held while the work runs.
//
//   results::Store store("kvlab-results.sqlite");
//   auto writer = store.begin_run(results::current_run_info(results::RunKind::compress, cmdline));
//   writer.add_metric(spec, "key_error", 0.12);               // whole run, per method
//   writer.add_layer_metric(spec, layer, "key_error", 0.15);  // per layer
//   writer.add_matrix({"key.cka", L, L, data});
//   const results::RunId id = writer.commit();
//
// Concurrency: WAL mode and a busy timeout, so several processes (sweep shards) may write to
// one file; each commit waits for the write lock instead of failing.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "results/records.h"

namespace kvlab::results {

namespace sql {
class Database;
}

inline constexpr const char* kDefaultDatabase = "kvlab-results.sqlite";

class Store;

// Collects one run's rows; commit() writes them atomically. Move-only; it refers to its
// Store, which must outlive it (and not be moved while it is open).
class RunWriter {
 public:
  RunWriter(Store& store, RunInfo info);
  RunWriter(RunWriter&&) noexcept = default;
  RunWriter& operator=(RunWriter&&) = delete;
  ~RunWriter() = default;  // uncommitted rows are dropped: nothing was written

  RunInfo& info() { return info_; }

  // Adds one metric row; a non-finite value is dropped (see Metric).
  void add_metric(Metric metric);
  // Shorthands: a whole-run metric of `method`, and a per-layer one.
  void add_metric(const std::string& method, const std::string& name, double value);
  void add_layer_metric(const std::string& method, int layer, const std::string& name, double value);
  // A per-sample value (accuracy 0/1, a task score): what `kvlab check` bootstraps over.
  void add_sample_metric(const std::string& method, const std::string& task, const std::string& sample,
                         const std::string& name, double value);
  void add_matrix(Matrix matrix);

  std::size_t metric_count() const { return metrics_.size(); }

  // Writes the run and its rows in one transaction and returns its id. On failure (a
  // duplicate metric identity, a uuid already stored, disk full) nothing is written and
  // kvlab::Error names the run and the cause. A writer commits at most once.
  RunId commit();

 private:
  Store* store_;
  RunInfo info_;
  std::vector<Metric> metrics_;
  std::vector<Matrix> matrices_;
  bool committed_ = false;
};

// Which metric rows to read; empty fields match everything.
struct MetricFilter {
  std::optional<Scope> scope;
  std::string method;
  std::string name;
};

// What one run holds, for listings.
struct RunTotals {
  std::int64_t methods = 0, metrics = 0, matrices = 0;
};

struct StoreCounts {
  std::int64_t runs = 0, metrics = 0, matrices = 0;
};

class Store {
 public:
  // Opens `path`, creating it unless `must_exist` (then a missing file is an error naming
  // it), and migrates it to kSchemaVersion.
  explicit Store(const std::filesystem::path& path, bool must_exist = false);
  ~Store();
  Store(Store&&) noexcept;
  Store& operator=(Store&&) noexcept;

  const std::filesystem::path& path() const { return path_; }
  int schema_version() const;

  RunWriter begin_run(RunInfo info) { return RunWriter(*this, std::move(info)); }
  // begin_run + fill + commit: if `fill` throws, nothing is written and the error propagates.
  RunId write_run(RunInfo info, const std::function<void(RunWriter&)>& fill);

  // Runs oldest first, optionally of one kind.
  std::vector<Run> runs(std::optional<RunKind> kind = std::nullopt) const;
  std::optional<Run> find_run(RunId id) const;
  std::optional<Run> find_uuid(const std::string& uuid) const;
  // Resolves what a user typed: a run id ("12"), "latest" (of `kind` if given), or a uuid
  // or a unique uuid prefix (≥ 4 characters). Throws naming the reference and this file.
  Run resolve(const std::string& ref, std::optional<RunKind> kind = std::nullopt) const;

  // Rows ordered by method, scope, task, layer, sample, name (stable across runs).
  std::vector<Metric> metrics(RunId run, const MetricFilter& filter = {}) const;
  std::vector<Matrix> matrices(RunId run) const;
  RunTotals totals(RunId run) const;
  StoreCounts counts() const;

  // The raw connection, for tests and maintenance.
  sql::Database& database() const { return *db_; }

 private:
  friend class RunWriter;
  RunId insert(const RunInfo& info, const std::vector<Metric>& metrics, const std::vector<Matrix>& matrices);

  std::filesystem::path path_;
  std::unique_ptr<sql::Database> db_;
};

// A RunInfo for a run starting now in this process: a random uuid, the current UTC time,
// this build's version and git revision, the host name, and `command_line`.
RunInfo current_run_info(RunKind kind, const std::string& command_line);

// "2025-01-31T12:00:00Z" for now (or a given time).
std::string utc_timestamp();
std::string utc_timestamp(std::filesystem::file_time_type time);

// A random RFC 4122 version-4 UUID.
std::string random_uuid();

}  // namespace kvlab::results
