// MiniCache tests. Oracles are independent of the implementation: closed-form SLERP values,
// angles recomputed here with arccos (the implementation uses atan2), norms recomputed in
// double, byte counts from the storage formula, bitwise equality for rows that must be stored
// verbatim. Tolerances: 1e-6 relative for quantities that pass through one float rounding of a
// unit direction (D ≤ 16), 1e-5 absolute for keys through a RoPE round trip.
#include "compressors/methods/minicache.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <numbers>
#include <random>
#include <set>

#include "compressors/test_caches.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

std::unique_ptr<Compressed> run(const CacheSource& cache, std::string_view params) {
  const auto spec = parse_stage(minicache_method(), params);
  CompressContext ctx{cache, linalg::cpu_backend()};
  return make_minicache(spec)->compress(ctx);
}

CacheShape shape_of(int L, int H, int D, std::int64_t T) { return CacheShape{L, H, H, D, T, 0, 0}; }

// A cache from explicit per-layer keys and values [T, H, D]; no RoPE.
InMemoryCache hand_cache(const CacheShape& s, std::vector<FloatTensor> keys, std::vector<FloatTensor> values) {
  std::vector<FloatTensor> queries;
  for (int l = 0; l < s.layers; ++l) queries.emplace_back(core::Shape{0, s.q_heads, s.head_dim});
  return InMemoryCache(s, std::move(keys), std::move(values), std::move(queries));
}

double norm(const float* x, int D) {
  double s = 0;
  for (int d = 0; d < D; ++d) s += double{x[d]} * x[d];
  return std::sqrt(s);
}

bool rows_equal(const float* a, const float* b, int D) { return std::equal(a, a + D, b); }

// Rows (t·H + h) reconstructed bit for bit: the retained ones (merged rows of random data are not).
std::set<std::int64_t> verbatim_rows(const FloatTensor& original, const FloatTensor& rebuilt, int D) {
  std::set<std::int64_t> out;
  const auto rows = static_cast<std::int64_t>(original.data.size()) / D;
  for (std::int64_t r = 0; r < rows; ++r)
    if (rows_equal(original.data.data() + r * D, rebuilt.data.data() + r * D, D)) out.insert(r);
  return out;
}

// Angle by the textbook formula, arccos of the cosine (the oracle for the threshold).
double angle(const float* a, const float* b, int D) {
  double dot = 0;
  for (int d = 0; d < D; ++d) dot += double{a[d]} * b[d];
  return std::acos(std::clamp(dot / (norm(a, D) * norm(b, D)), -1.0, 1.0));
}

TEST(MiniCacheSpec, DefaultsAreThePapersAndRoundTrip) {
  const auto spec = parse_stage(minicache_method(), "");
  EXPECT_EQ(spec.to_string(), "minicache:t=0.6,gamma=0.05,start=-1,end=-1,retain=below,scope=global,part=both");
  EXPECT_EQ(parse_stage(minicache_method(), "t=0.5,retain=above,scope=head,part=key").to_string(),
            "minicache:t=0.5,gamma=0.05,start=-1,end=-1,retain=above,scope=head,part=key");
}

TEST(MiniCacheSpec, BadKeysNameTheKey) {
  auto expect_error = [](auto&& f, const std::string& key) {
    try {
      f();
      ADD_FAILURE() << "no error for key " << key;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'" + key + "'"), std::string::npos) << e.what();
    }
  };
  const auto& def = minicache_method();
  expect_error([&] { parse_stage(def, "t=1.5"); }, "t");
  expect_error([&] { parse_stage(def, "gamma=-0.1"); }, "gamma");
  expect_error([&] { parse_stage(def, "retain=sideways"); }, "retain");
  expect_error([&] { parse_stage(def, "scope=layer"); }, "scope");
  expect_error([&] { parse_stage(def, "start=4,end=4"); }, "end");  // no pair fits
  const auto cache = testing::random_cache(shape_of(4, 2, 8, 16), 1);
  expect_error([&] { run(cache, "start=10"); }, "start");  // beyond L = 4
  expect_error([&] { run(cache, "start=0,end=9"); }, "end");
  expect_error([&] { run(cache, "start=3"); }, "start");  // end = L−1 = 3: no pair
}

