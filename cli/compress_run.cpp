#include "cli/compress_run.h"

#include "cli/record_run.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "cli/commands.h"
#include "cli/output_dir.h"
#include "compressors/chain.h"
#include "compressors/live_model.h"
#include "compressors/score.h"
#include "core/atomic_file.h"
#include "core/content_hash.h"
#include "core/error.h"
#include "linalg/cpu/blas_core.h"
#include "linalg/select_backend.h"
#include "core/progress.h"
#include "core/safetensors.h"
#include "core/version.h"
#include "core/stopwatch.h"
#ifdef KVLAB_HAVE_HARNESS
#include "harness/dump_live_model.h"
#endif

namespace kvlab::cli {

namespace {

using Clock = std::chrono::steady_clock;
using core::seconds_since;

std::string csv_number(const nlohmann::json& v) {
  if (v.is_null()) return "";
  if (v.is_number_float()) return fmt::format("{:.6g}", v.get<double>());
  return v.dump();
}

struct Row {
  std::string typed, canonical;
  compressors::Score score;
  nlohmann::json notes;
  double compress_seconds = 0, score_seconds = 0;
};

std::string summary_table(const std::vector<Row>& rows) {
  // Numbers first, the full canonical spec last: specs are long and must not be cut.
  std::string out = fmt::format("{:>8} {:>9} {:>9} {:>9} {:>9}  {}\n", "ratio", "K err", "V err", "attn err",
                                "attn KL", "method (canonical spec)");
  auto cell = [](double x) { return std::isfinite(x) ? fmt::format("{:9.4f}", x) : fmt::format("{:>9}", "-"); };
  for (const auto& r : rows)
    out += fmt::format("{:>7.2f}x {} {} {} {}  {}\n", r.score.ratio, cell(r.score.key_error), cell(r.score.value_error),
                       cell(r.score.attn_output_error), cell(r.score.attn_kl), r.canonical);
  out += "K/V err: relative Frobenius error on kept cells; attn err/KL: over the dumped query window (RoPE at\n"
         "true positions); ratio: 16-bit dense bytes / bytes stored.\n";
  // Methods that select per decode query (quest) store everything but read part of it a step.
  for (const auto& r : rows)
    if (r.score.loaded_bytes < static_cast<double>(r.score.bytes))
      out += fmt::format("{}: loads {:.0f} of its {} stored bytes per decode step ({:.1f}%, dense/loaded {:.2f}x)\n",
                         r.canonical, r.score.loaded_bytes, r.score.bytes,
                         100.0 * r.score.loaded_bytes / static_cast<double>(r.score.bytes),
                         static_cast<double>(r.score.dense_bytes) / r.score.loaded_bytes);
  return out;
}

// What a compress run reads, opened and checked before any work: a typo in a spec, a missing
// sample or a method the dump cannot feed fails in milliseconds, not after an hour.
struct CompressInputs {
  std::vector<std::vector<compressors::ChainSpec>> grids;  // per --method, its sweep expanded
  std::unique_ptr<core::DumpReader> dump;
  std::string sample;
  std::unique_ptr<compressors::DumpCache> cache;  // streams from `dump`
  std::optional<core::Checkpoint> checkpoint;
};

CompressInputs open_inputs(const CompressRequest& req) {
  if (req.methods.empty()) fail("compress: give at least one --method SPEC (see kvlab compress --help)");
  CompressInputs in;
  for (const auto& m : req.methods) in.grids.push_back(compressors::expand_sweep(m));
  check_dump_path(req.dump);
  in.dump = std::make_unique<core::DumpReader>(req.dump);
  in.sample = choose_sample(*in.dump, req.sample);
  in.cache = std::make_unique<compressors::DumpCache>(*in.dump, in.sample);
  if (!req.model.empty()) in.checkpoint.emplace(req.model);
  // What the methods need (their registry entries).
  for (const auto& grid : in.grids)
    for (const auto& stage : grid.front().stages) {
      const auto& needs = compressors::method(stage.method).needs;
      if (needs.checkpoint && req.model.empty())
        fail("compress: {} needs the model's weights: give --model DIR, the checkpoint the dump came from", stage.method);
      if (needs.live_model && req.model.empty())
        fail("compress: {} runs the model while compressing: give --model DIR, the checkpoint the dump came from (or "
             "use it in `kvlab eval`)",
             stage.method);
      if (needs.live_model && in.dump->sample(in.sample).tokens.empty())
        fail("compress: {} runs the model on the dumped tokens, and {} sample {} holds none (a synthetic dump?)",
             stage.method, req.dump.string(), in.sample);
#ifndef KVLAB_HAVE_HARNESS
      if (needs.live_model) fail("compress: {} runs the model, and this build has no harness (libtorch)", stage.method);
#endif
      if (needs.attention_inputs && in.cache->shape().d_model == 0)
        fail("compress: {} needs each layer's attention input, which {} does not hold: dump it with --attn-in",
             stage.method, req.dump.string());
    }
  return in;
}

}  // namespace

void check_compress(const CompressRequest& request) { open_inputs(request); }

CompressOutcome run_compress(const CompressRequest& req) {
  CompressInputs in = open_inputs(req);
  const auto& grids = in.grids;
  const auto& dump = *in.dump;
  const auto& sample = in.sample;
  auto& cache = *in.cache;
  auto& checkpoint = in.checkpoint;
  OutputDir out(req.out.empty() ? std::filesystem::path(req.dump.string() + ".compress") : req.out, req.force);
  auto& backend = linalg::backend_for(req.device, req.threads);
  // The model itself, for methods that run it (kvzip), over the dumped cache.
  std::unique_ptr<compressors::LiveModel> live;
#ifdef KVLAB_HAVE_HARNESS
  for (const auto& grid : grids)
    for (const auto& stage : grid.front().stages)
      if (!live && compressors::method(stage.method).needs.live_model)
        live = harness::live_model_for_dump(req.model, dump, sample);
#endif
  const compressors::CompressContext ctx{cache, backend, checkpoint ? &*checkpoint : nullptr, live.get()};

  std::vector<Row> rows;
  for (std::size_t i = 0; i < grids.size(); ++i) {
    // Eviction, full and quantizer chains go one layer at a time: memory is one layer's compressed
    // form (the whole compressed cache of a 128k-token dump would not fit), same figures.
    if (std::all_of(grids[i].begin(), grids[i].end(), compressors::layer_local)) {
      for (const auto& chain : grids[i]) {
        Row row{req.methods[i], chain.to_string(), {}, nlohmann::json::object(), 0, 0};
        core::Progress progress(fmt::format("compressing and scoring {}", row.canonical), cache.shape().layers);
        const auto t0 = Clock::now();
        row.score = compressors::compress_and_score_by_layer(ctx, chain, [&](int, int) { progress.advance(); },
                                                             &row.compress_seconds, &row.notes);
        row.score_seconds = seconds_since(t0) - row.compress_seconds;
        rows.push_back(std::move(row));
      }
      continue;
    }
    const auto t0 = Clock::now();
    auto compressed = compressors::compress_sweep(ctx, grids[i]);
    const double per_variant = seconds_since(t0) / static_cast<double>(grids[i].size());
    for (std::size_t v = 0; v < grids[i].size(); ++v) {
      Row row{req.methods[i], grids[i][v].to_string(), {}, compressed[v]->notes(), per_variant, 0};
      core::Progress progress(fmt::format("scoring {}", row.canonical), cache.shape().layers);
      const auto t1 = Clock::now();
      row.score = compressors::score(cache, *compressed[v], backend, [&](int, int) { progress.advance(); });
      row.score_seconds = seconds_since(t1);
      compressed[v].reset();  // free its stored tensors before the next variant is scored
      rows.push_back(std::move(row));
    }
  }

  const auto& s = cache.shape();
  nlohmann::json doc = {
      {"input", {{"dump", req.dump.string()}, {"dump_hash", core::file_hash(req.dump)}, {"sample", sample},
                 {"model", req.model.string()}, {"model_id", dump.info().model_id}, {"model_hash", req.model.empty() ? dump.info().model_hash : core::checkpoint_hash(req.model)},
                 {"command_line", command_line()}, {"kvlab_version", kVersion}, {"git_revision", kGitRevision},
                 {"device", req.device}, {"blas", linalg::blas::summary()}}},
      {"shape", {{"layers", s.layers}, {"kv_heads", s.kv_heads}, {"q_heads", s.q_heads}, {"head_dim", s.head_dim},
                 {"tokens", s.tokens}, {"query_window", s.query_window}}},
      {"rope", compressors::describe_ropes(cache)},
      {"methods", nlohmann::json::array()}};
  std::string methods_csv =
      "spec,typed,bytes,compression_ratio,authors_ratio,key_error,value_error,attn_output_error,attn_kl,"
      "kept_fraction,compress_seconds,score_seconds\n";
  std::string layers_csv = "spec,layer,key_error,value_error,attn_output_error,attn_kl,kept_fraction\n";
  for (const auto& r : rows) {
    auto j = compressors::to_json(r.score);
    j["spec"] = r.canonical;
    j["typed"] = r.typed;
    j["notes"] = r.notes;
    j["seconds"] = {{"compress", r.compress_seconds}, {"score", r.score_seconds}};
    const auto authors = r.notes.contains("authors_ratio") ? r.notes["authors_ratio"] : nlohmann::json(nullptr);
    methods_csv += fmt::format("\"{}\",\"{}\",{},{},{},{},{},{},{},{},{:.3f},{:.3f}\n", r.canonical, r.typed,
                               r.score.bytes, csv_number(j["compression_ratio"]), csv_number(authors),
                               csv_number(j["key_error"]), csv_number(j["value_error"]),
                               csv_number(j["attn_output_error"]), csv_number(j["attn_kl"]),
                               csv_number(j["kept_fraction"]), r.compress_seconds, r.score_seconds);
    for (std::size_t l = 0; l < j["layers"].size(); ++l) {
      const auto& L = j["layers"][l];
      layers_csv += fmt::format("\"{}\",{},{},{},{},{},{}\n", r.canonical, l, csv_number(L["key_error"]),
                                csv_number(L["value_error"]), csv_number(L["attn_output_error"]),
                                csv_number(L["attn_kl"]), csv_number(L["kept_fraction"]));
    }
    doc["methods"].push_back(std::move(j));
  }
  core::write_file_atomic(out.staging() / "compress.json", doc.dump(1) + "\n");
  core::write_file_atomic(out.staging() / "methods.csv", methods_csv);
  core::write_file_atomic(out.staging() / "layers.csv", layers_csv);
  out.commit();
  const auto run = record_compress(req.db, doc, out.path() / "compress.json", req.device);
  return {out.path(), summary_table(rows), std::move(doc), run};
}

}  // namespace kvlab::cli
