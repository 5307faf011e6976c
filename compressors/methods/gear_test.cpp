// gear against oracles written here: the packed form decoded by the test's own reading of the
// layout (gear.h, kivi.h), the outlier rules transcribed from the authors' code (torch.sort / topk
// ends), byte counts spelled out by hand, the plain quantizer (kivi's packing) as the s = 0, r = 0
// case, orthogonal projection / Eckart–Young for the low-rank part, and fp16 from Eigen::half.
#include "compressors/methods/gear.h"

#include <gtest/gtest.h>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstring>
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

GearParams params(const std::string& text) { return gear_params(parse_stage(gear_method(), text)); }

// fp16 values ~ N(mean, sd) with a few planted outliers (±20 sd), as keys with outlier entries.
std::vector<float> values_with_outliers(std::int64_t count, std::uint64_t seed, double mean = 0.5, double sd = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(mean, sd);
  std::uniform_int_distribution<std::int64_t> where(0, count - 1);
  std::vector<float> x(static_cast<std::size_t>(count));
  for (auto& v : x) v = fp16(normal(rng));
  for (std::int64_t k = 0; k < count / 100; ++k) x[static_cast<std::size_t>(where(rng))] = fp16((k % 2 ? 20 : -20) * sd);
  return x;
}

double rel_error(const std::vector<float>& a, const std::vector<float>& x) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < x.size(); ++i) num += std::pow(double{a[i]} - x[i], 2), den += double{x[i]} * x[i];
  return std::sqrt(num / den);
}

// The test's own decoding of a packed form: the quantized part (codes, fp16 scale/min per group,
// fp16 residual rows), the outliers and the factors, each read where gear.h / kivi.h put them.
struct Decoded {
  std::vector<float> dequant_fma, dequant_plain;  // code·scale + min, fused or rounded twice
  std::vector<std::int32_t> outlier_index;
  std::vector<float> outlier_value;
  std::int64_t rank = 0;
  std::vector<float> a, b;  // [n, r], [r, c]
};

Decoded decode(const std::vector<std::uint8_t>& packed, QuantLayout layout, std::int64_t n, std::int64_t c,
               bool token_rows, int bits, std::int64_t G, std::int64_t rank, std::int64_t outliers) {
  Decoded d;
  // Rows quantized: keys (per_channel token rows) keep n mod G rows at fp16, all else quantize all.
  const std::int64_t nq = layout == QuantLayout::per_channel && token_rows ? n - n % G : n;
  const std::int64_t code_bytes = (nq * c * bits + 7) / 8;
  const std::int64_t groups = layout == QuantLayout::per_channel ? c * ((nq + G - 1) / G) : nq * ((c + G - 1) / G);
  const std::int64_t residual_at = code_bytes + 4 * groups, outlier_at = residual_at + 2 * (n - nq) * c;
  d.dequant_fma.resize(static_cast<std::size_t>(n * c));
  d.dequant_plain.resize(d.dequant_fma.size());
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < c; ++j) {
      const auto at = static_cast<std::size_t>(i * c + j);
      if (i >= nq) {
        d.dequant_fma[at] = d.dequant_plain[at] = read_fp16(packed, residual_at + 2 * ((i - nq) * c + j));
        continue;
      }
      const std::int64_t k = i * c + j;
      unsigned code = 0;
      for (int bit = 0; bit < bits; ++bit) code |= ((packed.at((k * bits + bit) / 8) >> ((k * bits + bit) % 8)) & 1u) << bit;
      const std::int64_t g = layout == QuantLayout::per_channel ? (i / G) * c + j : i * ((c + G - 1) / G) + j / G;
      const float scale = read_fp16(packed, code_bytes + 4 * g), min = read_fp16(packed, code_bytes + 4 * g + 2);
      d.dequant_fma[at] = std::fma(static_cast<float>(code), scale, min);
      volatile float product = static_cast<float>(code) * scale;  // no contraction: rounded, then added
      d.dequant_plain[at] = product + min;
    }
  const std::int64_t index_at = outlier_at + 2 * outliers, a_at = index_at + 4 * outliers, b_at = a_at + 2 * n * rank;
  for (std::int64_t k = 0; k < outliers; ++k) {
    d.outlier_value.push_back(read_fp16(packed, outlier_at + 2 * k));
    std::int32_t idx = 0;
    std::memcpy(&idx, packed.data() + index_at + 4 * k, 4);
    d.outlier_index.push_back(idx);
  }
  d.rank = rank;
  for (std::int64_t i = 0; i < n * rank; ++i) d.a.push_back(read_fp16(packed, a_at + 2 * i));
  for (std::int64_t i = 0; i < rank * c; ++i) d.b.push_back(read_fp16(packed, b_at + 2 * i));
  EXPECT_EQ(static_cast<std::int64_t>(packed.size()), b_at + 2 * rank * c) << "the packed form ends after B";
  return d;
}

