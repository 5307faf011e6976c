#include "compressors/test_caches.h"

#include <random>

namespace kvlab::compressors::testing {

datasets::SynthConfig small_synth_config() {
  datasets::SynthConfig c;
  c.layers = 4;
  c.kv_heads = 2;
  c.q_heads = 4;
  c.head_dim = 16;
  c.tokens = 512;
  c.query_window = 16;
  c.noise = 0.02;
  c.outlier_channels = 2;
  c.dtype = core::DType::f32;
  return c;
}

InMemoryCache synthetic_cache(const datasets::SynthConfig& config, int sample) {
  datasets::SynthGenerator gen(config);
  const auto& c = gen.config();
  CacheShape shape{c.layers, c.kv_heads, c.q_heads, c.head_dim, c.tokens, c.query_window, 0};
  std::vector<FloatTensor> keys, values, queries;
  gen.for_each_layer(sample, [&](int, const FloatTensor& k, const FloatTensor& v, const FloatTensor& q) {
    keys.push_back(k);
    values.push_back(v);
    queries.push_back(q);
  });
  return InMemoryCache(shape, std::move(keys), std::move(values), std::move(queries));
}

InMemoryCache random_cache(const CacheShape& shape, std::uint64_t seed, bool with_rope) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  auto fill = [&](core::Shape s) {
    FloatTensor t(std::move(s));
    for (auto& x : t.data) x = normal(rng);
    return t;
  };
  std::vector<FloatTensor> keys, values, queries;
  for (int l = 0; l < shape.layers; ++l) {
    keys.push_back(fill({shape.tokens, shape.kv_heads, shape.head_dim}));
    values.push_back(fill({shape.tokens, shape.kv_heads, shape.head_dim}));
    queries.push_back(fill({shape.query_window, shape.q_heads, shape.head_dim}));
  }
  return InMemoryCache(shape, std::move(keys), std::move(values), std::move(queries), {},
                       with_rope ? core::Rope::standard(shape.head_dim, 10000.0) : core::Rope::identity());
}

}  // namespace kvlab::compressors::testing
