#include "compressors/test_caches.h"

#include <cmath>
#include <cstring>
#include <random>

#include "core/dtype.h"
#include "core/error.h"

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

std::int64_t stored_bytes(Compressed& compressed) {
  pack_fp16_storage(compressed.stored());
  return compressed.bytes();
}

void brute_attention(const CacheSource& c, int layer, const FloatTensor& key, const FloatTensor& value,
                     const std::vector<std::uint8_t>& kept, int w, int h, std::vector<double>& p, std::vector<double>& o) {
  const auto& s = c.shape();
  const int D = s.head_dim, H = s.kv_heads, g = h / s.group_size();
  const std::int64_t T = s.tokens, qt = T - s.query_window + w;
  auto q = c.queries(layer);
  std::vector<float> qrow(q.data.begin() + (w * s.q_heads + h) * D, q.data.begin() + (w * s.q_heads + h + 1) * D);
  c.rope().apply(qrow, 1, 1, std::vector<std::int64_t>{c.positions()[qt]});
  p.assign(T, 0.0);
  o.assign(D, 0.0);
  double mx = -1e300;
  std::vector<double> logit(T, -1e300);
  for (std::int64_t t = 0; t < T; ++t) {
    if (c.positions()[t] > c.positions()[qt] || (!kept.empty() && !kept[t * H + g])) continue;
    std::vector<float> krow(key.data.begin() + (t * H + g) * D, key.data.begin() + (t * H + g + 1) * D);
    c.rope().apply(krow, 1, 1, std::vector<std::int64_t>{c.positions()[t]});
    double dot = 0;
    for (int d = 0; d < D; ++d) dot += double{qrow[d]} * krow[d];
    logit[t] = dot / std::sqrt(double(D));
    mx = std::max(mx, logit[t]);
  }
  double sum = 0;
  for (std::int64_t t = 0; t < T; ++t) sum += logit[t] > -1e299 ? std::exp(logit[t] - mx) : 0.0;
  for (std::int64_t t = 0; t < T; ++t) {
    p[t] = logit[t] > -1e299 ? std::exp(logit[t] - mx) / sum : 0.0;
    for (int d = 0; d < D; ++d) o[d] += p[t] * value.data[(t * H + g) * D + d];
  }
}


linalg::SubspaceFactors SignFlippingBackend::resident_gram_top(const float* x, const void* gram_input, std::int64_t n,
                                                               std::int64_t c, std::int64_t r,
                                                               linalg::GramPrecision precision, void* stream) {
  if (resident_gram_reads_input(precision)) {
    const auto count = static_cast<std::size_t>(n * c);
    if (!gram_input) fail("SignFlippingBackend: no Gram input at {}", linalg::to_string(precision));
    if (precision == linalg::GramPrecision::f64) {
      const auto* wide = static_cast<const double*>(gram_input);
      for (std::size_t i = 0; i < count; ++i)
        if (wide[i] != double(x[i])) fail("SignFlippingBackend: f64 input {} is {}, x is {}", i, wide[i], x[i]);
    } else {
      std::vector<float> rounded(x, x + count);
      linalg::round_gram_inputs(precision, rounded);
      std::vector<std::uint16_t> bits(count);
      core::f32_to_16bit(core::DType::bf16, rounded, bits);
      if (std::memcmp(bits.data(), gram_input, count * 2) != 0) fail("SignFlippingBackend: bf16 input differs from x");
    }
    ++gram_inputs_checked;
  }
  return flipped(cpu().resident_gram_top(x, nullptr, n, c, r, precision, stream));
}

}  // namespace kvlab::compressors::testing
