// kvquant against oracles written here: the packed form decoded by the test's own reading of the
// layout (kvquant.h), the k-means against a plain Lloyd transcription (every point against every
// centroid), closed forms (2^b distinct values per line rebuild exactly; evenly spaced levels give
// the uniform codebook), the outlier rules transcribed from the authors' code (numpy.percentile /
// torch.quantile with linear interpolation, strict for keys, non-strict for values), and the
// dump's own pre-RoPE keys for what the chain stores.
#include "compressors/methods/kvquant.h"

#include <gtest/gtest.h>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <set>

#include "compressors/chain.h"
#include "compressors/dense.h"
#include "compressors/score.h"
#include "compressors/test_caches.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

float fp16(double x) { return static_cast<float>(Eigen::half(static_cast<float>(x))); }

float read_fp16(const std::vector<std::uint8_t>& b, std::int64_t at) {
  const std::uint16_t bits = static_cast<std::uint16_t>(b.at(at) | b.at(at + 1) << 8);
  return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
}

std::int32_t read_i32(const std::vector<std::uint8_t>& b, std::int64_t at) {
  std::int32_t v = 0;
  std::memcpy(&v, b.data() + at, 4);
  return v;
}


// fp16 values [n, c] ~ N(0.3, 1) with planted outliers ±40 at (5 + 7m, 3m mod c): at most one a
// row and one a column (3 is invertible mod c = 2^k), so each is beyond its line's 0.5% / 99.5%
// percentile even on short lines (two +40 in one channel would set the threshold at 40 itself).
std::vector<float> values_with_outliers(std::int64_t n, std::int64_t c, std::uint64_t seed,
                                        std::set<std::int64_t>* planted = nullptr) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.3, 1.0);
  std::vector<float> x(static_cast<std::size_t>(n * c));
  for (auto& v : x) v = fp16(normal(rng));
  for (std::int64_t m = 0; m < c && 5 + 7 * m < n; ++m) {
    const std::int64_t k = (5 + 7 * m) * c + (3 * m) % c;
    x[static_cast<std::size_t>(k)] = fp16(m % 2 ? 40.0 : -40.0);
    if (planted) planted->insert(k);
  }
  return x;
}

// The codebook the stage would fit for one tensor alone: fp16 centroids of its inliers.
std::vector<float> codebook_of(const KvquantPlan& plan, int bits) {
  std::vector<float> pool;
  kvquant_inliers(plan, pool);
  const auto c = kvquant_kmeans(pool, {}, 1 << bits, 50);
  std::vector<float> out;
  for (double v : c) out.push_back(fp16(v));
  return out;
}

// numpy.percentile(x, 100·q) / torch.quantile(x, q), method linear: sort, position (n − 1)·q.
double oracle_quantile(std::vector<float> x, double q) {
  std::sort(x.begin(), x.end());
  const double h = (static_cast<double>(x.size()) - 1) * q;
  const auto i = static_cast<std::size_t>(std::floor(h));
  if (i + 1 >= x.size()) return x.back();
  return x[i] + (h - static_cast<double>(i)) * (double{x[i + 1]} - x[i]);
}

