// adakv against a plain transcription of kvpress's AdaKVPress selection written here (safeguard
// top ⌊alpha·b⌋ of each head raised to the largest double, then the H·(T − b) lowest of the
// flattened [H, T] scores pruned), fed with the wrapped scorer's own scores; the closed forms
// (alpha = 1 is the scorer's per-head top-k, uniform scores, one head dominating), the exact
// H·b cells per layer, its registry entry and its chains.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <set>

#include "compressors/methods/eviction.h"
#include "compressors/score.h"
#include "compressors/test_caches.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

using ::testing::HasSubstr;
using testing::error_of;
using testing::kept_tokens;

KeepMasks run(const std::string& spec, const CacheSource& cache) {
  return make_eviction(parse_spec(spec).stages.at(0))->select({cache, linalg::cpu_backend()});
}

// kvpress AdaKVPress.compress, transcribed (bsz = 1): scores [H, T], n_kept = b.
//   n_safe = int(n_kept * alpha_safeguard)
//   top_indices = torch.topk(scores, n_safe, dim=-1).indices; scores.scatter_(-1, top_indices, finfo.max)
//   n_pruned = H * (T - n_kept); indices = torch.topk(-scores.reshape(1, -1), n_pruned).indices
// Returns the kept mask [T, H] (1 = kept: not among the pruned). Ties, which torch leaves
// unspecified: the earlier token into the safeguard, the later flat index pruned first.
std::vector<std::uint8_t> kvpress_adakv(std::vector<double> scores, std::int64_t T, int H, std::int64_t n_kept, double alpha) {
  const auto n_safe = static_cast<std::int64_t>(static_cast<double>(n_kept) * alpha);  // Python int() truncates
  for (int h = 0; h < H; ++h) {
    std::vector<std::int64_t> order(static_cast<std::size_t>(T));
    std::iota(order.begin(), order.end(), std::int64_t{0});
    const double* row = scores.data() + h * T;
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return row[a] > row[b]; });
    for (std::int64_t i = 0; i < n_safe; ++i) scores[static_cast<std::size_t>(h * T + order[static_cast<std::size_t>(i)])] = std::numeric_limits<double>::max();
  }
  const std::int64_t n_pruned = H * (T - n_kept);
  std::vector<std::int64_t> flat(static_cast<std::size_t>(H * T));
  std::iota(flat.begin(), flat.end(), std::int64_t{0});
  std::sort(flat.begin(), flat.end(), [&](std::int64_t a, std::int64_t b) {  // topk of −scores: lowest first
    const auto sa = scores[static_cast<std::size_t>(a)], sb = scores[static_cast<std::size_t>(b)];
    return sa != sb ? sa < sb : a > b;
  });
  std::vector<std::uint8_t> kept(static_cast<std::size_t>(T * H), 1);
  for (std::int64_t i = 0; i < n_pruned; ++i) {
    const auto idx = flat[static_cast<std::size_t>(i)];
    const auto head = idx / T, seq = idx % T;  // module.indices = (…, indices // q_len, indices % q_len)
    kept[static_cast<std::size_t>(seq * H + head)] = 0;
  }
  return kept;
}

// The scorer's own scores of layer l at budget b, as adakv receives them.
HeadScores scorer_scores(const std::string& scorer, const CacheSource& cache, int l, std::int64_t b) {
  return make_eviction(parse_stage(method(scorer), ""))->score_layer({cache, linalg::cpu_backend()}, l, b);
}

std::int64_t kept_in_layer(const KeepMasks& m, int l) {
  return std::accumulate(m[static_cast<std::size_t>(l)].begin(), m[static_cast<std::size_t>(l)].end(), std::int64_t{0});
}

// L, H_kv, H_q, D, T, W: GQA, a real RoPE (θ = 10000).
CacheShape fixture_shape() { return {3, 4, 8, 8, 40, 4, 0}; }

TEST(AdaKV, KeepsWhatATranscriptionOfAdaKVPressKeeps) {
  for (std::uint64_t seed : {1u, 2u, 3u})
    for (const char* scorer : {"knorm", "keydiff", "random"})
      for (const double alpha : {0.0, 0.2, 0.5, 0.9})
        for (const std::int64_t b : {1, 5, 10, 23}) {
          const auto cache = testing::random_cache(fixture_shape(), seed);
          const auto& s = cache.shape();
          const auto masks = run(fmt::format("adakv:scorer={},budget={},alpha={}", scorer, b, alpha), cache);
          for (int l = 0; l < s.layers; ++l) {
            const auto scores = scorer_scores(scorer, cache, l, b);
            ASSERT_EQ(scores.primary.size(), static_cast<std::size_t>(s.kv_heads * s.tokens));
            EXPECT_EQ(masks[static_cast<std::size_t>(l)], kvpress_adakv(scores.primary, s.tokens, s.kv_heads, b, alpha))
                << scorer << " seed " << seed << " alpha " << alpha << " budget " << b << " layer " << l;
            EXPECT_EQ(kept_in_layer(masks, l), s.kv_heads * b);  // exactly the layer's total
          }
        }
}

