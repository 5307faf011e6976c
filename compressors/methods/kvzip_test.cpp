// kvzip against transcriptions of the authors' code written here: snu-mllab/KVzip
// model/wrapper.py `chunk_fn` + `self_task` (the probes' tokens), attention/score.py
// `_get_score` (sink, chunk and probe keys, the causal mask on the probe's own keys, softmax,
// max over the group's query heads and the probe's queries; in double, every row rotated with
// HF's rotate_half here) and `_threshold` (the pair level). The live model is a fake whose
// probes return seeded N(0,1) queries and keys, so the oracle sees exactly what the stage sees.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>

#include "compressors/chain.h"
#include "compressors/live_model.h"
#include "compressors/methods/eviction.h"
#include "compressors/methods/kvzip.h"
#include "compressors/test_caches.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

using ::testing::HasSubstr;
using testing::error_of;

// Encodes text as its bytes + 1000 (so no id collides with the cached ids 0..999).
std::vector<std::int32_t> bytes_of(std::string_view text) {
  std::vector<std::int32_t> out;
  for (unsigned char c : text) out.push_back(1000 + c);
  return out;
}

class FakeLiveModel final : public LiveModel {
 public:
  FakeLiveModel(const CacheShape& shape, std::uint64_t seed) : shape_(shape), seed_(seed) {
    for (std::int64_t t = 0; t < shape.tokens; ++t) tokens_.push_back(static_cast<std::int32_t>((t * 37) % 997));
  }
  std::vector<std::int32_t> cached_tokens() const override { return tokens_; }
  std::vector<std::int32_t> encode(std::string_view text) const override { return bytes_of(text); }
  std::vector<std::int32_t> answer_start() const override { return {7, 8, 9}; }
  void probe(std::span<const std::int32_t> tokens, const ProbeObserver& observe) const override {
    const auto n = static_cast<std::int64_t>(tokens.size());
    probes.emplace_back(tokens.begin(), tokens.end());
    std::vector<std::int64_t> positions;
    for (std::int64_t i = 0; i < n; ++i) positions.push_back(shape_.tokens + i);
    for (int l = 0; l < shape_.layers; ++l) {
      auto& [q, k] = outputs[{probes.size() - 1, l}];
      std::mt19937_64 rng(seed_ * 1000 + probes.size() * 10 + static_cast<std::uint64_t>(l));
      std::normal_distribution<float> normal;
      q = FloatTensor({n, shape_.q_heads, shape_.head_dim});
      k = FloatTensor({n, shape_.kv_heads, shape_.head_dim});
      for (auto& x : q.data) x = normal(rng);
      for (auto& x : k.data) x = normal(rng);
      observe({l, q, k, positions});
    }
  }
  mutable std::vector<std::vector<std::int32_t>> probes;  // every probe's tokens, in order
  mutable std::map<std::pair<std::size_t, int>, std::pair<FloatTensor, FloatTensor>> outputs;  // (probe, layer)

 private:
  CacheShape shape_;
  std::uint64_t seed_;
  std::vector<std::int32_t> tokens_;
};

// self_task, transcribed: chunk_fn splits ctx into pieces of chunk_size when longer, then each
// piece gets its repeat prompt (later ones: with the previous piece's last 8 tokens), the
// postfix (answer start) and itself.
std::vector<std::vector<std::int32_t>> self_task(const std::vector<std::int32_t>& ctx, std::size_t chunk_size,
                                                 const std::vector<std::int32_t>& postfix) {
  std::vector<std::vector<std::int32_t>> chunks;
  if (ctx.size() > chunk_size) {
    const std::size_t chunk_num = (ctx.size() - 1) / chunk_size + 1;
    for (std::size_t i = 0; i < chunk_num; ++i)
      chunks.emplace_back(ctx.begin() + static_cast<std::ptrdiff_t>(i * chunk_size),
                          ctx.begin() + static_cast<std::ptrdiff_t>(std::min(ctx.size(), (i + 1) * chunk_size)));
  } else {
    chunks.push_back(ctx);
  }
  std::vector<std::vector<std::int32_t>> out;
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    std::vector<std::int32_t> ids;
    if (i == 0) {
      ids = bytes_of("\n\nRepeat the previous context exactly.");
    } else {
      ids = bytes_of("\n\nRepeat the part of the previous context exactly, starting with ");
      const auto& prev = chunks[i - 1];
      ids.insert(ids.end(), prev.end() - std::min<std::ptrdiff_t>(8, static_cast<std::ptrdiff_t>(prev.size())), prev.end());
    }
    ids.insert(ids.end(), postfix.begin(), postfix.end());
    ids.insert(ids.end(), chunks[i].begin(), chunks[i].end());
    out.push_back(ids);
  }
  return out;
}

