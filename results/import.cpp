#include "results/import.h"

#include <cmath>
#include <limits>
#include <set>

#include "core/error.h"
#include "core/fnv1a.h"
#include "core/read_file.h"
#include "results/metrics.h"

namespace kvlab::results {

namespace {

using json = nlohmann::json;
namespace n = metric_name;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();


json parse(const std::string& text, const std::filesystem::path& path) {
  auto doc = json::parse(text, nullptr, false);
  if (doc.is_discarded()) fail("{} is not valid JSON", path.string());
  return doc;
}

// A number from a report field: NaN when absent or null (then no row is written).
double number(const json& object, const char* key) {
  if (!object.is_object()) return kNaN;
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return kNaN;
  if (!it->is_number()) fail("field '{}' is {}, not a number", key, it->type_name());
  return it->get<double>();
}

std::string text(const json& object, const char* key) {
  if (!object.is_object()) return "";
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

const json& require(const json& object, const char* key, const std::string& origin, const char* what) {
  if (!object.is_object() || !object.contains(key)) fail("{}: no \"{}\" ({})", origin, key, what);
  return object.at(key);
}

Matrix matrix_from_json(const std::string& name, const json& rows, const std::string& origin) {
  if (!rows.is_array()) fail("{}: matrix '{}' is not an array of rows", origin, name);
  Matrix m{name, static_cast<std::int64_t>(rows.size()), rows.empty() ? 0 : static_cast<std::int64_t>(rows[0].size()), {}};
  for (const auto& row : rows) {
    if (!row.is_array() || static_cast<std::int64_t>(row.size()) != m.cols)
      fail("{}: matrix '{}' has rows of different lengths", origin, name);
    for (const auto& v : row) m.data.push_back(v.is_number() ? v.get<double>() : kNaN);
  }
  return m;
}

// Mean of the first off-diagonal, and the entries themselves: the adjacent-layer figures.
double adjacent_mean(const Matrix& m) {
  double sum = 0;
  int n = 0;
  for (std::int64_t l = 0; l + 1 < m.rows && l + 1 < m.cols; ++l) {
    const double v = m.data[static_cast<std::size_t>(l * m.cols + l + 1)];
    if (std::isfinite(v)) sum += v, ++n;
  }
  return n ? sum / n : kNaN;
}

// The eigenvalue spectra of one group size as one matrix "<kind>.spectrum.g<G>": a row per group
// (in first-layer order), its G·H·D eigenvalues descending. Absent in reports written before
// spectra were recorded.
void add_spectra(RunWriter& writer, const std::string& kind, int group_size, const json& groups, const std::string& origin) {
  json rows = json::array();
  for (const auto& group : groups)
    if (group.contains("spectrum")) rows.push_back(group["spectrum"]);
  if (rows.empty()) return;
  writer.add_matrix(matrix_from_json(fmt::format("{}.spectrum.g{}", kind, group_size), rows, origin));
}

RunInfo common_info(const json& input, RunKind kind) {
  RunInfo info;
  info.kind = kind;
  info.kvlab_version = text(input, "kvlab_version");
  info.revision = text(input, "git_revision");
  info.command_line = text(input, "command_line");
  info.dump = text(input, "dump");
  info.dump_hash = text(input, "dump_hash");
  info.model_hash = text(input, "model_hash");
  return info;
}

RunId import_file(Store& store, const std::filesystem::path& path, RunKind kind, bool* added) {
  const std::string bytes = core::read_file(path, "report");
  const json doc = parse(bytes, path);
  const std::string uuid = content_uuid(bytes);
  if (auto existing = store.find_uuid(uuid)) {
    if (added) *added = false;
    return existing->id;
  }
  RunInfo info = kind == RunKind::compress ? compress_run_info(doc) : analysis_run_info(doc);
  info.uuid = uuid;
  std::error_code ec;
  const auto mtime = std::filesystem::last_write_time(path, ec);
  info.created = ec ? utc_timestamp() : utc_timestamp(mtime);
  info.provenance["imported_from"] = std::filesystem::absolute(path).lexically_normal().string();
  info.provenance["imported_at"] = utc_timestamp();
  const RunId id = store.write_run(std::move(info), [&](RunWriter& w) {
    if (kind == RunKind::compress) add_compress_report(w, doc, path.string());
    else add_analysis_report(w, doc, path.string());
  });
  if (added) *added = true;
  return id;
}

}  // namespace

// ---- compress ----------------------------------------------------------------------------

RunInfo compress_run_info(const json& report) {
  const json& input = report.contains("input") ? report["input"] : json::object();
  RunInfo info = common_info(input, RunKind::compress);
  info.model = text(input, "model");
  if (info.model.empty()) info.model = text(input, "model_id");  // scored on a dump: the model it came from
  info.provenance = {{"report", "compress.json"}, {"input", input}};
  for (const char* key : {"shape", "rope"})
    if (report.contains(key)) info.provenance[key] = report[key];
  return info;
}

void add_compress_report(RunWriter& writer, const json& report, const std::string& origin) {
  const json& methods = require(report, "methods", origin, "not a compress.json written by `kvlab compress`");
  if (!methods.is_array()) fail("{}: \"methods\" is not an array", origin);
  std::set<std::string> seen;
  json typed = json::object(), notes = json::object();
  for (const auto& m : methods) {
    const std::string spec = text(m, "spec");
    if (spec.empty()) fail("{}: a method entry has no \"spec\"", origin);
    // The same canonical spec given twice (typed two ways) scores identically: keep the first.
    if (!seen.insert(spec).second) continue;
    try {
      // compress.json's keys are the metric names.
      for (const char* key : {n::key_error, n::value_error, n::attn_output_error, n::attn_kl, n::kept_fraction, n::bytes,
                              n::loaded_bytes_per_step, n::dense_fp16_bytes, n::compression_ratio})
        writer.add_metric(spec, key, number(m, key));
      if (m.contains("notes")) writer.add_metric(spec, n::authors_ratio, number(m["notes"], n::authors_ratio));
      if (m.contains("seconds")) {
        writer.add_metric(spec, n::compress_seconds, number(m["seconds"], "compress"));
        writer.add_metric(spec, n::score_seconds, number(m["seconds"], "score"));
      }
      const json& layers = m.contains("layers") ? m["layers"] : json::array();
      for (std::size_t l = 0; l < layers.size(); ++l)
        for (const char* key : {n::key_error, n::value_error, n::attn_output_error, n::attn_kl, n::kept_fraction})
          writer.add_layer_metric(spec, static_cast<int>(l), key, number(layers[l], key));
    } catch (const Error& e) {
      fail("{}: method '{}': {}", origin, spec, e.what());
    }
    typed[spec] = text(m, "typed");
    if (m.contains("notes")) notes[spec] = m["notes"];
  }
  writer.info().provenance["typed"] = typed;
  writer.info().provenance["notes"] = notes;
}

// ---- analysis ----------------------------------------------------------------------------

RunInfo analysis_run_info(const json& report) {
  const json& input = report.contains("input") ? report["input"] : json::object();
  RunInfo info = common_info(input, RunKind::analyze);
  info.model = text(input, "model_id");
  info.provenance = {{"report", "analysis.json"}, {"input", input}};
  return info;
}

void add_analysis_report(RunWriter& writer, const json& report, const std::string& origin) {
  const json& kinds = require(report, "kinds", origin, "not an analysis.json written by `kvlab analyze`");
  if (!kinds.is_object()) fail("{}: \"kinds\" is not an object", origin);
  for (const auto& [kind, r] : kinds.items()) {
    const std::string where = fmt::format("{}: kind '{}'", origin, kind);
    try {
      for (const char* name : {"token_cosine", "channel_cosine", "cka"}) {
        if (!r.contains(name)) continue;
        Matrix m = matrix_from_json(kind + "." + name, r[name], where);
        const std::string base = name;
        writer.add_metric(kind, base + "_adjacent", adjacent_mean(m));
        for (std::int64_t l = 0; l + 1 < m.rows && l + 1 < m.cols; ++l)
          writer.add_layer_metric(kind, static_cast<int>(l), base + "_next",
                                  m.data[static_cast<std::size_t>(l * m.cols + l + 1)]);
        writer.add_matrix(std::move(m));
      }
      if (r.contains("head_token_cosine"))
        for (std::size_t h = 0; h < r["head_token_cosine"].size(); ++h)
          writer.add_matrix(
              matrix_from_json(fmt::format("{}.head_token_cosine.{}", kind, h), r["head_token_cosine"][h], where));
      const auto energies = r.value("energies", std::vector<double>{});
      for (const auto& entry : r.value("eigen_rank", json::array())) {
        const int g = entry.at("group_size").get<int>();
        const auto means = entry.value("mean_rank_fraction", std::vector<json>{});
        for (std::size_t e = 0; e < energies.size() && e < means.size(); ++e) {
          const std::string name = fmt::format("eigen_rank_fraction_g{}_e{:g}", g, energies[e]);
          writer.add_metric(kind, name, means[e].is_number() ? means[e].get<double>() : kNaN);
          for (const auto& group : entry.value("groups", json::array())) {
            const auto fractions = group.value("rank_fraction", std::vector<json>{});
            if (e < fractions.size() && fractions[e].is_number())
              writer.add_layer_metric(kind, group.at("first_layer").get<int>(), name, fractions[e].get<double>());
          }
        }
        add_spectra(writer, kind, g, entry.value("groups", json::array()), where);
      }
      writer.add_metric(kind, n::min_kept_sigma_ratio, number(r, n::min_kept_sigma_ratio));
      writer.add_metric(kind, n::zero_rows, number(r, n::zero_rows));
      writer.add_metric(kind, n::analysis_seconds, number(r, "seconds"));
    } catch (const json::exception& e) {
      fail("{}: {}", where, e.what());
    } catch (const Error& e) {
      fail("{}: {}", where, e.what());
    }
    json about = json::object();
    for (const char* key : {"shape", "energies", "timings", "cka_note", "channel_cosine_note", "token_cosine_note"})
      if (r.contains(key)) about[key] = r[key];
    writer.info().provenance["kinds"][kind] = about;
  }
}

// ---- files -------------------------------------------------------------------------------

RunId import_compress_json(Store& store, const std::filesystem::path& path) {
  return import_file(store, path, RunKind::compress, nullptr);
}

RunId import_analysis_json(Store& store, const std::filesystem::path& path) {
  return import_file(store, path, RunKind::analyze, nullptr);
}

std::vector<Imported> import_path(Store& store, const std::filesystem::path& path) {
  std::vector<Imported> out;
  auto one = [&](const std::filesystem::path& file) {
    const json doc = parse(core::read_file(file, "report"), file);
    RunKind kind;
    if (doc.is_object() && doc.contains("methods")) kind = RunKind::compress;
    else if (doc.is_object() && doc.contains("kinds")) kind = RunKind::analyze;
    else fail("{} is neither a compress.json (\"methods\") nor an analysis.json (\"kinds\") report", file.string());
    Imported imported{file, kind, 0, false};
    imported.run = import_file(store, file, kind, &imported.added);
    out.push_back(imported);
  };
  if (std::filesystem::is_directory(path)) {
    for (const char* name : {"analysis.json", "compress.json"})
      if (std::filesystem::exists(path / name)) one(path / name);
    if (out.empty()) fail("{} holds neither compress.json nor analysis.json", path.string());
  } else if (std::filesystem::exists(path)) {
    one(path);
  } else {
    fail("{} does not exist", path.string());
  }
  return out;
}

std::string content_uuid(std::string_view bytes) {
  const std::uint64_t a = core::fnv1a64(bytes);
  // The second half: FNV-1a of the reversed bytes from another basis, so the two halves are
  // independent hashes (stored uuids depend on this exact basis).
  const std::string reversed(bytes.rbegin(), bytes.rend());
  const std::uint64_t b = core::fnv1a64_update(core::kFnv1a64Offset ^ 0x9E3779B97F4A7C15ULL, reversed);
  return fmt::format("{:08x}-{:04x}-{:04x}-{:04x}-{:012x}", a >> 32, (a >> 16) & 0xFFFF, a & 0xFFFF, b >> 48,
                     b & 0xFFFFFFFFFFFFULL);
}

}  // namespace kvlab::results
