// quest against a plain transcription of the authors' decode path written here
// (mit-han-lab/Quest quest/models/llama.py, quest/utils/controller.py, quest/utils/__init__.py:
// metadata = per-page channel min/max of the post-RoPE 16-bit keys; the current page always;
// when the pages exceed token_budget // page_size, the best budget − 1 other pages by
// Σ_c max(q_c·min_c, q_c·max_c); the first 2 layers full), on a GQA cache with RoPE; the
// bound's defining property; budget ≥ T against `full`; hand-built caches for page boundaries,
// ties, skip layers and the loaded-bytes count; its keys, chains and registry entry.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "compressors/chain.h"
#include "compressors/score.h"
#include "compressors/test_caches.h"
#include "core/dtype.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

using ::testing::HasSubstr;
using testing::error_of;

std::unique_ptr<Compressed> run(const std::string& spec, const CacheSource& cache) {
  return compress_chain({cache, linalg::cpu_backend()}, parse_spec(spec));
}

const StoredTensor& find(Compressed& c, const std::string& name) {
  for (const StoredTensor* s : c.stored())
    if (s->name == name) return *s;
  throw Error("no stored tensor " + name);
}

// Window query w, head h of `layer`, rotated in double at its position (HF's rotate_half, as
// testing::post_rope_keys rotates keys).
std::vector<double> rotated_query(const CacheSource& c, int layer, std::int64_t w, int h) {
  const auto& s = c.shape();
  const auto q = c.queries(layer);
  std::vector<double> x(q.data.begin() + (w * s.q_heads + h) * s.head_dim,
                        q.data.begin() + (w * s.q_heads + h + 1) * s.head_dim);
  const auto& inv_freq = c.rope().inv_freq();
  const auto half = inv_freq.size();
  const double p = static_cast<double>(c.positions()[static_cast<std::size_t>(s.tokens - s.query_window + w)]);
  for (std::size_t j = 0; j < half; ++j) {
    const double a = x[j], b = x[j + half];
    x[j] = a * std::cos(p * inv_freq[j]) - b * std::sin(p * inv_freq[j]);
    x[j + half] = b * std::cos(p * inv_freq[j]) + a * std::sin(p * inv_freq[j]);
  }
  return x;
}

// The authors' decode step, transcribed for one (layer, window query w, query head h): keys
// `key` [T, D] are the KV head's stored post-RoPE 16-bit keys (what their paged cache and its
// metadata hold), `page_budget` = token_budget // page_size. Returns the attended tokens [T]
// (1 = attended) and sets `near_tie` when the (B−1)-th and B-th bounds are within `tie_tol`
// (relative), where the float query of the implementation may order them otherwise.
std::vector<std::uint8_t> authors_step(const std::vector<double>& key, int D, std::int64_t n, std::int64_t P,
                                       std::int64_t page_budget, bool skip, const std::vector<double>& q,
                                       std::int64_t T, bool& near_tie) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(T), 0);
  const std::int64_t pages = (n + P - 1) / P;
  near_tie = false;
  // need_estimate() is false (and the layer skipped) → every page; else estimate all but the
  // last page, top-k of page_budget − 1, plus the last page.
  std::vector<std::int64_t> chosen;
  if (skip || pages <= page_budget) {
    for (std::int64_t i = 0; i < pages; ++i) chosen.push_back(i);
  } else {
    std::vector<double> est(static_cast<std::size_t>(pages - 1));
    for (std::int64_t i = 0; i + 1 < pages; ++i) {
      double sum = 0;
      for (int c = 0; c < D; ++c) {
        double mn = INFINITY, mx = -INFINITY;
        for (std::int64_t t = i * P; t < (i + 1) * P; ++t) {
          mn = std::min(mn, key[static_cast<std::size_t>(t * D + c)]);
          mx = std::max(mx, key[static_cast<std::size_t>(t * D + c)]);
        }
        sum += std::max(q[static_cast<std::size_t>(c)] * mn, q[static_cast<std::size_t>(c)] * mx);
      }
      est[static_cast<std::size_t>(i)] = sum;
    }
    const auto top = testing::top_n(est, page_budget - 1);
    chosen.assign(top.begin(), top.end());
    chosen.push_back(pages - 1);
    std::vector<double> sorted = est;
    std::sort(sorted.rbegin(), sorted.rend());
    const double a = sorted[static_cast<std::size_t>(page_budget - 2)], b = sorted[static_cast<std::size_t>(page_budget - 1)];
    near_tie = page_budget >= 2 && std::abs(a - b) <= 1e-4 * (std::abs(a) + std::abs(b));
  }
  for (const auto i : chosen)
    for (std::int64_t t = i * P; t < std::min(n, (i + 1) * P); ++t) out[static_cast<std::size_t>(t)] = 1;
  return out;
}