// HF's rotate_half RoPE of one row x [D] at position p, in double.
std::vector<double> rotate(const float* x, int D, std::int64_t p, const core::Rope& rope) {
  std::vector<double> out(x, x + D);
  const auto& inv = rope.inv_freq();
  const int half = static_cast<int>(inv.size());
  for (int j = 0; j < half; ++j) {
    const double a = static_cast<double>(p) * inv[static_cast<std::size_t>(j)];
    out[static_cast<std::size_t>(j)] = x[j] * std::cos(a) - x[j + half] * std::sin(a);
    out[static_cast<std::size_t>(j + half)] = x[j + half] * std::cos(a) + x[j] * std::sin(a);
  }
  return out;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// _get_score for every probe, transcribed: [L][H_kv·T] scores, sinks +inf (kvlab keeps them).
std::vector<std::vector<double>> oracle_scores(const CacheSource& c, const FakeLiveModel& live, std::int64_t sink,
                                               std::int64_t chunk) {
  const auto& s = c.shape();
  const std::int64_t T = s.tokens;
  const int D = s.head_dim, group = s.q_heads / s.kv_heads;
  const auto& pos = c.positions();
  std::vector<std::vector<double>> score(static_cast<std::size_t>(s.layers),
                                         std::vector<double>(static_cast<std::size_t>(s.kv_heads * T), 0.0));
  for (int l = 0; l < s.layers; ++l) {
    const auto keys = c.layer(l, Part::key);
    for (std::size_t p = 0; p < live.probes.size(); ++p) {
      const std::int64_t start = sink + static_cast<std::int64_t>(p) * chunk, end = std::min(T, start + chunk);
      const auto& [q, k] = live.outputs.at({p, l});
      const std::int64_t n = q.shape[0];
      for (int h = 0; h < s.q_heads; ++h) {
        const int g = h / group;
        std::vector<std::vector<double>> key_rows;  // cat([keys[:sink], keys[start:end], keys[-q_len:]])
        for (std::int64_t t = 0; t < sink; ++t) key_rows.push_back(rotate(&keys.data[static_cast<std::size_t>((t * s.kv_heads + g) * D)], D, pos[static_cast<std::size_t>(t)], c.rope(l)));
        for (std::int64_t t = start; t < end; ++t) key_rows.push_back(rotate(&keys.data[static_cast<std::size_t>((t * s.kv_heads + g) * D)], D, pos[static_cast<std::size_t>(t)], c.rope(l)));
        for (std::int64_t i = 0; i < n; ++i) key_rows.push_back(rotate(&k.data[static_cast<std::size_t>((i * s.kv_heads + g) * D)], D, T + i, c.rope(l)));
        for (std::int64_t i = 0; i < n; ++i) {
          const auto qi = rotate(&q.data[static_cast<std::size_t>((i * s.q_heads + h) * D)], D, T + i, c.rope(l));
          std::vector<double> w(key_rows.size());
          for (std::size_t j = 0; j < key_rows.size(); ++j) w[j] = dot(qi, key_rows[j]) / std::sqrt(double(D));
          // causal mask on the last q_len columns: probe key j is masked for query i < j
          for (std::int64_t j = 0; j < n; ++j)
            if (j > i) w[w.size() - static_cast<std::size_t>(n - j)] = -std::numeric_limits<double>::infinity();
          const double top = *std::max_element(w.begin(), w.end());
          double sum = 0;
          for (auto& x : w) sum += (x = std::exp(x - top));
          for (std::int64_t t = start; t < end; ++t) {
            double& out = score[static_cast<std::size_t>(l)][static_cast<std::size_t>(g * T + t)];
            out = std::max(out, w[static_cast<std::size_t>(sink + t - start)] / sum);
          }
        }
      }
    }
    for (int g = 0; g < s.kv_heads; ++g)
      for (std::int64_t t = 0; t < std::min(sink, T); ++t)
        score[static_cast<std::size_t>(l)][static_cast<std::size_t>(g * T + t)] = std::numeric_limits<double>::infinity();
  }
  return score;
}

// L, H_kv, H_q, D, T, W: GQA (two query heads per KV head), a real RoPE.
CacheShape fixture_shape() { return {3, 2, 4, 8, 45, 0, 0}; }

KeepMasks run(std::string_view params, const CacheSource& cache, const LiveModel* live) {
  return make_eviction(parse_stage(method("kvzip"), params))->select({cache, linalg::cpu_backend(), nullptr, live});
}

TEST(Kvzip, ProbesAreTheAuthorsChunkedRepeatPrompts) {
  const auto shape = fixture_shape();
  const auto cache = testing::random_cache(shape, 1);
  for (const auto& [sink, chunk] : std::vector<std::pair<std::int64_t, std::int64_t>>{{4, 16}, {0, 45}, {3, 42}, {2, 5}}) {
    FakeLiveModel live(shape, 2);
    run(fmt::format("keep=0.5,sink={},chunk={}", sink, chunk), cache, &live);
    const auto cached = live.cached_tokens();
    EXPECT_EQ(live.probes, self_task({cached.begin() + sink, cached.end()}, static_cast<std::size_t>(chunk), {7, 8, 9}))
        << sink << " " << chunk;
  }
}

TEST(Kvzip, ScoresAreTheAuthorsMaxAttentionOverTheProbes) {
  const auto shape = fixture_shape();
  for (const std::uint64_t seed : {1u, 2u}) {
    const auto cache = testing::random_cache(shape, seed);
    for (const auto& [sink, chunk] : std::vector<std::pair<std::int64_t, std::int64_t>>{{4, 16}, {0, 64}, {2, 7}}) {
      FakeLiveModel live(shape, seed);
      // level=head keeps each head's top b of the scores: b = 1 and b = T − 1 expose the
      // highest and the lowest score of every head; a middle budget the whole order.
      for (const std::int64_t b : {1, 20, 44}) {
        live.probes.clear();
        const auto masks = run(fmt::format("budget={},level=head,sink={},chunk={}", b, sink, chunk), cache, &live);
        const auto want = oracle_scores(cache, live, sink, chunk);
        for (int l = 0; l < shape.layers; ++l)
          for (int g = 0; g < shape.kv_heads; ++g) {
            const std::vector<double> row(want[static_cast<std::size_t>(l)].begin() + g * shape.tokens,
                                          want[static_cast<std::size_t>(l)].begin() + (g + 1) * shape.tokens);
            EXPECT_EQ(testing::kept_tokens(masks, l, g, shape), testing::top_n(row, b))
                << "seed " << seed << " sink " << sink << " chunk " << chunk << " b " << b << " layer " << l << " head " << g;
          }
      }
    }
  }
}

TEST(Kvzip, ScoreKernelMatchesTheTranscriptionToFloatRounding) {
  // The kernel alone on one probe, identity RoPE: f32 GEMM and exp against double; the weights
  // are ≤ 1, so f32's relative 6e-8 per operation over D = 8 products and a 40-term sum stays
  // far below 1e-5.
  const auto shape = fixture_shape();
  const auto cache = testing::random_cache(shape, 3, /*with_rope=*/false);
  FakeLiveModel live(shape, 3);
  run("keep=0.5,level=head,sink=3,chunk=100", cache, &live);
  const auto want = oracle_scores(cache, live, 3, 100);
  const auto keys = cache.layer(1, Part::key);
  const auto& [q, k] = live.outputs.at({0, 1});
  std::vector<double> got(static_cast<std::size_t>(shape.kv_heads * shape.tokens), 0.0);
  kvzip_probe_scores(keys.data.data(), shape.tokens, q.data.data(), k.data.data(), q.shape[0], shape.q_heads,
                     shape.kv_heads, shape.head_dim, 3, 3, shape.tokens, got);
  for (int g = 0; g < shape.kv_heads; ++g)
    for (std::int64_t t = 3; t < shape.tokens; ++t)
      EXPECT_NEAR(got[static_cast<std::size_t>(g * shape.tokens + t)], want[1][static_cast<std::size_t>(g * shape.tokens + t)], 1e-6)
          << g << " " << t;
}

TEST(Kvzip, GlobalLevelKeepsTheBestCellsOfAllLayersAsTheAuthorsThresholdDoes) {
  const auto shape = fixture_shape();
  const auto cache = testing::random_cache(shape, 4);
  FakeLiveModel live(shape, 4);
  const std::int64_t b = 15;  // keep=1/3
  const auto masks = run(fmt::format("budget={}", b), cache, &live);
  const auto want = oracle_scores(cache, live, 4, 2000);
  // _threshold, transcribed: scores sorted descending, n = max(int(N·ratio) − 1, 0), valid = score > sorted[n].
  std::vector<double> all;
  for (const auto& layer : want) all.insert(all.end(), layer.begin(), layer.end());
  std::vector<double> sorted = all;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  const auto N = static_cast<std::int64_t>(all.size());
  const double ratio = static_cast<double>(b) / static_cast<double>(shape.tokens);
  const std::int64_t n = std::max<std::int64_t>(static_cast<std::int64_t>(static_cast<double>(N) * ratio) - 1, 0);
  const double threshold = sorted[static_cast<std::size_t>(n)];
  std::int64_t kept = 0, authors_kept = 0;
  std::vector<std::int64_t> per_layer(static_cast<std::size_t>(shape.layers), 0);
  for (int l = 0; l < shape.layers; ++l)
    for (int g = 0; g < shape.kv_heads; ++g)
      for (std::int64_t t = 0; t < shape.tokens; ++t) {
        const bool is_kept = masks[static_cast<std::size_t>(l)][static_cast<std::size_t>(t * shape.kv_heads + g)] != 0;
        const bool authors = want[static_cast<std::size_t>(l)][static_cast<std::size_t>(g * shape.tokens + t)] > threshold;
        kept += is_kept;
        authors_kept += authors;
        per_layer[static_cast<std::size_t>(l)] += is_kept;
        // Every cell the authors keep is kept; kvlab keeps the one more that fills the budget
        // exactly (the cell at the threshold itself).
        if (authors) {
          EXPECT_TRUE(is_kept) << l << " " << g << " " << t;
        }
        if (t < 4) {
          EXPECT_TRUE(is_kept) << "sink " << l << " " << g << " " << t;
        }
      }
  EXPECT_EQ(kept, shape.layers * shape.kv_heads * b);
  EXPECT_EQ(authors_kept, kept - 1);
  // Layers keep different counts (the scores of this seed do not split evenly).
  EXPECT_FALSE(std::all_of(per_layer.begin(), per_layer.end(), [&](std::int64_t k) { return k == shape.kv_heads * b; }));
}

TEST(Kvzip, LayerLevelSharesEachLayersBudgetAcrossItsHeads) {
  const auto shape = fixture_shape();
  const auto cache = testing::random_cache(shape, 5);
  FakeLiveModel live(shape, 5);
  const auto masks = run("budget=10,level=layer", cache, &live);
  const auto want = oracle_scores(cache, live, 4, 2000);
  for (int l = 0; l < shape.layers; ++l) {
    // kvpress layerwise: the layer's H·b best cells over all its heads.
    std::vector<std::int64_t> order(static_cast<std::size_t>(shape.kv_heads * shape.tokens));
    std::iota(order.begin(), order.end(), 0);
    const auto& sc = want[static_cast<std::size_t>(l)];
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t c) { return sc[static_cast<std::size_t>(a)] > sc[static_cast<std::size_t>(c)]; });
    for (std::size_t i = 0; i < order.size(); ++i) {
      const auto g = order[i] / shape.tokens, t = order[i] % shape.tokens;
      EXPECT_EQ(masks[static_cast<std::size_t>(l)][static_cast<std::size_t>(t * shape.kv_heads + g)] != 0, i < 20u)
          << l << " " << g << " " << t;
    }
  }
}

