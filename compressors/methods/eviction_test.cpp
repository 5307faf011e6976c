// Eviction methods against independent oracles: budgets counted from the masks, the synthetic
// generator's planted attention targets, PyramidKV's closed-form schedule, hand-built caches whose
// attention is known by construction (pooling, GQA aggregation), a brute-force softmax with RoPE
// rotated row by row in this file, and the SnapKV repository's repeat_kv selection transcribed.
#include "compressors/methods/eviction.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
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

KeepMasks run(const MethodDef& def, std::string_view params, const CacheSource& cache) {
  const auto spec = parse_stage(def, params);
  return make_eviction_method(spec)->select({cache, linalg::cpu_backend()});
}

bool kept(const KeepMasks& m, int l, std::int64_t t, int g, int H) { return m[l][static_cast<std::size_t>(t * H + g)]; }

std::int64_t count(const KeepMasks& m, int l, int g, const CacheShape& s) {
  std::int64_t n = 0;
  for (std::int64_t t = 0; t < s.tokens; ++t) n += kept(m, l, t, g, s.kv_heads);
  return n;
}

// L, H_kv, H_q, D, T, W
CacheShape random_shape() { return {3, 2, 4, 16, 96, 12, 0}; }

TEST(Eviction, EveryMethodKeepsExactlyTheBudgetAndItsProtectedTokens) {
  const auto cache = testing::random_cache(random_shape(), 3);
  const auto& s = cache.shape();
  const std::int64_t T = s.tokens;
  struct Case {
    MethodDef def;
    std::string params;
    std::int64_t budget;      // expected per (layer, head), all layers (not PyramidKV)
    std::int64_t head, tail;  // tokens [0, head) and [T − tail, T) that must be kept
  };
  const std::vector<Case> cases = {
      {streamingllm_method(), "keep=0.25", 24, 4, 20},
      {streamingllm_method(), "budget=10,sinks=2", 10, 2, 8},
      {h2o_method(), "keep=0.3", 29, 0, 15},  // round(0.3·96) = 29, recent round(14.5) = 15 (half away from 0)
      {h2o_method(), "budget=20,recent=0.1,agg=max", 20, 0, 2},
      {h2o_method(), "budget=20,recent=0", 20, 0, 0},
      {snapkv_method(), "keep=0.25,window=8", 24, 0, 8},
      {snapkv_method(), "budget=40,window=12,kernel=1,pool=avg,agg=sum", 40, 0, 12},
  };
  for (const auto& c : cases) {
    const auto masks = run(c.def, c.params, cache);
    ASSERT_EQ(masks.size(), static_cast<std::size_t>(s.layers));
    for (int l = 0; l < s.layers; ++l)
      for (int g = 0; g < s.kv_heads; ++g) {
        EXPECT_EQ(count(masks, l, g, s), c.budget) << c.def.name << ":" << c.params << " layer " << l;
        for (std::int64_t t = 0; t < c.head; ++t) EXPECT_TRUE(kept(masks, l, t, g, s.kv_heads)) << c.params << " t=" << t;
        for (std::int64_t t = T - c.tail; t < T; ++t)
          EXPECT_TRUE(kept(masks, l, t, g, s.kv_heads)) << c.params << " t=" << t;
      }
  }
  // PyramidKV: each layer keeps its own budget and always the window; the conserved schedule sums to
  // SnapKV's total.
  for (const char* params : {"keep=0.2,window=8", "keep=0.2,window=8,schedule=conserved", "keep=0.5,window=8"}) {
    const auto spec = parse_stage(pyramidkv_method(), params);
    const auto b = eviction_budget(spec, T);
    const auto budgets = spec.get("schedule") == "conserved" ? pyramid_budgets(b, 8, T, s.layers, 20)
                                                               : pyramid_budgets_authors(b, 8, T, s.layers, 20);
    const auto masks = run(pyramidkv_method(), params, cache);
    for (int l = 0; l < s.layers; ++l)
      for (int g = 0; g < s.kv_heads; ++g) {
        EXPECT_EQ(count(masks, l, g, s), budgets[l]) << params;
        for (std::int64_t t = T - 8; t < T; ++t) EXPECT_TRUE(kept(masks, l, t, g, s.kv_heads));
      }
    if (spec.get("schedule") == "conserved") {
      EXPECT_EQ(std::accumulate(budgets.begin(), budgets.end(), std::int64_t{0}), s.layers * b);
    }
  }
  // A budget ≥ T keeps everything.
  for (const auto* p : {"budget=500", "keep=1"})
    for (const auto& m : run(snapkv_method(), p, cache)) EXPECT_EQ(std::accumulate(m.begin(), m.end(), 0), T * s.kv_heads);
}

TEST(Eviction, SnapKVAndH2OKeepThePlantedTargetsOfTheWindowQueries) {
  // T = 512, W = 16, S = 4 sinks, H_q/H_kv = 2. head_dim 64 (not the fixture's 16): the planted targets
  // dominate a query's attention only when the head's key rank D_eff ≳ 2·ln T (synth_kv.h); at D = 16
  // (key rank 8) ordinary tokens reach logits above the target's.
  auto config = testing::small_synth_config();
  config.head_dim = 64;
  const datasets::SynthGenerator gen(config);
  const auto cache = testing::synthetic_cache(config);
  const auto& s = cache.shape();
  // Per KV head at most W·n_rep = 32 distinct targets + 4 sinks. SnapKV's k7 max pooling spreads each
  // target over 7 tied tokens, so its budget must cover ≈ 7·32 + 7 + window = 247 of 512: keep 0.6.
  // H2O has no pooling: 64 heavy slots of a 128 budget hold 36 targets and sinks.
  const std::vector<std::pair<MethodDef, std::string>> runs = {
      {snapkv_method(), "keep=0.6,window=16"},
      {snapkv_method(), "keep=0.25,window=16,kernel=1,agg=max"},
      {h2o_method(), "keep=0.25"},
  };
  for (const auto& [def, params] : runs) {
    const auto masks = run(def, params, cache);
    for (int l = 0; l < s.layers; ++l) {
      int missed = 0, total = 0;
      for (int w = 0; w < s.query_window; ++w)
        for (int h = 0; h < s.q_heads; ++h) {
          ++total;
          const auto target = gen.query_target(0, l, w, h);
          if (!kept(masks, l, target, h / s.group_size(), s.kv_heads)) ++missed;
        }
      EXPECT_EQ(missed, 0) << def.name << ":" << params << " layer " << l << ": " << missed << " of " << total;
      for (int g = 0; g < s.kv_heads; ++g)
        for (int t = 0; t < config.sink_tokens; ++t) EXPECT_TRUE(kept(masks, l, t, g, s.kv_heads)) << "sink " << t;
    }
  }
  // Control: the oracle discriminates. StreamingLLM at the same 0.6 budget ignores attention and
  // loses the targets that fall outside its sinks and recent tokens (targets are uniform in [4, 496)).
  const auto blind = run(streamingllm_method(), "keep=0.6", cache);
  int missed = 0;
  for (int w = 0; w < s.query_window; ++w)
    for (int h = 0; h < s.q_heads; ++h)
      missed += !kept(blind, 0, gen.query_target(0, 0, w, h), h / s.group_size(), s.kv_heads);
  EXPECT_GT(missed, 10);
}