CacheShape gqa_shape() { return {.layers = 3, .kv_heads = 2, .q_heads = 4, .head_dim = 16, .tokens = 75, .query_window = 6}; }

TEST(Quest, SelectionEqualsTheAuthorsDecodeStepOnGqaWithRope) {
  const auto cache = testing::random_cache(gqa_shape(), 21);
  const auto& s = cache.shape();
  // T = 75 with P = 8: 9 full pages and a partial tenth; the window's steps see 70..75 tokens.
  auto c = run("quest:budget=24,page_size=8,skip_layers=1", cache);
  int compared = 0, ties = 0;
  for (int l = 0; l < s.layers; ++l) {
    const auto rec = c->reconstruct(l);
    ASSERT_EQ(rec.query_kept.size(), static_cast<std::size_t>(s.query_window * s.q_heads * s.tokens));
    for (int g = 0; g < s.kv_heads; ++g) {
      const auto& stored = find(*c, "layer" + std::to_string(l) + "/head" + std::to_string(g) + "/key").values;
      const std::vector<double> key(stored.begin(), stored.end());
      for (std::int64_t w = 0; w < s.query_window; ++w)
        for (int r = 0; r < s.group_size(); ++r) {
          const int h = g * s.group_size() + r;
          bool near_tie = false;
          const auto want = authors_step(key, s.head_dim, s.tokens - s.query_window + w + 1, 8, 3, l < 1,
                                         rotated_query(cache, l, w, h), s.tokens, near_tie);
          if (near_tie) {
            ++ties;
            continue;
          }
          ++compared;
          const std::vector<std::uint8_t> got(rec.query_kept.begin() + (w * s.q_heads + h) * s.tokens,
                                              rec.query_kept.begin() + (w * s.q_heads + h + 1) * s.tokens);
          EXPECT_EQ(got, want) << "layer " << l << " w " << w << " head " << h;
        }
    }
  }
  EXPECT_GE(compared, 3 * 6 * 4 - 2) << ties << " near ties";
}

// The bound Σ_c max(q_c·min_c, q_c·max_c) from the stored metadata is at least q·k for every key
// of its page, the keys as the scorer rotates them (the rebuilt pre-RoPE keys rotated in f32).
// Tolerance: the stored keys are the f32 rotation rounded to fp16, exactly; un-rotating and
// rotating again in f32 moves each coordinate by a few ulps of |k|, so q·k by ≲ 1e-5·|q|·|k|.
TEST(Quest, BoundIsAtLeastEveryDotProductOfItsPage) {
  const auto cache = testing::random_cache(gqa_shape(), 5);
  const auto& s = cache.shape();
  const std::int64_t P = 8, pages = (s.tokens + P - 1) / P;
  auto c = run("quest:budget=24,page_size=8", cache);
  for (int l = 0; l < s.layers; ++l) {
    auto rec = c->reconstruct(l);
    cache.rope().apply(rec.key.span(), s.tokens, s.kv_heads, cache.positions());
    const auto& meta = find(*c, "layer" + std::to_string(l) + "/page_max_min").values;
    ASSERT_EQ(meta.size(), static_cast<std::size_t>(pages * s.kv_heads * 2 * s.head_dim));
    for (std::int64_t w = 0; w < s.query_window; ++w)
      for (int h = 0; h < s.q_heads; ++h) {
        const int g = h / s.group_size();
        const auto q = rotated_query(cache, l, w, h);
        for (std::int64_t i = 0; i < pages; ++i) {
          const float* mn = meta.data() + ((i * s.kv_heads + g) * 2) * s.head_dim;
          double bound = 0, qn = 0;
          for (int d = 0; d < s.head_dim; ++d) {
            bound += std::max(q[static_cast<std::size_t>(d)] * mn[d], q[static_cast<std::size_t>(d)] * mn[s.head_dim + d]);
            qn += q[static_cast<std::size_t>(d)] * q[static_cast<std::size_t>(d)];
          }
          for (std::int64_t t = i * P; t < std::min(s.tokens, (i + 1) * P); ++t) {
            double dot = 0, kn = 0;
            for (int d = 0; d < s.head_dim; ++d) {
              const double k = rec.key.data[static_cast<std::size_t>((t * s.kv_heads + g) * s.head_dim + d)];
              dot += q[static_cast<std::size_t>(d)] * k;
              kn += k * k;
            }
            EXPECT_GE(bound, dot - 1e-5 * std::sqrt(qn * kn)) << "layer " << l << " page " << i << " token " << t;
          }
        }
      }
  }
}

