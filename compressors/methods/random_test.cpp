// random: exact budgets per head, determinism by seed, the two layer rules, and uniformity: over
// many seeds each token is kept with probability b/T (a binomial bound derived below), and the
// kept set of one head is independent of another's.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "compressors/chain.h"
#include "compressors/test_caches.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

using ::testing::HasSubstr;
using testing::error_of;

KeepMasks run(std::string_view params, const CacheSource& cache) {
  return make_eviction(parse_stage(method("random"), params))->select({cache, linalg::cpu_backend()});
}

// L, H_kv, H_q, D, T, W (no queries: random reads none).
CacheShape fixture_shape() { return {3, 2, 2, 4, 40, 0, 0}; }

TEST(Random, KeepsExactlyTheBudgetPerHeadAndRepeatsBySeed) {
  const auto cache = testing::random_cache(fixture_shape(), 1);
  const auto& s = cache.shape();
  const auto a = run("keep=0.25,seed=7", cache);
  for (int l = 0; l < s.layers; ++l)
    for (int g = 0; g < s.kv_heads; ++g) {
      std::int64_t n = 0;
      for (std::int64_t t = 0; t < s.tokens; ++t) n += a[l][static_cast<std::size_t>(t * s.kv_heads + g)];
      EXPECT_EQ(n, 10);
    }
  EXPECT_EQ(run("keep=0.25,seed=7", cache), a);  // same seed, same cache
  EXPECT_NE(run("keep=0.25,seed=8", cache), a);
  // independent: the layers differ; same: every layer keeps the same tokens (kvpress's seeded rule).
  EXPECT_NE(a[0], a[1]);
  const auto same = run("keep=0.25,seed=7,layers=same", cache);
  EXPECT_EQ(same[0], same[1]);
  EXPECT_EQ(same[1], same[2]);
  // A budget ≥ T keeps everything; at least one token per head.
  for (const auto& m : run("budget=100", cache)) EXPECT_EQ(std::accumulate(m.begin(), m.end(), 0), s.tokens * s.kv_heads);
  const auto tiny = run("keep=0.001", cache);
  EXPECT_EQ(std::accumulate(tiny[0].begin(), tiny[0].end(), 0), s.kv_heads);
}

TEST(Random, EveryTokenIsKeptWithProbabilityBudgetOverT) {
  // N seeds; token t of head 0 in layer 0 is kept in K_t ~ Binomial(N, p), p = b/T = 0.25.
  // σ = √(N·p·(1−p)) ≈ 12.2 for N = 800; the bound 5σ on each of T = 40 counts fails a correct
  // sampler with probability < 40 · 5.7e-7. A sampler that favoured early (or late) tokens, e.g.
  // ties or a truncated stream, moves the counts far beyond it.
  const auto cache = testing::random_cache(fixture_shape(), 2);
  const auto& s = cache.shape();
  const int N = 800;
  std::vector<int> kept(static_cast<std::size_t>(s.tokens), 0), both(1, 0);
  for (int seed = 0; seed < N; ++seed) {
    const auto m = run("keep=0.25,seed=" + std::to_string(seed), cache);
    for (std::int64_t t = 0; t < s.tokens; ++t) {
      kept[static_cast<std::size_t>(t)] += m[0][static_cast<std::size_t>(t * s.kv_heads)];
      // Heads independent: P(token 0 kept by both heads) = p² = 1/16.
      if (t == 0) both[0] += m[0][0] && m[0][1];
    }
  }
  const double p = 0.25, sigma = std::sqrt(N * p * (1 - p));
  for (std::int64_t t = 0; t < s.tokens; ++t) EXPECT_LT(std::abs(kept[static_cast<std::size_t>(t)] - N * p), 5 * sigma) << t;
  // Both heads: Binomial(N, 1/16), σ ≈ 6.85; heads copying each other would give N·p = 200.
  EXPECT_LT(std::abs(both[0] - N / 16.0), 5 * std::sqrt(N / 16.0 * (15.0 / 16.0)));
}

TEST(Random, RegistryEntryAndChains) {
  EXPECT_EQ(parse_spec("random").to_string(), "random:keep=0.25,budget=0,seed=0,layers=independent");
  EXPECT_THAT(error_of([] { parse_spec("random:seed=-1"); }), HasSubstr("'seed'"));
  EXPECT_THAT(error_of([] { parse_spec("random:layers=all"); }), HasSubstr("'layers'"));
  EXPECT_TRUE(method("random").layer_local);
  // A query window this time, so the attention figures exist to compare.
  const auto whole = testing::expect_eviction_chains_with_kivi("random:keep=0.5,seed=3", testing::random_cache({3, 2, 2, 4, 40, 4, 0}, 3));
  EXPECT_DOUBLE_EQ(whole.kept_fraction, 0.5);
}

}  // namespace
}  // namespace kvlab::compressors