TEST(Eviction, PyramidBudgetsFollowTheLinearScheduleAndSumToTheSnapKVTotal) {
  struct Case {
    std::int64_t C;
    int w;
    std::int64_t T;
    int L;
    double beta;
  };
  for (const auto& c : std::vector<Case>{{512, 32, 4096, 32, 20}, {128, 8, 1000, 7, 20}, {100, 10, 1000, 5, 3},
                                         {900, 8, 1000, 4, 20} /* max capped at T − w */}) {
    const auto b = pyramid_budgets(c.C, c.w, c.T, c.L, c.beta);
    ASSERT_EQ(b.size(), static_cast<std::size_t>(c.L));
    EXPECT_EQ(std::accumulate(b.begin(), b.end(), std::int64_t{0}), c.L * c.C);
    // The closed form of docs/methods/eviction.md §7, including KVCache-Factory's cap of max at T − w.
    const double extra = static_cast<double>(c.C - c.w);
    double lo = extra / c.beta, hi = 2 * extra - lo;
    if (hi > static_cast<double>(c.T - c.w)) {
      hi = static_cast<double>(c.T - c.w);
      lo = 2 * extra - hi;
    }
    for (int l = 0; l < c.L; ++l) {
      const double expect = c.w + hi - l * (hi - lo) / (c.L - 1);
      EXPECT_LT(std::abs(static_cast<double>(b[l]) - expect), 1.0) << "C=" << c.C << " layer " << l;
      EXPECT_LE(b[l], c.T);
      if (l > 0) {
        EXPECT_LE(b[l], b[l - 1]);
      }
    }
  }
  EXPECT_EQ(pyramid_budgets(2000, 8, 1000, 4, 20), std::vector<std::int64_t>(4, 1000));  // C ≥ T: all kept
  // notes() reports the per-layer budgets.
  const CacheShape shape{4, 1, 1, 8, 1000, 32, 0};
  const auto n = make_eviction_method(parse_stage(pyramidkv_method(), "budget=128,window=8,schedule=conserved"))->notes(shape);
  EXPECT_EQ(n.at("budget_per_layer").get<std::vector<std::int64_t>>(), pyramid_budgets(128, 8, 1000, 4, 20));
  const auto na = make_eviction_method(parse_stage(pyramidkv_method(), "budget=128,window=8"))->notes(shape);
  EXPECT_EQ(na.at("budget_per_layer").get<std::vector<std::int64_t>>(), pyramid_budgets_authors(128, 8, 1000, 4, 20));
  const auto sn = make_eviction_method(parse_stage(snapkv_method(), "budget=128,window=8"))->notes(shape);
  EXPECT_EQ(sn.at("budget_per_layer").get<std::vector<std::int64_t>>(), std::vector<std::int64_t>(4, 128));
}

// Brute force: Σ_w of the softmax over visible keys, each row rotated alone (testing::brute_attention).
std::vector<double> brute_sums(const CacheSource& c, int layer, int rows, int h) {
  const auto key = c.layer(layer, Part::key), value = c.layer(layer, Part::value);
  std::vector<double> out(c.shape().tokens, 0.0), p, o;
  for (int w = c.shape().query_window - rows; w < c.shape().query_window; ++w) {
    testing::brute_attention(c, layer, key, value, {}, w, h, p, o);
    for (std::size_t t = 0; t < out.size(); ++t) out[t] += p[t];
  }
  return out;
}

// KVCache-Factory's PyramidKVCluster.update_kv budgets, worked by hand from its integer code
// (C = max_capacity_prompt, w = window_size; min_num, max_num, steps; the layer keeps
// max_num − l·steps tokens before the window, plus the window).
TEST(Eviction, PyramidBudgetsOfTheAuthorsCodeWorkedByHand) {
  // Issue 21's example: keep=0.6 (C = 307), w = 16, T = 512 < 2(C − w) = 582: C on every layer.
  EXPECT_EQ(pyramid_budgets_authors(307, 16, 512, 4, 20), std::vector<std::int64_t>(4, 307));
  // C = 128, w = 8, T = 1000, L = 4: min = 120 // 20 = 6, max = 234, steps = 228 // 3 = 76.
  EXPECT_EQ(pyramid_budgets_authors(128, 8, 1000, 4, 20), (std::vector<std::int64_t>{242, 166, 90, 14}));
  // C = 100, w = 8, L = 4: min = 92 // 20 = 4, max = 180, steps = 176 // 3 = 58 (floored): the
  // layers sum to 404 > L·C = 400 (the code does not conserve the total).
  const auto drift = pyramid_budgets_authors(100, 8, 1000, 4, 20);
  EXPECT_EQ(drift, (std::vector<std::int64_t>{188, 130, 72, 14}));
  EXPECT_EQ(std::accumulate(drift.begin(), drift.end(), std::int64_t{0}), 404);
  // T = 186 ≥ 2(C − w) = 184 but max = 180 ≥ T − w = 178: max = 178, min = 184 − 178 = 6,
  // steps = 172 // 3 = 57.
  EXPECT_EQ(pyramid_budgets_authors(100, 8, 186, 4, 20), (std::vector<std::int64_t>{186, 129, 72, 15}));
  // A real β floors: min = ⌊92 / 3.5⌋ = 26, max = 158, steps = 132 // 3 = 44.
  EXPECT_EQ(pyramid_budgets_authors(100, 8, 1000, 4, 3.5), (std::vector<std::int64_t>{166, 122, 78, 34}));
  // C ≥ T keeps everything; one layer keeps max (the code would divide by L − 1 = 0).
  EXPECT_EQ(pyramid_budgets_authors(2000, 8, 1000, 4, 20), std::vector<std::int64_t>(4, 1000));
  EXPECT_EQ(pyramid_budgets_authors(128, 8, 1000, 1, 20), (std::vector<std::int64_t>{242}));
  // kvlab's conserved schedule at issue 21's example: the pyramid at once.
  EXPECT_EQ(pyramid_budgets(307, 16, 512, 4, 20), (std::vector<std::int64_t>{512, 375, 239, 102}));
}