TEST(MiniCacheSlerp, EndpointsAreTheEndDirections) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n;
  std::vector<float> x1(16), x2(16);
  for (auto& v : x1) v = n(rng);
  for (auto& v : x2) v = 3 * n(rng);
  const double n1 = norm(x1.data(), 16), n2 = norm(x2.data(), 16);
  const auto s0 = slerp_rows(x1, x2, 0.0), s1 = slerp_rows(x1, x2, 1.0);
  EXPECT_NEAR(s0.norm1, n1, 1e-9 * n1);
  EXPECT_NEAR(s0.norm2, n2, 1e-9 * n2);
  for (int d = 0; d < 16; ++d) {
    EXPECT_NEAR(s0.direction[d], x1[d] / n1, 1e-6);
    EXPECT_NEAR(s1.direction[d], x2[d] / n2, 1e-6);
  }
  EXPECT_NEAR(s0.omega, angle(x1.data(), x2.data(), 16), 1e-6);
}

TEST(MiniCacheSlerp, OrthogonalMidpointIsTheNormalisedMean) {
  std::vector<float> x1(8, 0.0f), x2(8, 0.0f);
  x1[0] = 3;  // unit directions e0 and e1, different magnitudes
  x2[1] = 5;
  const auto s = slerp_rows(x1, x2, 0.5);
  EXPECT_NEAR(s.omega, std::numbers::pi / 2, 1e-12);
  const double h = 1 / std::sqrt(2.0);
  for (int d = 0; d < 8; ++d) EXPECT_NEAR(s.direction[d], d == 0 || d == 1 ? h : 0.0, 1e-7);
  // t = 0.6 weights the later layer: sin(0.4·π/2) and sin(0.6·π/2) (sin Ω = 1).
  const auto s6 = slerp_rows(x1, x2, 0.6);
  EXPECT_NEAR(s6.direction[0], std::sin(0.4 * std::numbers::pi / 2), 1e-7);
  EXPECT_NEAR(s6.direction[1], std::sin(0.6 * std::numbers::pi / 2), 1e-7);
}

TEST(MiniCacheSlerp, ZeroAndParallelRowsAreSafe) {
  std::vector<float> zero(4, 0.0f), x{1, -2, 2, 0}, twice{2, -4, 4, 0};
  const auto a = slerp_rows(zero, x, 0.6);
  EXPECT_TRUE(a.degenerate);
  for (int d = 0; d < 4; ++d) EXPECT_NEAR(a.direction[d], x[d] / 3.0, 1e-7);
  const auto b = slerp_rows(zero, zero, 0.6);
  for (float v : b.direction) EXPECT_EQ(v, 0.0f);
  // Ω = 0 (the xKV branch Ω < 1e-7): the unit direction, not (1−t)·x1 + t·x2 of the raw rows.
  const auto c = slerp_rows(x, twice, 0.6);
  EXPECT_EQ(c.omega, 0.0);
  for (int d = 0; d < 4; ++d) EXPECT_NEAR(c.direction[d], x[d] / 3.0, 1e-7);
}

