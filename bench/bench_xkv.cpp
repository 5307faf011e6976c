// xkv on a KV dump, timed: the exact route (f64 and f32 Gram), the randomized route, and a
// rank sweep (one decomposition sliced at 8 ranks) against one rank alone. Prints per-group
// relative Frobenius errors and, given the reference's JSON (bench/reference/xkv_ref.py),
// their difference from the authors' torch.linalg.svd result. bench/README.md has the commands.
//
//   bench_xkv DUMP.h5 [--sample ID] [--threads N] [--device cpu|cuda] [--g 4] [--rk 384]
//             [--sweep 8] [--spec PARAMS]... [--ref ref.json] [--out result.json]
// --spec adds an xkv parameter string ("g=4,rk=384,solver=randomized"); without any, the three
// default variants run. Time includes reading the group's layers from the dump (reported
// separately as read_seconds from one plain pass).
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "compressors/cache_source.h"
#include "compressors/compressed.h"
#include "compressors/methods/low_rank.h"
#include "core/error.h"
#include "core/kv_dump.h"
#include "linalg/backend.h"
#include "linalg/select_backend.h"
#include "core/stopwatch.h"

using namespace kvlab;
using namespace kvlab::compressors;

namespace {

using kvlab::core::seconds_since;

// Per group and part, ‖X − X̂‖_F / ‖X‖_F over the group's layers (what xkv_ref.py reports).
nlohmann::json group_errors(const CacheSource& cache, const Compressed& rep, const std::vector<std::vector<int>>& groups) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& g : groups) {
    double err[2] = {0, 0}, norm[2] = {0, 0};
    for (int l : g) {
      const auto kv = rep.reconstruct(l);
      for (int p = 0; p < 2; ++p) {
        const auto x = cache.layer(l, p == 0 ? Part::key : Part::value);
        const auto& xh = p == 0 ? kv.key.data : kv.value.data;
        for (std::size_t i = 0; i < x.data.size(); ++i) {
          const double d = double(x.data[i]) - double(xh[i]);
          err[p] += d * d;
          norm[p] += double(x.data[i]) * double(x.data[i]);
        }
      }
    }
    out.push_back({{"layers", g},
                   {"key", norm[0] > 0 ? std::sqrt(err[0] / norm[0]) : 0.0},
                   {"value", norm[1] > 0 ? std::sqrt(err[1] / norm[1]) : 0.0}});
  }
  return out;
}

