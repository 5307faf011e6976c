// kivi against oracles written here: the error bound of min-max quantization derived from each
// group's own min and max, byte counts spelled out by hand from the packing rule, KIVI's
// prefill residual rules (docs/methods/kivi.md §2) as row ranges, and fp16 values from Eigen::half.
//
// Error bound used throughout (derivation): with s = (max − min)/Q, Q = 2^b − 1, the stored
// s_h = fp16(s) and m_h = fp16(min) each carry a relative rounding of at most 2^-11. An unclamped
// code is off by at most s_h/2 ≤ s/2·(1 + 2^-11); a code clamped at Q is off by at most
// Q·|s − s_h| + |min − m_h| ≤ (max − min)·2^-11 + |min|·2^-11; one clamped at 0 by |min − m_h|.
// Float arithmetic adds a few ulps of the operands. Hence
//   |x − x̂| ≤ s/2·(1 + 2^-10) + (max − min + |min|)·2^-11 + 2^-21·(|min| + |max|).
#include "compressors/methods/kivi.h"

#include <gtest/gtest.h>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <set>

#include "compressors/dense.h"
#include "compressors/test_caches.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

float fp16(double x) { return static_cast<float>(Eigen::half(static_cast<float>(x))); }

double error_bound(double lo, double hi, int bits) {
  const double s = (hi - lo) / ((1 << bits) - 1);
  return s / 2 * (1 + std::ldexp(1.0, -10)) + (hi - lo + std::abs(lo)) * std::ldexp(1.0, -11) +
         std::ldexp(1.0, -21) * (std::abs(lo) + std::abs(hi));
}

// The test's own statement of KIVI's grouping: index lists (into the row-major [n, c] values) of
// every quantization group, and the residual rows.
struct Groups {
  std::vector<std::vector<std::int64_t>> groups;
  std::int64_t quantized_rows = 0;
};

Groups kivi_groups(QuantLayout layout, std::int64_t n, std::int64_t c, bool token_rows, std::int64_t G,
                   std::int64_t R) {
  Groups out;
  std::int64_t nq = n;
  if (token_rows && R > 0) nq = layout == QuantLayout::per_channel ? (n / R) * R : std::max<std::int64_t>(0, n - R);
  out.quantized_rows = nq;
  if (layout == QuantLayout::per_channel) {
    for (std::int64_t j = 0; j < c; ++j)
      for (std::int64_t r0 = 0; r0 < nq; r0 += G) {
        std::vector<std::int64_t> g;
        for (std::int64_t r = r0; r < std::min(nq, r0 + G); ++r) g.push_back(r * c + j);
        out.groups.push_back(g);
      }
  } else {
    for (std::int64_t r = 0; r < nq; ++r)
      for (std::int64_t j0 = 0; j0 < c; j0 += G) {
        std::vector<std::int64_t> g;
        for (std::int64_t j = j0; j < std::min(c, j0 + G); ++j) g.push_back(r * c + j);
        out.groups.push_back(g);
      }
  }
  return out;
}

std::vector<float> normal_values(std::int64_t count, std::uint64_t seed, float mean = 0, float sd = 1) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(mean, sd);
  std::vector<float> v(static_cast<std::size_t>(count));
  for (auto& x : v) x = normal(rng);
  return v;
}

KiviParams params(const std::string& text) { return kivi_params(parse_stage(kivi_method(), text)); }

// Checks a quantized tensor against its original: every group within the error bound and with
// at most 2^b distinct values, residual rows bit-identical.
void expect_quantized(const std::vector<float>& before, const StoredTensor& after, QuantLayout layout,
                      bool token_rows, const KiviParams& p) {
  const std::int64_t n = after.shape[0], c = after.shape[1];
  const auto g = kivi_groups(layout, n, c, token_rows, p.group, p.residual);
  for (const auto& idx : g.groups) {
    double lo = 1e300, hi = -1e300;
    for (auto i : idx) lo = std::min(lo, double{before[i]}), hi = std::max(hi, double{before[i]});
    const double bound = error_bound(lo, hi, p.bits);
    std::set<float> distinct;
    for (auto i : idx) {
      ASSERT_LE(std::abs(double{after.values[i]} - before[i]), bound) << after.name << " element " << i;
      distinct.insert(after.values[i]);
    }
    ASSERT_LE(distinct.size(), std::size_t{1} << p.bits) << after.name;
  }
  const auto first = static_cast<std::size_t>(g.quantized_rows * c);
  EXPECT_EQ(0, std::memcmp(before.data() + first, after.values.data() + first, (before.size() - first) * sizeof(float)))
      << after.name << ": residual rows must be bit-identical";
}