// t = 0 and t = 1 through the whole compressor: everything merged (retain=above with γ = 1
// keeps Ω > max Ω: nothing), so every row is e·‖x‖.
TEST(MiniCache, EndpointTsRestoreOneLayerAndBothNorms) {
  const auto s = shape_of(2, 2, 16, 32);
  const auto cache = testing::random_cache(s, 5, false);
  const auto k0 = cache.layer(0, Part::key), k1 = cache.layer(1, Part::key);
  for (double t : {0.0, 1.0}) {
    auto c = run(cache, fmt::format("t={},gamma=1,retain=above,start=0", t));
    EXPECT_DOUBLE_EQ(c->notes()["merged_fraction"].get<double>(), 1.0);
    const auto r0 = c->reconstruct(0).key, r1 = c->reconstruct(1).key;
    const auto& end = t == 0 ? k0 : k1;  // the layer whose direction e is
    for (std::int64_t r = 0; r < 64; ++r) {
      const float *a = k0.data.data() + r * 16, *b = k1.data.data() + r * 16, *e = end.data.data() + r * 16;
      const double na = norm(a, 16), nb = norm(b, 16), ne = norm(e, 16);
      EXPECT_NEAR(norm(r0.data.data() + r * 16, 16), na, 1e-6 * na);
      EXPECT_NEAR(norm(r1.data.data() + r * 16, 16), nb, 1e-6 * nb);
      for (int d = 0; d < 16; ++d) {
        EXPECT_NEAR(r0.data[r * 16 + d], e[d] / ne * na, 1e-6 * na);
        EXPECT_NEAR(r1.data[r * 16 + d], e[d] / ne * nb, 1e-6 * nb);
      }
    }
  }
}

TEST(MiniCache, IdenticalDirectionsMergeLosslessly) {
  // Layer 1 = layer 0 scaled per row by a positive factor: same directions, other norms.
  const auto s = shape_of(2, 2, 8, 40);
  std::mt19937 rng(11);
  std::normal_distribution<float> n;
  // Powers of two scale exactly, so the directions are bitwise equal and Ω = 0 exactly.
  std::uniform_int_distribution<int> exponent(-2, 2);
  auto scale = [&](std::mt19937& g) { return std::ldexp(1.0f, exponent(g)); };
  std::vector<FloatTensor> keys(2, FloatTensor({40, 2, 8})), values(2, FloatTensor({40, 2, 8}));
  for (std::int64_t r = 0; r < 80; ++r) {
    const float sk = scale(rng), sv = scale(rng);
    for (int d = 0; d < 8; ++d) {
      keys[0].data[r * 8 + d] = n(rng);
      values[0].data[r * 8 + d] = n(rng);
      keys[1].data[r * 8 + d] = sk * keys[0].data[r * 8 + d];
      values[1].data[r * 8 + d] = sv * values[0].data[r * 8 + d];
    }
  }
  const auto cache = hand_cache(s, keys, values);
  // retain=above: Ω = 0 everywhere is not > threshold 0, so every row merges.
  auto merged = run(cache, "start=0,retain=above");
  EXPECT_DOUBLE_EQ(merged->notes()["merged_fraction"].get<double>(), 1.0);
  // retain=below (xKV): all Ω equal min = max, every row is ≤ threshold and kept verbatim.
  auto kept = run(cache, "start=0");
  EXPECT_DOUBLE_EQ(kept->notes()["merged_fraction"].get<double>(), 0.0);
  for (int l = 0; l < 2; ++l) {
    const auto m = merged->reconstruct(l), k = kept->reconstruct(l);
    for (std::size_t i = 0; i < m.key.data.size(); ++i) {
      EXPECT_NEAR(m.key.data[i], keys[l].data[i], 1e-6 * (1 + std::abs(keys[l].data[i]))) << l << " " << i;
      EXPECT_NEAR(m.value.data[i], values[l].data[i], 1e-6 * (1 + std::abs(values[l].data[i])));
    }
    EXPECT_EQ(k.key.data, keys[l].data);
    EXPECT_EQ(k.value.data, values[l].data);
  }
}

