// think against oracles written here: the authors' channel criterion transcribed with plain loops in
// double (ThinK_flash/src/kv_pruning_utils.py key_pruner_query_driven, with kvpress ThinKPress's GQA
// mean: pow(2).mean over the window queries and the keys, post-RoPE by rotate_half in double),
// `full` / the eviction alone as the lossless case, byte counts spelled out by hand.
#include "compressors/methods/think.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>

#include "compressors/chain.h"
#include "compressors/score.h"
#include "compressors/test_caches.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

// L 2, H_kv 2, H_q 4 (GQA groups of 2), D 16, T 40, W 8, RoPE θ = 10000.
InMemoryCache fixture(std::uint64_t seed = 3) { return testing::random_cache({2, 2, 4, 16, 40, 8, 0}, seed); }

std::unique_ptr<Compressed> run(const CacheSource& cache, const std::string& spec) {
  return compress_chain({cache, linalg::cpu_backend(), nullptr}, parse_spec(spec));
}

// Window queries of `layer` after RoPE at their positions (the last W tokens'), in double: [W, H_q, D].
std::vector<double> post_rope_queries(const CacheSource& c, int layer) {
  const auto& s = c.shape();
  const auto q = c.queries(layer);
  std::vector<double> out(q.data.begin(), q.data.end());
  const auto& inv_freq = c.rope().inv_freq();
  const auto half = inv_freq.size();
  for (int i = 0; i < s.query_window; ++i)
    for (int h = 0; h < s.q_heads; ++h) {
      double* x = out.data() + (static_cast<std::int64_t>(i) * s.q_heads + h) * s.head_dim;
      const auto pos = static_cast<double>(c.positions()[static_cast<std::size_t>(s.tokens - s.query_window + i)]);
      for (std::size_t j = 0; j < half; ++j) {
        const double a = x[j], b = x[j + half];
        x[j] = a * std::cos(pos * inv_freq[j]) - b * std::sin(pos * inv_freq[j]);
        x[j + half] = b * std::cos(pos * inv_freq[j]) + a * std::sin(pos * inv_freq[j]);
      }
    }
  return out;
}

// The authors' criterion for KV head h of `layer` over the tokens it stores: queries_norm =
// q².mean(window) (the last w), averaged over the GQA group (kvpress); keys_norm = k².mean(tokens);
// key = queries_norm · keys_norm; the int(D·ratio) smallest are pruned (topk largest=False).
// Returns the kept channels and the relative gap of the scores at the cut (the fixture must not
// sit on a near-tie, which fp16 storage could flip).
std::pair<std::set<int>, double> authors_kept(const CacheSource& c, int layer, int h, const std::vector<std::int64_t>& tokens,
                                              int w, double ratio) {
  const auto& s = c.shape();
  const int D = s.head_dim, G = s.group_size();
  const auto q = post_rope_queries(c, layer);
  const auto k = testing::post_rope_keys(c, layer);
  std::vector<double> key(static_cast<std::size_t>(D));
  for (int d = 0; d < D; ++d) {
    double qn = 0;
    for (int g = 0; g < G; ++g) {
      double m = 0;
      for (int i = s.query_window - w; i < s.query_window; ++i) m += std::pow(q[(static_cast<std::size_t>(i) * s.q_heads + h * G + g) * D + d], 2);
      qn += m / w;
    }
    qn /= G;
    double kn = 0;
    for (const auto t : tokens) kn += std::pow(k[(static_cast<std::size_t>(t) * s.kv_heads + h) * D + d], 2);
    key[static_cast<std::size_t>(d)] = qn * kn / static_cast<double>(tokens.size());
  }
  std::vector<int> order(static_cast<std::size_t>(D));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return key[a] < key[b]; });
  const auto pruned = static_cast<std::size_t>(D * ratio);  // python int(): floor
  const double gap = (key[order[pruned]] - key[order[pruned - 1]]) / key[order[pruned]];
  return {std::set<int>(order.begin() + static_cast<std::ptrdiff_t>(pruned), order.end()), gap};
}

const StoredTensor& find(Compressed& c, const std::string& name) {
  for (auto* t : c.stored())
    if (t->name == name) return *t;
  throw std::runtime_error("no stored tensor " + name);
}

std::set<int> mask_channels(const StoredTensor& mask, int D) {
  std::set<int> out;
  for (int d = 0; d < D; ++d)
    if (mask.packed.at(static_cast<std::size_t>(d / 8)) >> (d % 8) & 1) out.insert(d);
  return out;
}

