// chunkkv against a plain transcription of kvpress's ChunkKVPress.compress written here (head-summed
// scores averaged per chunk, the partial last chunk over its own tokens, max(1, int(N·(1 − ratio)))
// chunks, the scorer's own compress when no chunk is complete), fed with the wrapped scorer's own
// scores (SnapKV's window padded with the layer's maximum, as SnapKVPress.score pads it); the
// closed forms (a known chunk wins, the partial chunk's mean, heads outvoted), the kept counts,
// its registry entry and its chains.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
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

// The scorer's own scores of layer l at budget b, as chunkkv receives them.
HeadScores scorer_scores(const std::string& scorer, const CacheSource& cache, int l, std::int64_t b) {
  return make_eviction(parse_stage(method(scorer), ""))->score_layer({cache, linalg::cpu_backend()}, l, b);
}

// kvpress SnapKVPress.score ends with F.pad(scores, (0, window), value=scores.max().item()): the
// window's scores are the maximum over the layer's other scores (all heads). kvlab's snapkv gives
// the window +inf instead; this turns its scores into what SnapKVPress hands ChunkKVPress.
std::vector<double> kvpress_padded(std::vector<double> s) {
  double mx = -std::numeric_limits<double>::infinity();
  for (const double x : s)
    if (!std::isinf(x)) mx = std::max(mx, x);
  for (double& x : s)
    if (std::isinf(x)) x = mx;
  return s;
}

// kvpress ChunkKVPress.compress, transcribed (bsz = 1), for T ≥ chunk_length: global_scores
// [H, T] (row h at h·T), compression_ratio `ratio`. Returns the kept token indices (the same in
// every head: `indices.view(1, 1, -1, 1).expand(...)`).
//   num_complete_chunks = kv_len // chunk_length; remaining_tokens = kv_len % chunk_length
//   main_chunk_scores = global_scores[..., :n·c].sum(dim=1).view(-1, n, c).mean(dim=-1)
//   remaining_chunk_score = global_scores[..., -r:].sum(dim=1).mean(dim=-1, keepdim=True)
//   n_chunks_kept = max(1, int((n + (r > 0)) * (1 - compression_ratio)))
//   top_chunks = chunk_scores.topk(n_chunks_kept); indices = the chunks' token ranges
// Ties in topk, which torch leaves unspecified: the earlier chunk.
std::set<std::int64_t> kvpress_chunkkv(const std::vector<double>& global_scores, std::int64_t T, int H,
                                       std::int64_t chunk_length, double ratio) {
  const std::int64_t num_complete_chunks = T / chunk_length, remaining_tokens = T % chunk_length;
  // .sum(dim=1): over the heads, per token.
  std::vector<double> summed(static_cast<std::size_t>(T), 0.0);
  for (int h = 0; h < H; ++h)
    for (std::int64_t t = 0; t < T; ++t) summed[static_cast<std::size_t>(t)] += global_scores[static_cast<std::size_t>(h * T + t)];
  std::vector<double> chunk_scores;
  for (std::int64_t i = 0; i < num_complete_chunks; ++i) {
    double acc = 0;
    for (std::int64_t j = 0; j < chunk_length; ++j) acc += summed[static_cast<std::size_t>(i * chunk_length + j)];
    chunk_scores.push_back(acc / static_cast<double>(chunk_length));
  }
  if (remaining_tokens > 0) {
    double acc = 0;
    for (std::int64_t t = T - remaining_tokens; t < T; ++t) acc += summed[static_cast<std::size_t>(t)];
    chunk_scores.push_back(acc / static_cast<double>(remaining_tokens));
  }
  const auto total = static_cast<double>(num_complete_chunks + (remaining_tokens > 0 ? 1 : 0));
  const auto n_chunks_kept = std::max<std::int64_t>(1, static_cast<std::int64_t>(total * (1 - ratio)));  // int() truncates
  std::vector<std::int64_t> ids(chunk_scores.size());
  std::iota(ids.begin(), ids.end(), std::int64_t{0});
  std::stable_sort(ids.begin(), ids.end(), [&](std::int64_t a, std::int64_t b) {
    return chunk_scores[static_cast<std::size_t>(a)] > chunk_scores[static_cast<std::size_t>(b)];
  });
  std::set<std::int64_t> indices;
  for (std::int64_t k = 0; k < n_chunks_kept; ++k) {
    const auto chunk_idx = ids[static_cast<std::size_t>(k)];
    if (chunk_idx < num_complete_chunks)
      for (std::int64_t t = chunk_idx * chunk_length; t < (chunk_idx + 1) * chunk_length; ++t) indices.insert(t);
    else
      for (std::int64_t t = num_complete_chunks * chunk_length; t < T; ++t) indices.insert(t);
  }
  return indices;
}

