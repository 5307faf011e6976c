// knorm against a plain transcription of kvpress's KnormPress written here (keys rotated with
// HF's rotate_half RoPE in double, score −‖k‖, ScorerPress's top-k per KV head, earlier token on
// ties), hand-built caches whose norms are exact, the budget rules every eviction method shares,
// its registry entry and its chains.
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
  return make_eviction(parse_stage(method("knorm"), params))->select({cache, linalg::cpu_backend()});
}

// KnormPress + ScorerPress, transcribed: score = −‖k‖ of the cached (post-RoPE) key, the top n
// scores of each KV head, ties to the earlier token (torch.topk leaves them unspecified).
std::set<std::int64_t> knorm_oracle(const CacheSource& c, int l, int g, std::int64_t n) {
  const auto& s = c.shape();
  const auto k = post_rope_keys(c, l);
  std::vector<double> score(static_cast<std::size_t>(s.tokens));
  for (std::int64_t t = 0; t < s.tokens; ++t) {
    double sq = 0;
    for (int d = 0; d < s.head_dim; ++d) sq += std::pow(k[static_cast<std::size_t>((t * s.kv_heads + g) * s.head_dim + d)], 2);
    score[static_cast<std::size_t>(t)] = -std::sqrt(sq);
  }
  return top_n(score, n);
}

// L, H_kv, H_q, D, T, W: GQA (two query heads per KV head), a real RoPE (θ = 10000).
CacheShape fixture_shape() { return {3, 2, 4, 8, 40, 4, 0}; }

TEST(Knorm, KeepsWhatATranscriptionOfKnormPressKeeps) {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    const auto cache = testing::random_cache(fixture_shape(), seed);
    const auto& s = cache.shape();
    for (const auto& [params, n] : std::vector<std::pair<std::string, std::int64_t>>{
             {"keep=0.25", 10}, {"keep=0.5", 20}, {"budget=7", 7}, {"keep=0.9", 36}}) {
      const auto masks = run(params, cache);
      ASSERT_EQ(masks.size(), static_cast<std::size_t>(s.layers));
      for (int l = 0; l < s.layers; ++l)
        for (int g = 0; g < s.kv_heads; ++g)
          EXPECT_EQ(kept_tokens(masks, l, g, s), knorm_oracle(cache, l, g, n))
              << "seed " << seed << " " << params << " layer " << l << " head " << g;
    }
  }
}

