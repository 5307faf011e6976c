// The compress job shared by `kvlab compress` and `kvlab demo`: score compressor specs (and
// sweeps) on one sample of a dump, write DIR/compress.json, methods.csv and layers.csv.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace kvlab::cli {

struct CompressRequest {
  std::filesystem::path dump;
  std::string sample;               // empty: the first sample
  std::vector<std::string> methods;  // specs as typed; each may sweep (rk=64..512:64)
  std::filesystem::path model;      // the dump's checkpoint: weight-based methods (commonkv), methods that run it (kvzip)
  int threads = 0;
  std::string device = "cpu";  // linalg backend: cpu | cuda
  std::filesystem::path db = "kvlab-results.sqlite";  // results store ("" records nothing)
  std::filesystem::path out;  // empty: "<dump>.compress"
  bool force = false;         // replace `out` when it already holds files (else an error)
};

struct CompressOutcome {
  std::filesystem::path out;
  std::string summary;  // a table: one line per concrete spec
  nlohmann::json report;  // what was written to compress.json
  std::int64_t run = 0;   // its id in the results store (0: not recorded)
};

CompressOutcome run_compress(const CompressRequest& request);
// Everything run_compress checks before it computes (specs, dump, sample, checkpoint, what the
// methods need), for `sweep run --dry-run`.
void check_compress(const CompressRequest& request);

}  // namespace kvlab::cli