TEST(Think, SpecDefaultsAndBadKeys) {
  // The authors' ratio 0.4 (ThinK_flash init_snapkv), window 32 (kv_pruning_utils' -32, kvpress
  // window_size), recent_size 32.
  EXPECT_EQ(parse_spec("think").stages.at(0).to_string(), "think:ratio=0.4,window=32,recent=32");
  const auto message = [](const std::string& text) { return testing::error_of([&] { parse_spec(text); }); };
  EXPECT_NE(message("think:ratio=1").find("'ratio'"), std::string::npos) << message("think:ratio=1");
  EXPECT_NE(message("think:ratio=-0.1").find("'ratio'"), std::string::npos) << message("think:ratio=-0.1");
  EXPECT_NE(message("think:window=0").find("'window'"), std::string::npos) << message("think:window=0");
  EXPECT_NE(message("think:recent=-1").find("'recent'"), std::string::npos) << message("think:recent=-1");
  EXPECT_NE(message("think:keep=0.5").find("ratio, window, recent"), std::string::npos) << message("think:keep=0.5");
  EXPECT_EQ(method("think").kind, StageKind::quantizer);
  EXPECT_NE(describe_methods().find("think (quantizer)"), std::string::npos) << "its registry line";
}

TEST(Think, KeepingEveryChannelIsLossless) {
  const auto cache = fixture();
  for (const auto& [plain, pruned] : std::vector<std::pair<std::string, std::string>>{
           {"full", "think:ratio=0,window=4,recent=5"},
           {"snapkv:keep=0.5,window=8", "snapkv:keep=0.5,window=8+think:ratio=0,window=8,recent=0"}}) {
    SCOPED_TRACE(pruned);
    auto a = run(cache, plain), b = run(cache, pruned);
    for (int l = 0; l < 2; ++l) {
      const auto x = a->reconstruct(l), y = b->reconstruct(l);
      EXPECT_EQ(x.key.data, y.key.data) << "layer " << l;
      EXPECT_EQ(x.value.data, y.value.data) << "layer " << l;
      EXPECT_EQ(x.kept, y.kept) << "layer " << l;
    }
    EXPECT_EQ(b->bytes(), a->bytes() + 2 * 2 * 2) << "all channels at 16 bits, plus each head's 16-bit mask";
  }
}

TEST(Think, KeptChannelsAreTheAuthorsCriterion) {
  const auto cache = fixture();
  const CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
  const auto masks = make_eviction(parse_spec("snapkv:keep=0.5,window=8").stages[0])->select(ctx);
  for (const double ratio : {0.4, 0.75})
    for (const bool evicted : {false, true}) {
      const auto spec = fmt::format("{}think:ratio={},window=4,recent=5", evicted ? "snapkv:keep=0.5,window=8+" : "", ratio);
      SCOPED_TRACE(spec);
      auto c = run(cache, spec);
      for (int l = 0; l < 2; ++l)
        for (int h = 0; h < 2; ++h) {
          std::vector<std::int64_t> tokens(40);
          std::iota(tokens.begin(), tokens.end(), 0);
          if (evicted) {
            const auto kept = testing::kept_tokens(masks, l, h, cache.shape());
            tokens.assign(kept.begin(), kept.end());
          }
          const auto [expected, gap] = authors_kept(cache, l, h, tokens, 4, ratio);
          ASSERT_GT(gap, 1e-2) << "fixture: a near-tie at the cut (layer " << l << " head " << h << ")";
          EXPECT_EQ(mask_channels(find(*c, fmt::format("layer{}/head{}/key_channels", l, h)), 16), expected)
              << "layer " << l << " head " << h;
        }
    }
}

TEST(Think, RebuildZeroesThePrunedChannelsOfOlderRows) {
  // Post-RoPE, the rebuilt keys are the stored ones (fp16 of the post-RoPE keys) with the pruned
  // channels zero in all but the last `recent` rows; values untouched. The f32 rotation back and
  // forth costs a few ulps of the row: tolerance 1e-5·max|k|.
  const auto cache = fixture(8);
  auto full = run(cache, "full");
  auto c = run(cache, "think:ratio=0.5,window=8,recent=6");
  for (int l = 0; l < 2; ++l) {
    const auto rebuilt = c->reconstruct(l), dense = full->reconstruct(l);
    EXPECT_EQ(rebuilt.value.data, dense.value.data);
    const InMemoryCache a(cache.shape(), {rebuilt.key, rebuilt.key}, {rebuilt.value, rebuilt.value},
                          {cache.queries(0), cache.queries(1)}, cache.positions(), cache.rope());
    const InMemoryCache b(cache.shape(), {dense.key, dense.key}, {dense.value, dense.value},
                          {cache.queries(0), cache.queries(1)}, cache.positions(), cache.rope());
    const auto ka = testing::post_rope_keys(a, l), kb = testing::post_rope_keys(b, l);
    double top = 0;
    for (const double v : kb) top = std::max(top, std::abs(v));
    for (int h = 0; h < 2; ++h) {
      const auto kept = mask_channels(find(*c, fmt::format("layer{}/head{}/key_channels", l, h)), 16);
      ASSERT_EQ(kept.size(), 8u);
      for (int t = 0; t < 40; ++t)
        for (int d = 0; d < 16; ++d) {
          const auto at = static_cast<std::size_t>((t * 2 + h) * 16 + d);
          const double expected = t < 34 && !kept.count(d) ? 0.0 : kb[at];
          ASSERT_NEAR(ka[at], expected, 1e-5 * top) << "layer " << l << " head " << h << " token " << t << " channel " << d;
        }
    }
  }
}