// The authors' selection, transcribed: select=tensor is fake_dense_sparse_uniformquantization
// (torch.sort of the flattened block, int(len·left/2) at each end); select=line is gears_tokenQ /
// gears_channelQ (topk largest / smallest along each token row or channel, here int(s·len/2)).
std::set<std::int32_t> authors_outliers(const std::vector<float>& x, QuantLayout layout, std::int64_t nq, std::int64_t c,
                                        double s, bool by_line) {
  std::vector<std::vector<std::int32_t>> lines;
  if (!by_line) {
    lines.emplace_back();
    for (std::int64_t k = 0; k < nq * c; ++k) lines.back().push_back(static_cast<std::int32_t>(k));
  } else if (layout == QuantLayout::per_token) {
    for (std::int64_t i = 0; i < nq; ++i) {
      lines.emplace_back();
      for (std::int64_t j = 0; j < c; ++j) lines.back().push_back(static_cast<std::int32_t>(i * c + j));
    }
  } else {
    for (std::int64_t j = 0; j < c; ++j) {
      lines.emplace_back();
      for (std::int64_t i = 0; i < nq; ++i) lines.back().push_back(static_cast<std::int32_t>(i * c + j));
    }
  }
  std::set<std::int32_t> out;
  for (auto& line : lines) {
    const auto k = static_cast<std::size_t>(s * static_cast<double>(line.size()) / 2);  // python int(): floor
    // Ties (fp16 values repeat) in (value, index) order: torch leaves theirs unspecified.
    std::sort(line.begin(), line.end(), [&](std::int32_t a, std::int32_t b) { return x[a] < x[b] || (x[a] == x[b] && a < b); });
    for (std::size_t i = 0; i < k; ++i) out.insert(line[i]), out.insert(line[line.size() - 1 - i]);
  }
  return out;
}

TEST(Gear, SpecDefaultsAndBadKeys) {
  const auto spec = parse_spec("gear").stages.at(0);
  // The authors' GEAR run (run_template_llama-3-8b.sh): 2 bits, group 64, left 0.02, prefill ranks 4, loop 3.
  EXPECT_EQ(spec.to_string(),
            "gear:bits=2,group=64,outliers=0.02,select=tensor,rank=4,rankv=4,loop=3,lowrank=power,seed=0");
  const auto message = [](const std::string& text) { return testing::error_of([&] { parse_spec(text); }); };
  EXPECT_NE(message("gear:bits=3").find("'bits'"), std::string::npos) << message("gear:bits=3");
  EXPECT_NE(message("gear:outliers=0.6").find("'outliers'"), std::string::npos) << message("gear:outliers=0.6");
  EXPECT_NE(message("gear:loop=0").find("'loop'"), std::string::npos) << message("gear:loop=0");
  EXPECT_NE(message("gear:rank=-1").find("'rank'"), std::string::npos) << message("gear:rank=-1");
  EXPECT_NE(message("gear:lowrank=qr").find("'lowrank'"), std::string::npos) << message("gear:lowrank=qr");
  EXPECT_NE(message("gear:select=row").find("'select'"), std::string::npos) << message("gear:select=row");
  EXPECT_NE(message("gear:ranks=2").find("bits, group"), std::string::npos) << message("gear:ranks=2");
  EXPECT_EQ(method("gear").kind, StageKind::quantizer);
  EXPECT_NE(describe_methods().find("gear (quantizer)"), std::string::npos) << "its registry line";
}