// The plain Lloyd iteration, transcribed: every point against every centroid (argmin, the first
// on ties), weighted means, an empty cluster kept, the centroids re-sorted; the same start and
// stopping rules as kvquant.h states (weighted-quantile start; repeat of the assignment; shift² ≤ 1e-4·variance; max steps).
std::vector<double> lloyd(const std::vector<float>& points, const std::vector<float>& weights, int k, int steps) {
  const std::size_t n = points.size();
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return points[a] < points[b]; });
  const auto weight = [&](std::size_t i) { return weights.empty() ? 1.0 : double{weights[i]}; };
  double total = 0, mean = 0, var = 0;
  for (std::size_t i = 0; i < n; ++i) total += weight(i), mean += points[i];
  mean /= static_cast<double>(n);
  for (std::size_t i = 0; i < n; ++i) var += (points[i] - mean) * (points[i] - mean);
  var /= static_cast<double>(n);
  std::vector<double> c(static_cast<std::size_t>(k));
  for (int j = 0; j < k; ++j) {
    const double target = (j + 0.5) / k * total;
    double run = 0;
    for (std::size_t i = 0; i < n; ++i) {
      run += weight(order[i]);
      if (run >= target || i + 1 == n) {
        c[static_cast<std::size_t>(j)] = points[order[i]];
        break;
      }
    }
  }
  std::vector<int> label(n, -1), previous;
  for (int step = 0; step < steps; ++step) {
    for (std::size_t i = 0; i < n; ++i) {
      int best = 0;
      for (int j = 1; j < k; ++j)
        if (std::abs(points[i] - c[static_cast<std::size_t>(j)]) < std::abs(points[i] - c[static_cast<std::size_t>(best)])) best = j;
      label[i] = best;
    }
    if (label == previous) break;
    previous = label;
    std::vector<double> sw(static_cast<std::size_t>(k), 0.0), swx(static_cast<std::size_t>(k), 0.0);
    for (std::size_t i = 0; i < n; ++i) sw[static_cast<std::size_t>(label[i])] += weight(i), swx[static_cast<std::size_t>(label[i])] += weight(i) * points[i];
    double shift = 0;
    for (int j = 0; j < k; ++j)
      if (sw[static_cast<std::size_t>(j)] > 0) {
        const double next = swx[static_cast<std::size_t>(j)] / sw[static_cast<std::size_t>(j)];
        shift += (next - c[static_cast<std::size_t>(j)]) * (next - c[static_cast<std::size_t>(j)]);
        c[static_cast<std::size_t>(j)] = next;
      }
    std::sort(c.begin(), c.end());
    if (shift <= 1e-4 * var) break;
  }
  return c;
}

// The test's own decoding of a packed form, read where kvquant.h puts each part.
std::vector<float> decode(const std::vector<std::uint8_t>& packed, QuantLayout layout, std::int64_t n, std::int64_t c,
                          const std::vector<float>& codebook, int bits, std::int64_t* sinks_out = nullptr,
                          std::vector<std::int32_t>* index_out = nullptr) {
  const std::int64_t s = read_i32(packed, 0), m = read_i32(packed, 4), coded = n - s;
  const std::int64_t ranges_at = 8 + 2 * s * c, ranges = layout == QuantLayout::per_channel ? c : coded;
  const std::int64_t codes_at = ranges_at + 4 * ranges, outlier_at = codes_at + (coded * c * bits + 7) / 8;
  EXPECT_EQ(static_cast<std::int64_t>(packed.size()), outlier_at + 6 * m) << "the packed form ends after the indices";
  std::vector<float> out(static_cast<std::size_t>(n * c));
  for (std::int64_t k = 0; k < s * c; ++k) out[static_cast<std::size_t>(k)] = read_fp16(packed, 8 + 2 * k);
  for (std::int64_t i = 0; i < coded; ++i)
    for (std::int64_t j = 0; j < c; ++j) {
      const std::int64_t r = layout == QuantLayout::per_channel ? j : i, k = i * c + j;
      const double lo = read_fp16(packed, ranges_at + 4 * r), hi = read_fp16(packed, ranges_at + 4 * r + 2);
      unsigned code = 0;
      for (int bit = 0; bit < bits; ++bit) code |= ((packed.at(codes_at + (k * bits + bit) / 8) >> ((k * bits + bit) % 8)) & 1u) << bit;
      out[static_cast<std::size_t>((s + i) * c + j)] = static_cast<float>(codebook.at(code) * ((hi - lo) / 2) + (hi + lo) / 2);
    }
  for (std::int64_t k = 0; k < m; ++k) {
    const auto at = read_i32(packed, outlier_at + 2 * m + 4 * k);
    out.at(static_cast<std::size_t>(at)) = read_fp16(packed, outlier_at + 2 * k);
    if (index_out) index_out->push_back(at);
  }
  if (sinks_out) *sinks_out = s;
  return out;
}