TEST(AdaKV, AlphaOneIsTheScorersOwnPerHeadTopK) {
  // Every head's top b is the safeguard: nothing is left to allocate.
  const auto cache = testing::random_cache(fixture_shape(), 4);
  for (const char* scorer : {"knorm", "keydiff", "random", "tova", "expected_attention"})
    for (const char* budget : {"keep=0.25", "budget=3", "keep=0.6"})
      EXPECT_EQ(run(fmt::format("adakv:scorer={},{},alpha=1", scorer, budget), cache), run(fmt::format("{}:{}", scorer, budget), cache))
          << scorer << " " << budget;
  // SnapKV with its window (default 32, within the budget and the dump's W): the window is kept in
  // every head, as snapkv keeps it.
  const auto wide = testing::random_cache({2, 2, 4, 8, 96, 32, 0}, 5);
  for (const char* budget : {"budget=40", "keep=0.5"}) {
    EXPECT_EQ(run(fmt::format("adakv:scorer=snapkv,{},alpha=1", budget), wide), run(fmt::format("snapkv:{}", budget), wide)) << budget;
    const auto ada = run(fmt::format("adakv:scorer=snapkv,{},alpha=0.2", budget), wide);
    for (int l = 0; l < 2; ++l)
      for (int g = 0; g < 2; ++g) {
        const auto kept = kept_tokens(ada, l, g, wide.shape());
        for (std::int64_t t = 96 - 32; t < 96; ++t) EXPECT_TRUE(kept.count(t)) << budget << " layer " << l << " head " << g << " token " << t;
      }
  }
}

TEST(AdaKV, AScorersErrorSaysItRanWithItsDefaultKeys) {
  // snapkv's default window of 32 does not fit a budget of 10: the user never named that key.
  const auto wide = testing::random_cache({1, 2, 4, 8, 96, 32, 0}, 5);
  const auto message = error_of([&] { run("adakv:scorer=snapkv,budget=10", wide); });
  EXPECT_THAT(message, HasSubstr("adakv: its scorer snapkv (run with its default keys"));
  EXPECT_THAT(message, HasSubstr("'window' = 32"));
}

// One layer, H KV heads, D = 2, identity RoPE: knorm scores −‖k‖ exactly, so the keys set them.
InMemoryCache norm_cache(int H, const std::vector<std::vector<float>>& norms) {
  const auto T = static_cast<std::int64_t>(norms[0].size());
  const CacheShape shape{1, H, H, 2, T, 1, 0};
  FloatTensor k({T, H, 2}), v({T, H, 2}), q({1, H, 2});
  for (std::int64_t t = 0; t < T; ++t)
    for (int g = 0; g < H; ++g) k.data[static_cast<std::size_t>((t * H + g) * 2)] = norms[static_cast<std::size_t>(g)][static_cast<std::size_t>(t)];
  return InMemoryCache(shape, {k}, {v}, {q});
}