TEST(Gear, BytesAreAHandCount) {
  struct Case {
    QuantLayout layout;
    std::int64_t n, c;
    bool token_rows;
    std::string spec;
    std::int64_t expected;
  };
  const std::vector<Case> cases = {
      // Keys [300, 64], 2 bits, G 64: 256 rows quantized (300 mod 64 = 44 at fp16): 256·64·2/8 code
      // bytes, 4·(64 columns · 4 blocks) group bytes, 2·44·64 residual; int(0.02·256·64/2) = 163
      // outliers at each end, 6 bytes each; factors 2·(300·4 + 4·64).
      {QuantLayout::per_channel, 300, 64, true, "", 4096 + 1024 + 5632 + 6 * 326 + 2 * (1200 + 256)},
      // select=line: per channel int(0.02·256/2) = 2 at each end: 64·4 outliers.
      {QuantLayout::per_channel, 300, 64, true, "select=line", 4096 + 1024 + 5632 + 6 * 256 + 2 * (1200 + 256)},
      // Values [300, 64], G 64: every row quantized, one group a row; int(0.02·300·64/2) = 192 at each end.
      {QuantLayout::per_token, 300, 64, true, "", 4800 + 4 * 300 + 6 * 384 + 2 * (1200 + 256)},
      // select=line on 64-wide rows: int(0.02·64/2) = 0 outliers; rankv=2; 4 bits.
      {QuantLayout::per_token, 300, 64, true, "bits=4,select=line,rankv=2", 9600 + 4 * 300 + 2 * (600 + 128)},
      // Rank beyond min(n, c) = 5 is clamped; no outliers; [5, 40] per_channel not token rows, G 64: one block.
      {QuantLayout::per_channel, 5, 40, false, "outliers=0,rank=99", 50 + 4 * 40 + 2 * (25 + 200)},
  };
  for (const auto& k : cases) {
    SCOPED_TRACE(::testing::Message() << k.spec << " n=" << k.n << " c=" << k.c);
    const auto p = params(k.spec);
    EXPECT_EQ(gear_layout(k.layout, k.n, k.c, k.token_rows, p).total, k.expected);
    auto t = StoredTensor::fp16("t", {k.n, k.c}, values_with_outliers(k.n * k.c, 3), k.layout, k.token_rows);
    gear_quantize_tensor(t, p);
    EXPECT_EQ(t.bytes(), k.expected);
    EXPECT_EQ(t.layout, QuantLayout::none);
  }
}

