// The analyze job shared by `kvlab analyze` and `kvlab demo`: open the dump, analyse the
// requested kinds, write the report, return the summary.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kvlab::cli {

struct AnalyzeRequest {
  std::filesystem::path dump;
  std::string sample;  // empty: the first sample
  std::string kind = "both";
  std::vector<int> groups{1, 2, 4, 8};
  bool groups_given = false;  // user-given sizes must fit the model; defaults are clipped to it
  std::vector<double> energies{0.9, 0.95, 0.99};
  std::string precision = "f32";
  std::int64_t token_block = 2048;
  bool cosine_only = false;
  int threads = 0;
  std::string device = "cpu";  // linalg backend: cpu | cuda
  std::filesystem::path db = "kvlab-results.sqlite";  // results store ("" records nothing)
  std::filesystem::path out;  // empty: "<dump>.analysis"
  bool force = false;         // replace `out` when it already holds files (else an error)
};

struct AnalyzeOutcome {
  std::filesystem::path out;
  std::string summary;
  std::int64_t run = 0;  // its id in the results store (0: not recorded)
};

AnalyzeOutcome run_analyze(const AnalyzeRequest& request);

}  // namespace kvlab::cli