// SnapKV's scoring on a GQA cache against a transcription of KVCache-Factory's kv_head path
// (pyramidkv_utils.py: window attention summed over the window's queries, group-reduced to the KV
// head, then 1-D max-pooled, top (b − w) plus the window), and of kvpress's order (pool each
// query head, then reduce). Attention by brute force (brute_sums, f32 sums as kvlab stores them);
// ties by the unpooled score, then the earlier token (keep_top_scores).
std::set<std::int64_t> snap_oracle(const CacheSource& c, int l, int g, int window, int kernel, bool reduce_first,
                                   std::int64_t b) {
  const auto& s = c.shape();
  const std::int64_t T = s.tokens, n = T - window;
  const int n_rep = s.group_size();
  const auto max_pool = [&](const std::vector<double>& x) {  // torch max_pool1d, padding kernel/2, stride 1
    std::vector<double> out(x.size());
    for (std::int64_t t = 0; t < n; ++t) {
      double m = -1e300;
      for (std::int64_t i = std::max<std::int64_t>(0, t - kernel / 2); i <= std::min(n - 1, t + kernel / 2); ++i) m = std::max(m, x[i]);
      out[t] = m;
    }
    return out;
  };
  std::vector<double> raw(n, 0.0), pooled(n, 0.0);
  for (int r = 0; r < n_rep; ++r) {
    const auto sums = brute_sums(c, l, window, g * n_rep + r);
    std::vector<double> row(n);
    for (std::int64_t t = 0; t < n; ++t) row[t] = static_cast<float>(sums[t]);
    const auto p = max_pool(row);
    for (std::int64_t t = 0; t < n; ++t) raw[t] += row[t], pooled[t] += p[t];
  }
  for (std::int64_t t = 0; t < n; ++t) raw[t] /= n_rep, pooled[t] /= n_rep;  // the group's mean
  if (reduce_first) {
    std::vector<double> mean(n);
    for (std::int64_t t = 0; t < n; ++t) mean[t] = static_cast<float>(raw[t]);
    pooled = max_pool(mean);
  }
  std::vector<std::int64_t> order(n);
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t z) {
    return pooled[a] != pooled[z] ? pooled[a] > pooled[z] : raw[a] > raw[z];
  });
  std::set<std::int64_t> out(order.begin(), order.begin() + (b - window));
  for (std::int64_t t = n; t < T; ++t) out.insert(t);
  return out;
}

TEST(Eviction, SnapKVsGqaOrderIsTheAuthorsOrderAsAKey) {
  const auto cache = testing::random_cache({2, 2, 8, 16, 96, 12, 0}, 11);  // four query heads per KV head
  const auto& s = cache.shape();
  std::int64_t disagree = 0;
  for (const bool reduce_first : {true, false}) {
    const std::string params = std::string("budget=30,window=8,kernel=7") + (reduce_first ? "" : ",order=pool_then_reduce");
    const auto masks = run(snapkv_method(), params, cache);
    for (int l = 0; l < s.layers; ++l)
      for (int g = 0; g < s.kv_heads; ++g) {
        std::set<std::int64_t> got;
        for (std::int64_t t = 0; t < s.tokens; ++t)
          if (kept(masks, l, t, g, s.kv_heads)) got.insert(t);
        EXPECT_EQ(got, snap_oracle(cache, l, g, 8, 7, reduce_first, 30)) << params << " layer " << l << " head " << g;
        disagree += got != snap_oracle(cache, l, g, 8, 7, !reduce_first, 30);
      }
  }
  EXPECT_GT(disagree, 0);  // the two orders really select differently here (max pooling, mean)
}