TEST(Gear, UnpackOfPackIsTheIndependentDecoding) {
  const std::int64_t n = 150, c = 32;
  const auto x = values_with_outliers(n * c, 7);
  for (auto layout : {QuantLayout::per_channel, QuantLayout::per_token})
    for (const std::string spec : {"group=16", "bits=4,group=32,select=line,outliers=0.1,rank=3,rankv=3",
                                   "group=16,lowrank=svd,rank=2,rankv=5"}) {
      SCOPED_TRACE(spec + (layout == QuantLayout::per_channel ? " per_channel" : " per_token"));
      const auto p = params(spec);
      const auto g = gear_layout(layout, n, c, true, p);
      const auto packed = gear_pack(x, layout, n, c, true, p, "t");
      std::vector<float> got(x.size());
      gear_unpack(packed, layout, n, c, true, p, got);
      const auto d = decode(packed, layout, n, c, true, p.bits, p.group, g.rank, g.outliers);
      ASSERT_EQ(static_cast<std::int64_t>(d.outlier_index.size()), g.outliers);
      // The outliers are stored exactly (x is fp16) at the positions the authors' rule picks.
      std::set<std::int32_t> stored(d.outlier_index.begin(), d.outlier_index.end());
      EXPECT_EQ(stored, authors_outliers(x, layout, g.nq, c, p.outliers, p.per_line));
      for (std::size_t k = 0; k < d.outlier_index.size(); ++k) EXPECT_EQ(d.outlier_value[k], x[d.outlier_index[k]]);
      // Every value: the dequantized code (or residual / outlier) plus Σ_r A·B in double, rounded once.
      auto fma = d.dequant_fma, plain = d.dequant_plain;
      for (std::size_t k = 0; k < d.outlier_index.size(); ++k) fma[d.outlier_index[k]] = plain[d.outlier_index[k]] = d.outlier_value[k];
      std::int64_t mismatches = 0;
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < c; ++j) {
          double lr = 0;
          for (std::int64_t r = 0; r < d.rank; ++r) lr += double{d.a[i * d.rank + r]} * d.b[r * c + j];
          const auto at = static_cast<std::size_t>(i * c + j);
          const float a = static_cast<float>(double{fma[at]} + lr), b = static_cast<float>(double{plain[at]} + lr);
          mismatches += got[at] != a && got[at] != b;
        }
      EXPECT_EQ(mismatches, 0);
    }
}

TEST(Gear, RankZeroAndNoOutliersIsThePlainQuantizer) {
  // Keys: KIVI's per-channel packing with residual = group (the authors' _cluster quantizer leaves
  // the last T mod G tokens unquantized); values: per token, every row.
  const std::int64_t n = 200, c = 64;
  const auto x = values_with_outliers(n * c, 11);
  for (int bits : {2, 4})
    for (auto layout : {QuantLayout::per_channel, QuantLayout::per_token}) {
      const auto p = params(fmt::format("bits={},group=32,outliers=0,rank=0,rankv=0", bits));
      auto t = StoredTensor::fp16("t", {n, c}, x, layout, true);
      gear_quantize_tensor(t, p);
      const KiviParams k{bits, 32, 32};
      const bool rows = layout == QuantLayout::per_channel;
      const auto packed = kivi_pack(x, layout, n, c, rows, k, "kivi");
      std::vector<float> plain(x.size());
      kivi_unpack(packed, layout, n, c, rows, k, plain);
      EXPECT_EQ(t.packed, packed);
      EXPECT_EQ(t.values, plain);
    }
}

TEST(Gear, ErrorIsAtMostItsQuantizerAlone) {
  // With s = 0 the low-rank part subtracts the orthogonal projection Q·Qᵀ·E (power iteration) or
  // the best rank-r part (SVD) of the residual E: ‖E − Q·QᵀE‖ ≤ ‖E‖. Storing the factors in fp16
  // adds at most 2·2^-11·‖Q‖_F·‖P‖_F ≤ 2^-10·√r·‖E‖_F (‖Q‖_F = √r, ‖P‖_F = ‖EᵀQ‖_F ≤ ‖E‖_F).
  // Outliers on top make the error smaller still on data with planted outliers (they widen groups).
  const std::int64_t n = 256, c = 64;
  const auto x = values_with_outliers(n * c, 13);
  for (auto layout : {QuantLayout::per_channel, QuantLayout::per_token}) {
    const auto run = [&](const std::string& spec) {
      auto t = StoredTensor::fp16("layer0/head0/key", {n, c}, x, layout, true);
      gear_quantize_tensor(t, params(spec));
      return rel_error(t.values, x);
    };
    const double quant = run("outliers=0,rank=0,rankv=0");
    for (int r : {1, 4, 16}) {
      const auto rs = fmt::format("rank={},rankv={}", r, r);
      const double power = run("outliers=0," + rs), svd = run("outliers=0,lowrank=svd," + rs);
      const double slack = 1 + std::ldexp(1.0, -10) * std::sqrt(r);
      EXPECT_LE(power, quant * slack) << "rank " << r;
      EXPECT_LE(svd, quant * slack) << "rank " << r;
      EXPECT_LE(svd, power * slack) << "rank " << r << ": the SVD is the best rank-r approximation";
    }
    EXPECT_LT(run(""), quant) << "the default GEAR (outliers + rank 4) against its quantizer";
    EXPECT_LT(run("outliers=0.02,rank=0,rankv=0"), quant) << "outliers alone";
  }
}

