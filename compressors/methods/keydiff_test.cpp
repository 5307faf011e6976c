// keydiff against a plain transcription of kvpress's KeyDiffPress written here (keys rotated with
// HF's rotate_half RoPE in double; anchor = mean of F.normalize(k); score = −cosine_similarity(k,
// anchor) with torch's eps; ScorerPress's top-k per KV head, earlier token on ties), hand-built
// caches whose cosines are known, the budget rules every eviction method shares, its registry
// entry and its chains.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>

#include "compressors/chain.h"
#include "compressors/methods/eviction.h"
#include "compressors/score.h"
#include "compressors/test_caches.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

using ::testing::HasSubstr;
using testing::error_of;
using testing::kept_tokens;
using testing::post_rope_keys;
using testing::top_n;


KeepMasks run(std::string_view params, const CacheSource& cache) {
  return make_eviction(parse_stage(method("keydiff"), params))->select({cache, linalg::cpu_backend()});
}

// KeyDiffPress + ScorerPress, transcribed for one KV head (keys [B, H, T, D] there, dim=2 the
// tokens):  anchor = F.normalize(keys, p=2, dim=-1).mean(dim=2, keepdim=True)
//           score  = -F.cosine_similarity(keys, anchor, dim=-1)
// with F.normalize(x) = x / max(‖x‖, 1e-12) and cosine_similarity(x, y) = x·y / (max(‖x‖, 1e-8) ·
// max(‖y‖, 1e-8)); then the top n scores, ties to the earlier token.
std::vector<double> keydiff_scores(const CacheSource& c, int l, int g) {
  const auto& s = c.shape();
  const auto keys = post_rope_keys(c, l);
  const auto T = static_cast<std::size_t>(s.tokens), D = static_cast<std::size_t>(s.head_dim);
  const auto k = [&](std::size_t t) { return keys.data() + (t * static_cast<std::size_t>(s.kv_heads) + static_cast<std::size_t>(g)) * D; };
  const auto norm = [&](const double* x) {
    double sq = 0;
    for (std::size_t d = 0; d < D; ++d) sq += x[d] * x[d];
    return std::sqrt(sq);
  };
  std::vector<double> anchor(D, 0.0);
  for (std::size_t t = 0; t < T; ++t)
    for (std::size_t d = 0; d < D; ++d) anchor[d] += k(t)[d] / std::max(norm(k(t)), 1e-12) / static_cast<double>(T);
  std::vector<double> score(T);
  for (std::size_t t = 0; t < T; ++t) {
    double dot = 0;
    for (std::size_t d = 0; d < D; ++d) dot += k(t)[d] * anchor[d];
    score[t] = -dot / (std::max(norm(k(t)), 1e-8) * std::max(norm(anchor.data()), 1e-8));
  }
  return score;
}

// L, H_kv, H_q, D, T, W: GQA (two query heads per KV head), a real RoPE (θ = 10000).
CacheShape fixture_shape() { return {3, 2, 4, 8, 40, 4, 0}; }

TEST(KeyDiff, KeepsWhatATranscriptionOfKeyDiffPressKeeps) {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    const auto cache = testing::random_cache(fixture_shape(), seed);
    const auto& s = cache.shape();
    for (const auto& [params, n] : std::vector<std::pair<std::string, std::int64_t>>{
             {"keep=0.25", 10}, {"keep=0.5", 20}, {"budget=7", 7}, {"keep=0.9", 36}}) {
      const auto masks = run(params, cache);
      ASSERT_EQ(masks.size(), static_cast<std::size_t>(s.layers));
      for (int l = 0; l < s.layers; ++l)
        for (int g = 0; g < s.kv_heads; ++g)
          EXPECT_EQ(kept_tokens(masks, l, g, s), top_n(keydiff_scores(cache, l, g), n))
              << "seed " << seed << " " << params << " layer " << l << " head " << g;
    }
  }
}

TEST(KeyDiff, ScoresThePostRopeKeys) {
  // The anchor is a mean direction, which RoPE changes: the same tensors without rotation give
  // another selection, and only the rotated oracle matches the rotated cache.
  const auto rotated = testing::random_cache(fixture_shape(), 5, /*with_rope=*/true);
  const auto plain = testing::random_cache(fixture_shape(), 5, /*with_rope=*/false);
  const auto with = run("keep=0.5", rotated), without = run("keep=0.5", plain);
  EXPECT_NE(with, without);
  int differ = 0;
  for (int l = 0; l < 3; ++l)
    for (int g = 0; g < 2; ++g) {
      EXPECT_EQ(kept_tokens(with, l, g, rotated.shape()), top_n(keydiff_scores(rotated, l, g), 20));
      differ += kept_tokens(with, l, g, rotated.shape()) != top_n(keydiff_scores(plain, l, g), 20);
    }
  EXPECT_GT(differ, 0);
}

// One layer, one KV head, D = 2, identity RoPE: keys given exactly.
InMemoryCache hand_cache(const std::vector<std::pair<float, float>>& keys) {
  const auto T = static_cast<std::int64_t>(keys.size());
  const CacheShape shape{1, 1, 1, 2, T, 1, 0};
  FloatTensor k({T, 1, 2}), v({T, 1, 2}), q({1, 1, 2});
  for (std::int64_t t = 0; t < T; ++t) {
    k.data[static_cast<std::size_t>(2 * t)] = keys[static_cast<std::size_t>(t)].first;
    k.data[static_cast<std::size_t>(2 * t + 1)] = keys[static_cast<std::size_t>(t)].second;
  }
  return InMemoryCache(shape, {k}, {v}, {q});
}