TEST(Knorm, RopeDoesNotChangeTheKeptSetButTheOracleSeesTheRotation) {
  // RoPE is a rotation, so the norm and the selection are the same with and without it, while the
  // rotated keys themselves differ (the oracle really rotates).
  const auto rotated = testing::random_cache(fixture_shape(), 5, /*with_rope=*/true);
  const auto plain = testing::random_cache(fixture_shape(), 5, /*with_rope=*/false);
  EXPECT_EQ(run("keep=0.3", rotated), run("keep=0.3", plain));
  const auto a = post_rope_keys(rotated, 0), b = post_rope_keys(plain, 0);
  double diff = 0;
  for (std::size_t i = 0; i < a.size(); ++i) diff = std::max(diff, std::abs(a[i] - b[i]));
  EXPECT_GT(diff, 0.1);
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

TEST(Knorm, KeepsTheLowestNormsAndBreaksTiesToTheEarlierToken) {
  // Norms 2, 1, 2, 2, 5, 0 (exact in f32 and double).
  const auto cache = hand_cache({{2, 0}, {0, 1}, {0, -2}, {-2, 0}, {3, 4}, {0, 0}});
  const auto& s = cache.shape();
  EXPECT_EQ(kept_tokens(run("budget=1", cache), 0, 0, s), (std::set<std::int64_t>{5}));  // the zero key
  EXPECT_EQ(kept_tokens(run("budget=2", cache), 0, 0, s), (std::set<std::int64_t>{1, 5}));
  // Three tokens tie at norm 2 for two places: the earlier ones win.
  EXPECT_EQ(kept_tokens(run("budget=3", cache), 0, 0, s), (std::set<std::int64_t>{0, 1, 5}));
  EXPECT_EQ(kept_tokens(run("budget=4", cache), 0, 0, s), (std::set<std::int64_t>{0, 1, 2, 5}));
  EXPECT_EQ(kept_tokens(run("budget=5", cache), 0, 0, s), (std::set<std::int64_t>{0, 1, 2, 3, 5}));
}

TEST(Knorm, BudgetEdgeCasesNeverEmptyTheCache) {
  const auto cache = hand_cache({{2, 0}, {0, 1}, {0, -2}, {-2, 0}, {3, 4}});  // T = 5
  const auto& s = cache.shape();
  const auto all = std::set<std::int64_t>{0, 1, 2, 3, 4};
  // A budget ≥ T keeps everything.
  for (const auto* p : {"budget=5", "budget=1000", "keep=1"}) EXPECT_EQ(kept_tokens(run(p, cache), 0, 0, s), all) << p;
  // keep·T is rounded half away from zero (round(2.5) = 3; kvpress's int(T·(1 − ratio)) would keep 2).
  EXPECT_EQ(kept_tokens(run("keep=0.5", cache), 0, 0, s).size(), 3u);
  EXPECT_EQ(kept_tokens(run("keep=0.1", cache), 0, 0, s).size(), 1u);  // round(0.5) = 1
  // round(0.25) = 0 would keep nothing: at least one token is kept per head.
  EXPECT_EQ(kept_tokens(run("keep=0.05", cache), 0, 0, s), (std::set<std::int64_t>{1}));
  // budget > 0 overrides keep.
  EXPECT_EQ(kept_tokens(run("keep=0.05,budget=2", cache), 0, 0, s).size(), 2u);
  // keep = 0 is not a budget: an error naming the key, never an empty cache.
  EXPECT_THAT(error_of([] { parse_stage(method("knorm"), "keep=0"); }), HasSubstr("'keep'"));
  // Every head of every layer keeps the same count on the random fixture.
  const auto random = testing::random_cache(fixture_shape(), 4);
  const auto masks = run("keep=0.3", random);  // round(12.0) = 12
  for (int l = 0; l < random.shape().layers; ++l)
    for (int g = 0; g < random.shape().kv_heads; ++g) EXPECT_EQ(kept_tokens(masks, l, g, random.shape()).size(), 12u);
}

TEST(Knorm, RegistryEntryPrintsEveryKeyAndNamesBadKeys) {
  // The canonical form prints every key with its default, in declared order, and parses back.
  const auto canonical = parse_spec("knorm").to_string();
  EXPECT_EQ(canonical, "knorm:keep=0.25,budget=0");
  EXPECT_EQ(parse_spec(canonical).to_string(), canonical);
  EXPECT_EQ(parse_spec("knorm:budget=64").to_string(), "knorm:keep=0.25,budget=64");
  const auto& def = method("knorm");
  EXPECT_EQ(def.kind, StageKind::eviction);
  EXPECT_EQ(def.device, DevicePath::scores);
  EXPECT_TRUE(def.layer_local);
  EXPECT_FALSE(def.needs.attention_inputs || def.needs.checkpoint || def.needs.live_model);
  EXPECT_THAT(describe_methods(), HasSubstr("knorm"));
  EXPECT_THAT(error_of([] { parse_spec("knorm:window=8"); }), HasSubstr("unknown key 'window'"));
  EXPECT_THAT(error_of([] { parse_spec("knorm:keep=1.5"); }), HasSubstr("'keep'"));
  EXPECT_THAT(error_of([] { parse_spec("knorm:keep=0"); }), HasSubstr("'keep'"));
  EXPECT_THAT(error_of([] { parse_spec("knorm:budget=-1"); }), HasSubstr("'budget'"));
  EXPECT_THAT(error_of([] { parse_spec("knorm:budget=half"); }), HasSubstr("'budget'"));
}

TEST(Knorm, ReadsOnlyTheKeys) {
  const auto cache = testing::random_cache(fixture_shape(), 6);
  const testing::KeysOnly keys_only(cache);
  EXPECT_EQ(run("keep=0.3", keys_only), run("keep=0.3", cache));
}

TEST(Knorm, ChainsWithKiviAndScoresTheSameOneLayerAtATime) {
  const auto cache = testing::random_cache(fixture_shape(), 8);
  const auto whole = testing::expect_eviction_chains_with_kivi("knorm:keep=0.5", cache);
  EXPECT_DOUBLE_EQ(whole.kept_fraction, 0.5);
  EXPECT_LT(whole.bytes, whole.dense_bytes / 2);  // KIVI at 4 bits on half the cells
}

}  // namespace
}  // namespace kvlab::compressors
