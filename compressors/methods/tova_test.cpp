// tova against a transcription of the authors' TOVACache.reduce (schwartz-lab-NLP/TOVA
// src/tova_cache.py) written here: the last query's attention, brute force per query head
// (testing::brute_attention: RoPE at the true positions, causal, softmax in double), rounded to f32
// as kvlab's window scores are stored, averaged over all query heads, top-k (earlier token on
// ties), the same tokens for every KV head; kvpress's variant (last token always kept); the budget
// rules, the query window it needs, its registry entry and its chains.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "compressors/chain.h"
#include "compressors/score.h"
#include "compressors/test_caches.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

using ::testing::HasSubstr;
using testing::error_of;
using testing::kept_tokens;
using testing::top_n;

KeepMasks run(std::string_view params, const CacheSource& cache) {
  return make_eviction(parse_stage(method("tova"), params))->select({cache, linalg::cpu_backend()});
}

// TOVACache.reduce, transcribed: mean over heads of the last query's attention, topk(n). With
// `pin_last`, kvpress's TOVAPress: the last key's score is the maximum of the others.
std::set<std::int64_t> tova_oracle(const CacheSource& c, int l, std::int64_t n, bool pin_last = false) {
  const auto& s = c.shape();
  const auto key = c.layer(l, Part::key), value = c.layer(l, Part::value);
  std::vector<double> score(static_cast<std::size_t>(s.tokens), 0.0), p, o;
  for (int h = 0; h < s.q_heads; ++h) {
    testing::brute_attention(c, l, key, value, {}, s.query_window - 1, h, p, o);
    for (std::int64_t t = 0; t < s.tokens; ++t) score[static_cast<std::size_t>(t)] += static_cast<float>(p[static_cast<std::size_t>(t)]);
  }
  for (double& x : score) x /= s.q_heads;
  if (pin_last) score.back() = *std::max_element(score.begin(), score.end() - 1);
  return top_n(score, n);
}

// L, H_kv, H_q, D, T, W: GQA (two query heads per KV head), a real RoPE (θ = 10000).
CacheShape fixture_shape() { return {3, 2, 4, 8, 40, 4, 0}; }

TEST(Tova, KeepsWhatATranscriptionOfTheAuthorsCacheKeeps) {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    const auto cache = testing::random_cache(fixture_shape(), seed);
    const auto& s = cache.shape();
    for (const auto& [params, n] : std::vector<std::pair<std::string, std::int64_t>>{
             {"keep=0.25", 10}, {"keep=0.5", 20}, {"budget=7", 7}, {"keep=0.9", 36}}) {
      for (const bool pin : {false, true}) {
        const auto masks = run(params + (pin ? ",last=kept" : ""), cache);
        ASSERT_EQ(masks.size(), static_cast<std::size_t>(s.layers));
        for (int l = 0; l < s.layers; ++l) {
          const auto want = tova_oracle(cache, l, n, pin);
          for (int g = 0; g < s.kv_heads; ++g)  // one token set for every KV head
            EXPECT_EQ(kept_tokens(masks, l, g, s), want) << "seed " << seed << " " << params << " pin " << pin << " layer " << l;
        }
      }
    }
  }
}

// One layer, one KV head, one query head, D = 2, identity RoPE, W = 1: the last query (1, 0)
// scores key t by e^{k_t·q/√2}, so the first coordinates set the order exactly.
InMemoryCache hand_cache(const std::vector<float>& first) {
  const auto T = static_cast<std::int64_t>(first.size());
  const CacheShape shape{1, 1, 1, 2, T, 1, 0};
  FloatTensor k({T, 1, 2}), v({T, 1, 2}), q({1, 1, 2});
  for (std::int64_t t = 0; t < T; ++t) k.data[static_cast<std::size_t>(2 * t)] = first[static_cast<std::size_t>(t)];
  q.data[0] = 1;
  return InMemoryCache(shape, {k}, {v}, {q});
}

TEST(Tova, KeepsTheMostAttendedTokensTiesToTheEarlierAndTheLastByChoice) {
  // Scores rank 3 > {1, 2} (tied) > 0 > 4 (the last token, low).
  const auto cache = hand_cache({0, 1, 1, 2, -1});
  const auto& s = cache.shape();
  EXPECT_EQ(kept_tokens(run("budget=1", cache), 0, 0, s), (std::set<std::int64_t>{3}));
  EXPECT_EQ(kept_tokens(run("budget=2", cache), 0, 0, s), (std::set<std::int64_t>{1, 3}));  // the earlier of the tie
  EXPECT_EQ(kept_tokens(run("budget=4", cache), 0, 0, s), (std::set<std::int64_t>{0, 1, 2, 3}));
  // kvpress: the last token gets the top score, tied with token 3; ties go to the earlier token, so
  // one slot keeps token 3 and two keep both.
  EXPECT_EQ(kept_tokens(run("budget=1,last=kept", cache), 0, 0, s), (std::set<std::int64_t>{3}));
  EXPECT_EQ(kept_tokens(run("budget=2,last=kept", cache), 0, 0, s), (std::set<std::int64_t>{3, 4}));
}

TEST(Tova, BudgetRulesAndTheQueryWindowItNeeds) {
  const auto cache = hand_cache({0, 1, 1, 2, -1});  // T = 5
  const auto& s = cache.shape();
  for (const auto* p : {"budget=5", "budget=1000", "keep=1"})
    EXPECT_EQ(kept_tokens(run(p, cache), 0, 0, s), (std::set<std::int64_t>{0, 1, 2, 3, 4})) << p;
  EXPECT_EQ(kept_tokens(run("keep=0.5", cache), 0, 0, s).size(), 3u);          // round(2.5) = 3
  EXPECT_EQ(kept_tokens(run("keep=0.05", cache), 0, 0, s).size(), 1u);         // at least one token
  EXPECT_THAT(error_of([] { parse_stage(method("tova"), "keep=0"); }), HasSubstr("'keep'"));
  // No queries in the cache: an error naming what is missing, not an empty selection.
  const CacheShape no_window{1, 1, 1, 2, 5, 0, 0};
  const InMemoryCache blind(no_window, {FloatTensor({5, 1, 2})}, {FloatTensor({5, 1, 2})}, {FloatTensor({0, 1, 2})});
  EXPECT_THAT(error_of([&] { run("budget=2", blind); }), HasSubstr("no queries"));
}

TEST(Tova, RegistryEntryPrintsEveryKeyAndNamesBadKeys) {
  const auto canonical = parse_spec("tova").to_string();
  EXPECT_EQ(canonical, "tova:keep=0.25,budget=0,last=scored");
  EXPECT_EQ(parse_spec(canonical).to_string(), canonical);
  const auto& def = method("tova");
  EXPECT_EQ(def.kind, StageKind::eviction);
  EXPECT_EQ(def.device, DevicePath::scores);
  EXPECT_TRUE(def.layer_local);
  EXPECT_THAT(describe_methods(), HasSubstr("tova"));
  EXPECT_THAT(error_of([] { parse_spec("tova:last=maybe"); }), HasSubstr("'last'"));
  EXPECT_THAT(error_of([] { parse_spec("tova:window=8"); }), HasSubstr("unknown key 'window'"));
}

TEST(Tova, ChainsWithKiviAndScoresTheSameOneLayerAtATime) {
  const auto whole = testing::expect_eviction_chains_with_kivi("tova:keep=0.5", testing::random_cache(fixture_shape(), 8));
  EXPECT_DOUBLE_EQ(whole.kept_fraction, 0.5);
}

}  // namespace
}  // namespace kvlab::compressors