TEST(KeyDiff, KeepsTheKeysLeastLikeTheMeanDirection) {
  // Normalised keys (1,0), (1,0), (1,0), (0,1), (−1,0), 0 sum to (2, 1): the anchor points at
  // (2, 1)/6, so cos = 2/√5 for t0..t2 (t1 = 2·t0: the norm does not matter), 1/√5 for t3, −2/√5
  // for t4 and 0 for the zero key t5 (torch's eps: no NaN). Least similar first: 4, 5, 3, then
  // the three-way tie t0, t1, t2 taken in token order.
  const auto cache = hand_cache({{1, 0}, {2, 0}, {1, 0}, {0, 1}, {-1, 0}, {0, 0}});
  const auto& s = cache.shape();
  EXPECT_EQ(kept_tokens(run("budget=1", cache), 0, 0, s), (std::set<std::int64_t>{4}));
  EXPECT_EQ(kept_tokens(run("budget=2", cache), 0, 0, s), (std::set<std::int64_t>{4, 5}));
  EXPECT_EQ(kept_tokens(run("budget=3", cache), 0, 0, s), (std::set<std::int64_t>{3, 4, 5}));
  EXPECT_EQ(kept_tokens(run("budget=4", cache), 0, 0, s), (std::set<std::int64_t>{0, 3, 4, 5}));
  EXPECT_EQ(kept_tokens(run("budget=5", cache), 0, 0, s), (std::set<std::int64_t>{0, 1, 3, 4, 5}));
  // Keys that cancel: the anchor is 0, every cosine is 0 (eps), so the earliest tokens are kept.
  // (Norms are powers of two so that the sum is exactly 0 whether or not the compiler fuses a·b + c.)
  const auto cancel = hand_cache({{1, 0}, {-1, 0}, {0, 2}, {0, -2}});
  EXPECT_EQ(kept_tokens(run("budget=2", cancel), 0, 0, cancel.shape()), (std::set<std::int64_t>{0, 1}));
}

TEST(KeyDiff, BudgetEdgeCasesNeverEmptyTheCache) {
  const auto cache = hand_cache({{1, 0}, {2, 0}, {1, 0}, {0, 1}, {-1, 0}});  // T = 5
  const auto& s = cache.shape();
  const auto all = std::set<std::int64_t>{0, 1, 2, 3, 4};
  for (const auto* p : {"budget=5", "budget=1000", "keep=1"}) EXPECT_EQ(kept_tokens(run(p, cache), 0, 0, s), all) << p;
  // keep·T rounded half away from zero (round(2.5) = 3; kvpress's int(T·(1 − ratio)) would keep 2).
  EXPECT_EQ(kept_tokens(run("keep=0.5", cache), 0, 0, s).size(), 3u);
  // round(0.25) = 0 would keep nothing: at least one token per head (the least similar one).
  EXPECT_EQ(kept_tokens(run("keep=0.05", cache), 0, 0, s), (std::set<std::int64_t>{4}));
  EXPECT_THAT(error_of([] { parse_stage(method("keydiff"), "keep=0"); }), HasSubstr("'keep'"));
  const auto random = testing::random_cache(fixture_shape(), 4);
  const auto masks = run("keep=0.3", random);  // round(12.0) = 12
  for (int l = 0; l < random.shape().layers; ++l)
    for (int g = 0; g < random.shape().kv_heads; ++g) EXPECT_EQ(kept_tokens(masks, l, g, random.shape()).size(), 12u);
}

TEST(KeyDiff, RegistryEntryPrintsEveryKeyAndNamesBadKeys) {
  const auto canonical = parse_spec("keydiff").to_string();
  EXPECT_EQ(canonical, "keydiff:keep=0.25,budget=0");
  EXPECT_EQ(parse_spec(canonical).to_string(), canonical);
  const auto& def = method("keydiff");
  EXPECT_EQ(def.kind, StageKind::eviction);
  EXPECT_EQ(def.device, DevicePath::scores);
  EXPECT_TRUE(def.layer_local);
  EXPECT_FALSE(def.needs.attention_inputs || def.needs.checkpoint || def.needs.live_model);
  EXPECT_THAT(describe_methods(), HasSubstr("keydiff"));
  EXPECT_THAT(error_of([] { parse_spec("keydiff:block=128"); }), HasSubstr("unknown key 'block'"));
  EXPECT_THAT(error_of([] { parse_spec("keydiff:keep=2"); }), HasSubstr("'keep'"));
  EXPECT_THAT(error_of([] { parse_spec("keydiff:budget=-3"); }), HasSubstr("'budget'"));
}

TEST(KeyDiff, ReadsOnlyTheKeys) {
  const auto cache = testing::random_cache(fixture_shape(), 6);
  const testing::KeysOnly keys_only(cache);
  EXPECT_EQ(run("keep=0.3", keys_only), run("keep=0.3", cache));
}

TEST(KeyDiff, ChainsWithKiviAndScoresTheSameOneLayerAtATime) {
  const auto cache = testing::random_cache(fixture_shape(), 8);
  const auto whole = testing::expect_eviction_chains_with_kivi("keydiff:keep=0.5", cache);
  EXPECT_DOUBLE_EQ(whole.kept_fraction, 0.5);
  EXPECT_LT(whole.bytes, whole.dense_bytes / 2);  // KIVI at 4 bits on half the cells
}

}  // namespace
}  // namespace kvlab::compressors