// Checks layer by layer that chunkkv keeps, in every head, what the transcription keeps with
// compression_ratio = 1 − b/T (or, for T < chunk, what the scorer itself keeps: kvpress calls
// self.press.compress), and returns how many chunk-path layers it compared.
int expect_kvpress(const CacheSource& cache, const std::string& scorer, std::int64_t chunk, std::int64_t b) {
  const auto& s = cache.shape();
  const auto spec = fmt::format("chunkkv:scorer={},budget={},chunk={}", scorer, b, chunk);
  const auto masks = run(spec, cache);
  if (s.tokens < chunk) {
    EXPECT_EQ(masks, run(fmt::format("{}:budget={}", scorer, b), cache)) << spec;
    return 0;
  }
  const double ratio = 1.0 - static_cast<double>(b) / static_cast<double>(s.tokens);
  for (int l = 0; l < s.layers; ++l) {
    const auto scores = scorer_scores(scorer, cache, l, b);
    EXPECT_EQ(scores.primary.size(), static_cast<std::size_t>(s.kv_heads * s.tokens));
    const auto want = kvpress_chunkkv(kvpress_padded(scores.primary), s.tokens, s.kv_heads, chunk, ratio);
    for (int g = 0; g < s.kv_heads; ++g)
      EXPECT_EQ(kept_tokens(masks, l, g, s), want) << spec << " T " << s.tokens << " layer " << l << " head " << g;
  }
  return s.layers;
}

TEST(ChunkKV, KeepsWhatATranscriptionOfChunkKVPressKeepsWithKeyScorers) {
  int compared = 0;
  // L, H_kv, H_q, D, T, W: MHA with T a multiple of 20 and of 10; GQA with T = 73 (a partial chunk
  // for every length but 1 and 73).
  for (const CacheShape shape : {CacheShape{2, 4, 4, 8, 60, 4, 0}, CacheShape{2, 2, 8, 8, 73, 4, 0}})
    for (std::uint64_t seed : {1u, 2u})
      for (const char* scorer : {"knorm", "keydiff", "tova", "random", "expected_attention"})
        for (const std::int64_t chunk : {1, 7, 10, 20, 100})
          for (const std::int64_t b : {1, 5, 17, 30, 59}) {
            const auto cache = testing::random_cache(shape, seed);
            compared += expect_kvpress(cache, scorer, chunk, b);
          }
  EXPECT_GT(compared, 0);
}

TEST(ChunkKV, KeepsWhatATranscriptionOfChunkKVPressKeepsWithSnapKV) {
  // SnapKV (window 32, kernel 7, max pooling) needs W ≥ 32 and budget > 32. GQA T = 150 (chunk 20:
  // seven complete chunks and ten tokens; the window straddles chunks 5 and 6), MHA T = 160.
  for (const CacheShape shape : {CacheShape{2, 2, 4, 8, 150, 32, 0}, CacheShape{2, 4, 4, 8, 160, 32, 0}})
    for (std::uint64_t seed : {3u, 4u})
      for (const std::int64_t chunk : {7, 20, 32, 64, 200})
        for (const std::int64_t b : {33, 40, 75, 120, 149}) {
          const auto cache = testing::random_cache(shape, seed);
          expect_kvpress(cache, "snapkv", chunk, b);
        }
}