// A sliding layer (window 20 on layer 0, docs/dump-format.md §2): the window scores are the
// brute-force attention over the keys each query sees (i − 20 < j ≤ i), each row still a
// distribution, and SnapKV keeps what the authors' order picks from those scores; layer 1 (no
// window) as before. Tokens no window query sees score 0 and tie to the earlier token.
TEST(Eviction, ScoresSeeOnlyASlidingLayersWindow) {
  auto cache = testing::random_cache({2, 2, 8, 16, 96, 12, 0}, 11);
  cache.with_windows({20, 0});
  const auto& s = cache.shape();
  const int rows = 8;
  for (int l = 0; l < s.layers; ++l) {
    const auto sums = window_attention_sums(cache, l, rows, linalg::cpu_backend());
    for (int h = 0; h < s.q_heads; ++h) {
      const auto ref = brute_sums(cache, l, rows, h);
      double row_sum = 0;
      for (std::int64_t t = 0; t < s.tokens; ++t) {
        EXPECT_NEAR(sums.data[h * s.tokens + t], ref[t], 1e-5) << "layer " << l << " head " << h << " t " << t;
        row_sum += sums.data[h * s.tokens + t];
        if (l == 0 && t <= s.tokens - rows - 20) {
          EXPECT_EQ(sums.data[h * s.tokens + t], 0.0f) << t;
        }
      }
      EXPECT_NEAR(row_sum, rows, 1e-4);
    }
  }
  const auto masks = run(snapkv_method(), "budget=30,window=8,kernel=7", cache);
  const auto plain = run(snapkv_method(), "budget=30,window=8,kernel=7", testing::random_cache({2, 2, 8, 16, 96, 12, 0}, 11));
  for (int l = 0; l < s.layers; ++l)
    for (int g = 0; g < s.kv_heads; ++g) {
      std::set<std::int64_t> got, without;
      for (std::int64_t t = 0; t < s.tokens; ++t) {
        if (kept(masks, l, t, g, s.kv_heads)) got.insert(t);
        if (kept(plain, l, t, g, s.kv_heads)) without.insert(t);
      }
      EXPECT_EQ(got, snap_oracle(cache, l, g, 8, 7, true, 30)) << "layer " << l << " head " << g;
      if (l == 0) EXPECT_NE(got, without) << "the window changes layer 0's selection";
      else EXPECT_EQ(got, without);
    }
}

// One layer, identity RoPE, one-hot keys: key t = e_{dir[t]}·1 (or 0), so a query's logits are
// read off its coordinates (times 1/√D). queries [W, H_q, D] as given.
InMemoryCache hand_cache(int H_q, int D, std::int64_t T, int W, const std::vector<int>& dir,
                         const std::vector<std::vector<float>>& query_rows) {
  const CacheShape shape{1, 1, H_q, D, T, W, 0};
  FloatTensor k({T, 1, D}), v({T, 1, D}), q({W, H_q, D});
  for (std::int64_t t = 0; t < T; ++t)
    if (dir[t] >= 0) k.data[t * D + dir[t]] = 1.0f;
  for (std::size_t i = 0; i < query_rows.size(); ++i)
    for (int d = 0; d < D; ++d) q.data[i * D + d] = query_rows[i][d] * std::sqrt(static_cast<float>(D));
  return InMemoryCache(shape, {k}, {v}, {q});
}

TEST(Eviction, MaxPoolingSpreadsASpikeToItsNeighbours) {
  // T = 24, window 1: the last query puts logit 6 on token 10 (direction 0) and 0 elsewhere, plus
  // a faint logit 1 on token 20 (direction 1) so the unpooled order is fixed.
  const int D = 4;
  const std::int64_t T = 24;
  std::vector<int> dir(T, -1);
  dir[10] = 0;
  dir[20] = 1;
  const auto cache = hand_cache(1, D, T, 1, dir, {{6, 1, 0, 0}});
  auto kept_set = [&](std::string_view params) {
    const auto m = run(snapkv_method(), params, cache);
    std::set<std::int64_t> out;
    for (std::int64_t t = 0; t < T - 1; ++t)
      if (m[0][t]) out.insert(t);
    return out;
  };
  EXPECT_EQ(kept_set("budget=2,window=1,kernel=1"), (std::set<std::int64_t>{10}));
  EXPECT_EQ(kept_set("budget=3,window=1,kernel=1"), (std::set<std::int64_t>{10, 20}));
  // k3 max pooling: 9, 10, 11 all score the spike; the spike itself wins the tie (raw score).
  EXPECT_EQ(kept_set("budget=4,window=1,kernel=3"), (std::set<std::int64_t>{9, 10, 11}));
  EXPECT_EQ(kept_set("budget=2,window=1,kernel=3"), (std::set<std::int64_t>{10}));
  EXPECT_EQ(kept_set("budget=6,window=1,kernel=5"), (std::set<std::int64_t>{8, 9, 10, 11, 12}));
  // pool_scores against torch's definitions: max ignores padding, avg divides by the kernel.
  EXPECT_EQ(pool_scores({0, 0, 5, 0, 1}, 3, true), (std::vector<float>{0, 5, 5, 5, 1}));
  const auto avg = pool_scores({3, 0, 0, 0, 6}, 3, false);
  EXPECT_EQ(avg, (std::vector<float>{1, 1, 0, 2, 2}));
}

TEST(Eviction, GqaAggregationMeanAndMaxDisagreeWhereTheyShould) {
  // One KV head, two query heads, window 1, T = 16, budget 2 (the window token + one more).
  // Token A = 3 (direction 0), B = 8 (direction 1), the other 14 keys are zero (logit 0).
  // Head 0: e^{logit A} = 70, e^{logit B} = 56 → Z = 140, p_A = 0.5, p_B = 0.4.
  // Head 1: e^{logit B} = 10 → Z = 25, p_B = 0.4, p_A = 0.04.
  // mean/sum: A 0.27 < B 0.4 → B;  max: A 0.5 > B 0.4 → A.
  const int D = 4;
  const std::int64_t T = 16;
  std::vector<int> dir(T, -1);
  dir[3] = 0;
  dir[8] = 1;
  const float la = std::log(70.0f), lb = std::log(56.0f), lb1 = std::log(10.0f);
  const auto cache = hand_cache(2, D, T, 1, dir, {{la, lb, 0, 0}, {0, lb1, 0, 0}});
  auto pick = [&](const MethodDef& def, std::string params) {
    const auto m = run(def, params, cache);
    std::vector<std::int64_t> out;
    for (std::int64_t t = 0; t < T - 1; ++t)
      if (m[0][t]) out.push_back(t);
    return out;
  };
  const auto sums = window_attention_sums(cache, 0, 1, linalg::cpu_backend());
  EXPECT_NEAR(sums.data[3], 0.5, 1e-6);
  EXPECT_NEAR(sums.data[8], 0.4, 1e-6);
  EXPECT_NEAR(sums.data[T + 8], 0.4, 1e-6);
  EXPECT_NEAR(sums.data[T + 3], 0.04, 1e-6);
  EXPECT_EQ(pick(snapkv_method(), "budget=2,window=1,kernel=1,agg=mean"), std::vector<std::int64_t>{8});
  EXPECT_EQ(pick(snapkv_method(), "budget=2,window=1,kernel=1,agg=sum"), std::vector<std::int64_t>{8});
  EXPECT_EQ(pick(snapkv_method(), "budget=2,window=1,kernel=1,agg=max"), std::vector<std::int64_t>{3});
  // H2O (all W = 1 queries, recent = the last token only) agrees.
  EXPECT_EQ(pick(h2o_method(), "budget=2,recent=0.5,agg=mean"), std::vector<std::int64_t>{8});
  EXPECT_EQ(pick(h2o_method(), "budget=2,recent=0.5,agg=max"), std::vector<std::int64_t>{3});
}

