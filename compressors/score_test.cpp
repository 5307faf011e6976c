// The scorer against brute force: attention recomputed here with plain loops (RoPE'd queries
// and keys, causal softmax in double), and eviction's KL against its closed form −log(kept mass).
#include "compressors/score.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "compressors/chain.h"
#include "compressors/dense.h"
#include "compressors/spec.h"
#include "compressors/test_caches.h"

namespace kvlab::compressors {
namespace {

CacheShape small_shape() { return {2, 2, 4, 8, 40, 6, 0}; }  // L, H_kv, H_q, D, T, W

TEST(Score, WindowAttentionMatchesBruteForceWithRopeAndCausalMask) {
  const auto cache = testing::random_cache(small_shape(), 11);
  const auto& s = cache.shape();
  const auto key = cache.layer(1, Part::key), value = cache.layer(1, Part::value);
  std::vector<double> out, logp, p, o;
  window_attention(cache, 1, key, value, {}, out, &logp);
  for (int w = 0; w < s.query_window; ++w)
    for (int h = 0; h < s.q_heads; ++h) {
      testing::brute_attention(cache, 1, key, value, {}, w, h, p, o);
      for (int d = 0; d < s.head_dim; ++d) EXPECT_NEAR(out[(w * s.q_heads + h) * s.head_dim + d], o[d], 1e-5);
      for (std::int64_t t = 0; t < s.tokens; ++t) {
        const double lp = logp[(w * s.q_heads + h) * s.tokens + t];
        if (p[t] == 0) EXPECT_TRUE(std::isinf(lp)) << t;  // the causal mask: later tokens invisible
        else EXPECT_NEAR(std::exp(lp), p[t], 1e-6);
      }
    }
}

// Sliding windows (docs/dump-format.md §2): a query at position i over a layer with window w sees
// the keys j with i − w < j ≤ i. Brute force (testing::brute_attention) writes that rule out as a
// loop; windows of 1 (only itself), 5 (shorter than the window's spread), 0 (none) and T.
TEST(Score, WindowAttentionSeesOnlyEachLayersSlidingWindow) {
  CacheShape shape = small_shape();
  shape.layers = 4;
  auto cache = testing::random_cache(shape, 12);
  cache.with_windows({1, 5, 0, 40});
  const auto& s = cache.shape();
  for (int l = 0; l < s.layers; ++l) {
    const auto key = cache.layer(l, Part::key), value = cache.layer(l, Part::value);
    std::vector<double> out, logp, p, o;
    window_attention(cache, l, key, value, {}, out, &logp);
    for (int w = 0; w < s.query_window; ++w)
      for (int h = 0; h < s.q_heads; ++h) {
        testing::brute_attention(cache, l, key, value, {}, w, h, p, o);
        // f32 rotation and logits against the brute force's f32 rotation and f64 dot: as above.
        for (int d = 0; d < s.head_dim; ++d)
          EXPECT_NEAR(out[(w * s.q_heads + h) * s.head_dim + d], o[d], 1e-5) << "layer " << l;
        const std::int64_t i = s.tokens - s.query_window + w;  // positions are 0..T−1
        int seen = 0;
        for (std::int64_t t = 0; t < s.tokens; ++t) {
          const double lp = logp[(w * s.q_heads + h) * s.tokens + t];
          if (p[t] == 0) EXPECT_TRUE(std::isinf(lp)) << "layer " << l << " t " << t;
          else EXPECT_NEAR(std::exp(lp), p[t], 1e-6);
          seen += std::isfinite(lp);
        }
        const int window = cache.window(l);
        EXPECT_EQ(seen, window == 0 ? i + 1 : std::min<std::int64_t>(window, i + 1)) << "layer " << l;
      }
  }
}

// Windows at least as long as the sample change nothing: every figure equals the window-free
// scorer's, bit for bit, for an eviction (snapkv) and the full cache.
TEST(Score, WindowsAsLongAsTheSampleScoreAsNone) {
  const auto plain = testing::random_cache(small_shape(), 13);
  auto windowed = testing::random_cache(small_shape(), 13);
  windowed.with_windows({40, 1000});
  for (const char* spec : {"snapkv:keep=0.5,window=4", "full"}) {
    const auto a = compress_chain({plain, linalg::cpu_backend()}, parse_spec(spec));
    const auto b = compress_chain({windowed, linalg::cpu_backend()}, parse_spec(spec));
    const auto sa = score(plain, *a, linalg::cpu_backend()), sb = score(windowed, *b, linalg::cpu_backend());
    EXPECT_EQ(to_json(sa), to_json(sb)) << spec;
  }
  // A window shorter than the sample does change them (the test above can fail).
  auto short_window = testing::random_cache(small_shape(), 13);
  short_window.with_windows({8, 8});
  const auto c = compress_chain({short_window, linalg::cpu_backend()}, parse_spec("snapkv:keep=0.5,window=4"));
  const auto a = compress_chain({plain, linalg::cpu_backend()}, parse_spec("snapkv:keep=0.5,window=4"));
  EXPECT_NE(to_json(score(short_window, *c, linalg::cpu_backend())), to_json(score(plain, *a, linalg::cpu_backend())));
}

// Gemma-3's layers rotate with two RoPE bases (docs/models.md §9.5): the scorer's attention on
// each layer equals the attention with that layer's base applied by hand here — the rotation
// written out in double from the default rule θ^(−2j/D), not through core::Rope::apply.
TEST(Score, EachLayerRotatesWithItsOwnRope) {
  CacheShape shape = small_shape();
  shape.layers = 3;
  const std::vector<double> bases = {10000.0, 1000000.0, 10000.0};
  auto cache = testing::random_cache(shape, 14);
  cache.with_layer_ropes({core::Rope::standard(shape.head_dim, bases[0]), core::Rope::standard(shape.head_dim, bases[1]),
                          core::Rope::standard(shape.head_dim, bases[2])});
  const auto& s = cache.shape();
  const int D = s.head_dim, half = D / 2, n_rep = s.group_size();
  const auto rotate = [&](std::vector<double>& x, std::int64_t pos, double base) {  // HF rotate_half
    for (int j = 0; j < half; ++j) {
      const double angle = static_cast<double>(pos) * std::pow(base, -2.0 * j / D);
      const double a = x[j], b = x[j + half];
      x[j] = a * std::cos(angle) - b * std::sin(angle);
      x[j + half] = b * std::cos(angle) + a * std::sin(angle);
    }
  };
  double max_other = 0;  // how far the other base's attention lies: the test can tell them apart
  for (int l = 0; l < s.layers; ++l) {
    const auto key = cache.layer(l, Part::key), value = cache.layer(l, Part::value), q = cache.queries(l);
    std::vector<double> out;
    window_attention(cache, l, key, value, {}, out, nullptr);
    for (const double base : {bases[l], bases[l] == 10000.0 ? 1000000.0 : 10000.0}) {
      double max_diff = 0;
      for (int w = 0; w < s.query_window; ++w)
        for (int h = 0; h < s.q_heads; ++h) {
          const std::int64_t i = s.tokens - s.query_window + w;
          std::vector<double> qr(q.data.begin() + (w * s.q_heads + h) * D, q.data.begin() + (w * s.q_heads + h + 1) * D);
          rotate(qr, i, base);
          std::vector<double> logit(static_cast<std::size_t>(i + 1));
          double mx = -1e300;
          for (std::int64_t t = 0; t <= i; ++t) {
            const auto* k = key.data.data() + (t * s.kv_heads + h / n_rep) * D;
            std::vector<double> kr(k, k + D);
            rotate(kr, t, base);
            double dot = 0;
            for (int d = 0; d < D; ++d) dot += qr[d] * kr[d];
            logit[t] = dot / std::sqrt(double(D));
            mx = std::max(mx, logit[t]);
          }
          double sum = 0;
          for (auto& x : logit) sum += x = std::exp(x - mx);
          for (int d = 0; d < D; ++d) {
            double o = 0;
            for (std::int64_t t = 0; t <= i; ++t) o += logit[t] / sum * value.data[(t * s.kv_heads + h / n_rep) * D + d];
            max_diff = std::max(max_diff, std::abs(out[(w * s.q_heads + h) * D + d] - o));
          }
        }
      if (base == bases[l]) EXPECT_LT(max_diff, 1e-5) << "layer " << l;  // f32 rotation and logits, as above
      else max_other = std::max(max_other, max_diff);
    }
  }
  EXPECT_GT(max_other, 1e-3);
  EXPECT_THAT(core::error_of([&] { (void)cache.rope(); }), ::testing::HasSubstr("layers rotate with different RoPEs"));
  EXPECT_EQ(describe_ropes(cache), "default θ=10000 (layers 0, 2); default θ=1000000 (layers 1)");
}

// Exact keys and values, but only the cells of `kept` held.
class MaskedExact final : public Compressed {
 public:
  MaskedExact(const CacheSource& c, std::vector<std::uint8_t> kept) : c_(c), kept_(std::move(kept)) {}
  std::vector<StoredTensor*> stored() override { return {&t_}; }
  LayerKV reconstruct(int layer) const override {
    LayerKV kv{c_.layer(layer, Part::key), c_.layer(layer, Part::value), kept_};
    for (std::size_t i = 0; i < kept_.size(); ++i)
      if (!kept_[i]) {
        std::fill_n(kv.key.data.begin() + i * c_.shape().head_dim, c_.shape().head_dim, 0.0f);
        std::fill_n(kv.value.data.begin() + i * c_.shape().head_dim, c_.shape().head_dim, 0.0f);
      }
    return kv;
  }