TEST(MiniCache, GammaOneBelowKeepsEverything) {
  const auto s = shape_of(4, 2, 8, 48);
  const auto cache = testing::random_cache(s, 7);
  auto c = run(cache, "gamma=1,start=0");
  EXPECT_DOUBLE_EQ(c->notes()["merged_fraction"].get<double>(), 0.0);
  for (int l = 0; l < 4; ++l) {
    const auto r = c->reconstruct(l);
    EXPECT_EQ(r.key.data, cache.layer(l, Part::key).data);
    EXPECT_EQ(r.value.data, cache.layer(l, Part::value).data);
    EXPECT_TRUE(r.kept.empty());
  }
}

// Both retention directions against the threshold recomputed here from arccos angles.
TEST(MiniCache, AboveAndBelowKeepComplementarySets) {
  const int H = 2, D = 8;
  const std::int64_t T = 64;
  const auto cache = testing::random_cache(shape_of(2, H, D, T), 9, false);
  for (const std::string scope : {"global", "head"}) {
    auto below = run(cache, "start=0,gamma=0.3,scope=" + scope);
    auto above = run(cache, "start=0,gamma=0.3,retain=above,scope=" + scope);
    for (const auto part : {Part::key, Part::value}) {
      const auto x0 = cache.layer(0, part), x1 = cache.layer(1, part);
      std::vector<double> omega(T * H);
      std::vector<double> lo(H, 10), hi(H, -1);
      for (std::int64_t r = 0; r < T * H; ++r) {
        omega[r] = angle(x0.data.data() + r * D, x1.data.data() + r * D, D);
        const int g = scope == "head" ? static_cast<int>(r % H) : 0;
        lo[g] = std::min(lo[g], omega[r]);
        hi[g] = std::max(hi[g], omega[r]);
      }
      auto rebuilt = [&](Compressed& c, int l) { return part == Part::key ? c.reconstruct(l).key : c.reconstruct(l).value; };
      const auto kb = verbatim_rows(x0, rebuilt(*below, 0), D), ka = verbatim_rows(x0, rebuilt(*above, 0), D);
      EXPECT_EQ(verbatim_rows(x1, rebuilt(*below, 1), D), kb);
      EXPECT_EQ(verbatim_rows(x1, rebuilt(*above, 1), D), ka);
      EXPECT_EQ(kb.size() + ka.size(), static_cast<std::size_t>(T * H));
      for (std::int64_t r = 0; r < T * H; ++r) {
        const int g = scope == "head" ? static_cast<int>(r % H) : 0;
        const double thr = lo[g] + 0.3 * (hi[g] - lo[g]);
        if (std::abs(omega[r] - thr) < 1e-6) continue;  // arccos and atan2 may differ in the last digits
        EXPECT_EQ(kb.count(r), omega[r] <= thr ? 1u : 0u) << scope << " row " << r;
        EXPECT_EQ(ka.count(r), omega[r] > thr ? 1u : 0u) << scope << " row " << r;
      }
      const auto frac = below->notes()["merged_fraction_per_pair"]["0-1"][std::string(to_string(part))].get<double>();
      EXPECT_DOUBLE_EQ(frac, 1.0 - static_cast<double>(kb.size()) / (T * H));
    }
  }
}