TEST(Kivi, SpecDefaultsAndCanonicalForm) {
  const auto spec = parse_stage(kivi_method(), "");
  EXPECT_EQ(spec.to_string(), "kivi:bits=2,group=32,residual=128");  // the paper's LongBench setting
  const auto p = kivi_params(parse_stage(kivi_method(), "bits=4,group=16,residual=64"));
  EXPECT_EQ(p.bits, 4);
  EXPECT_EQ(p.group, 16);
  EXPECT_EQ(p.residual, 64);
}

TEST(Kivi, BadSpecValuesNameTheKey) {
  const auto message = [](const std::string& text) {
    try {
      parse_stage(kivi_method(), text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("bits=3").find("'bits'"), std::string::npos) << message("bits=3");
  EXPECT_NE(message("group=0").find("'group'"), std::string::npos) << message("group=0");
  EXPECT_NE(message("residual=-1").find("'residual'"), std::string::npos) << message("residual=-1");
  EXPECT_NE(message("bit=2").find("bits, group, residual"), std::string::npos) << message("bit=2");
  // A hand-built spec bypassing the parser is still checked by the factory.
  StageSpec bad = parse_stage(kivi_method(), "");
  bad.set("bits", "3");
  EXPECT_THROW(make_kivi(bad), Error);
}

TEST(Kivi, HandWorkedGroup) {
  // bits 2, min 0, max 3 → scale 1: codes are round-half-to-even of the values (torch.round).
  std::vector<float> x{0, 0.4f, 0.6f, 0.5f, 1.5f, 2.5f, 3};
  const auto g = kivi_fake_quantize(x, 2);
  EXPECT_EQ(g.scale, 1.0f);
  EXPECT_EQ(g.min, 0.0f);
  EXPECT_EQ(x, (std::vector<float>{0, 0, 1, 0, 2, 2, 3}));
  // Offset and scaled: min −2, max 4 → scale 2; −1 → code 0.5 → 0 (half to even) → −2; 0.2 → 1.1 → 1 → 0.
  std::vector<float> y{-2, -1, 0.2f, 4};
  const auto h = kivi_fake_quantize(y, 2);
  EXPECT_EQ(h.scale, 2.0f);
  EXPECT_EQ(h.min, -2.0f);
  EXPECT_EQ(y, (std::vector<float>{-2, -2, 0, 4}));
}

TEST(Kivi, GroupErrorWithinHalfStepAndParamsAreFp16) {
  for (int bits : {2, 4, 8})
    for (int trial = 0; trial < 50; ++trial) {
      // Zero-mean groups and groups far from zero (|min| ≫ range stresses the fp16 min).
      const float mean = trial % 2 ? 0.0f : 40.0f, sd = trial % 3 ? 1.0f : 0.01f;
      auto x = normal_values(32, 1000 * bits + trial, mean, sd);
      const auto before = x;
      const double lo = *std::min_element(before.begin(), before.end());
      const double hi = *std::max_element(before.begin(), before.end());
      const auto g = kivi_fake_quantize(x, bits);
      EXPECT_EQ(g.min, fp16(lo));
      EXPECT_EQ(g.scale, fp16((hi - lo) / ((1 << bits) - 1)));
      const double bound = error_bound(lo, hi, bits);
      for (std::size_t i = 0; i < x.size(); ++i) {
        ASSERT_LE(std::abs(double{x[i]} - before[i]), bound) << "bits " << bits << " trial " << trial;
        // Every output is the grid point q·scale + min (evaluated in float, as dequantization
        // does) of an integer q in [0, 2^b − 1]; q is recovered to well within ±0.5 here.
        const double q = std::round((double{x[i]} - g.min) / g.scale);
        EXPECT_GE(q, 0);
        EXPECT_LE(q, (1 << bits) - 1);
        EXPECT_EQ(x[i], static_cast<float>(q) * g.scale + g.min);
      }
    }
}

TEST(Kivi, ConstantGroupsReconstructToTheirFp16Min) {
  std::vector<float> x(32, 0.75f);  // fp16-representable: exact
  kivi_fake_quantize(x, 2);
  EXPECT_EQ(x, std::vector<float>(32, 0.75f));
  std::vector<float> y(32, 0.1f);  // not fp16-representable: the stored min is fp16(0.1)
  const auto g = kivi_fake_quantize(y, 4);
  EXPECT_EQ(g.scale, 0.0f);
  EXPECT_EQ(y, std::vector<float>(32, fp16(0.1f)));
  // In a tensor: a constant key channel (per_channel groups along tokens) stays exact.
  auto v = normal_values(64 * 8, 5);
  for (int r = 0; r < 64; ++r) v[r * 8 + 3] = -1.25f;
  auto t = StoredTensor::fp16("k", {64, 8}, v, QuantLayout::per_channel, false);
  kivi_quantize_tensor(t, params("bits=2,group=32"));
  for (int r = 0; r < 64; ++r) EXPECT_EQ(t.values[r * 8 + 3], -1.25f);
}

TEST(Kivi, GroupingFollowsLayoutOnHeteroscedasticData) {
  // Channel j has scale 4^j and token r scale 4^(r mod 4): a group cut along the wrong axis would
  // mix magnitudes and break the per-group bound; the distinct-value count checks group extents.
  const std::int64_t n = 100, c = 40;
  auto base = normal_values(n * c, 7);
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t j = 0; j < c; ++j) base[r * c + j] *= std::pow(4.0f, j % 5) * std::pow(4.0f, r % 4);
  for (auto& x : base) x = fp16(x);  // the chain hands KIVI values already stored at fp16
  for (auto layout : {QuantLayout::per_channel, QuantLayout::per_token})
    for (bool token_rows : {false, true})
      for (const char* spec : {"bits=2,group=32,residual=64", "bits=4,group=16,residual=48", "bits=8,group=7,residual=10"}) {
        const auto p = params(spec);
        auto t = StoredTensor::fp16("t", {n, c}, base, layout, token_rows);
        kivi_quantize_tensor(t, p);
        SCOPED_TRACE(spec);
        expect_quantized(base, t, layout, token_rows, p);
      }
}

TEST(Kivi, ByteCountsByFormula) {
  struct Case {
    QuantLayout layout;
    std::int64_t n, c;
    bool token_rows;
    const char* spec;
    std::int64_t expected;  // ⌈codes·b/8⌉ + 4·groups + 2·residual values, worked out by hand
  };
  const Case cases[] = {
      // keys [300, 64], R 128: quantize 256 rows (2 R-blocks), keep 44; groups 64 channels × 8.
      {QuantLayout::per_channel, 300, 64, true, "bits=2,group=32,residual=128", 256 * 64 * 2 / 8 + 4 * 64 * 8 + 2 * 44 * 64},
      // values [300, 64], R 128: quantize 172 rows, keep 128; groups 172 rows × 2.
      {QuantLayout::per_token, 300, 64, true, "bits=2,group=32,residual=128", 172 * 64 * 2 / 8 + 4 * 172 * 2 + 2 * 128 * 64},
      // keys with T mod R == 0: everything quantized.
      {QuantLayout::per_channel, 256, 64, true, "bits=4,group=32,residual=128", 256 * 64 * 4 / 8 + 4 * 64 * 8},
      // T < R: keys keep all T mod R = T rows, values keep all rows.
      {QuantLayout::per_channel, 100, 64, true, "bits=2,group=32,residual=128", 2 * 100 * 64},
      {QuantLayout::per_token, 100, 64, true, "bits=2,group=32,residual=128", 2 * 100 * 64},
      // No residual (factor B [r, N], rows not tokens): all quantized; 40 channels → groups 32 + 8.
      {QuantLayout::per_token, 96, 40, false, "bits=8,group=32,residual=128", 96 * 40 + 4 * 96 * 2},
      // per_channel without residual, 100 rows → groups of 32, 32, 32, 4; 3-bit packing rounds up:
      // 100·3 codes · 2 bits = 600 bits = 75 bytes exactly; 2 bits on 101·3 = 303 codes → ⌈606/8⌉ = 76.
      {QuantLayout::per_channel, 100, 3, false, "bits=2,group=32", 75 + 4 * 3 * 4},
      {QuantLayout::per_channel, 101, 3, false, "bits=2,group=32", 76 + 4 * 3 * 4},
      // residual=0 disables the window even for token rows.
      {QuantLayout::per_token, 300, 64, true, "bits=4,group=64,residual=0", 300 * 64 * 4 / 8 + 4 * 300},
  };
  for (const auto& k : cases) {
    const auto p = params(k.spec);
    SCOPED_TRACE(::testing::Message() << k.spec << " n=" << k.n << " c=" << k.c);
    EXPECT_EQ(kivi_bytes(k.layout, k.n, k.c, k.token_rows, p), k.expected);
    auto t = StoredTensor::fp16("t", {k.n, k.c}, normal_values(k.n * k.c, 3), k.layout, k.token_rows);
    kivi_quantize_tensor(t, p);
    EXPECT_EQ(t.bytes(), k.expected);
    EXPECT_EQ(t.layout, QuantLayout::none);
  }
}

TEST(Kivi, Kivi2Group32IsFiveAndAThirdTimesOnTheQuantizedPart) {
  // 16 bits / (2 + 32·16/32 bits per element) = 16/3 (docs/methods/kivi.md §5, effective bits).
  const auto p = params("bits=2,group=32");
  for (auto layout : {QuantLayout::per_channel, QuantLayout::per_token}) {
    const double ratio = 2.0 * 256 * 128 / static_cast<double>(kivi_bytes(layout, 256, 128, false, p));
    EXPECT_NEAR(ratio, 16.0 / 3.0, 1e-12);
  }
}

TEST(Kivi, DenseCacheResidualWindowsAndFormats) {
  // Post-RoPE keys and values of a random cache, 300 tokens: keys keep 300 mod 128 = 44 rows,
  // values the last 128; quantized rows must really change (a no-op port would pass the bound).
  const auto cache = testing::random_cache({2, 2, 4, 64, 300, 8, 0}, 21);
  auto compressed = dense_representation(cache, nullptr);
  pack_fp16_storage(compressed->stored());  // the chain's 16-bit store comes first
  std::vector<std::vector<float>> before;
  std::vector<QuantLayout> layouts;
  for (auto* t : compressed->stored()) before.push_back(t->values), layouts.push_back(t->layout);
  const auto spec = parse_stage(kivi_method(), "bits=2,group=32,residual=128");
  make_kivi(spec)->quantize(compressed->stored());
  const auto p = kivi_params(spec);
  std::size_t i = 0;
  for (auto* t : compressed->stored()) {
    SCOPED_TRACE(t->name);
    expect_quantized(before[i], *t, layouts[i], true, p);
    EXPECT_EQ(t->format, "kivi2 g32 r128");
    EXPECT_EQ(t->bytes(), kivi_bytes(layouts[i], 300, 64, true, p));
    const std::int64_t nq = layouts[i] == QuantLayout::per_channel ? 256 : 172;
    std::int64_t changed = 0;
    for (std::int64_t k = 0; k < nq * 64; ++k) changed += t->values[k] != before[i][k];
    EXPECT_GT(changed, nq * 64 * 9 / 10);
    ++i;
  }
  // Reconstruction reads the quantized values: the relative error is that of 2-bit KIVI, not 0.
  const auto layer = compressed->reconstruct(0);
  const auto key = cache.layer(0, Part::key);
  double num = 0, den = 0;
  for (std::size_t k = 0; k < key.data.size(); ++k)
    num += std::pow(double{layer.key.data[k]} - key.data[k], 2), den += std::pow(double{key.data[k]}, 2);
  EXPECT_GT(std::sqrt(num / den), 0.05);
  EXPECT_LT(std::sqrt(num / den), 0.5);
}

TEST(Kivi, SecondPassIsIdempotentUpToFp16Scale) {
  // Re-quantizing x̂ finds min = m_h again and a scale within one fp16 step of s_h, so each value
  // moves by at most Q·ulp_fp16(s_h) ≤ (group range of x̂)·2^-10.
  const std::int64_t n = 200, c = 48;
  for (int bits : {2, 4, 8})
    for (auto layout : {QuantLayout::per_channel, QuantLayout::per_token}) {
      const auto p = params(fmt::format("bits={},group=16,residual=64", bits));
      auto t = StoredTensor::fp16("t", {n, c}, normal_values(n * c, 40 + bits, 3.0f, 2.0f), layout, true);
      kivi_quantize_tensor(t, p);
      const auto once = t.values;
      t.layout = layout;  // force a second pass
      kivi_quantize_tensor(t, p);
      for (const auto& idx : kivi_groups(layout, n, c, true, p.group, p.residual).groups) {
        double lo = 1e300, hi = -1e300;
        for (auto k : idx) lo = std::min(lo, double{once[k]}), hi = std::max(hi, double{once[k]});
        for (auto k : idx) ASSERT_LE(std::abs(double{t.values[k]} - once[k]), (hi - lo) * std::ldexp(1.0, -10));
      }
    }
}

TEST(Kivi, ErrorDropsAsBitsGrow) {
  // Uniform quantization error ∝ step ∝ 1/(2^b − 1): 2→4 bits divides it by ≈ 5, 4→8 by ≈ 17.
  const std::int64_t n = 512, c = 64;
  const auto x = normal_values(n * c, 99);
  for (auto layout : {QuantLayout::per_channel, QuantLayout::per_token}) {
    std::vector<double> err;
    for (int bits : {2, 4, 8}) {
      auto t = StoredTensor::fp16("t", {n, c}, x, layout, false);
      kivi_quantize_tensor(t, params(fmt::format("bits={}", bits)));
      double num = 0, den = 0;
      for (std::size_t k = 0; k < x.size(); ++k) num += std::pow(double{t.values[k]} - x[k], 2), den += double{x[k]} * x[k];
      err.push_back(std::sqrt(num / den));
    }
    EXPECT_LT(err[1], err[0] / 3) << err[0] << " " << err[1];
    EXPECT_LT(err[2], err[1] / 10) << err[1] << " " << err[2];
  }
}

TEST(Kivi, LayoutNoneTensorsAreLeftAlone) {
  auto idx = StoredTensor::indices("layer0/head0/index", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  auto plain = StoredTensor::fp16("norms", {10, 4}, normal_values(40, 1), QuantLayout::none, true);
  auto key = StoredTensor::fp16("key", {64, 4}, normal_values(256, 2), QuantLayout::per_channel, true);
  pack_fp16_storage({&idx, &plain, &key});  // the chain's 16-bit store comes first
  const auto plain_before = plain.values;
  make_kivi(parse_stage(kivi_method(), "bits=2"))->quantize({&idx, &plain, &key});
  EXPECT_EQ(idx.bytes(), 40);
  EXPECT_EQ(idx.format, "int32");
  EXPECT_EQ(idx.unpack_indices(), (std::vector<std::int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(plain.values, plain_before);
  EXPECT_EQ(plain.bytes(), 80);
  EXPECT_EQ(plain.format, "fp16");
  // A second quantizer leaves the already-quantized key alone.
  const auto key_once = key.values;
  const auto key_bytes = key.bytes();
  make_kivi(parse_stage(kivi_method(), "bits=8,group=4"))->quantize({&key});
  EXPECT_EQ(key.values, key_once);
  EXPECT_EQ(key.bytes(), key_bytes);
  EXPECT_EQ(key.format, "kivi2 g32 r128");
}

// The packed bytes read field by field with the test's own reading of the layout kivi.h states
// (codes LSB-first, then fp16 scale/min per group in the test's group order, then fp16 residual),
// against a dequantization computed here from each group's own min and max: every code, every
// parameter and every residual bit must match, and kivi_unpack must give back exactly that.
TEST(Kivi, PackedFormDecodesBitExactlyToAnIndependentDequantization) {
  const auto half_bits = [](float x) { return Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(x)); };
  const auto half_of = [](const std::uint8_t* at) {
    return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(static_cast<std::uint16_t>(at[0] | at[1] << 8)));
  };
  struct Case {
    QuantLayout layout;
    std::int64_t n, c;
    bool token_rows;
    const char* spec;
  };
  const Case cases[] = {
      {QuantLayout::per_channel, 300, 24, true, "bits=2,group=32,residual=128"},
      {QuantLayout::per_token, 300, 40, true, "bits=2,group=32,residual=128"},
      {QuantLayout::per_channel, 101, 3, false, "bits=2,group=32"},
      {QuantLayout::per_token, 37, 70, false, "bits=4,group=16"},
      {QuantLayout::per_channel, 64, 9, true, "bits=8,group=5,residual=0"},
      {QuantLayout::per_token, 50, 8, true, "bits=4,group=3,residual=128"},  // all rows residual
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(::testing::Message() << k.spec << " n=" << k.n << " c=" << k.c);
    const auto p = params(k.spec);
    auto x = normal_values(k.n * k.c, 17, 0.5f, 3.0f);
    for (auto& v : x) v = fp16(v);  // as the chain hands them over: already at fp16
    x[5] = x[6];                     // a tie inside a group
    const auto packed = kivi_pack(x, k.layout, k.n, k.c, k.token_rows, p, "t");
    ASSERT_EQ(static_cast<std::int64_t>(packed.size()), kivi_bytes(k.layout, k.n, k.c, k.token_rows, p));

    const auto g = kivi_groups(k.layout, k.n, k.c, k.token_rows, p.group, p.residual);
    const std::int64_t nq = g.quantized_rows, Q = (1 << p.bits) - 1;
    const std::int64_t group_at = (nq * k.c * p.bits + 7) / 8;
    // The groups in the packed order: kivi_groups lists per_channel column by column, the packed
    // form row block by row block.
    std::vector<std::size_t> order(g.groups.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    if (k.layout == QuantLayout::per_channel) {
      const std::size_t blocks = order.size() / static_cast<std::size_t>(k.c);
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = (i % k.c) * blocks + i / k.c;
    }
    std::vector<float> expected(x.size());
    for (std::size_t gi = 0; gi < order.size(); ++gi) {
      const auto& idx = g.groups[order[gi]];
      double lo = 1e300, hi = -1e300;
      for (auto e : idx) lo = std::min(lo, double{x[e]}), hi = std::max(hi, double{x[e]});
      const float scale = fp16((hi - lo) / Q), min = fp16(lo);
      EXPECT_EQ(half_of(packed.data() + group_at + 4 * gi), scale) << "group " << gi;
      EXPECT_EQ(half_of(packed.data() + group_at + 4 * gi + 2), min) << "group " << gi;
      for (auto e : idx) {
        const std::int64_t code =
            scale == 0 ? 0 : std::clamp<std::int64_t>(std::llrint(std::clamp((x[e] - min) / scale, 0.0f, float(Q))), 0, Q);
        const std::int64_t bit = e * p.bits;
        ASSERT_EQ((packed[bit / 8] >> (bit % 8)) & Q, code) << "element " << e;
        expected[e] = static_cast<float>(code) * scale + min;
      }
    }
    const std::int64_t residual_at = group_at + 4 * static_cast<std::int64_t>(order.size());
    for (std::int64_t i = nq * k.c; i < k.n * k.c; ++i) {
      const std::uint8_t* at = packed.data() + residual_at + 2 * (i - nq * k.c);
      ASSERT_EQ(static_cast<std::uint16_t>(at[0] | at[1] << 8), half_bits(x[i])) << "residual element " << i;
      expected[i] = x[i];
    }
    std::vector<float> back(expected.size(), NAN);
    kivi_unpack(packed, k.layout, k.n, k.c, k.token_rows, p, back);
    ASSERT_EQ(back.size(), expected.size());
    EXPECT_EQ(std::memcmp(back.data(), expected.data(), back.size() * sizeof(float)), 0);
    // The stage stores exactly this: its packed bytes, and values read back from them.
    auto t = StoredTensor::fp16("t", {k.n, k.c}, x, k.layout, k.token_rows);
    kivi_quantize_tensor(t, p);
    EXPECT_EQ(t.packed, packed);
    EXPECT_EQ(t.values, expected);
  }
  // A buffer of the wrong size is refused, not read past.
  const auto p = params("bits=2,group=32");
  std::vector<float> out(32);
  EXPECT_THROW(kivi_unpack(std::vector<std::uint8_t>(3), QuantLayout::per_token, 4, 8, false, p, out), Error);
}

TEST(Kivi, MalformedTensorsFailNamingThem) {
  auto t = StoredTensor::fp16("group0/key/A", {2, 3, 4}, std::vector<float>(24, 1.0f), QuantLayout::per_token, false);
  try {
    kivi_quantize_tensor(t, KiviParams{});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("group0/key/A"), std::string::npos) << e.what();
  }
  auto nan = StoredTensor::fp16("layer1/value", {2, 2}, {1, NAN, 0, 0}, QuantLayout::per_token, false);
  EXPECT_THROW(kivi_quantize_tensor(nan, KiviParams{}), Error);
  auto huge = StoredTensor::fp16("layer2/value", {1, 2}, {-1e5f, 1e5f}, QuantLayout::per_token, false);
  EXPECT_THROW(kivi_quantize_tensor(huge, KiviParams{}), Error);  // scale/min beyond fp16
}

}  // namespace
}  // namespace kvlab::compressors