TEST(Eviction, ScoresUseRopeAtTheTruePositionsAndMatchABruteForceSoftmax) {
  const auto shape = random_shape();
  const auto rotated = testing::random_cache(shape, 7, /*with_rope=*/true);
  const auto plain = testing::random_cache(shape, 7, /*with_rope=*/false);  // same tensors, no rotation
  const int rows = 5;
  double max_diff_rope = 0;
  for (int layer : {0, 2}) {
    const auto a = window_attention_sums(rotated, layer, rows, linalg::cpu_backend());
    const auto b = window_attention_sums(plain, layer, rows, linalg::cpu_backend());
    ASSERT_EQ(a.shape, (core::Shape{shape.q_heads, shape.tokens}));
    for (int h = 0; h < shape.q_heads; ++h) {
      const auto ref = brute_sums(rotated, layer, rows, h);
      double row_sum = 0;
      for (std::int64_t t = 0; t < shape.tokens; ++t) {
        // f32 logits from the gemm, f64 softmax: 1e-5 absolute on sums of ≤ 5 probabilities.
        EXPECT_NEAR(a.data[h * shape.tokens + t], ref[t], 1e-5) << "head " << h << " t " << t;
        row_sum += a.data[h * shape.tokens + t];
        const auto i = h * shape.tokens + t;
        max_diff_rope = std::max(max_diff_rope, std::abs(double{a.data[i]} - b.data[i]));
      }
      EXPECT_NEAR(row_sum, rows, 1e-4);
      // The causal mask: window row w (token T − rows + w) does not see later tokens, so the last
      // token receives attention from one query only (< 1) and the first window token from all.
      EXPECT_LT(a.data[h * shape.tokens + shape.tokens - 1], 1.0);
    }
  }
  // Rotation changes which keys a query favours: with i.i.d. N(0,1) inputs the scores move by O(1).
  EXPECT_GT(max_diff_rope, 0.1);
  // ... and so what SnapKV keeps.
  const auto with = run(snapkv_method(), "keep=0.25,window=8,kernel=1", rotated);
  const auto without = run(snapkv_method(), "keep=0.25,window=8,kernel=1", plain);
  EXPECT_NE(with, without);
}

// A source that scores where its layers lie (the harness on the model's tensors): here the
// planted scores are the host's own, so every method must keep what it keeps on the host, and
// no layer may be read (that read is the host round trip the hook exists to avoid).
class ScoresWhereHeld final : public CacheSource {
 public:
  explicit ScoresWhereHeld(const CacheSource& base) : base_(base) {}
  const CacheShape& shape() const override { return base_.shape(); }
  FloatTensor layer(int, Part) const override { fail("a layer was read to the host"); }
  FloatTensor queries(int layer) const override { return base_.queries(layer); }
  const std::vector<std::int64_t>& positions() const override { return base_.positions(); }
  using CacheSource::rope;
  const core::Rope& rope(int layer) const override { return base_.rope(layer); }
  int window(int layer) const override { return base_.window(layer); }
  std::string describe() const override { return "scores where held"; }
  FloatTensor resident_window_attention_sums(int layer, int rows) const override {
    ++calls;
    return window_attention_sums(base_, layer, rows, linalg::cpu_backend());
  }
  mutable int calls = 0;

 private:
  const CacheSource& base_;
};

TEST(Eviction, ASourceThatScoresWhereItsLayersLieIsNeverReadToTheHost) {
  const auto cache = testing::random_cache(random_shape(), 11);
  for (const auto& [def, params] : std::vector<std::pair<MethodDef, std::string>>{
           {h2o_method(), "keep=0.3"}, {snapkv_method(), "keep=0.3,window=6,kernel=5"},
           {pyramidkv_method(), "keep=0.3,window=6"}, {streamingllm_method(), "keep=0.3"}}) {
    SCOPED_TRACE(def.name);
    const ScoresWhereHeld resident(cache);
    EXPECT_EQ(run(def, params, resident), run(def, params, cache));
    EXPECT_EQ(resident.calls, def.name == "streamingllm" ? 0 : cache.shape().layers);
  }
  // The row count is checked before the source is asked.
  const ScoresWhereHeld resident(cache);
  EXPECT_THAT(error_of([&] { window_attention_sums(resident, 0, 13, linalg::cpu_backend()); }),
              HasSubstr("13 window queries asked for, the dump holds W = 12"));
  EXPECT_EQ(resident.calls, 0);
}

// ---- granularity=query_head: the SnapKV repository's repeat_kv layout --------------------------

// repeat_kv (transformers' llama repeat_kv, which FasterDecoding/SnapKV's llama_hijack_4_37.py runs
// before SnapKVCluster.update_kv): KV head g copied to query heads g·n_rep … g·n_rep + n_rep − 1, so
// the result is an MHA cache with H_q heads (queries, positions and RoPE unchanged).
InMemoryCache repeat_kv(const CacheSource& c) {
  const auto& s = c.shape();
  const int n_rep = s.group_size(), D = s.head_dim;
  std::vector<FloatTensor> keys, values, queries;
  for (int l = 0; l < s.layers; ++l) {
    for (const Part part : {Part::key, Part::value}) {
      const auto x = c.layer(l, part);
      FloatTensor r({s.tokens, s.q_heads, D});
      for (std::int64_t t = 0; t < s.tokens; ++t)
        for (int h = 0; h < s.q_heads; ++h)
          std::copy_n(x.data.begin() + (t * s.kv_heads + h / n_rep) * D, D, r.data.begin() + (t * s.q_heads + h) * D);
      (part == Part::key ? keys : values).push_back(std::move(r));
    }
    queries.push_back(c.queries(l));
  }
  auto shape = s;
  shape.kv_heads = s.q_heads;
  return InMemoryCache(shape, std::move(keys), std::move(values), std::move(queries), c.positions(), c.rope());
}