TEST(Quest, BudgetOfTheWholeCacheIsFullAttention) {
  const auto cache = testing::random_cache(gqa_shape(), 9);
  auto quest = run("quest:budget=80,page_size=8,skip_layers=0", cache);
  auto full = run("full", cache);
  const auto q = score(cache, *quest, linalg::cpu_backend());
  const auto f = score(cache, *full, linalg::cpu_backend());
  EXPECT_EQ(q.attn_kl, f.attn_kl);  // the same cells attended, the same arithmetic
  EXPECT_EQ(q.attn_output_error, f.attn_output_error);
  for (int l = 0; l < 3; ++l) {
    const auto rec = quest->reconstruct(l);
    for (std::int64_t w = 0; w < 6; ++w)
      for (int h = 0; h < 4; ++h)
        for (std::int64_t t = 0; t < 75; ++t)
          EXPECT_EQ(rec.query_kept[static_cast<std::size_t>((w * 4 + h) * 75 + t)], t <= 69 + w ? 1 : 0);
  }

  // Keys, values and queries exact in fp16 with no RoPE: the stored cache is the dump, KL is 0.
  auto s = gqa_shape();
  const auto base = testing::random_cache(s, 9, /*with_rope=*/false);
  std::vector<FloatTensor> keys, values, queries;
  const auto round16 = [](FloatTensor x) {
    std::vector<std::uint16_t> bits(x.data.size());
    core::f32_to_16bit(core::DType::f16, x.data, bits);
    core::bits16_to_f32(core::DType::f16, bits, x.data);
    return x;
  };
  for (int l = 0; l < s.layers; ++l) {
    keys.push_back(round16(base.layer(l, Part::key)));
    values.push_back(round16(base.layer(l, Part::value)));
    queries.push_back(base.queries(l));
  }
  const InMemoryCache exact(s, keys, values, queries);
  auto c = run("quest:budget=80,page_size=8", exact);
  const auto sc = score(exact, *c, linalg::cpu_backend());
  EXPECT_EQ(sc.attn_kl, 0.0);
  EXPECT_EQ(sc.attn_output_error, 0.0);
}

// 2 layers, 1 KV head read by 2 query heads, D = 2, no RoPE, T = 21 tokens in pages of 8:
// [0, 8), [8, 16) and the partial [16, 21). Channel 0 of the keys: 5 at token 0, −4 at token 9,
// `tok10` at token 10, 0 elsewhere; channel 1: 0. Query head 0 is (1, 0) (bound = the page's max
// of channel 0), head 1 (−1, 0) (bound = −min). Window: the last 6 tokens (positions 15..20).
InMemoryCache hand_cache(float tok10) {
  const CacheShape s{.layers = 2, .kv_heads = 1, .q_heads = 2, .head_dim = 2, .tokens = 21, .query_window = 6};
  FloatTensor key({21, 1, 2}), value({21, 1, 2}), query({6, 2, 2});
  key.data[0] = 5;
  key.data[9 * 2] = -4;
  key.data[10 * 2] = tok10;
  for (std::int64_t t = 0; t < 21; ++t) value.data[static_cast<std::size_t>(t * 2)] = static_cast<float>(t);
  for (std::int64_t w = 0; w < 6; ++w) {
    query.data[static_cast<std::size_t>(w * 4)] = 1;
    query.data[static_cast<std::size_t>(w * 4 + 2)] = -1;
  }
  return InMemoryCache(s, {key, key}, {value, value}, {query, query});
}

// The tokens window query w, head h attends in `rec`.
std::vector<std::int64_t> attended(const LayerKV& rec, std::int64_t w, int h) {
  std::vector<std::int64_t> out;
  for (std::int64_t t = 0; t < 21; ++t)
    if (rec.query_kept[static_cast<std::size_t>((w * 2 + h) * 21 + t)]) out.push_back(t);
  return out;
}

std::vector<std::int64_t> range(std::int64_t a, std::int64_t b) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(b - a));
  std::iota(out.begin(), out.end(), a);
  return out;
}

