// Turning the JSON reports of `kvlab compress` (DIR/compress.json) and `kvlab analyze`
// (DIR/analysis.json) into runs of the store.
//
// Metric rows of a compress report, per canonical spec (Metric::method):
//   run scope    key_error, value_error, attn_output_error, attn_kl, kept_fraction, bytes,
//                dense_fp16_bytes, compression_ratio, authors_ratio (when the method has its
//                own formula), compress_seconds, score_seconds
//   layer scope  key_error, value_error, attn_output_error, attn_kl, kept_fraction
// Metric rows of an analysis report, per KV kind (Metric::method = "key" | "value"):
//   run scope    token_cosine_adjacent, channel_cosine_adjacent, cka_adjacent (mean of the first
//                off-diagonal: layer l vs l+1), eigen_rank_fraction_g{G}_e{E} (mean over the
//                groups), min_kept_sigma_ratio, zero_rows, analysis_seconds
//   layer scope  token_cosine_next, channel_cosine_next, cka_next (layer l vs l+1, at l) and
//                eigen_rank_fraction_g{G}_e{E} of the group starting at that layer
//   matrices     {kind}.token_cosine, {kind}.channel_cosine, {kind}.cka [L, L] and
//                {kind}.head_token_cosine.{h} [L, L] per KV head (null entries become NaN)
// JSON nulls (undefined values) produce no row.
#pragma once

#include <filesystem>
#include <vector>

#include <nlohmann/json.hpp>

#include "results/store.h"

namespace kvlab::results {

// Adds the rows of a parsed report to a writer: what the compress/analyze code calls when it
// records straight into the store. `origin` names the document in error messages.
void add_compress_report(RunWriter& writer, const nlohmann::json& report, const std::string& origin);
void add_analysis_report(RunWriter& writer, const nlohmann::json& report, const std::string& origin);

// The provenance of a parsed report (kind, version, revision, command line, dump, model, and
// the report's "input" and shape verbatim). uuid and created are left to the caller.
RunInfo compress_run_info(const nlohmann::json& report);
RunInfo analysis_run_info(const nlohmann::json& report);

// Imports one file. The run's uuid is a hash of the file's bytes, so importing the same
// report again returns the run already stored and writes nothing. created = the file's mtime.
RunId import_compress_json(Store& store, const std::filesystem::path& path);
RunId import_analysis_json(Store& store, const std::filesystem::path& path);

struct Imported {
  std::filesystem::path source;
  RunKind kind = RunKind::other;
  RunId run = 0;
  bool added = false;  // false: the same report was already in the store
};

// A report file (recognised by its content) or a directory holding compress.json and/or
// analysis.json. Throws naming the path when it is neither.
std::vector<Imported> import_path(Store& store, const std::filesystem::path& path);

// A uuid-shaped 128-bit content hash (two FNV-1a-64 passes, core/fnv1a.h: the bytes from the
// usual basis, the reversed bytes from another). Stable across machines and builds: it
// identifies imported runs (results/stable_ids_test.cpp pins it).
std::string content_uuid(std::string_view bytes);

}  // namespace kvlab::results
