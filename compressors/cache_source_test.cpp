// read_layer_into against layer(): the same values in every row of a column block, the elements
// between the rows untouched, for a dump (token blocks, a short last one), a cache in memory and
// the default through layer(); a stride narrower than a row is an error. A LongRoPE dump's RoPE:
// the table its sample's forward used (long past original_max_position_embeddings).
#include "compressors/cache_source.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "compressors/test_caches.h"
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
  const core::Rope& rope() const override { return base_.rope(); }
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

TEST(CacheSource, LongRopeDumpRotatesEachSampleWithItsForwardsTable) {
  // A phi3 LongRoPE model_config (original_max 8): a 6-token sample ran on the short table, a
  // 12-token one on the long table; both with the attention factor (max 64 / 8: sqrt(1 + ln 8 / ln 8)).
  const fs::path path = fs::temp_directory_path() / ("kvlab_longrope_" + std::to_string(::getpid()) + ".h5");
  core::DumpInfo info;
  info.num_layers = 1;
  info.num_kv_heads = 1;
  info.num_q_heads = 1;
  info.head_dim = 4;
  info.model_config = R"({"model_type": "phi3", "head_dim": 4, "max_position_embeddings": 64,
      "original_max_position_embeddings": 8, "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.5],
      "long_factor": [3.0, 7.0]}})";
  {
    core::DumpWriter writer(path, info);
    for (int T : {6, 12}) {
      core::SampleMeta meta;
      meta.id = "t" + std::to_string(T);
      meta.num_tokens = T;
      meta.context_end = T - 1;
      meta.query_window = 1;
      writer.begin_sample(meta);
      const std::vector<float> kv(static_cast<std::size_t>(T) * 4, 0.5f), q(4, 0.25f);
      writer.write_layer(0, kv, kv, q);
      writer.end_sample();
    }
    writer.commit();
  }
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

}  // namespace
}  // namespace kvlab::compressors