// SnapKVCluster.update_kv (FasterDecoding/SnapKV snapkv/monkeypatch/snapkv_utils.py) on head h of
// an MHA cache (the repeated one): softmax of the last `window` queries over all keys (brute
// force, causal inside the window), summed over those queries for the keys before the window
// (f32, as kvlab keeps the sums), avg_pool1d (count_include_pad) or max_pool1d with padding
// kernel/2 and stride 1, topk(b − window) of them plus the window. torch.topk leaves ties
// unspecified: ties go to the unpooled sum, then the earlier token (kvlab's documented rule).
std::set<std::int64_t> snapkv_repository_selection(const CacheSource& c, int l, int h, int window, int kernel,
                                                   bool max_pool, std::int64_t b) {
  const std::int64_t T = c.shape().tokens, n = T - window;
  const auto sums = brute_sums(c, l, window, h);
  std::vector<double> raw(n), pooled(n);
  for (std::int64_t t = 0; t < n; ++t) raw[t] = static_cast<float>(sums[t]);
  for (std::int64_t t = 0; t < n; ++t) {
    double acc = max_pool ? -1e300 : 0.0;
    for (std::int64_t i = t - kernel / 2; i <= t + kernel / 2; ++i) {
      const double x = i >= 0 && i < n ? raw[i] : 0.0;  // zero padding: counted by avg, never the max
      if (!max_pool) acc += x;
      else if (i >= 0 && i < n) acc = std::max(acc, x);
    }
    pooled[t] = static_cast<float>(max_pool ? acc : acc / kernel);
  }
  std::vector<std::int64_t> order(n);
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t z) {
    return pooled[a] != pooled[z] ? pooled[a] > pooled[z] : raw[a] > raw[z];
  });
  std::set<std::int64_t> out(order.begin(), order.begin() + (b - window));
  for (std::int64_t t = n; t < T; ++t) out.insert(t);
  return out;
}

// Column h of a [T, H] mask as a token set.
std::set<std::int64_t> column(const std::vector<std::uint8_t>& mask, std::int64_t T, int H, int h) {
  std::set<std::int64_t> out;
  for (std::int64_t t = 0; t < T; ++t)
    if (mask[static_cast<std::size_t>(t * H + h)]) out.insert(t);
  return out;
}

TEST(Eviction, QueryHeadGranularityIsTheSnapKVRepositorysRepeatKvSelection) {
  const auto cache = testing::random_cache({3, 2, 8, 16, 96, 12, 0}, 5);  // four query heads per KV head
  const auto repeated = repeat_kv(cache);
  const auto& s = cache.shape();
  const CompressContext ctx{cache, linalg::cpu_backend()};
  struct Case {
    MethodDef def;
    std::string params;
    int window, kernel;
    bool max_pool;
    std::vector<std::int64_t> budgets;  // per layer
  };
  // PyramidKV at C = 30, w = 8, T = 96, L = 3 (KVCache-Factory's integers): min = 22 // 20 = 1,
  // max = 43, steps = 42 // 2 = 21: 43 + 8, 22 + 8, 1 + 8.
  const std::vector<Case> cases = {
      {snapkv_method(), "budget=30,window=8,kernel=7,granularity=query_head", 8, 7, true, {30, 30, 30}},
      {snapkv_method(), "budget=24,window=6,kernel=5,pool=avg,granularity=query_head", 6, 5, false, {24, 24, 24}},
      {pyramidkv_method(), "budget=30,window=8,granularity=query_head", 8, 7, true, {51, 30, 9}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.params);
    const auto spec = parse_stage(c.def, c.params);
    ASSERT_TRUE(c.def.per_query_head && c.def.per_query_head(spec));
    const auto stage = make_eviction_method(spec);
    std::int64_t differ = 0;  // query heads of one group that keep different tokens
    for (int l = 0; l < s.layers; ++l) {
      const auto sel = stage->select_query_heads(ctx, l);
      ASSERT_EQ(sel.size(), static_cast<std::size_t>(s.tokens * s.q_heads));
      std::vector<std::uint8_t> group_union(static_cast<std::size_t>(s.tokens * s.kv_heads), 0);
      for (int h = 0; h < s.q_heads; ++h) {
        const auto got = column(sel, s.tokens, s.q_heads, h);
        EXPECT_EQ(got, snapkv_repository_selection(repeated, l, h, c.window, c.kernel, c.max_pool, c.budgets[l]))
            << "layer " << l << " query head " << h;
        differ += h % s.group_size() > 0 && got != column(sel, s.tokens, s.q_heads, h - 1);
        for (const auto t : got) group_union[static_cast<std::size_t>(t * s.kv_heads + h / s.group_size())] = 1;
      }
      // What a KV head holds is the union of its query heads' selections.
      EXPECT_EQ(stage->select_layer(ctx, l), group_union) << "layer " << l;
    }
    EXPECT_GT(differ, 0);  // the group's query heads really select differently here
  }
  // granularity=kv_head (the default) gives no per-query-head selection.
  EXPECT_TRUE(make_eviction_method(parse_stage(snapkv_method(), "budget=30,window=8"))->select_query_heads(ctx, 0).empty());
  EXPECT_FALSE(snapkv_method().per_query_head(parse_stage(snapkv_method(), "budget=30,window=8")));
}

