// Every run lands in the results store (results/, `--db`, default ./kvlab-results.sqlite): the
// report a command just wrote, recorded in one transaction, so `kvlab results`, `compare` and
// `check` see it. An empty path records nothing (`--db ''`).
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace kvlab::cli {

// `report` is the document written to `origin` (compress.json or analysis.json). `uuid` names the
// run (a sweep cell's id); empty: a fresh random one. Each returns the run's id in `db` (0: none).
std::int64_t record_compress(const std::filesystem::path& db, const nlohmann::json& report, const std::filesystem::path& origin,
                             const std::string& device, const std::string& uuid = {});
std::int64_t record_analysis(const std::filesystem::path& db, const nlohmann::json& report, const std::filesystem::path& origin,
                             const std::string& device, const std::string& uuid = {});
// Takes eval.json's document (harness/eval_job.h) and records per method the run means (agreement,
// exact_match, answer_kl, compression_ratio, bytes) and per sample agreement, exact_match and
// answer_kl, so `check` can bootstrap over samples.
std::int64_t record_eval(const std::filesystem::path& db, const nlohmann::json& report, const std::string& uuid = {});

}  // namespace kvlab::cli