TEST(Kvzip, NeedsTheLiveModelAndSaysWhereToRunIt) {
  const auto cache = testing::random_cache(fixture_shape(), 6);
  EXPECT_THAT(error_of([&] { run("keep=0.5", cache, nullptr); }), HasSubstr("kvzip"));
  EXPECT_THAT(error_of([&] { run("keep=0.5", cache, nullptr); }), HasSubstr("kvlab eval"));
  EXPECT_TRUE(method("kvzip").needs.live_model);
  EXPECT_FALSE(method("kvzip").layer_local);
  EXPECT_EQ(method("kvzip").device, DevicePath::none);
  EXPECT_THAT(error_of([] { parse_spec("kvzip:level=pair"); }), HasSubstr("level"));
  EXPECT_THAT(error_of([] { parse_spec("kvzip:chunk=0"); }), HasSubstr("chunk"));
  EXPECT_EQ(parse_spec("kvzip").to_string(), "kvzip:keep=0.25,budget=0,level=global,chunk=2000,sink=4");
}

TEST(Kvzip, KeepingEverythingProbesNothing) {
  const auto shape = fixture_shape();
  const auto cache = testing::random_cache(shape, 7);
  FakeLiveModel live(shape, 7);
  const auto masks = run("keep=1", cache, &live);
  for (const auto& layer : masks) EXPECT_TRUE(std::all_of(layer.begin(), layer.end(), [](auto x) { return x == 1; }));
  EXPECT_TRUE(live.probes.empty());
}

}  // namespace
}  // namespace kvlab::compressors