TEST(Eviction, QueryHeadGranularityOnMhaIsTheKvHeadSelectionExactly) {
  const auto cache = testing::random_cache({2, 4, 4, 16, 96, 12, 0}, 9);  // MHA: H_q = H_kv
  const CompressContext ctx{cache, linalg::cpu_backend()};
  for (const std::string method : {"snapkv", "pyramidkv"})
    for (const std::string agg : {"mean", "max", "sum"})
      for (const std::string order : {"reduce_then_pool", "pool_then_reduce"}) {
        const std::string base = method + ":budget=30,window=8,agg=" + agg + ",order=" + order;
        SCOPED_TRACE(base);
        const auto stage = make_eviction(parse_spec(base + ",granularity=query_head").stages[0]);
        const auto kv_head = make_eviction(parse_spec(base).stages[0]);
        for (int l = 0; l < cache.shape().layers; ++l) {
          EXPECT_EQ(stage->select_query_heads(ctx, l), kv_head->select_layer(ctx, l)) << "layer " << l;
          EXPECT_EQ(stage->select_layer(ctx, l), kv_head->select_layer(ctx, l)) << "layer " << l;
        }
        const auto a = compress_chain(ctx, parse_spec(base + ",granularity=query_head"));
        const auto b = compress_chain(ctx, parse_spec(base));
        const auto sa = score(cache, *a, linalg::cpu_backend()), sb = score(cache, *b, linalg::cpu_backend());
        EXPECT_EQ(sa.bytes, sb.bytes);
        EXPECT_DOUBLE_EQ(sa.attn_kl, sb.attn_kl);
        EXPECT_DOUBLE_EQ(sa.attn_output_error, sb.attn_output_error);
        EXPECT_DOUBLE_EQ(sa.key_error, sb.key_error);
      }
}

TEST(Eviction, QueryHeadGranularityStoresEveryQueryHeadsCellsAndCountsTheirBytes) {
  const CacheShape shape{3, 2, 8, 16, 96, 12, 0};
  const auto cache = testing::random_cache(shape, 13);
  const CompressContext ctx{cache, linalg::cpu_backend()};
  const int n_rep = shape.group_size(), D = shape.head_dim;
  const std::int64_t cell = 4 * D + 4;  // fp16 key and value rows + one int32 index
  for (const auto& [spec, budgets] : std::vector<std::pair<std::string, std::vector<std::int64_t>>>{
           {"snapkv:budget=30,window=8", {30, 30, 30}}, {"pyramidkv:budget=30,window=8", {51, 30, 9}}}) {
    SCOPED_TRACE(spec);
    const auto per_query = compress_chain(ctx, parse_spec(spec + ",granularity=query_head"));
    const auto per_kv = compress_chain(ctx, parse_spec(spec));
    std::int64_t expected = 0;
    for (const auto b : budgets) expected += b * shape.q_heads * cell;
    EXPECT_EQ(per_query->bytes(), expected);
    EXPECT_EQ(per_query->bytes(), n_rep * per_kv->bytes());  // r = H_q/H_kv times the KV-head variant's
    // Each query head stores its own kept tokens, its KV head's keys (post-RoPE) and values.
    const auto stage = make_eviction(parse_spec(spec + ",granularity=query_head").stages[0]);
    const auto sel = stage->select_query_heads(ctx, 1);
    const auto stored = per_query->stored();
    for (int h = 0; h < shape.q_heads; ++h) {
      const auto prefix = "layer1/qhead" + std::to_string(h) + "/";
      const auto find = [&](const std::string& name) {
        const auto it = std::find_if(stored.begin(), stored.end(), [&](const StoredTensor* t) { return t->name == name; });
        EXPECT_NE(it, stored.end()) << name;
        return *it;
      };
      const auto index = find(prefix + "index")->unpack_indices();
      const auto tokens = column(sel, shape.tokens, shape.q_heads, h);
      EXPECT_EQ(std::set<std::int64_t>(index.begin(), index.end()), tokens);
      EXPECT_EQ(find(prefix + "key")->shape, (core::Shape{budgets[1], D}));
      EXPECT_EQ(find(prefix + "value")->format, "fp16");
    }
    EXPECT_EQ(per_query->notes().at("stored_heads"), shape.q_heads);
    // One layer at a time gives the whole cache's figures.
    nlohmann::json notes;
    const auto by_layer = compress_and_score_by_layer(ctx, parse_spec(spec + ",granularity=query_head"), {}, nullptr, &notes);
    const auto whole = score(cache, *per_query, linalg::cpu_backend());
    EXPECT_EQ(by_layer.bytes, whole.bytes);
    EXPECT_EQ(by_layer.attn_kl, whole.attn_kl);
    EXPECT_EQ(notes, per_query->notes());
  }
}

// The scorer's attention error and KL over a per-query-head cache, by brute force: each query
// head attends only the tokens it kept (LayerKV::query_kept), not the union its KV head holds.
TEST(Eviction, QueryHeadGranularityIsScoredOnEachQueryHeadsOwnCells) {
  const CacheShape shape{2, 2, 8, 16, 96, 12, 0};
  const auto cache = testing::random_cache(shape, 17);
  const CompressContext ctx{cache, linalg::cpu_backend()};
  const auto chain = parse_spec("snapkv:budget=24,window=8,granularity=query_head");
  const auto c = compress_chain(ctx, chain);
  const auto sc = score(cache, *c, linalg::cpu_backend());
  const auto stage = make_eviction(chain.stages[0]);
  const std::int64_t T = shape.tokens;
  for (int l = 0; l < shape.layers; ++l) {
    const auto rec = c->reconstruct(l);
    const auto sel = stage->select_query_heads(ctx, l);
    const auto key = cache.layer(l, Part::key), value = cache.layer(l, Part::value);
    // KL(p̂ ‖ p) and the output error with each query head's own cells, and with its KV head's union.
    double kl_own = 0, kl_union = 0, err_own = 0, norm = 0;
    std::vector<double> p, o, q, oq, u, ou;
    for (int w = 0; w < shape.query_window; ++w)
      for (int h = 0; h < shape.q_heads; ++h) {
        const int g = h / shape.group_size();
        std::vector<std::uint8_t> own(static_cast<std::size_t>(T * shape.kv_heads), 0);
        for (std::int64_t t = 0; t < T; ++t) own[t * shape.kv_heads + g] = sel[t * shape.q_heads + h];
        testing::brute_attention(cache, l, key, value, {}, w, h, p, o);
        testing::brute_attention(cache, l, rec.key, rec.value, own, w, h, q, oq);
        testing::brute_attention(cache, l, rec.key, rec.value, rec.kept, w, h, u, ou);
        for (std::int64_t t = 0; t < T; ++t) {
          if (q[t] > 0) kl_own += q[t] * std::log(q[t] / p[t]);
          if (u[t] > 0) kl_union += u[t] * std::log(u[t] / p[t]);
        }
        for (int d = 0; d < shape.head_dim; ++d) err_own += (o[d] - oq[d]) * (o[d] - oq[d]), norm += o[d] * o[d];
      }
    const double rows = static_cast<double>(shape.query_window) * shape.q_heads;
    kl_own /= rows, kl_union /= rows;
    // The scorer's logits come from an f32 gemm (relative error ~1e-6 on logits of O(1..10)), the
    // brute force's from f64 dot products: both figures agree to ~1e-5; 1e-4 leaves a margin.
    EXPECT_NEAR(sc.layers[l].attn_kl, kl_own, 1e-4) << "layer " << l;
    EXPECT_NEAR(sc.layers[l].attn_output_error, std::sqrt(err_own / norm), 1e-4) << "layer " << l;
    // ... and the per-query-head sets really matter: the union would score far better.
    EXPECT_GT(kl_own - kl_union, 0.05) << "layer " << l;
  }
}