TEST(Kvquant, SpecDefaultsAndBadKeys) {
  const auto spec = parse_spec("kvquant").stages.at(0);
  // The authors' nuq4-1% run (quant/README.md: --abits 4 --sparsity-threshold 0.99), the first
  // token at fp16 (--first_few_fp16 1 of their DBRX runs), sklearn's max_iter=50, no Fisher file.
  EXPECT_EQ(spec.to_string(), "kvquant:bits=4,outliers=0.01,sinks=1,iterations=50,weight=uniform");
  const auto message = [](const std::string& text) { return testing::error_of([&] { parse_spec(text); }); };
  for (const std::string bad : {"bits=5", "bits=1", "outliers=0.6", "outliers=-0.1", "sinks=-1", "iterations=0", "weight=fisher"}) {
    const auto key = bad.substr(0, bad.find('='));
    const auto m = message("kvquant:" + bad);
    EXPECT_NE(m.find("'" + key + "'"), std::string::npos) << m;
  }
  EXPECT_NE(message("kvquant:bit=2").find("bits, outliers"), std::string::npos) << message("kvquant:bit=2");
  const auto p = kvquant_params(parse_stage(kvquant_method(), "bits=3,outliers=0.05,sinks=0,iterations=7"));
  EXPECT_EQ(p.bits, 3);
  EXPECT_EQ(p.outliers, 0.05);
  EXPECT_EQ(p.sinks, 0);
  EXPECT_EQ(p.iterations, 7);
  EXPECT_EQ(method("kvquant").kind, StageKind::quantizer);
  EXPECT_NE(describe_methods().find("kvquant (quantizer)"), std::string::npos) << "its registry line";
  // Outside a chain it has no cache to read pre-RoPE keys from and no place for its codebooks.
  auto t = StoredTensor::fp16("layer0/head0/value", {4, 4}, std::vector<float>(16, 1.0f), QuantLayout::per_token, true);
  EXPECT_NE(testing::error_of([&] { make_quantizer(spec)->quantize({&t}); }).find("compressor chain"), std::string::npos);
}

// kvquant_quantile selects by a heap for far tails (at most n/16 values beyond the position) and
// by nth_element otherwise; each path against the sorting oracle, ties and repeats included.
TEST(Kvquant, QuantileIsNumpysOnEveryPath) {
  std::mt19937 rng(5);
  for (const std::size_t n : {1, 2, 3, 17, 100, 1000, 4099}) {
    for (const bool repeats : {false, true}) {
      std::vector<float> x(n);
      std::normal_distribution<float> normal;
      for (auto& v : x) v = repeats ? static_cast<float>(std::lround(normal(rng) * 2)) : normal(rng);
      for (const double q : {0.0, 0.001, 0.005, 0.05, 0.3, 0.5, 0.95, 0.995, 0.999, 1.0}) {
        std::vector<float> y = x;
        EXPECT_EQ(kvquant_quantile(y, q), oracle_quantile(x, q)) << "n=" << n << " q=" << q << " repeats=" << repeats;
      }
    }
  }
}

