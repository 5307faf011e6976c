// What the results store holds: a run (one invocation of analyze/compress/eval/… with its
// provenance), its metric rows and its analysis matrices. Plain values, no database here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvlab::results {

using RunId = std::int64_t;  // the row id in one database file (not stable across files: see RunInfo::uuid)

enum class RunKind { analyze, compress, eval, other };
std::string_view to_string(RunKind kind);
RunKind parse_run_kind(std::string_view text);  // throws naming the text and the allowed kinds

// What a metric row describes: the whole run, one layer, one task, or one sample.
enum class Scope { run, layer, task, sample };
std::string_view to_string(Scope scope);
Scope parse_scope(std::string_view text);

// A run's identity and provenance. Everything a reader needs to reproduce the run.
struct RunInfo {
  // Stable identity across database files: merging shards matches runs by it. Empty: a
  // random UUID is drawn when the run is written; imports use a hash of the imported file
  // so that importing the same file twice is a no-op.
  std::string uuid;
  RunKind kind = RunKind::other;
  std::string created;  // ISO 8601 UTC, "2025-01-31T12:00:00Z"; empty: now
  std::string kvlab_version;
  std::string revision;  // git revision of the kvlab build
  std::string command_line;
  std::string host;
  std::string device;             // "cpu", "cuda:0 NVIDIA H100", … ("" unknown)
  std::vector<std::uint64_t> seeds;
  std::string model, model_hash;  // checkpoint / model id and its content hash ("" unknown)
  std::string dump, dump_hash;    // KV dump path and its content hash ("" unknown)
  std::string status = "ok";      // "ok" for completed runs; writers may record "failed"
  std::vector<std::string> tags;  // free labels (schema v2)
  std::string notes;              // free text (schema v2)
  nlohmann::json provenance = nlohmann::json::object();  // everything else, verbatim
};

// A stored run: its provenance and its row id in this database.
struct Run : RunInfo {
  RunId id = 0;
};

// One metric value. Values are finite: a writer drops NaN/∞ (an undefined metric, e.g. the
// attention error of a dump without a query window, is absent rather than NaN).
struct Metric {
  std::string method;  // canonical compressor spec; for analysis runs the KV kind ("key"/"value")
  Scope scope = Scope::run;
  int layer = -1;       // scope layer: the layer index (−1: none)
  std::string task;     // scope task and sample: the task ("" none)
  std::string sample;   // scope sample: the sample id
  std::string name;     // "key_error", "compression_ratio", "accuracy", …
  double value = 0;
};

// An analysis matrix (cosine, CKA, …), row-major; NaN allowed (undefined entries).
struct Matrix {
  std::string name;  // "key.cka", "value.token_cosine", "key.head_token_cosine.3", …
  std::int64_t rows = 0, cols = 0;
  std::vector<double> data;  // [rows, cols]
};

}  // namespace kvlab::results
