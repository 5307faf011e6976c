#include "compressors/test_caches.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "compressors/chain.h"
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
  c.rope(layer).apply(qrow, 1, 1, std::vector<std::int64_t>{c.positions()[qt]});
  const std::int64_t i = c.positions()[qt], window = c.window(layer);
  p.assign(T, 0.0);
  o.assign(D, 0.0);
  double mx = -1e300;
  std::vector<double> logit(T, -1e300);
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t j = c.positions()[t];
    const bool seen = j <= i && (window == 0 || i - window < j);  // docs/dump-format.md §2
    if (!seen || (!kept.empty() && !kept[t * H + g])) continue;
    std::vector<float> krow(key.data.begin() + (t * H + g) * D, key.data.begin() + (t * H + g + 1) * D);
    c.rope(layer).apply(krow, 1, 1, std::vector<std::int64_t>{c.positions()[t]});
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

std::set<std::int64_t> kept_tokens(const KeepMasks& masks, int layer, int g, const CacheShape& shape) {
  std::set<std::int64_t> out;
  for (std::int64_t t = 0; t < shape.tokens; ++t)
    if (masks[static_cast<std::size_t>(layer)][static_cast<std::size_t>(t * shape.kv_heads + g)]) out.insert(t);
  return out;
}

std::vector<double> post_rope_keys(const CacheSource& c, int layer) {
  const auto& s = c.shape();
  const auto key = c.layer(layer, Part::key);
  std::vector<double> out(key.data.begin(), key.data.end());
  const auto& inv_freq = c.rope(layer).inv_freq();
  const auto half = inv_freq.size();
  for (std::int64_t t = 0; t < s.tokens; ++t)
    for (int g = 0; g < s.kv_heads; ++g) {
      double* x = out.data() + (t * s.kv_heads + g) * s.head_dim;
      for (std::size_t j = 0; j < half; ++j) {
        const double angle = static_cast<double>(c.positions()[static_cast<std::size_t>(t)]) * inv_freq[j];
        const double a = x[j], b = x[j + half];
        x[j] = a * std::cos(angle) - b * std::sin(angle);
        x[j + half] = b * std::cos(angle) + a * std::sin(angle);
      }
    }
  return out;
}

std::set<std::int64_t> top_n(const std::vector<double>& score, std::int64_t n) {
  std::vector<std::int64_t> order(score.size());
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) {
    return score[static_cast<std::size_t>(a)] > score[static_cast<std::size_t>(b)];
  });
  return {order.begin(), order.begin() + n};
}

FloatTensor KeysOnly::layer(int layer, Part part) const {
  if (part != Part::key) fail("values were read");
  return base_.layer(layer, part);
}
FloatTensor KeysOnly::queries(int) const { fail("queries were read"); }
FloatTensor KeysOnly::resident_window_attention_sums(int, int) const { fail("window scores were asked for"); }

Score expect_eviction_chains_with_kivi(const std::string& eviction_spec, const CacheSource& cache) {
  const CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
  const auto chain = parse_spec(eviction_spec + "+kivi:bits=4,group=8,residual=0");
  EXPECT_TRUE(layer_local(chain));
  const auto c = compress_chain(ctx, chain);
  const auto masks = make_eviction(chain.stages[0])->select(ctx);
  for (int l = 0; l < cache.shape().layers; ++l)
    EXPECT_EQ(c->reconstruct(l).kept, masks[static_cast<std::size_t>(l)]) << eviction_spec << " layer " << l;
  const auto whole = score(cache, *c, linalg::cpu_backend());
  EXPECT_GT(whole.bytes, 0);
  nlohmann::json notes;
  const auto by_layer = compress_and_score_by_layer(ctx, chain, {}, nullptr, &notes);
  EXPECT_EQ(notes, c->notes());
  EXPECT_EQ(by_layer.bytes, whole.bytes);
  EXPECT_EQ(by_layer.key_error, whole.key_error);
  EXPECT_EQ(by_layer.attn_kl, whole.attn_kl);
  return whole;
}

}  // namespace kvlab::compressors::testing