TEST(Kvquant, KmeansIsPlainLloyd) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal(0, 0.4);
  std::uniform_real_distribution<double> uniform(0.1, 2.0);
  for (int k : {4, 8, 16})
    for (bool weighted : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "k=" << k << (weighted ? " weighted" : ""));
      std::vector<float> x(6000), w;  // ≥ 4096: the radix-sort path of kvquant_kmeans
      for (auto& v : x) v = static_cast<float>(std::clamp(normal(rng), -1.0, 1.0));
      // 40% exact zeros: several quantile starts land on 0, equal centroids (the first takes the points).
      for (std::size_t i = 0; i < x.size(); i += 5) x[i] = x[i + 1] = 0.0f;
      if (weighted)
        for (std::size_t i = 0; i < x.size(); ++i) w.push_back(static_cast<float>(uniform(rng)));
      for (int steps : {1, 3, 50}) {
        const auto got = kvquant_kmeans(x, w, k, steps), want = lloyd(x, w, k, steps);
        ASSERT_EQ(got.size(), want.size());
        // Same assignments, sums in another order (prefix sums): the means agree to round-off,
        // |Σ| ≤ n·max|x|·2^-52 relative to a cluster's weight, far below 1e-9 here.
        for (std::size_t j = 0; j < got.size(); ++j) EXPECT_NEAR(got[j], want[j], 1e-9) << "steps " << steps << " centroid " << j;
      }
    }
}

TEST(Kvquant, CodebookOfEvenlySpacedLevelsIsUniform) {
  // Equal counts of K evenly spaced levels: each level is its own cluster (the start already puts
  // one centroid on each), so the non-uniform codebook reduces to the uniform one.
  for (int bits : {2, 3, 4}) {
    const int K = 1 << bits;
    std::vector<float> x;
    for (int rep = 0; rep < 37; ++rep)
      for (int i = 0; i < K; ++i) x.push_back(static_cast<float>(-1.0 + 2.0 * i / (K - 1)));
    const auto c = kvquant_kmeans(x, {}, K, 50);
    for (int i = 0; i < K; ++i) EXPECT_DOUBLE_EQ(c[static_cast<std::size_t>(i)], static_cast<float>(-1.0 + 2.0 * i / (K - 1))) << bits;
    // Continuous uniform data: the optimal K-level quantizer of U(−1, 1) has centroids at the cell
    // midpoints −1 + (2i + 1)/K; with 200 000 samples the empirical optimum is within ~3/√n of it.
    std::mt19937_64 rng(bits);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> y(200000);
    for (auto& v : y) v = u(rng);
    const auto d = kvquant_kmeans(y, {}, K, 50);
    for (int i = 0; i < K; ++i) EXPECT_NEAR(d[static_cast<std::size_t>(i)], -1.0 + (2.0 * i + 1) / K, 0.01) << bits;
  }
}

TEST(Kvquant, TwoToTheBDistinctValuesPerLineRebuildExactly) {
  // Every line (channel for keys, token for values) holds 2^b dyadic levels p_i spanning [−1, 1],
  // scaled and shifted by dyadic r, zp: the range is [zp − r, zp + r] exactly, the normalized
  // values are the p_i, the codebook fitted over all lines is exactly {p_i}, and p·r + zp rebuilds
  // every value bit for bit. With s = 0 no element is an outlier.
  const std::vector<std::vector<float>> levels = {
      {-1, -0.5f, 0.25f, 1},
      {-1, -0.75f, -0.5f, -0.125f, 0, 0.25f, 0.5f, 1},
      {-1, -0.875f, -0.75f, -0.625f, -0.5f, -0.375f, -0.25f, -0.125f, 0, 0.125f, 0.25f, 0.375f, 0.5f, 0.625f, 0.75f, 1}};
  for (int bits : {2, 3, 4})
    for (auto layout : {QuantLayout::per_channel, QuantLayout::per_token}) {
      SCOPED_TRACE(::testing::Message() << bits << " bits, " << (layout == QuantLayout::per_channel ? "per channel" : "per token"));
      const auto& p = levels[static_cast<std::size_t>(bits - 2)];
      const std::int64_t K = 1 << bits, n = 3 * K, c = 2 * K;
      std::vector<float> x(static_cast<std::size_t>(n * c));
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < c; ++j) {
          const std::int64_t line = layout == QuantLayout::per_channel ? j : i, along = layout == QuantLayout::per_channel ? i : j;
          const double zp = line / 4.0 - 1, r = std::ldexp(1.0, static_cast<int>(line % 3) - 1);
          x[static_cast<std::size_t>(i * c + j)] = static_cast<float>(zp + r * p[static_cast<std::size_t>((along * 5 + line) % K)]);
        }
      const auto plan = kvquant_plan(x, layout, n, c, 0, 0.0, "t");
      const auto book = codebook_of(plan, bits);
      EXPECT_EQ(book, p);
      const auto packed = kvquant_pack(x, plan, book, bits);
      std::vector<float> got(x.size());
      kvquant_unpack(packed, layout, n, c, book, bits, got);
      EXPECT_EQ(got, x);
    }
}