int run(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // a run killed at a time limit still shows its progress
  if (argc < 2) {
    std::cerr << "usage: bench_xkv DUMP.h5 [--sample ID] [--threads N] [--device cpu|cuda] [--g 4] [--rk 384] [--sweep 8] "
                 "[--spec PARAMS]... [--ref ref.json] [--out result.json]\n";
    return 2;
  }
  std::string dump_path = argv[1], sample, ref_path, out_path, device = "cpu";
  int threads = 0, g = 4, rk = 384, sweep = 8;
  std::vector<std::string> specs;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) fail("bench_xkv: option {} needs a value", a);
    const std::string v = argv[++i];
    if (a == "--sample") sample = v;
    else if (a == "--threads") threads = std::stoi(v);
    else if (a == "--device") device = v;
    else if (a == "--g") g = std::stoi(v);
    else if (a == "--rk") rk = std::stoi(v);
    else if (a == "--sweep") sweep = std::stoi(v);
    else if (a == "--spec") specs.push_back(v);
    else if (a == "--ref") ref_path = v;
    else if (a == "--out") out_path = v;
    else fail("bench_xkv: unknown option {}", a);
  }
  if (specs.empty())
    for (const char* extra : {"precision=f64", "precision=f32", "solver=randomized"})
      specs.push_back(fmt::format("g={},rk={},{}", g, rk, extra));

  auto& backend = linalg::backend_for(device, threads);
  core::DumpReader dump(dump_path);
  if (sample.empty()) sample = dump.sample_ids().at(0);
  DumpCache cache(dump, sample);
  const auto& shape = cache.shape();
  const CompressContext ctx{cache, backend, nullptr};
  fmt::print("dump {} sample {}: L={} H={} D={} T={}, backend {} ({} BLAS threads on the CPU)\n", dump_path, sample,
             shape.layers, shape.kv_heads, shape.head_dim, shape.tokens, backend.name(), backend.threads());

  nlohmann::json result = {{"dump", dump_path}, {"sample", sample}, {"device", device}, {"threads", backend.threads()},
                           {"shape", {{"L", shape.layers}, {"H", shape.kv_heads}, {"D", shape.head_dim}, {"T", shape.tokens}}}};
  auto t0 = std::chrono::steady_clock::now();
  for (int l = 0; l < shape.layers; ++l)
    for (Part p : {Part::key, Part::value}) (void)cache.layer(l, p);
  result["read_seconds"] = seconds_since(t0);
  fmt::print("read every layer once: {:.2f} s\n", result["read_seconds"].get<double>());

  nlohmann::json ref;
  if (!ref_path.empty()) std::ifstream(ref_path) >> ref;

  for (const auto& params : specs) {
    const auto spec = parse_stage(xkv_method(), params);
    t0 = std::chrono::steady_clock::now();
    auto rep = make_low_rank(spec)->compress(ctx);
    const double secs = seconds_since(t0);
    const auto groups = low_rank_groups(spec, shape.layers);
    t0 = std::chrono::steady_clock::now();
    const auto errors = group_errors(cache, *rep, groups);  // the f32 factors, as torch's route keeps them
    const double error_secs = seconds_since(t0);
    pack_fp16_storage(rep->stored());  // what the chain stores: the bytes are the packed buffers'
    nlohmann::json run = {{"spec", spec.to_string()}, {"seconds", secs}, {"errors", errors},
                          {"authors_ratio", rep->notes()["authors_ratio"]},
                          {"stored_ratio", double(dense_fp16_bytes(shape)) / double(rep->bytes())}};
    fmt::print("\n{}\n  compress {:.2f} s, authors' ratio {:.2f}x, stored ratio {:.2f}x (errors: {:.2f} s more)\n",
               spec.to_string(), secs, run["authors_ratio"].get<double>(), run["stored_ratio"].get<double>(), error_secs);
    double max_diff = 0;
    for (std::size_t i = 0; i < errors.size(); ++i) {
      std::string line = fmt::format("  group {:2} key {:.6f} value {:.6f}", i, errors[i]["key"].get<double>(),
                                     errors[i]["value"].get<double>());
      if (!ref.is_null() && i < ref["groups"].size() && ref["g"] == spec.get_int("g") && ref["rk"] == spec.get_int("rk")) {
        const double dk = errors[i]["key"].get<double>() - ref["groups"][i]["key"]["rel_error"].get<double>();
        const double dv = errors[i]["value"].get<double>() - ref["groups"][i]["value"]["rel_error"].get<double>();
        line += fmt::format("   vs torch: {:+.2e} {:+.2e}", dk, dv);
        max_diff = std::max({max_diff, std::abs(dk), std::abs(dv)});
      }
      fmt::print("{}\n", line);
    }
    if (!ref.is_null()) {
      run["max_abs_error_diff_vs_ref"] = max_diff;
      run["speedup_vs_ref"] = ref["total_seconds"].get<double>() / secs;
      fmt::print("  max |error − torch error| {:.2e}; torch reference {:.2f} s → {:.2f}x\n", max_diff,
                 ref["total_seconds"].get<double>(), ref["total_seconds"].get<double>() / secs);
    }
    result["runs"].push_back(run);
  }

  if (sweep > 1) {
    std::vector<StageSpec> variants;
    for (int i = 1; i <= sweep; ++i) variants.push_back(parse_stage(xkv_method(), fmt::format("g={},rk={}", g, rk * i / sweep)));
    t0 = std::chrono::steady_clock::now();
    auto one = make_low_rank(variants.back())->compress(ctx);
    const double single = seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    auto all = compress_low_rank_sweep(ctx, variants);
    const double swept = seconds_since(t0);
    result["sweep"] = {{"ranks", sweep}, {"single_seconds", single}, {"sweep_seconds", swept}, {"ratio", swept / single}};
    fmt::print("\nsweep of {} ranks (rk = {}..{}): {:.2f} s vs one rank {:.2f} s ({:.2f}x)\n", sweep, rk / sweep, rk,
               swept, single, swept / single);
  }
  if (!out_path.empty()) std::ofstream(out_path) << result.dump(1) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_xkv: " << e.what() << "\n";
    return 2;
  }
}