TEST(MiniCache, ZeroRowsAreSafe) {
  const auto s = shape_of(2, 1, 4, 6);
  std::vector<FloatTensor> keys(2, FloatTensor({6, 1, 4})), values(2, FloatTensor({6, 1, 4}));
  std::mt19937 rng(2);
  std::normal_distribution<float> n;
  for (int l = 0; l < 2; ++l)
    for (auto* t : {&keys[l], &values[l]})
      for (auto& v : t->data) v = n(rng);
  // token 0: zero in layer 0; token 1: zero in layer 1; token 2: zero in both.
  for (int d = 0; d < 4; ++d) {
    keys[0].data[0 * 4 + d] = keys[1].data[1 * 4 + d] = keys[0].data[2 * 4 + d] = keys[1].data[2 * 4 + d] = 0;
    values[0].data[0 * 4 + d] = values[1].data[1 * 4 + d] = values[0].data[2 * 4 + d] = values[1].data[2 * 4 + d] = 0;
  }
  const auto cache = hand_cache(s, keys, values);
  for (const char* params : {"start=0", "start=0,retain=above", "start=0,gamma=1", "start=0,scope=head"}) {
    auto c = run(cache, params);
    for (int l = 0; l < 2; ++l) {
      const auto r = c->reconstruct(l);
      for (std::int64_t t = 0; t < 3; ++t)
        for (int d = 0; d < 4; ++d) {
          // Rows of the three degenerate pairs come back as they were: zero exactly, the other to rounding.
          EXPECT_NEAR(r.key.data[t * 4 + d], keys[l].data[t * 4 + d], 1e-6) << params;
          EXPECT_NEAR(r.value.data[t * 4 + d], values[l].data[t * 4 + d], 1e-6) << params;
          if (keys[l].data[t * 4 + d] == 0) { EXPECT_EQ(r.key.data[t * 4 + d], 0.0f); }
        }
      for (float v : r.key.data) EXPECT_TRUE(std::isfinite(v)) << params;
      for (float v : r.value.data) EXPECT_TRUE(std::isfinite(v)) << params;
    }
  }
}

TEST(MiniCache, MergedRowsKeepTheirNorm) {
  const int D = 16;
  const auto cache = testing::synthetic_cache(testing::small_synth_config());
  auto c = run(cache, "");  // paper defaults: pair (2, 3) of 4 layers
  EXPECT_GT(c->notes()["merged_fraction"].get<double>(), 0.5);
  for (int l = 2; l < 4; ++l) {
    const auto r = c->reconstruct(l);
    for (const auto part : {Part::key, Part::value}) {
      const auto x = cache.layer(l, part);
      const auto& y = part == Part::key ? r.key : r.value;
      for (std::size_t row = 0; row < x.data.size() / D; ++row) {
        const double nx = norm(x.data.data() + row * D, D);
        EXPECT_NEAR(norm(y.data.data() + row * D, D), nx, 1e-6 * nx + 1e-30);
      }
    }
  }
}

// Byte count by the storage formula. γ = 0 with retain=below keeps exactly the rows at min Ω:
// one per scope group for random data (no ties).
TEST(MiniCache, BytesByFormula) {
  const int L = 6, H = 2, D = 8;
  const std::int64_t T = 50;
  const auto cache = testing::random_cache(shape_of(L, H, D, T), 13);
  const std::int64_t dense = T * H * D * 2;  // one layer, one part, fp16
  // A merged (pair, part) with R retained rows of T·H: directions 2·D·M, magnitudes 2·2·M, the
  // retained rows of both layers 2·2·R·D, indices 4·R (M = T·H − R).
  auto merged = [&](std::int64_t R) {
    const auto M = T * H - R;
    return 2 * D * M + 4 * M + 4 * R * D + 4 * R;
  };
  // start=2: pairs (2,3), (4,5); layers 0 and 1 dense.
  EXPECT_EQ(testing::stored_bytes(*run(cache, "start=2,gamma=0,scope=head")), 4 * dense + 4 * merged(H));
  EXPECT_EQ(testing::stored_bytes(*run(cache, "start=2,gamma=0")), 4 * dense + 4 * merged(1));
  // part=key: the pairs' values are dense too.
  EXPECT_EQ(testing::stored_bytes(*run(cache, "start=2,gamma=0,part=key")), 8 * dense + 2 * merged(1));
  // Everything retained: more than dense (two originals, indices).
  EXPECT_EQ(testing::stored_bytes(*run(cache, "start=0,gamma=1")), 6 * merged(T * H));
  const auto notes = run(cache, "start=2")->notes();
  EXPECT_DOUBLE_EQ(notes["authors_ratio"].get<double>(), 6.0 / 4.0);
  EXPECT_EQ(notes["pairs"].get<int>(), 2);
}

