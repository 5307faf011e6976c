// read_layer_into against layer(): the same values in every row of a column block, the elements
// between the rows untouched, for a dump (token blocks, a short last one), a cache in memory and
// the default through layer(); a stride narrower than a row is an error. A LongRoPE dump's RoPE:
// the table its sample's forward used (long past original_max_position_embeddings).
#include "compressors/cache_source.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "compressors/test_caches.h"
#include "core/error_of.h"
#include "core/kv_dump.h"
#include "datasets/synth_kv.h"

namespace kvlab::compressors {
namespace {

namespace fs = std::filesystem;
constexpr float kUntouched = -12345.f;

// The layer written at column `offset` of rows `ld` wide must equal layer(), the rest untouched.
void expect_reads_into(const CacheSource& cache, int layer, Part part) {
  const auto& s = cache.shape();
  const std::int64_t N = s.width(), ld = N + 5, offset = 3;
  std::vector<float> wide(static_cast<std::size_t>(s.tokens * ld + offset), kUntouched);
  cache.read_layer_into(layer, part, wide.data() + offset, ld);
  const FloatTensor want = cache.layer(layer, part);
  std::int64_t mismatches = 0, touched = 0;
  for (std::int64_t i = 0; i < static_cast<std::int64_t>(wide.size()); ++i) {
    const std::int64_t p = i - offset, t = p / ld, n = p % ld;
    if (p >= 0 && n < N && t < s.tokens)
      mismatches += wide[i] != want.data[static_cast<std::size_t>(t * N + n)];
    else
      touched += wide[i] != kUntouched;
  }
  EXPECT_EQ(mismatches, 0) << cache.describe() << " layer " << layer;
  EXPECT_EQ(touched, 0) << cache.describe() << " layer " << layer;
}

// Only layer() and the rest: read_layer_into is CacheSource's default.
class LayerOnly final : public CacheSource {
 public:
  explicit LayerOnly(const CacheSource& base) : base_(base) {}
  const CacheShape& shape() const override { return base_.shape(); }
  FloatTensor layer(int l, Part p) const override { return base_.layer(l, p); }
  FloatTensor queries(int l) const override { return base_.queries(l); }
  const std::vector<std::int64_t>& positions() const override { return base_.positions(); }
  using CacheSource::rope;
  const core::Rope& rope(int layer) const override { return base_.rope(layer); }
  int window(int layer) const override { return base_.window(layer); }
  std::string describe() const override { return "layer-only"; }

 private:
  const CacheSource& base_;
};

TEST(CacheSource, ReadLayerIntoEqualsLayerInMemoryAndByDefault) {
  const auto cache = testing::random_cache({2, 2, 4, 8, 37, 3, 0}, 4);
  const LayerOnly fallback(cache);
  for (const CacheSource* c : {static_cast<const CacheSource*>(&cache), static_cast<const CacheSource*>(&fallback)})
    for (int l = 0; l < 2; ++l)
      for (Part p : {Part::key, Part::value}) expect_reads_into(*c, l, p);
  std::vector<float> narrow(37 * 16);
  EXPECT_THROW(cache.read_layer_into(0, Part::key, narrow.data(), 15), Error);
  EXPECT_THROW(fallback.read_layer_into(0, Part::key, narrow.data(), 15), Error);
  EXPECT_THROW(cache.read_layer_into(2, Part::key, narrow.data(), 16), Error);
}

TEST(CacheSource, DumpReadsIntoByTokenBlocks) {
  const fs::path path = fs::temp_directory_path() / ("kvlab_cache_source_" + std::to_string(::getpid()) + ".h5");
  datasets::SynthConfig config;
  config.layers = 2;
  config.kv_heads = 2;
  config.q_heads = 4;
  config.head_dim = 8;
  config.tokens = 2500;  // blocks of 1024, 1024 and 452 rows
  config.query_window = 4;
  datasets::write_synthetic_dump(config, path);
  {
    const core::DumpReader reader(path);
    const DumpCache cache(reader, reader.sample_ids().front());
    for (int l = 0; l < 2; ++l)
      for (Part p : {Part::key, Part::value}) expect_reads_into(cache, l, p);
    std::vector<float> narrow(2500 * 16);
    EXPECT_THROW(cache.read_layer_into(0, Part::value, narrow.data(), 8), Error);
  }
  fs::remove(path);
}

// A dump header of `layers` layers, one KV and one query head of head_dim 4.
core::DumpInfo tiny_info(int layers, std::string model_config) {
  core::DumpInfo info;
  info.num_layers = layers;
  info.num_kv_heads = 1;
  info.num_q_heads = 1;
  info.head_dim = 4;
  info.model_config = std::move(model_config);
  return info;
}

// One sample "t<T>" per entry of `tokens`, query window 1, constant tensors on every layer.
void write_tiny_dump(const fs::path& path, const core::DumpInfo& info, std::initializer_list<int> tokens) {
  core::DumpWriter writer(path, info);
  for (int T : tokens) {
    core::SampleMeta meta;
    meta.id = "t" + std::to_string(T);
    meta.num_tokens = T;
    meta.context_end = T - 1;
    meta.query_window = 1;
    writer.begin_sample(meta);
    const std::vector<float> kv(static_cast<std::size_t>(T) * 4, 0.5f), q(4, 0.25f);
    for (int l = 0; l < info.num_layers; ++l) writer.write_layer(l, kv, kv, q);
    writer.end_sample();
  }
  writer.commit();
}

TEST(CacheSource, LongRopeDumpRotatesEachSampleWithItsForwardsTable) {
  // A phi3 LongRoPE model_config (original_max 8): a 6-token sample ran on the short table, a
  // 12-token one on the long table; both with the attention factor (max 64 / 8: sqrt(1 + ln 8 / ln 8)).
  const fs::path path = fs::temp_directory_path() / ("kvlab_longrope_" + std::to_string(::getpid()) + ".h5");
  const core::DumpInfo info = tiny_info(1, R"({"model_type": "phi3", "head_dim": 4, "max_position_embeddings": 64,
      "original_max_position_embeddings": 8, "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.5],
      "long_factor": [3.0, 7.0]}})");
  write_tiny_dump(path, info, {6, 12});
  {
    const core::DumpReader reader(path);
    const auto model = core::Rope::from_config(info.model_config, 4);
    const DumpCache short_sample(reader, "t6"), long_sample(reader, "t12");
    EXPECT_EQ(short_sample.rope().inv_freq(), model.for_length(8).inv_freq());
    EXPECT_EQ(long_sample.rope().inv_freq(), model.for_length(9).inv_freq());
    EXPECT_NE(short_sample.rope().inv_freq(), long_sample.rope().inv_freq());
    EXPECT_EQ(long_sample.rope().attention_factor(), static_cast<float>(std::sqrt(2.0)));
  }
  fs::remove(path);
}