TEST(Kvquant, UnpackOfPackIsTheIndependentDecoding) {
  const std::int64_t n = 150, c = 32;
  std::set<std::int64_t> planted;
  const auto x = values_with_outliers(n, c, 7, &planted);
  ASSERT_EQ(planted.size(), 21u);  // rows 5, 12, …, 145
  for (int bits : {2, 3, 4})
    for (auto layout : {QuantLayout::per_channel, QuantLayout::per_token})
      for (std::int64_t sinks : {0, 3}) {
        SCOPED_TRACE(::testing::Message() << bits << " bits, sinks " << sinks << (layout == QuantLayout::per_channel ? " per channel" : " per token"));
        const auto plan = kvquant_plan(x, layout, n, c, sinks, 0.01, "t");
        const auto book = codebook_of(plan, bits);
        ASSERT_EQ(book.size(), std::size_t{1} << bits);
        EXPECT_TRUE(std::is_sorted(book.begin(), book.end()));
        const auto packed = kvquant_pack(x, plan, book, bits);
        std::vector<float> got(x.size());
        kvquant_unpack(packed, layout, n, c, book, bits, got);
        std::int64_t s = -1;
        std::vector<std::int32_t> index;
        const auto want = decode(packed, layout, n, c, book, bits, &s, &index);
        EXPECT_EQ(s, sinks);
        EXPECT_EQ(got, want);
        // Bytes by hand: 8 header, 2·s·c sinks, 4 per range, ⌈coded·c·b/8⌉ codes, 6 per outlier.
        const std::int64_t coded = n - sinks, ranges = layout == QuantLayout::per_channel ? c : coded;
        EXPECT_EQ(static_cast<std::int64_t>(packed.size()),
                  8 + 2 * sinks * c + 4 * ranges + (coded * c * bits + 7) / 8 + 6 * static_cast<std::int64_t>(index.size()));
        // Sink rows and every planted outlier come back exactly.
        for (std::int64_t k = 0; k < sinks * c; ++k) EXPECT_EQ(got[static_cast<std::size_t>(k)], x[static_cast<std::size_t>(k)]);
        for (const auto k : planted) EXPECT_EQ(got[static_cast<std::size_t>(k)], x[static_cast<std::size_t>(k)]) << k;
        EXPECT_TRUE(std::is_sorted(index.begin(), index.end()));
      }
}