TEST(MiniCache, PairOutsideTheRangeIsUntouched) {
  const int L = 6, H = 2, D = 8;
  const std::int64_t T = 32;
  const auto cache = testing::random_cache(shape_of(L, H, D, T), 17);  // with RoPE
  auto c = run(cache, "start=2,end=3");
  EXPECT_EQ(c->notes()["pairs"].get<int>(), 1);
  for (auto* t : c->stored()) EXPECT_EQ(t->name.find("pair4-5"), std::string::npos) << t->name;
  for (int l : {0, 1, 4, 5}) {
    const auto r = c->reconstruct(l);
    const auto k = cache.layer(l, Part::key), v = cache.layer(l, Part::value);
    for (std::size_t i = 0; i < k.data.size(); ++i) EXPECT_NEAR(r.key.data[i], k.data[i], 1e-5) << l;
    EXPECT_EQ(r.value.data, v.data);
  }
  // The pair itself does change (random rows are far apart).
  EXPECT_NE(c->reconstruct(2).key.data, cache.layer(2, Part::key).data);
}

TEST(MiniCache, StoredLayoutAndReconstructionFromStoredValues) {
  const int H = 2, D = 8;
  const std::int64_t T = 20;
  const auto cache = testing::random_cache(shape_of(4, H, D, T), 19, false);
  auto c = run(cache, "");  // pair (2, 3)
  StoredTensor* dir = nullptr;
  for (auto* t : c->stored()) {
    if (t->name == "layer0/key") { EXPECT_EQ(t->layout, QuantLayout::per_channel); }
    if (t->name == "layer0/value") { EXPECT_EQ(t->layout, QuantLayout::per_token); }
    if (t->name.starts_with("layer")) { EXPECT_EQ(t->shape, (core::Shape{T, H * D})); }
    if (t->name == "pair2-3/key/head0/direction") dir = t;
    if (t->name.ends_with("magnitudes")) { EXPECT_EQ(t->layout, QuantLayout::none); }
    if (t->name.ends_with("retained_index")) {
      EXPECT_EQ(t->format, "int32");
      EXPECT_TRUE(t->values.empty());
    }
  }
  ASSERT_NE(dir, nullptr);
  EXPECT_EQ(dir->layout, QuantLayout::per_token);
  EXPECT_TRUE(dir->token_rows);
  // A chained quantizer rewrites values in place: doubling the directions doubles merged rows.
  const auto before = c->reconstruct(2).key;
  for (auto& v : dir->values) v *= 2;
  const auto after = c->reconstruct(2).key;
  int doubled = 0;
  for (std::int64_t t = 0; t < T; ++t) {
    const auto r = t * H;  // head 0
    if (rows_equal(before.data.data() + r * D, after.data.data() + r * D, D)) continue;  // retained
    for (int d = 0; d < D; ++d) EXPECT_FLOAT_EQ(after.data[r * D + d], 2 * before.data[r * D + d]);
    ++doubled;
  }
  EXPECT_GT(doubled, 0);
}

