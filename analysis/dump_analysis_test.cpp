// End to end through the file format: a synthetic dump with planted structure is written,
// streamed back and analysed; the generator's documented ground truth is the oracle.
#include "analysis/dump_analysis.h"

#include <gtest/gtest.h>

#include <fstream>

#include "datasets/synth_kv.h"

namespace kvlab::analysis {
namespace {

std::filesystem::path temp_path(const std::string& name) {
  return std::filesystem::path(::testing::TempDir()) / (name + "-" + std::to_string(::getpid()));
}

datasets::SynthConfig small_config() {
  datasets::SynthConfig c;
  c.layers = 4;
  c.kv_heads = 2;
  c.q_heads = 4;
  c.head_dim = 16;
  c.tokens = 1500;  // not a multiple of the token block
  c.query_window = 8;
  c.key_rank = 6;
  c.value_rank = 9;
  c.noise = 0;                // exact planted ranks
  c.dtype = core::DType::f32;  // 16-bit rounding would add a noise floor
  return c;
}

TEST(DumpAnalysis, RecoversPlantedRanksFromASyntheticDump) {
  const auto path = temp_path("planted.h5");
  const auto config = small_config();
  datasets::write_synthetic_dump(config, path);
  datasets::SynthGenerator truth(config);
  core::DumpReader dump(path);
  AnalysisOptions options;
  options.group_sizes = {1, 2, 4};
  options.energies = {1 - 1e-9};  // every planted direction, none of the rounding floor
  options.precision = GramPrecision::f64;
  options.token_block = 256;
  for (auto kind : {core::KvKind::key, core::KvKind::value}) {
    auto r = analyze_dump(dump, "s0", kind, options, linalg::cpu_backend());
    for (const auto& entry : r.eigen_rank)
      for (const auto& g : entry.groups)
        EXPECT_EQ(g.rank[0], truth.planted_rank(kind, entry.group_size))
            << core::to_string(kind) << " G=" << entry.group_size << " first=" << g.first_layer;
  }
  std::filesystem::remove(path);
}

TEST(DumpAnalysis, ShowsTheXkvEffectAndWritesTheReport) {
  auto config = small_config();
  config.noise = 0.05;
  // At N = 32 columns, the default 8 outlier channels per layer would coincide between layers
  // (chance ≈ 8²/32 a pair) and lift the token-wise cosine; they are not what this test is about.
  config.outlier_channels = 0;
  config.dtype = core::DType::f16;
  config.tokens = 4096;
  const auto path = temp_path("xkv.h5");
  datasets::write_synthetic_dump(config, path);
  datasets::SynthGenerator truth(config);
  core::DumpReader dump(path);
  AnalysisOptions options;
  options.group_sizes = {1, 2, 4};
  auto r = analyze_dump(dump, "s0", core::KvKind::key, options, linalg::cpu_backend());
  for (int l = 0; l + 1 < config.layers; ++l) {
    EXPECT_GT(r.cka(l, l + 1), 0.5) << l;                   // shared token subspace
    EXPECT_LT(std::abs(r.token_cosine(l, l + 1)), 0.15) << l;  // but different directions per layer
  }
  for (std::size_t e = 0; e < options.energies.size(); ++e) {  // groups compress better
    EXPECT_LT(r.eigen_rank[1].mean_rank_fraction[e], r.eigen_rank[0].mean_rank_fraction[e]);
    EXPECT_LT(r.eigen_rank[2].mean_rank_fraction[e], r.eigen_rank[1].mean_rank_fraction[e]);
  }

  const auto dir = temp_path("report");
  write_report(dir, {{"dump", path.string()}}, {{core::KvKind::key, r, 0.0}});
  std::ifstream json_file(dir / "analysis.json");
  auto doc = nlohmann::json::parse(json_file);
  EXPECT_NEAR(doc["kinds"]["key"]["cka"][0][1].get<double>(), r.cka(0, 1), 1e-12);
  EXPECT_EQ(doc["kinds"]["key"]["eigen_rank"][2]["group_size"].get<int>(), 4);
  for (const char* f : {"key_cka.csv", "key_token_cosine.csv", "key_head_token_cosine.csv", "key_channel_cosine.csv",
                        "key_eigen_rank.csv", "key_eigen_rank_mean.csv", "key_spectra.csv"})
    EXPECT_GT(std::filesystem::file_size(dir / f), 10u) << f;
  std::filesystem::remove_all(dir);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace kvlab::analysis