TEST(Think, BytesAreAHandCount) {
  const auto cache = fixture();
  // Every head: P = int(16·0.4) = 6 pruned; 35 older rows × 10 channels + 5 rows × 16 at 2 bytes,
  // a 2-byte mask; values 40 × 16 at 2 bytes. 2 layers × 2 heads.
  EXPECT_EQ(run(cache, "think:ratio=0.4,window=4,recent=5")->bytes(), 4 * (2 * 35 * 10 + 2 * 5 * 16 + 2 + 2 * 40 * 16));
  EXPECT_EQ(think_head_key_bytes(40, 16, {0.4, 4, 5}), 2 * 35 * 10 + 2 * 5 * 16 + 2);
  // After snapkv each head stores its n kept rows and their int32 token indices.
  auto c = run(cache, "snapkv:keep=0.5,window=8+think:ratio=0.4,window=4,recent=5");
  std::int64_t expected = 0;
  for (auto* t : c->stored())
    if (t->name.ends_with("/index")) {
      const auto n = t->shape.at(0);
      expected += 4 * n + 2 * (n - 5) * 10 + 2 * 5 * 16 + 2 + 2 * n * 16;
    }
  EXPECT_EQ(c->bytes(), expected);
}

TEST(Think, ChainsWithEvictionAndKiviLayerByLayer) {
  const auto cache = testing::random_cache({3, 2, 4, 32, 200, 16, 0}, 5);
  const CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
  const auto chain = parse_spec("snapkv:keep=0.5,window=16+think:ratio=0.5,window=16,recent=8+kivi:bits=2,group=16,residual=32");
  auto whole = compress_chain(ctx, chain);
  const auto expected = score(cache, *whole, linalg::cpu_backend());
  const auto by_layer = compress_and_score_by_layer(ctx, chain);
  EXPECT_EQ(by_layer.bytes, expected.bytes);
  EXPECT_EQ(by_layer.key_error, expected.key_error);
  EXPECT_EQ(by_layer.attn_kl, expected.attn_kl);
  int pruned = 0;
  for (auto* t : whole->stored()) {
    if (t->name.ends_with("/key")) ADD_FAILURE() << t->name << ": think replaces every per-head key tensor";
    if (t->name.ends_with("/key_pruned")) {
      ++pruned;
      EXPECT_EQ(t->shape.at(1), 16) << t->name;
      EXPECT_EQ(t->format, "kivi2 g16 r32") << t->name << ": KIVI quantizes the kept channels";
    }
  }
  EXPECT_EQ(pruned, 3 * 2);
  // KIVI after think stores less than think alone; think alone less than the kept cells.
  const auto alone = run(cache, "snapkv:keep=0.5,window=16+think:ratio=0.5,window=16,recent=8")->bytes();
  EXPECT_LT(whole->bytes(), alone);
  EXPECT_LT(alone, run(cache, "snapkv:keep=0.5,window=16")->bytes());
}

TEST(Think, ChainsWithoutPerHeadKeysOrWindowAreErrors) {
  const auto cache = fixture();
  EXPECT_NE(testing::error_of([&] { run(cache, "svd:rk=4+think"); }).find("per-head keys"), std::string::npos);
  EXPECT_NE(testing::error_of([&] { run(cache, "kivi+think:window=4"); }).find("before any quantizer"), std::string::npos)
      << testing::error_of([&] { run(cache, "kivi+think:window=4"); });
  EXPECT_NE(testing::error_of([&] { run(cache, "think:window=9"); }).find("'window' = 9 exceeds the 8 queries"), std::string::npos)
      << testing::error_of([&] { run(cache, "think:window=9"); });
  const auto no_window = testing::random_cache({1, 2, 4, 16, 40, 0, 0}, 1);
  EXPECT_NE(testing::error_of([&] { run(no_window, "think"); }).find("no query window"), std::string::npos);
  const std::vector<StoredTensor*> none;
  EXPECT_NE(testing::error_of([&] { make_quantizer(parse_spec("think").stages[0])->quantize(none); }).find("query window"),
            std::string::npos);
}

}  // namespace
}  // namespace kvlab::compressors