// retain=top against a plain-loop transcription of KVCache-Factory's rule
// (Zefan-Cai/KVCache-Factory pyramidkv/minicache.py: compress_minicache_pair with
// select_minicache_retention_indices): per KV head, angular distance acos(cos)/π, the
// ceil(T·ratio) largest kept, returned in token order. torch.topk leaves the order of ties
// unspecified; kvlab keeps the earlier token, and so does the transcription (a stable sort).
// The fixture (GQA: 2 KV heads, 4 query heads) has random rows, whose angles are distinct, and
// antipodal rows (x2 = −x1 with one nonzero entry, a power of two) whose angle is π exactly in both
// the arccos here and the implementation's atan2, so they tie at the top: 5 in head 0 and 3 in
// head 1, so that k = 4 cuts head 0's tie and keeps all of head 1's.
std::vector<std::int32_t> kvcache_factory_kept(const FloatTensor& x1, const FloatTensor& x2, int h, double ratio) {
  const std::int64_t T = x1.shape[0], H = x1.shape[1], D = x1.shape[2];
  std::vector<double> distance(static_cast<std::size_t>(T));
  for (std::int64_t t = 0; t < T; ++t) {
    const float* a = x1.data.data() + (t * H + h) * D;
    const float* b = x2.data.data() + (t * H + h) * D;
    distance[t] = angle(a, b, static_cast<int>(D)) / std::numbers::pi;
  }
  const auto keep = std::min<std::int64_t>(T, static_cast<std::int64_t>(std::ceil(static_cast<double>(T) * ratio)));
  std::vector<std::int32_t> order(static_cast<std::size_t>(T));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t i, std::int32_t j) { return distance[i] > distance[j]; });
  order.resize(static_cast<std::size_t>(keep));
  std::sort(order.begin(), order.end());
  return order;
}

// The token indices the stored form keeps unmerged for (pair, part, head); empty when none.
std::vector<std::int32_t> stored_kept(Compressed& c, const std::string& name) {
  for (auto* t : c.stored())
    if (t->name == name) return t->unpack_indices();
  return {};
}

TEST(MiniCache, TopKeepsKvcacheFactorysTokensPerHead) {
  const int Hkv = 2, Hq = 4, D = 8;
  const std::int64_t T = 40;
  const CacheShape s{2, Hkv, Hq, D, T, 0, 0};
  std::vector<FloatTensor> keys(2, FloatTensor({T, Hkv, D})), values(2, FloatTensor({T, Hkv, D}));
  std::mt19937 rng(23);
  std::normal_distribution<float> n;
  for (int l = 0; l < 2; ++l)
    for (auto* x : {&keys[l], &values[l]})
      for (auto& v : x->data) v = n(rng);
  const std::vector<std::pair<std::int64_t, int>> antipodal = {{3, 0}, {11, 0}, {17, 0}, {25, 0}, {30, 0},
                                                                {2, 1}, {7, 1}, {33, 1}};
  for (std::size_t i = 0; i < antipodal.size(); ++i) {
    const auto [t, h] = antipodal[i];
    const float c = std::ldexp(1.0f, static_cast<int>(i % 4) - 1);  // 0.5, 1, 2, 4
    for (auto* x : {&keys, &values})
      for (int d = 0; d < D; ++d) {
        (*x)[0].data[(t * Hkv + h) * D + d] = d == static_cast<int>(i % D) ? c : 0.0f;
        (*x)[1].data[(t * Hkv + h) * D + d] = d == static_cast<int>(i % D) ? -c : 0.0f;
      }
  }
  const auto cache = hand_cache(s, keys, values);
  for (const double gamma : {0.0, 0.05, 0.1, 0.3, 1.0}) {
    for (const std::string scope : {"global", "head"}) {  // retain=top ranks per head whatever the scope
      const auto params = fmt::format("start=0,retain=top,gamma={},scope={}", gamma, scope);
      SCOPED_TRACE(params);
      auto c = run(cache, params);
      std::int64_t kept = 0;
      for (const auto part : {Part::key, Part::value}) {
        const auto x1 = cache.layer(0, part), x2 = cache.layer(1, part);
        for (int h = 0; h < Hkv; ++h) {
          const auto want = kvcache_factory_kept(x1, x2, h, gamma);
          EXPECT_EQ(stored_kept(*c, fmt::format("pair0-1/{}/head{}/retained_index", to_string(part), h)), want)
              << to_string(part) << " head " << h;
          kept += static_cast<std::int64_t>(want.size());
        }
        // The kept rows come back verbatim in both layers.
        const auto r0 = c->reconstruct(0), r1 = c->reconstruct(1);
        const auto v0 = verbatim_rows(x1, part == Part::key ? r0.key : r0.value, D);
        const auto v1 = verbatim_rows(x2, part == Part::key ? r1.key : r1.value, D);
        for (int h = 0; h < Hkv; ++h)
          for (const auto t : kvcache_factory_kept(x1, x2, h, gamma)) {
            EXPECT_TRUE(v0.count(t * Hkv + h)) << "token " << t << " head " << h;
            EXPECT_TRUE(v1.count(t * Hkv + h)) << "token " << t << " head " << h;
          }
      }
      EXPECT_DOUBLE_EQ(c->notes()["merged_fraction"].get<double>(), 1.0 - static_cast<double>(kept) / (2 * T * Hkv));
      EXPECT_EQ(c->notes()["scope"].get<std::string>(), "head");
    }
  }
  // The tie cut: γ = 0.1 keeps ceil(4.0) = 4 per head; head 0's five antipodal tokens tie at π
  // and the earliest four are kept; head 1 keeps its three and the largest random angle.
  auto c = run(cache, "start=0,retain=top,gamma=0.1");
  EXPECT_EQ(stored_kept(*c, "pair0-1/key/head0/retained_index"), (std::vector<std::int32_t>{3, 11, 17, 25}));
  const auto head1 = stored_kept(*c, "pair0-1/key/head1/retained_index");
  ASSERT_EQ(head1.size(), 4u);
  for (const std::int32_t t : {2, 7, 33}) EXPECT_TRUE(std::find(head1.begin(), head1.end(), t) != head1.end()) << t;
}