TEST(Gear, FullRankReproducesTheResidual) {
  // rank ≥ min(n, c): A·B = E in exact arithmetic; what is left is the fp16 rounding of the factors,
  // |Â_ir·B̂_rj − A_ir·B_rj| ≤ |Â_ir||B̂_rj|·(2·2^-11 + 2^-22)/(1 − 2^-11)², summed over r, plus the
  // final rounding to f32 (2^-24 relative) and double round-off of E's reconstruction.
  const std::int64_t n = 40, c = 24;
  const auto x = values_with_outliers(n * c, 17);
  for (auto layout : {QuantLayout::per_channel, QuantLayout::per_token})
    for (const std::string low : {"power", "svd"}) {
      const auto p = params("group=8,rank=64,rankv=64,lowrank=" + low);
      const auto packed = gear_pack(x, layout, n, c, true, p, "t");
      std::vector<float> got(x.size());
      gear_unpack(packed, layout, n, c, true, p, got);
      const auto g = gear_layout(layout, n, c, true, p);
      ASSERT_EQ(g.rank, 24);
      const auto d = decode(packed, layout, n, c, true, p.bits, p.group, g.rank, g.outliers);
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < c; ++j) {
          double mag = 0;
          for (std::int64_t r = 0; r < g.rank; ++r) mag += std::abs(double{d.a[i * g.rank + r]} * d.b[r * c + j]);
          const double bound = mag * 1.001 * std::ldexp(1.0, -10) + std::ldexp(std::abs(double{x[i * c + j]}), -23) + 1e-9;
          ASSERT_LE(std::abs(double{got[i * c + j]} - x[i * c + j]), bound) << low << " at " << i << "," << j;
        }
      EXPECT_LT(rel_error(got, x), 1e-3) << low;
    }
}

TEST(Gear, ChainsAfterEvictionAndPerLayer) {
  // snapkv then gear: the kept cells quantized with GEAR; scoring one layer at a time gives the
  // whole cache's figures (gear is layer-local).
  const auto cache = testing::random_cache({3, 2, 4, 32, 200, 16, 0}, 5);
  const CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
  const auto chain = parse_spec("snapkv:keep=0.5,window=16+gear:group=16");
  auto whole = compress_chain(ctx, chain);
  const auto expected = score(cache, *whole, linalg::cpu_backend());
  const auto by_layer = compress_and_score_by_layer(ctx, chain);
  EXPECT_EQ(by_layer.bytes, expected.bytes);
  EXPECT_EQ(by_layer.key_error, expected.key_error);
  EXPECT_EQ(by_layer.value_error, expected.value_error);
  for (auto* t : whole->stored())
    if (t->name.ends_with("/key") || t->name.ends_with("/value")) {
      EXPECT_TRUE(t->format.starts_with("gear2 g16")) << t->name;
    }
  // Bytes: each head's GEAR-packed key and value (their shapes' layouts) and its int32 token index.
  const auto p = params("group=16");
  std::int64_t bytes = 0;
  for (auto* t : whole->stored()) {
    const auto n = t->shape.at(0);
    if (t->name.ends_with("/index")) bytes += 4 * n;
    if (t->name.ends_with("/key")) bytes += gear_layout(QuantLayout::per_channel, n, 32, true, p).total;
    if (t->name.ends_with("/value")) bytes += gear_layout(QuantLayout::per_token, n, 32, true, p).total;
  }
  EXPECT_EQ(whole->bytes(), bytes);
  EXPECT_GT(expected.key_error, 0);
}

}  // namespace
}  // namespace kvlab::compressors