TEST(AdaKV, OneHeadDominatingTakesAllButTheOthersSafeguard) {
  // Head 0's keys are all shorter (knorm: higher scores) than head 1's and head 2's.
  const auto cache = norm_cache(3, {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
                                    {20, 11, 12, 13, 14, 15, 16, 17, 18, 19},
                                    {30, 29, 28, 27, 26, 25, 24, 23, 22, 21}});
  const auto& s = cache.shape();
  // b = 4, alpha = 0.5: n_safe = 2 per head; the other 12 − 6 = 6 cells all go to head 0.
  auto m = run("adakv:scorer=knorm,budget=4,alpha=0.5", cache);
  EXPECT_EQ(kept_tokens(m, 0, 0, s), (std::set<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(kept_tokens(m, 0, 1, s), (std::set<std::int64_t>{1, 2}));
  EXPECT_EQ(kept_tokens(m, 0, 2, s), (std::set<std::int64_t>{9, 8}));
  // alpha = 0: head 0 keeps all 10 of its tokens, head 1 the 2 best left (norms 11, 12).
  m = run("adakv:scorer=knorm,budget=4,alpha=0", cache);
  EXPECT_EQ(kept_tokens(m, 0, 0, s).size(), 10u);
  EXPECT_EQ(kept_tokens(m, 0, 1, s), (std::set<std::int64_t>{1, 2}));
  EXPECT_TRUE(kept_tokens(m, 0, 2, s).empty());
  // alpha = 0.2: ⌊0.8⌋ = 0, the same as no safeguard (kvpress's int()).
  EXPECT_EQ(run("adakv:scorer=knorm,budget=4,alpha=0.2", cache), m);
}

TEST(AdaKV, UniformScoresKeepTheSafeguardThenTheLowerHeadsEarlierTokens) {
  // Every key has norm 1: all scores tie. Each head keeps its first ⌊alpha·b⌋ tokens, then the
  // rest of the layer's H·b go to the lowest flat index (head 0 first, earlier tokens first).
  const std::vector<float> ones(8, 1.0f);
  const auto cache = norm_cache(2, {ones, ones});
  const auto& s = cache.shape();
  const auto m = run("adakv:scorer=knorm,budget=3,alpha=0.34", cache);  // n_safe = ⌊1.02⌋ = 1
  EXPECT_EQ(kept_tokens(m, 0, 0, s), (std::set<std::int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(kept_tokens(m, 0, 1, s), (std::set<std::int64_t>{0}));
  EXPECT_EQ(kept_in_layer(m, 0), 6);
  // alpha = 1: every head its first three.
  const auto even = run("adakv:scorer=knorm,budget=3,alpha=1", cache);
  for (int g = 0; g < 2; ++g) EXPECT_EQ(kept_tokens(even, 0, g, s), (std::set<std::int64_t>{0, 1, 2}));
}

TEST(AdaKV, BudgetAtLeastTKeepsEverything) {
  const auto cache = testing::random_cache(fixture_shape(), 2);
  for (const char* p : {"adakv:budget=40", "adakv:budget=1000", "adakv:keep=1"})
    for (const auto& mask : run(p, cache)) EXPECT_EQ(std::count(mask.begin(), mask.end(), 0), 0) << p;
}

TEST(AdaKV, RegistryEntryPrintsEveryKeyAndNamesBadKeys) {
  const auto canonical = parse_spec("adakv").to_string();
  EXPECT_EQ(canonical, "adakv:keep=0.25,budget=0,scorer=snapkv,alpha=0.2");
  EXPECT_EQ(parse_spec(canonical).to_string(), canonical);
  const auto& def = method("adakv");
  EXPECT_EQ(def.kind, StageKind::eviction);
  EXPECT_EQ(def.device, DevicePath::scores);
  EXPECT_TRUE(def.layer_local);
  EXPECT_THAT(describe_methods(), HasSubstr("adakv"));
  EXPECT_THAT(error_of([] { parse_spec("adakv:scorer=h2o"); }), HasSubstr("'scorer'"));
  EXPECT_THAT(error_of([] { parse_spec("adakv:alpha=1.5"); }), HasSubstr("'alpha'"));
  EXPECT_THAT(error_of([] { parse_spec("adakv:keep=0"); }), HasSubstr("'keep'"));
  EXPECT_THAT(error_of([] { parse_spec("adakv:window=8"); }), HasSubstr("unknown key 'window'"));
  // SnapKV's window must fit the budget and the dump's query window, as snapkv's own.
  const auto cache = testing::random_cache(fixture_shape(), 1);  // W = 4 < the default window 32
  EXPECT_THAT(error_of([&] { run("adakv:budget=10", cache); }), HasSubstr("window"));
}

TEST(AdaKV, NotesNameTheScorerAndTheBudget) {
  const auto stage = make_eviction(parse_spec("adakv:scorer=knorm,budget=5,alpha=0.5").stages.at(0));
  const auto n = stage->notes(fixture_shape());
  EXPECT_EQ(n["tokens"], 40);
  EXPECT_EQ(n["budget_per_layer"], nlohmann::json({5, 5, 5}));
  EXPECT_EQ(n["scorer"], "knorm:keep=0.25,budget=0");
  EXPECT_EQ(n["alpha"], 0.5);
}

TEST(AdaKV, ReadsOnlyTheKeysWithAKeyScorer) {
  const auto cache = testing::random_cache(fixture_shape(), 6);
  const testing::KeysOnly keys_only(cache);
  EXPECT_EQ(run("adakv:scorer=knorm,keep=0.3", keys_only), run("adakv:scorer=knorm,keep=0.3", cache));
}

TEST(AdaKV, ChainsWithKiviAndScoresTheSameOneLayerAtATime) {
  const auto cache = testing::random_cache(fixture_shape(), 8);
  const auto whole = testing::expect_eviction_chains_with_kivi("adakv:scorer=knorm,keep=0.5", cache);
  EXPECT_DOUBLE_EQ(whole.kept_fraction, 0.5);
}

}  // namespace
}  // namespace kvlab::compressors