// ⌈γ·T⌉ of the double product, as Python's math.ceil(100 * 0.07) = 8 (not 7).
TEST(MiniCache, TopCountIsTheCeilingOfTheDoubleProduct) {
  const int H = 2, D = 8;
  const std::int64_t T = 100;
  const auto cache = testing::random_cache(shape_of(2, H, D, T), 29, false);
  auto c = run(cache, "start=0,retain=top,gamma=0.07");
  for (int h = 0; h < H; ++h) EXPECT_EQ(stored_kept(*c, fmt::format("pair0-1/key/head{}/retained_index", h)).size(), 8u);
  EXPECT_EQ(c->notes()["retained_per_head"].get<std::int64_t>(), 8);
}

// Zero rows (KVCache-Factory: angle π/2 after its eps clamp) take no part in retain=top's ranking:
// with γ = 1 every other row is kept and the zero rows merge, restored exactly.
TEST(MiniCache, TopLeavesZeroRowsMerged) {
  const auto s = shape_of(2, 1, 4, 6);
  std::vector<FloatTensor> keys(2, FloatTensor({6, 1, 4})), values(2, FloatTensor({6, 1, 4}));
  std::mt19937 rng(2);
  std::normal_distribution<float> n;
  for (int l = 0; l < 2; ++l)
    for (auto* t : {&keys[l], &values[l]})
      for (auto& v : t->data) v = n(rng);
  for (int d = 0; d < 4; ++d) keys[0].data[0 * 4 + d] = keys[1].data[1 * 4 + d] = 0;  // tokens 0, 1
  const auto cache = hand_cache(s, keys, values);
  auto c = run(cache, "start=0,retain=top,gamma=1");
  EXPECT_EQ(stored_kept(*c, "pair0-1/key/head0/retained_index"), (std::vector<std::int32_t>{2, 3, 4, 5}));
  EXPECT_EQ(stored_kept(*c, "pair0-1/value/head0/retained_index"), (std::vector<std::int32_t>{0, 1, 2, 3, 4, 5}));
  for (int l = 0; l < 2; ++l) {
    const auto r = c->reconstruct(l);
    for (int i = 0; i < 24; ++i) {
      EXPECT_NEAR(r.key.data[i], keys[l].data[i], 1e-6);
      if (keys[l].data[i] == 0) { EXPECT_EQ(r.key.data[i], 0.0f); }
    }
  }
}

}  // namespace
}  // namespace kvlab::compressors