TEST(Kvquant, OutliersAreTheAuthorsThresholds) {
  // Keys (get_outliers with SimQuant's np.percentile thresholds, at fp16): per channel strictly
  // outside [P(1 − t), P(t)], t = 1 − s/2, over the non-sink rows. Values (get_outliers_dynamic):
  // per row at or beyond torch.quantile(row, 1 − t) / (row, t). Sink rows are never outliers.
  const std::int64_t n = 300, c = 48, sinks = 2;
  const auto x = values_with_outliers(n, c, 11);
  for (double s : {0.01, 0.1}) {
    const auto t = 1 - s / 2;
    for (auto layout : {QuantLayout::per_channel, QuantLayout::per_token}) {
      const auto plan = kvquant_plan(x, layout, n, c, sinks, s, "t");
      std::vector<std::uint8_t> want(static_cast<std::size_t>(n * c), 0);
      if (layout == QuantLayout::per_channel) {
        for (std::int64_t j = 0; j < c; ++j) {
          std::vector<float> col;
          for (std::int64_t i = sinks; i < n; ++i) col.push_back(x[static_cast<std::size_t>(i * c + j)]);
          const float hi = fp16(oracle_quantile(col, t)), lo = fp16(oracle_quantile(col, 1 - t));
          EXPECT_EQ(plan.lo[static_cast<std::size_t>(j)], lo);
          EXPECT_EQ(plan.hi[static_cast<std::size_t>(j)], hi);
          for (std::int64_t i = sinks; i < n; ++i) {
            const float v = x[static_cast<std::size_t>(i * c + j)];
            want[static_cast<std::size_t>(i * c + j)] = v < lo || v > hi;
          }
        }
      } else {
        for (std::int64_t i = sinks; i < n; ++i) {
          const std::vector<float> row(x.begin() + i * c, x.begin() + (i + 1) * c);
          const double hi = oracle_quantile(row, t), lo = oracle_quantile(row, 1 - t);
          for (std::int64_t j = 0; j < c; ++j) want[static_cast<std::size_t>(i * c + j)] = row[j] <= lo || row[j] >= hi;
        }
      }
      EXPECT_EQ(plan.outlier, want) << s;
      std::int64_t count = 0;
      for (auto o : want) count += o;
      EXPECT_GT(count, 0);
    }
  }
}

TEST(Kvquant, ErrorDecreasesWithBits) {
  const auto cache = testing::random_cache({2, 2, 4, 32, 256, 16, 0}, 5);
  const CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
  // Each b below the relative RMS error of the b-bit Lloyd–Max quantizer of a Gaussian (Max 1960:
  // MSE 0.1175, 0.03454, 0.009497 σ²): the codebook is the k-means optimum fitted on these N(0, 1)
  // values themselves, with the 1% tails and the sink stored exactly, so it does no worse.
  const std::map<int, double> lloyd_max = {{2, std::sqrt(0.1175)}, {3, std::sqrt(0.03454)}, {4, std::sqrt(0.009497)}};
  double last_k = 1e9, last_v = 1e9;
  std::int64_t last_bytes = 0;
  for (int bits : {2, 3, 4}) {
    const auto chain = parse_spec(fmt::format("full+kvquant:bits={}", bits));
    auto c = compress_chain(ctx, chain);
    const auto s = score(cache, *c, linalg::cpu_backend());
    const auto by_layer = compress_and_score_by_layer(ctx, chain);  // one layer's codebooks at a time: the same
    EXPECT_EQ(by_layer.bytes, s.bytes);
    EXPECT_EQ(by_layer.key_error, s.key_error);
    EXPECT_EQ(by_layer.attn_kl, s.attn_kl);
    EXPECT_LT(s.key_error, last_k) << bits;
    EXPECT_LT(s.value_error, last_v) << bits;
    EXPECT_GT(s.bytes, last_bytes) << bits;
    EXPECT_LT(s.key_error, lloyd_max.at(bits)) << bits;
    EXPECT_LT(s.value_error, lloyd_max.at(bits)) << bits;
    last_k = s.key_error, last_v = s.value_error, last_bytes = s.bytes;
  }
}