// Gemma-3-like: two layers, the first sliding (window 3) with its own RoPE base. The dump's
// layer_rope_config gives each layer's RoPE as Rope::from_config of its entry, layer_windows each
// layer's window; a sample longer than the window is taken (kvlab before issue 22 refused it). A
// dump that names its per-layer RoPE only in words (before issue 22) is refused: nothing says
// which layer rotates how.
TEST(CacheSource, DumpGivesEachLayerItsRopeAndWindow) {
  const fs::path path = fs::temp_directory_path() / ("kvlab_layer_rope_" + std::to_string(::getpid()) + ".h5");
  core::DumpInfo info = tiny_info(2, R"({"model_type": "gemma3_text", "head_dim": 4, "rope_theta": 1000000.0,
      "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "rope_local_base_freq": 10000.0})");
  info.layer_windows = {3, 0};
  info.layer_rope = "sliding layers: default θ=10000; full-attention layers: linear θ=1e+06 factor=8";
  const auto write = [&](const core::DumpInfo& i) { write_tiny_dump(path, i, {8}); };
  write(info);
  {
    const core::DumpReader reader(path);
    EXPECT_THAT(core::error_of([&] { DumpCache c(reader, "t8"); }), ::testing::HasSubstr("dump it again"));
  }
  const std::string local = R"({"rope_theta": 10000.0})",
                    global = R"({"rope_theta": 1000000.0, "rope_scaling": {"rope_type": "linear", "factor": 8.0}})";
  info.layer_rope_configs = {local, global};
  write(info);
  {
    const core::DumpReader reader(path);
    const DumpCache cache(reader, "t8");
    EXPECT_EQ(cache.rope(0).inv_freq(), core::Rope::from_config(local, 4).inv_freq());
    EXPECT_EQ(cache.rope(1).inv_freq(), core::Rope::from_config(global, 4).inv_freq());
    EXPECT_EQ(cache.rope(0).inv_freq(), core::Rope::standard(4, 10000.0).inv_freq());
    EXPECT_NE(cache.rope(0).inv_freq(), cache.rope(1).inv_freq());
    EXPECT_EQ(cache.window(0), 3);
    EXPECT_EQ(cache.window(1), 0);
    EXPECT_THAT(core::error_of([&] { (void)cache.rope(); }), ::testing::HasSubstr("different RoPEs"));
    EXPECT_THAT(core::error_of([&] { (void)cache.rope(2); }), ::testing::HasSubstr("layer 2 outside"));
  }
  // Without layer_rope_config or layer_windows: model_config's RoPE on every layer, no window.
  info.layer_rope_configs.clear();
  info.layer_rope.clear();
  info.layer_windows.clear();
  write(info);
  {
    const core::DumpReader reader(path);
    const DumpCache cache(reader, "t8");
    EXPECT_EQ(cache.rope().inv_freq(), core::Rope::from_config(info.model_config, 4).inv_freq());
    EXPECT_EQ(cache.window(0), 0);
  }
  fs::remove(path);
}

}  // namespace
}  // namespace kvlab::compressors