TEST(Eviction, QueryHeadGranularityRefusesStagesAfterIt) {
  const auto cache = testing::random_cache(random_shape(), 19);
  const CompressContext ctx{cache, linalg::cpu_backend()};
  for (const std::string follower : {"+kivi:bits=4,group=8,residual=0", "+full"}) {
    const auto chain = parse_spec("snapkv:budget=30,window=8,granularity=query_head" + follower);
    EXPECT_THAT(error_of([&] { compress_chain(ctx, chain); }), HasSubstr("keeps one selection per query head"));
    EXPECT_THAT(error_of([&] { compress_and_score_by_layer(ctx, chain, {}, nullptr, nullptr); }),
                HasSubstr("no transform or quantizer can follow it"));
  }
  // Wrappers rank cells per KV head: a per-query-head snapkv has no such scores.
  const auto stage = make_eviction(parse_spec("snapkv:budget=30,window=8,granularity=query_head").stages[0]);
  EXPECT_THAT(error_of([&] { stage->score_layer(ctx, 0, 30); }), HasSubstr("granularity=query_head"));
}

TEST(Eviction, BadKeysAreErrorsNamingTheKey) {
  EXPECT_THAT(error_of([] { parse_stage(snapkv_method(), "kernel=4"); }), HasSubstr("'kernel'"));
  EXPECT_THAT(error_of([] { parse_stage(snapkv_method(), "budget=16,window=16"); }), HasSubstr("'window'"));
  EXPECT_THAT(error_of([] { parse_stage(snapkv_method(), "keep=0"); }), HasSubstr("'keep'"));
  EXPECT_THAT(error_of([] { parse_stage(snapkv_method(), "pool=min"); }), HasSubstr("'pool'"));
  EXPECT_THAT(error_of([] { parse_stage(snapkv_method(), "order=pool"); }), HasSubstr("'order'"));
  EXPECT_THAT(error_of([] { parse_stage(pyramidkv_method(), "granularity=group"); }), HasSubstr("'granularity'"));
  EXPECT_THAT(error_of([] { parse_stage(h2o_method(), "granularity=query_head"); }), HasSubstr("unknown key 'granularity'"));
  EXPECT_THAT(error_of([] { parse_stage(pyramidkv_method(), "schedule=flat"); }), HasSubstr("'schedule'"));
  EXPECT_THAT(error_of([] { parse_stage(h2o_method(), "agg=median"); }), HasSubstr("'agg'"));
  EXPECT_THAT(error_of([] { parse_stage(h2o_method(), "recent=1.5"); }), HasSubstr("'recent'"));
  EXPECT_THAT(error_of([] { parse_stage(h2o_method(), "window=8"); }), HasSubstr("unknown key 'window'"));
  EXPECT_THAT(error_of([] { parse_stage(pyramidkv_method(), "beta=0.5"); }), HasSubstr("'beta'"));
  EXPECT_THAT(error_of([] { parse_stage(streamingllm_method(), "budget=3,sinks=4"); }), HasSubstr("'sinks'"));
  // Checks that need the cache: window vs the dump's W and vs the budget at this T, sinks vs budget.
  const auto cache = testing::random_cache(random_shape(), 1);  // W = 12, T = 96
  EXPECT_THAT(error_of([&] { run(snapkv_method(), "keep=0.5,window=16", cache); }), HasSubstr("'window' = 16 exceeds"));
  EXPECT_THAT(error_of([&] { run(pyramidkv_method(), "keep=0.1,window=10", cache); }), HasSubstr("'window'"));
  EXPECT_THAT(error_of([&] { run(streamingllm_method(), "keep=0.02,sinks=4", cache); }), HasSubstr("'sinks'"));
  // Canonical forms parse back to themselves (they print keep and budget both: budget > 0 wins).
  for (const auto& [def, params] : std::vector<std::pair<MethodDef, std::string>>{
           {streamingllm_method(), ""}, {h2o_method(), "budget=64"}, {snapkv_method(), "budget=100,window=8"},
           {snapkv_method(), "budget=100,window=8,granularity=query_head"},
           {pyramidkv_method(), "keep=0.1"}}) {
    const auto once = parse_stage(def, params).to_string();
    const auto body = once.substr(once.find(':') + 1);
    EXPECT_EQ(parse_stage(def, body).to_string(), once);
  }
  EXPECT_EQ(eviction_budget(parse_stage(snapkv_method(), "keep=0.5,budget=10,window=8"), 1000), 10);
}

}  // namespace
}  // namespace kvlab::compressors