 private:
  const CacheSource& c_;
  std::vector<std::uint8_t> kept_;
  StoredTensor t_ = StoredTensor::indices("x", std::vector<std::int32_t>(250, 0));  // 1000 stored bytes
};

TEST(Score, EvictionKlIsMinusLogOfTheKeptAttentionMass) {
  const auto cache = testing::random_cache(small_shape(), 5);
  const auto& s = cache.shape();
  std::vector<std::uint8_t> kept(s.tokens * s.kv_heads, 1);
  for (std::int64_t t = 3; t < 20; t += 2) kept[t * s.kv_heads + (t % 2)] = 0;  // a scattered eviction
  MaskedExact masked(cache, kept);
  const auto sc = score(cache, masked, linalg::cpu_backend());
  std::vector<double> p, o;
  double expected_kl = 0, held = 0;
  for (int l = 0; l < s.layers; ++l) {
    double layer_kl = 0;
    const auto key = cache.layer(l, Part::key), value = cache.layer(l, Part::value);
    for (int w = 0; w < s.query_window; ++w)
      for (int h = 0; h < s.q_heads; ++h) {
        testing::brute_attention(cache, l, key, value, {}, w, h, p, o);
        double mass = 0;
        for (std::int64_t t = 0; t < s.tokens; ++t) mass += kept[t * s.kv_heads + h / s.group_size()] ? p[t] : 0.0;
        layer_kl += -std::log(mass);
      }
    layer_kl /= s.query_window * s.q_heads;
    EXPECT_NEAR(sc.layers[l].attn_kl, layer_kl, 1e-5) << l;
    EXPECT_EQ(sc.layers[l].key_error, 0.0);  // the kept cells are exact
    EXPECT_GT(sc.layers[l].attn_output_error, 1e-3);
    expected_kl += layer_kl;
  }
  for (auto k : kept) held += k;
  EXPECT_NEAR(sc.attn_kl, expected_kl / s.layers, 1e-5);
  EXPECT_NEAR(sc.kept_fraction, held / kept.size(), 1e-12);
  EXPECT_EQ(sc.bytes, 1000);
  EXPECT_DOUBLE_EQ(sc.ratio, static_cast<double>(dense_fp16_bytes(s)) / 1000);
}

// Exact keys and values, each window query (w, h) attending only its own tokens of `select`
// [W, H_q, T] (LayerKV::query_kept), reporting `loaded` bytes a step.
class PerQueryExact final : public Compressed {
 public:
  PerQueryExact(const CacheSource& c, std::vector<std::uint8_t> select, double loaded)
      : c_(c), select_(std::move(select)), loaded_(loaded) {}
  std::vector<StoredTensor*> stored() override { return {&t_}; }
  LayerKV reconstruct(int layer) const override {
    LayerKV kv{c_.layer(layer, Part::key), c_.layer(layer, Part::value), {}};
    kv.query_kept = select_;
    kv.loaded_bytes = loaded_;
    return kv;
  }