std::vector<std::int64_t> join(std::vector<std::int64_t> a, const std::vector<std::int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(Quest, HandWorkedPagesPartialLastPageAndSkipLayers) {
  const auto cache = hand_cache(3);
  // budget 16 → 2 pages: the current one and the best other.
  auto c = run("quest:budget=16,page_size=8,skip_layers=1", cache);
  const auto skipped = c->reconstruct(0), rec = c->reconstruct(1);
  for (std::int64_t w = 0; w < 6; ++w)
    for (int h = 0; h < 2; ++h) EXPECT_EQ(attended(skipped, w, h), range(0, 16 + w)) << "layer 0 is skipped";
  // Step w = 0 (position 15): 16 tokens = 2 pages ≤ the budget, everything.
  EXPECT_EQ(attended(rec, 0, 0), range(0, 16));
  EXPECT_EQ(attended(rec, 0, 1), range(0, 16));
  // Steps 1..5 (positions 16..20): 3 pages, the partial third is the current page (tokens 16..p).
  // Head 0: bounds 5 (page 0) vs 3 (page 1) → page 0. Head 1: −min: 0 vs 4 → page 1.
  for (std::int64_t w = 1; w < 6; ++w) {
    EXPECT_EQ(attended(rec, w, 0), join(range(0, 8), range(16, 16 + w)));
    EXPECT_EQ(attended(rec, w, 1), range(8, 16 + w));
  }
  // Loaded per step (16-bit cells: K + V = 2·2·2 = 8 bytes a token; metadata min + max = 8 bytes
  // a page): layer 0 reads its n tokens, 8n. Layer 1 reads n tokens at w = 0 (no ranking), and
  // for w ≥ 1 the union of pages {0, 2} ∪ {1, 2} = all n tokens plus the 2 ranked pages' metadata:
  // 8n + 16. n = 16 + w.
  double layer0 = 0, layer1 = 0;
  for (std::int64_t w = 0; w < 6; ++w) {
    layer0 += 8.0 * static_cast<double>(16 + w);
    layer1 += 8.0 * static_cast<double>(16 + w) + (w >= 1 ? 16.0 : 0.0);
  }
  EXPECT_DOUBLE_EQ(skipped.loaded_bytes, layer0 / 6);
  EXPECT_DOUBLE_EQ(rec.loaded_bytes, layer1 / 6);
  const auto sc = score(cache, *c, linalg::cpu_backend());
  EXPECT_DOUBLE_EQ(sc.loaded_bytes, (layer0 + layer1) / 6);
  // Stored: 2 layers of 21 cells at 8 bytes, plus 3 pages of 8 metadata bytes each.
  EXPECT_EQ(sc.bytes, 2 * 21 * 8 + 2 * 3 * 8);
}

TEST(Quest, EqualBoundsGoToTheEarlierPage) {
  // Token 10 = 5: page 1's max ties page 0's for head 0 → page 0; head 1 unchanged (page 1).
  const auto cache = hand_cache(5);
  auto c = run("quest:budget=16,page_size=8,skip_layers=0", cache);
  const auto rec = c->reconstruct(0);
  for (std::int64_t w = 1; w < 6; ++w) {
    EXPECT_EQ(attended(rec, w, 0), join(range(0, 8), range(16, 16 + w)));
    EXPECT_EQ(attended(rec, w, 1), range(8, 16 + w));
  }
  // One page of budget: only the current page is attended.
  auto one = run("quest:budget=8,page_size=8,skip_layers=0", cache);
  const auto r1 = one->reconstruct(0);
  EXPECT_EQ(attended(r1, 3, 0), range(16, 19));
  EXPECT_EQ(attended(r1, 3, 1), range(16, 19));
  // Pages of 5 tokens: budget 12 floors to 2 pages.
  auto five = run("quest:budget=12,page_size=5,skip_layers=0", cache);
  const auto r5 = five->reconstruct(0);
  // Position 20: 21 tokens = pages [0,5) … [15,20) and [20,21); head 0's best is page 0 (max 5;
  // page 2 = [10, 15) ties at 5 but is later).
  EXPECT_EQ(attended(r5, 5, 0), join(range(0, 5), range(20, 21)));
  EXPECT_EQ(five->notes()["quest"]["page_budget"], 2);
}

TEST(Quest, KeysBudgetsAndErrors) {
  const auto cache = testing::random_cache(gqa_shape(), 3);
  // keep = 0.25 of 75 tokens → round(18.75) = 19 → 19 // 8 = 2 pages; keep small → at least 1.
  EXPECT_EQ(run("quest:keep=0.25,page_size=8", cache)->notes()["quest"]["page_budget"], 2);
  EXPECT_EQ(run("quest:keep=0.01,page_size=8", cache)->notes()["quest"]["page_budget"], 1);
  EXPECT_EQ(run("quest:budget=24,page_size=8", cache)->notes()["quest"]["page_budget"], 3);
  EXPECT_EQ(parse_spec("quest").to_string(), "quest:keep=0.25,budget=0,page_size=16,skip_layers=2");
  EXPECT_THAT(error_of([] { parse_spec("quest:budget=8,page_size=16"); }), HasSubstr("'budget' = 8 must be 0"));
  EXPECT_THAT(error_of([] { parse_spec("quest:page_size=0"); }), HasSubstr("page_size"));
  EXPECT_THAT(error_of([] { parse_spec("quest:skip_layers=-1"); }), HasSubstr("skip_layers"));
  EXPECT_THAT(error_of([] { parse_spec("quest:keep=0"); }), HasSubstr("'keep'"));
  EXPECT_THAT(error_of([] { parse_spec("snapkv:keep=0.5+quest"); }), HasSubstr("eviction stage before it"));
  const auto& def = method("quest");
  EXPECT_TRUE(def.per_query());
  EXPECT_TRUE(def.layer_local);
  EXPECT_THAT(describe_methods(), HasSubstr("quest"));
  // No query window: a clear error.
  auto s = gqa_shape();
  s.query_window = 0;
  const auto no_window = testing::random_cache(s, 3);
  EXPECT_THAT(error_of([&] { run("quest", no_window); }), HasSubstr("no query window"));
}

TEST(Quest, ChainsWithKivi) {
  const auto cache = testing::random_cache(gqa_shape(), 4);
  auto plain = run("quest:budget=24,page_size=8", cache);
  auto quantized = run("quest:budget=24,page_size=8+kivi:bits=4,group=8,residual=0", cache);
  const auto a = score(cache, *plain, linalg::cpu_backend());
  const auto b = score(cache, *quantized, linalg::cpu_backend());
  EXPECT_LT(b.bytes, a.bytes);
  EXPECT_LT(b.loaded_bytes, a.loaded_bytes);
  EXPECT_LT(a.loaded_bytes, static_cast<double>(a.bytes));
  // The metadata stays at 16 bits (KIVI quantizes cells only): the same bytes in both.
  EXPECT_EQ(find(*plain, "layer1/page_max_min").bytes(), find(*quantized, "layer1/page_max_min").bytes());
  EXPECT_GT(b.attn_kl, 0.0);
}

// compress scores layer-local chains one layer at a time, each layer a one-layer slice: the
// slice still knows its depth (skip_layers), and the figures equal the whole cache's.
TEST(Quest, OneLayerAtATimeScoresAsTheWholeCache) {
  const auto cache = testing::random_cache(gqa_shape(), 6);
  for (const std::string spec : {"quest:budget=24,page_size=8,skip_layers=2", "quest:budget=16,page_size=8+kivi:bits=4,group=8,residual=0"}) {
    const auto chain = parse_spec(spec);
    ASSERT_TRUE(layer_local(chain));
    auto whole = compress_chain({cache, linalg::cpu_backend()}, chain);
    const auto a = score(cache, *whole, linalg::cpu_backend());
    nlohmann::json notes;
    const auto b = compress_and_score_by_layer({cache, linalg::cpu_backend()}, chain, {}, nullptr, &notes);
    EXPECT_EQ(a.bytes, b.bytes) << spec;
    EXPECT_EQ(a.loaded_bytes, b.loaded_bytes) << spec;
    EXPECT_EQ(a.attn_kl, b.attn_kl) << spec;
    EXPECT_EQ(a.attn_output_error, b.attn_output_error) << spec;
    for (int l = 0; l < 3; ++l) EXPECT_EQ(a.layers[l].loaded_bytes, b.layers[l].loaded_bytes) << spec << " layer " << l;
    EXPECT_EQ(notes["quest"], whole->notes()["quest"]);
  }
  // Skipped layers load everything they see, ranked ones less.
  auto c = run("quest:budget=24,page_size=8,skip_layers=2", cache);
  const auto sc = score(cache, *c, linalg::cpu_backend());
  EXPECT_GT(sc.layers[1].loaded_bytes, sc.layers[2].loaded_bytes);
}

}  // namespace
}  // namespace kvlab::compressors