TEST(ChunkKV, EveryHeadKeepsTheSameWholeChunksNearTheBudget) {
  const CacheShape shape{3, 4, 8, 8, 95, 4, 0};  // chunk 20: four complete chunks and fifteen tokens
  const auto cache = testing::random_cache(shape, 7);
  for (const std::int64_t b : {1, 10, 24, 50, 94}) {
    const auto masks = run(fmt::format("chunkkv:scorer=keydiff,budget={},chunk=20", b), cache);
    const std::int64_t n = std::max<std::int64_t>(1, 5 * b / 95);
    for (int l = 0; l < shape.layers; ++l) {
      const auto kept = kept_tokens(masks, l, 0, shape);
      for (int g = 1; g < shape.kv_heads; ++g) EXPECT_EQ(kept_tokens(masks, l, g, shape), kept) << b;
      const bool partial = kept.count(94) > 0;
      const auto count = static_cast<std::int64_t>(kept.size());
      EXPECT_EQ(count, partial ? (n - 1) * 20 + 15 : n * 20) << b << " layer " << l;
      EXPECT_TRUE(b - 2 * 20 < count && count < b + 20) << b << " layer " << l << " kept " << count;
      for (std::int64_t i = 0; i < 5; ++i) {  // whole chunks only
        std::int64_t in = 0;
        for (std::int64_t t = i * 20; t < std::min<std::int64_t>(95, (i + 1) * 20); ++t) in += static_cast<std::int64_t>(kept.count(t));
        EXPECT_TRUE(in == 0 || in == std::min<std::int64_t>(95, (i + 1) * 20) - i * 20) << b << " chunk " << i;
      }
    }
  }
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

TEST(ChunkKV, TheChunkWithTheShortestKeysWinsAndThePartialChunkIsAveragedOverItsOwnTokens) {
  // T = 10, chunk 3: chunks {0,1,2} {3,4,5} {6,7,8} and the partial {9}. Chunk means of −Σ_g‖k‖:
  // −2, −20, −20, −3. A sum instead of a mean over the partial chunk would give it −3 > −6.
  const std::vector<float> norms{1, 1, 1, 10, 10, 10, 10, 10, 10, 1.5f};
  const auto cache = norm_cache(2, {norms, norms});
  const auto& s = cache.shape();
  // b = 2: N·b/T = 0.8 → max(1, 0) = one chunk, three tokens (more than the budget).
  auto m = run("chunkkv:scorer=knorm,budget=2,chunk=3", cache);
  for (int g = 0; g < 2; ++g) EXPECT_EQ(kept_tokens(m, 0, g, s), (std::set<std::int64_t>{0, 1, 2}));
  // b = 5: two chunks, the first and the partial one: four tokens (fewer than the budget).
  m = run("chunkkv:scorer=knorm,budget=5,chunk=3", cache);
  for (int g = 0; g < 2; ++g) EXPECT_EQ(kept_tokens(m, 0, g, s), (std::set<std::int64_t>{0, 1, 2, 9}));
  // keep = 0.7 (b = 7): ⌊4·0.7⌋ = 2 chunks as well; b = 8: ⌊3.2⌋ = 3, so chunk 1 (tied with
  // chunk 2, the earlier one) joins.
  EXPECT_EQ(run("chunkkv:scorer=knorm,keep=0.7,chunk=3", cache), m);
  m = run("chunkkv:scorer=knorm,budget=8,chunk=3", cache);
  EXPECT_EQ(kept_tokens(m, 0, 1, s), (std::set<std::int64_t>{0, 1, 2, 3, 4, 5, 9}));
}

TEST(ChunkKV, TheHeadsSumDecidesForEveryHead) {
  // T = 8, chunk 4 (no partial chunk). Head 0 prefers chunk 0 (norm 1 against 3), head 1 chunk 1
  // (1.5 against 4); summed, chunk 1 (−4.5) beats chunk 0 (−5): both heads keep chunk 1, where
  // knorm alone would keep each head's own.
  const auto cache = norm_cache(2, {{1, 1, 1, 1, 3, 3, 3, 3}, {4, 4, 4, 4, 1.5f, 1.5f, 1.5f, 1.5f}});
  const auto& s = cache.shape();
  const auto m = run("chunkkv:scorer=knorm,budget=4,chunk=4", cache);
  for (int g = 0; g < 2; ++g) EXPECT_EQ(kept_tokens(m, 0, g, s), (std::set<std::int64_t>{4, 5, 6, 7})) << g;
  const auto own = run("knorm:budget=4", cache);
  EXPECT_EQ(kept_tokens(own, 0, 0, s), (std::set<std::int64_t>{0, 1, 2, 3}));
  // chunk 1 is each token alone: the per-head top-b of the head-summed scores, the same in both heads.
  const auto single = run("chunkkv:scorer=knorm,budget=4,chunk=1", cache);
  for (int g = 0; g < 2; ++g) EXPECT_EQ(kept_tokens(single, 0, g, s), (std::set<std::int64_t>{4, 5, 6, 7})) << g;
}

TEST(ChunkKV, NoCompleteChunkIsTheScorersOwnSelection) {
  const auto cache = testing::random_cache({2, 2, 4, 8, 30, 4, 0}, 9);
  for (const char* scorer : {"knorm", "keydiff", "random"})
    for (const char* budget : {"budget=3", "keep=0.5"})
      EXPECT_EQ(run(fmt::format("chunkkv:scorer={},{},chunk=31", scorer, budget), cache), run(fmt::format("{}:{}", scorer, budget), cache))
          << scorer << " " << budget;
}

TEST(ChunkKV, SnapKVsWindowCountsAsTheLayersBestScore) {
  // T = 96, window 32, chunk 32: the last chunk is the window. Its mean is H·max, the highest any
  // chunk can have: one chunk kept is the window, in every head.
  const auto cache = testing::random_cache({2, 2, 4, 8, 96, 32, 0}, 5);
  const auto m = run("chunkkv:scorer=snapkv,budget=40,chunk=32", cache);  // ⌊3·40/96⌋ = 1
  std::set<std::int64_t> window;
  for (std::int64_t t = 64; t < 96; ++t) window.insert(t);
  for (int l = 0; l < 2; ++l)
    for (int g = 0; g < 2; ++g) EXPECT_EQ(kept_tokens(m, l, g, cache.shape()), window) << l << " " << g;
}

TEST(ChunkKV, BudgetAtLeastTKeepsEverything) {
  const auto cache = testing::random_cache({2, 2, 4, 8, 40, 4, 0}, 2);
  for (const char* p : {"chunkkv:scorer=knorm,budget=40", "chunkkv:scorer=knorm,budget=1000", "chunkkv:scorer=knorm,keep=1"})
    for (const auto& mask : run(p, cache)) EXPECT_EQ(std::count(mask.begin(), mask.end(), 0), 0) << p;
}

TEST(ChunkKV, RegistryEntryPrintsEveryKeyAndNamesBadKeys) {
  const auto canonical = parse_spec("chunkkv").to_string();
  EXPECT_EQ(canonical, "chunkkv:keep=0.25,budget=0,scorer=snapkv,chunk=20");
  EXPECT_EQ(parse_spec(canonical).to_string(), canonical);
  const auto& def = method("chunkkv");
  EXPECT_EQ(def.kind, StageKind::eviction);
  EXPECT_EQ(def.device, DevicePath::scores);
  EXPECT_TRUE(def.layer_local);
  EXPECT_THAT(describe_methods(), HasSubstr("chunkkv"));
  EXPECT_THAT(error_of([] { parse_spec("chunkkv:scorer=h2o"); }), HasSubstr("'scorer'"));
  EXPECT_THAT(error_of([] { parse_spec("chunkkv:chunk=0"); }), HasSubstr("'chunk'"));
  EXPECT_THAT(error_of([] { parse_spec("chunkkv:keep=0"); }), HasSubstr("'keep'"));
  EXPECT_THAT(error_of([] { parse_spec("chunkkv:window=8"); }), HasSubstr("unknown key 'window'"));
  // SnapKV's window must fit the budget and the dump's query window, as snapkv's own.
  const auto cache = testing::random_cache({2, 2, 4, 8, 40, 4, 0}, 1);  // W = 4 < the default window 32
  EXPECT_THAT(error_of([&] { run("chunkkv:budget=10", cache); }), HasSubstr("window"));
}

TEST(ChunkKV, NotesNameTheScorerAndTheChunks) {
  const auto stage = make_eviction(parse_spec("chunkkv:scorer=knorm,budget=25,chunk=20").stages.at(0));
  const CacheShape shape{3, 4, 8, 8, 95, 4, 0};
  const auto n = stage->notes(shape);
  EXPECT_EQ(n["tokens"], 95);
  EXPECT_EQ(n["budget_per_layer"], nlohmann::json({25, 25, 25}));
  EXPECT_EQ(n["scorer"], "knorm:keep=0.25,budget=0");
  EXPECT_EQ(n["chunk"], 20);
  EXPECT_EQ(n["chunks"], 5);
  EXPECT_EQ(n["chunks_kept"], 1);  // ⌊5·25/95⌋ = 1
  EXPECT_EQ(make_eviction(parse_spec("chunkkv:budget=60,chunk=20").stages.at(0))->notes(shape)["chunks_kept"], 3);
}

TEST(ChunkKV, ReadsOnlyTheKeysWithAKeyScorer) {
  const auto cache = testing::random_cache({3, 4, 8, 8, 40, 4, 0}, 6);
  const testing::KeysOnly keys_only(cache);
  EXPECT_EQ(run("chunkkv:scorer=knorm,keep=0.3,chunk=6", keys_only), run("chunkkv:scorer=knorm,keep=0.3,chunk=6", cache));
}

TEST(ChunkKV, ChainsWithKiviAndScoresTheSameOneLayerAtATime) {
  const auto cache = testing::random_cache({3, 4, 8, 8, 40, 4, 0}, 8);
  // keep 0.5 (b = 20), chunk 8: ⌊5·20/40⌋ = 2 chunks, 16 of the 40 tokens.
  const auto whole = testing::expect_eviction_chains_with_kivi("chunkkv:scorer=knorm,keep=0.5,chunk=8", cache);
  EXPECT_DOUBLE_EQ(whole.kept_fraction, 0.4);
}

}  // namespace
}  // namespace kvlab::compressors
