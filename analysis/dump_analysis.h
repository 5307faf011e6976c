// Cross-layer analysis of a KV dump (core/kv_dump.h), streamed token block by token block,
// and its report: one JSON file plus CSV tables in an output directory.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "analysis/cross_layer.h"
#include "core/kv_dump.h"

namespace kvlab::analysis {

// Analyses one kind (key or value) of one sample.
CrossLayerResult analyze_dump(const core::DumpReader& dump, const std::string& sample_id, core::KvKind kind,
                              const AnalysisOptions& options, linalg::Backend& backend);

struct KindReport {
  core::KvKind kind;
  CrossLayerResult result;
  double seconds = 0;  // wall time of the analysis of this kind
};

// Writes DIR/analysis.json and, per kind, DIR/<kind>_{cka,token_cosine,channel_cosine}.csv
// ([L, L] with a header row), <kind>_head_token_cosine.csv (head, layer_i, layer_j, cosine),
// <kind>_eigen_rank.csv (group_size, first_layer, energy, rank, rank_fraction),
// <kind>_eigen_rank_mean.csv (group_size, energy, mean_rank_fraction) and <kind>_spectra.csv
// (group_size, first_layer, index, eigenvalue, cumulative_energy). Each file is written atomically.
// `context` is stored as the JSON's "input" (dump path, sample, options, command line).
// Returns the analysis.json document it wrote (for the results store).
nlohmann::json write_report(const std::filesystem::path& dir, const nlohmann::json& context, const std::vector<KindReport>& kinds);

// The JSON of one kind's result (matrices as nested arrays, NaN as null).
nlohmann::json to_json(const CrossLayerResult& result);

// A short human-readable summary: adjacent-layer similarity and mean eigen-rank fractions.
std::string summary_table(const std::vector<KindReport>& kinds);

}  // namespace kvlab::analysis