TEST(Kvquant, ChainsAfterEvictionPreRopeAndPerLayer) {
  // snapkv then kvquant: the kept cells quantized, keys from the dump's pre-RoPE keys (the cache
  // has a real RoPE, so post-RoPE keys would differ), sink tokens exact; one layer at a time gives
  // the whole cache's figures (kvquant is layer-local: codebooks per layer).
  const auto cache = testing::random_cache({3, 2, 4, 32, 200, 16, 0}, 9);
  const CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
  const auto chain = parse_spec("snapkv:keep=0.5,window=16+kvquant:bits=3,sinks=4");
  auto whole = compress_chain(ctx, chain);
  const auto expected = score(cache, *whole, linalg::cpu_backend());
  const auto by_layer = compress_and_score_by_layer(ctx, chain);
  EXPECT_EQ(by_layer.bytes, expected.bytes);
  EXPECT_EQ(by_layer.key_error, expected.key_error);
  EXPECT_EQ(by_layer.value_error, expected.value_error);
  std::int64_t bytes = 0, books = 0;
  for (auto* t : whole->stored()) {
    bytes += t->bytes();
    if (t->name.find("kvquant_codebook") != std::string::npos) {
      ++books;
      EXPECT_EQ(t->bytes(), 2 * 8) << "2^3 fp16 entries";
    } else if (t->name.ends_with("/key")) {
      EXPECT_TRUE(t->format.starts_with("kvquant3 s0.01") && t->format.ends_with("pre-rope")) << t->format;
    }
  }
  EXPECT_EQ(books, 3 * 2) << "one per layer for keys, one for values";
  EXPECT_EQ(whole->bytes(), bytes);
  EXPECT_EQ(expected.bytes, bytes);
  for (int l = 0; l < 3; ++l) {
    const auto rebuilt = whole->reconstruct(l);
    const auto key = cache.layer(l, Part::key), value = cache.layer(l, Part::value);
    double err = 0, norm = 0;
    for (std::int64_t t = 0; t < 200; ++t)
      for (int h = 0; h < 2; ++h) {
        if (!rebuilt.holds(t, h, 2)) continue;
        for (int d = 0; d < 32; ++d) {
          const auto at = static_cast<std::size_t>((t * 2 + h) * 32 + d);
          if (t < 4) {  // sinks: the dump's values at fp16, keys pre-RoPE, exactly
            EXPECT_EQ(rebuilt.key.data[at], fp16(key.data[at])) << l << " " << t;
            EXPECT_EQ(rebuilt.value.data[at], fp16(value.data[at])) << l << " " << t;
          }
          err += std::pow(double{rebuilt.key.data[at]} - key.data[at], 2), norm += double{key.data[at]} * key.data[at];
        }
      }
    EXPECT_LT(std::sqrt(err / norm), 0.25) << "3-bit keys against the dump's pre-RoPE keys, layer " << l;
  }
  EXPECT_EQ(whole->notes().at("kvquant").at("pre_rope_key_heads"), 3 * 2);
}

TEST(Kvquant, QuantizesATransformsFactors) {
  // After svd the stored tensors are factors (rows not all tokens): quantized as stored, one
  // codebook per name prefix and layout; the rebuild reads the decoded factors.
  const auto cache = testing::random_cache({2, 2, 4, 16, 96, 8, 0}, 4);
  const CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
  auto plain = compress_chain(ctx, parse_spec("svd:rk=8,rv=8"));
  auto quant = compress_chain(ctx, parse_spec("svd:rk=8,rv=8+kvquant:bits=4"));
  const auto a = score(cache, *plain, linalg::cpu_backend()), b = score(cache, *quant, linalg::cpu_backend());
  // (No saving is asserted: A [T, 8] per token spends 4 bytes of range on 4 bytes of codes a row.)
  EXPECT_EQ(b.bytes, quant->bytes());
  EXPECT_GE(b.key_error, a.key_error * 0.99);
  EXPECT_LT(b.key_error, a.key_error + 0.1);
  int coded = 0, books = 0;
  for (auto* t : quant->stored()) {
    coded += t->format.starts_with("kvquant4 s0.01 sinks");
    books += t->name.find("/kvquant_codebook_") != std::string::npos;
    EXPECT_EQ(t->layout, QuantLayout::none) << t->name << ": every quantizable tensor is quantized";
  }
  EXPECT_GT(coded, 0);
  EXPECT_GT(books, 0);
}

}  // namespace
}  // namespace kvlab::compressors