 private:
  const CacheSource& c_;
  std::vector<std::uint8_t> select_;
  double loaded_;
  StoredTensor t_ = StoredTensor::indices("x", std::vector<std::int32_t>(250, 0));  // 1000 stored bytes
};

// Per-query selection: each (w, h) has KL −log(the mass of its own selected tokens), brute force
// per row; loaded bytes add up over layers.
TEST(Score, PerQuerySelectionKlIsMinusLogOfEachQuerysSelectedMass) {
  const auto cache = testing::random_cache(small_shape(), 8);
  const auto& s = cache.shape();
  std::vector<std::uint8_t> select(static_cast<std::size_t>(s.query_window * s.q_heads * s.tokens), 0);
  for (std::size_t i = 0; i < select.size(); ++i) select[i] = (i * 7 + i / 13) % 3 != 0;  // scattered, row-dependent
  PerQueryExact per_query(cache, select, 123.5);
  const auto sc = score(cache, per_query, linalg::cpu_backend());
  std::vector<double> p, o;
  for (int l = 0; l < s.layers; ++l) {
    double layer_kl = 0;
    const auto key = cache.layer(l, Part::key), value = cache.layer(l, Part::value);
    for (int w = 0; w < s.query_window; ++w)
      for (int h = 0; h < s.q_heads; ++h) {
        testing::brute_attention(cache, l, key, value, {}, w, h, p, o);
        double mass = 0;
        for (std::int64_t t = 0; t < s.tokens; ++t) mass += select[(w * s.q_heads + h) * s.tokens + t] ? p[t] : 0.0;
        layer_kl += -std::log(mass);
      }
    EXPECT_NEAR(sc.layers[l].attn_kl, layer_kl / (s.query_window * s.q_heads), 1e-5) << l;
    EXPECT_EQ(sc.layers[l].loaded_bytes, 123.5);
  }
  EXPECT_EQ(sc.loaded_bytes, 123.5 * s.layers);
  EXPECT_EQ(sc.bytes, 1000);
  // Without a per-query selection a step reads everything stored.
  MaskedExact all(cache, std::vector<std::uint8_t>(s.tokens * s.kv_heads, 1));
  EXPECT_EQ(score(cache, all, linalg::cpu_backend()).loaded_bytes, 1000.0);
}

TEST(Score, Fp16StorageScoresItsRoundingAtRatioOne) {
  // The cache as `full` stores it: every value rounded to fp16 (relative error ≤ u = 2^-11 each,
  // so ≤ u in Frobenius norm; keys are rounded post-RoPE, and the rotation is orthogonal, so the
  // pre-RoPE key error is u plus f32 rotate/un-rotate round-off). Attention: a logit moves by at
  // most ‖q‖·‖δk‖/√D ≈ √D·u ≈ 2e-3 for N(0,1) rows at D = 16, which changes the output by a few
  // times that and gives KL ≈ ½·Var(δs) ≈ 2e-6.
  const double u = std::ldexp(1.0, -11);
  const auto cache = testing::random_cache(small_shape(), 7);
  auto full = dense_representation(cache, nullptr);  // keys stored post-RoPE, un-rotated on rebuild
  pack_fp16_storage(full->stored());
  const auto sc = score(cache, *full, linalg::cpu_backend());
  EXPECT_LT(sc.key_error, u + 1e-6);
  EXPECT_GT(sc.value_error, 0.0);  // random f32 values are not fp16 numbers: the rounding shows
  EXPECT_LE(sc.value_error, u);
  EXPECT_LT(sc.attn_output_error, 5e-3);
  EXPECT_LT(sc.attn_kl, 1e-5);
  EXPECT_EQ(sc.bytes, dense_fp16_bytes(cache.shape()));
  EXPECT_DOUBLE_EQ(sc.ratio, 1.0);
  EXPECT_DOUBLE_EQ(sc.kept_fraction, 1.0);
}

TEST(Score, TheThreadCountLeavesEveryScoreUnchanged) {
  // KV heads are scored side by side, one per thread, and summed in head order afterwards: the
  // same bits with 1, 2 or 3 threads (a sum taken as threads finish would differ in the last bits).
  const auto cache = testing::random_cache({3, 5, 10, 8, 50, 7, 0}, 9);
  auto full = dense_representation(cache, nullptr);
  pack_fp16_storage(full->stored());
  auto& cpu = linalg::cpu_backend();
  const int threads = cpu.threads();
  std::vector<Score> scores;
  for (int t : {1, 2, 3}) {
    cpu.set_threads(t);
    scores.push_back(score(cache, *full, cpu));
  }
  cpu.set_threads(threads);
  EXPECT_EQ(cpu.threads(), threads);  // restored after each score
  for (std::size_t i = 1; i < scores.size(); ++i)
    for (int l = 0; l < cache.shape().layers; ++l) {
      EXPECT_EQ(scores[i].layers[l].attn_kl, scores[0].layers[l].attn_kl) << i << " " << l;
      EXPECT_EQ(scores[i].layers[l].attn_output_error, scores[0].layers[l].attn_output_error) << i << " " << l;
    }
}

TEST(Score, ALayerScorerReusedOnAnotherShapeScoresAsAFreshOne) {
  // Its scratch (sized by the first cache) must not leak into the next: a longer and a shorter cache.
  auto& cpu = linalg::cpu_backend();
  LayerScorer reused(cpu);
  for (const CacheShape shape : {CacheShape{1, 2, 4, 8, 60, 6, 0}, CacheShape{1, 2, 4, 8, 30, 4, 0}}) {
    const auto cache = testing::random_cache(shape, 3);
    MaskedExact masked(cache, std::vector<std::uint8_t>(shape.tokens * shape.kv_heads, 1));
    const auto again = reused.score(cache, 0, masked.reconstruct(0));
    const auto fresh = LayerScorer(cpu).score(cache, 0, masked.reconstruct(0));
    EXPECT_EQ(again.attn_kl, fresh.attn_kl);
    EXPECT_EQ(again.attn_output_error, fresh.attn_output_error);
    EXPECT_EQ(again.key_error, fresh.key_error);
  }
}

TEST(Score, NoQueryWindowLeavesAttentionMetricsUndefined) {
  auto shape = small_shape();
  shape.query_window = 0;
  const auto cache = testing::random_cache(shape, 2);
  auto full = dense_representation(cache, nullptr);
  pack_fp16_storage(full->stored());
  const auto sc = score(cache, *full, linalg::cpu_backend());
  EXPECT_TRUE(std::isnan(sc.attn_kl));
  EXPECT_TRUE(to_json(sc)["attn_kl"].is_null());
}

}  // namespace
}  // namespace kvlab::compressors
