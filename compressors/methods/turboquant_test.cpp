// turboquant against oracles written here: the codebook's Lloyd–Max conditions checked with the
// test's own integrator (midpoint rule in x on the density (1 − x²)^((d−3)/2), not the stage's
// Simpson in θ), the closed form at d = 3 (a coordinate of a uniform point of S² is uniform on
// [−1, 1], whose Lloyd–Max quantizer is the uniform one) and Max's (1960) Gaussian values as
// d → ∞; the paper's bounds (arXiv 2504.19874 Theorem 1: D_mse ≤ (√3·π/2)·4^−b; Theorem 2:
// D_prod ≤ (√3·π²·‖q‖²/d)·4^−b, unbiased); the packed form read by the test's own decoder of the
// layout in turboquant.h, codes against a brute-force nearest centroid; the chain's bytes by hand.
#include "compressors/methods/turboquant.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <numbers>
#include <random>

#include "compressors/chain.h"
#include "compressors/score.h"
#include "compressors/test_caches.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

using std::numbers::pi;

double read_fp16(const std::vector<std::uint8_t>& b, std::int64_t at) {
  const std::uint16_t bits = static_cast<std::uint16_t>(b.at(at) | b.at(at + 1) << 8);
  return double(float(Eigen::numext::bit_cast<Eigen::half>(bits)));
}
double fp16(double x) { return double(float(Eigen::half(float(x)))); }

// Field k of `bits` bits, bit 0 of byte `at` first.
std::uint32_t read_field(const std::vector<std::uint8_t>& b, std::int64_t at, std::int64_t k, int bits) {
  std::uint32_t v = 0;
  for (int e = 0; e < bits; ++e) {
    const std::int64_t bit = k * bits + e;
    v |= std::uint32_t((b.at(at + bit / 8) >> (bit % 8)) & 1) << e;
  }
  return v;
}

// The test's integrator: ∫ x^p (x − c)^2q f(x) dx over [a, b] (unnormalized f = (1 − x²)^((d−3)/2)),
// midpoint rule with 200000 points; error O(h²) relative, h ≤ 1e-5 ≪ σ = 1/√d for d ≤ 4096.
struct Moments {
  double mass = 0, first = 0, sq = 0;  // ∫f, ∫x f, ∫(x − c)² f
};
Moments integrate(int d, double a, double b, double c) {
  constexpr int m = 200000;
  Moments out;
  const double h = (b - a) / m;
  for (int i = 0; i < m; ++i) {
    const double x = a + (i + 0.5) * h, f = std::pow(1 - x * x, (d - 3) / 2.0) * h;
    out.mass += f, out.first += x * f, out.sq += (x - c) * (x - c) * f;
  }
  return out;
}
// d·E(y − Q(y))² for the codebook's nearest-centroid quantizer: the MSE of a unit vector.
double expected_mse(int d, const std::vector<double>& book) {
  double mass = 0, sq = 0;
  for (std::size_t i = 0; i < book.size(); ++i) {
    const double a = i == 0 ? -1 : (book[i - 1] + book[i]) / 2, b = i + 1 == book.size() ? 1 : (book[i] + book[i + 1]) / 2;
    const auto m = integrate(d, a, b, book[i]);
    mass += m.mass, sq += m.sq;
  }
  return d * sq / mass;
}

double theorem1_bound(int b) { return std::sqrt(3.0) * pi / 2 * std::pow(4.0, -b); }

// n uniformly random unit vectors in R^d, row-major floats.
std::vector<float> unit_rows(std::int64_t n, int d, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<float> x(static_cast<std::size_t>(n * d));
  for (std::int64_t i = 0; i < n; ++i) {
    std::vector<double> g(d);
    double norm = 0;
    for (auto& v : g) v = normal(rng), norm += v * v;
    for (int j = 0; j < d; ++j) x[i * d + j] = float(g[j] / std::sqrt(norm));
  }
  return x;
}

TEST(Turboquant, SpecDefaultsAndBadKeys) {
  const auto spec = parse_spec("turboquant").stages.at(0);
  EXPECT_EQ(spec.to_string(), "turboquant:kbits=3,vbits=3,variant=prod,seed=0");
  const auto message = [](const std::string& text) { return testing::error_of([&] { parse_spec(text); }); };
  for (const std::string bad : {"kbits=5", "kbits=0", "vbits=0", "vbits=5", "variant=qjl", "seed=-1"}) {
    const auto key = bad.substr(0, bad.find('='));
    const auto m = message("turboquant:" + bad);
    EXPECT_NE(m.find(fmt::format("'{}'", key)), std::string::npos) << m;
  }
  // prod spends one of the b bits on QJL: at least 2.
  const auto m = message("turboquant:kbits=1");
  EXPECT_NE(m.find("'kbits'"), std::string::npos) << m;
  EXPECT_NE(m.find("2..4"), std::string::npos) << m;
  EXPECT_EQ(parse_spec("turboquant:kbits=1,variant=mse").to_string(), "turboquant:kbits=1,vbits=3,variant=mse,seed=0");
  const auto p = turboquant_params(parse_stage(turboquant_method(), "kbits=4,vbits=2,variant=mse,seed=7"));
  EXPECT_EQ(p.key_bits, 4);
  EXPECT_EQ(p.value_bits, 2);
  EXPECT_EQ(p.key_variant, TurboquantVariant::mse);
  EXPECT_EQ(p.seed, 7u);
  EXPECT_EQ(method("turboquant").kind, StageKind::quantizer);
  EXPECT_NE(describe_methods().find("turboquant (quantizer)"), std::string::npos) << "its registry line";
}

TEST(Turboquant, CodebookIsLloydMaxForTheSphereCoordinate) {
  for (int d : {3, 16, 128})
    for (int b = 1; b <= 4; ++b) {
      const auto& book = turboquant_codebook(d, b);
      ASSERT_EQ(book.size(), std::size_t(1) << b);
      const double sigma = 1 / std::sqrt(double(d));
      for (std::size_t i = 0; i < book.size(); ++i) {
        EXPECT_NEAR(book[i], -book[book.size() - 1 - i], 1e-12 * sigma) << "symmetric, d " << d << " b " << b;
        if (i) {
          EXPECT_LT(book[i - 1], book[i]);
        }
        // Centroid condition: c_i is the mean of its cell, the cell bounded by the midpoint
        // thresholds (the nearest-centroid condition). Tolerance: the stage stops when no centroid
        // moves by 1e-13σ; the midpoint rule is good to ~1e-10σ here.
        const double lo = i == 0 ? -1 : (book[i - 1] + book[i]) / 2, hi = i + 1 == book.size() ? 1 : (book[i] + book[i + 1]) / 2;
        const auto m = integrate(d, lo, hi, 0);
        EXPECT_NEAR(book[i], m.first / m.mass, 1e-8 * sigma) << "centroid " << i << ", d " << d << " b " << b;
        // d = 3: f is uniform on [−1, 1]; its Lloyd–Max quantizer is uniform, c_i = −1 + (2i + 1)/2^b.
        if (d == 3) {
          EXPECT_NEAR(book[i], -1 + (2.0 * i + 1) / book.size(), 1e-9);
        }
      }
      EXPECT_LE(expected_mse(d, book), theorem1_bound(b)) << "Theorem 1, d " << d << " b " << b;
    }
  // As d → ∞, √d·y → N(0, 1): the MSE tends to Max's (1960) Gaussian Lloyd–Max distortion (the
  // paper's ≈ 0.36, 0.117, 0.03, 0.009); at d = 4096 the O(1/d) gap is far below 0.5%.
  const double max1960[] = {1 - 2 / pi, 0.1175, 0.03454, 0.009497};
  for (int b = 1; b <= 4; ++b) EXPECT_NEAR(expected_mse(4096, turboquant_codebook(4096, b)), max1960[b - 1], 0.005 * max1960[b - 1]) << b;
}

TEST(Turboquant, MseOfRandomUnitVectorsIsTheCodebooksAndWithinTheorem1) {
  // x uniform on the sphere, Π fixed: Π·x is uniform too, so E‖x − x̃‖² is exactly the codebook's
  // d·E(y − Q(y))² (the test's integral); the sample mean lies within 5 standard errors of it.
  const int d = 128;
  const std::int64_t n = 3000;
  const auto x = unit_rows(n, d, 11);
  for (int b = 1; b <= 4; ++b) {
    const TurboquantCoding coding{TurboquantVariant::mse, b, 3};
    const auto packed = turboquant_pack(x, n, d, coding, "test");
    std::vector<float> out(x.size());
    turboquant_unpack(packed, n, d, coding, out);
    double sum = 0, sum2 = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      double e = 0;
      for (int j = 0; j < d; ++j) e += std::pow(double(x[i * d + j]) - out[i * d + j], 2);
      sum += e, sum2 += e * e;
    }
    const double mean = sum / n, sd = std::sqrt(sum2 / n - mean * mean);
    EXPECT_NEAR(mean, expected_mse(d, turboquant_codebook(d, b)), 5 * sd / std::sqrt(double(n))) << b;
    EXPECT_LE(mean, theorem1_bound(b)) << b;
  }
}

// The test's decoder of one packed tensor: every field read from the bytes by the layout of turboquant.h.
struct Decoded {
  std::vector<double> nu, gamma;
  std::vector<std::uint32_t> code, sign;
};
Decoded decode(const std::vector<std::uint8_t>& packed, std::int64_t n, std::int64_t c, const TurboquantCoding& k) {
  const bool prod = k.variant == TurboquantVariant::prod;
  const int m = prod ? k.bits - 1 : k.bits;
  const std::int64_t codes_at = prod ? 4 * n : 2 * n, signs_at = codes_at + (n * c * m + 7) / 8;
  Decoded out;
  for (std::int64_t i = 0; i < n; ++i) {
    out.nu.push_back(read_fp16(packed, 2 * i));
    if (prod) out.gamma.push_back(read_fp16(packed, 2 * n + 2 * i));
  }
  for (std::int64_t e = 0; e < n * c; ++e) {
    out.code.push_back(read_field(packed, codes_at, e, m));
    if (prod) out.sign.push_back(read_field(packed, signs_at, e, 1));
  }
  return out;
}

TEST(Turboquant, PackedFormDecodedIndependently) {
  // n·c·m not a multiple of 8 (37·20·3 = 2220 bits), a zero row, values of both signs and sizes.
  const std::int64_t n = 37, c = 20;
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal(0.2, 3.0);
  std::vector<float> x(n * c);
  for (auto& v : x) v = float(normal(rng));
  for (std::int64_t j = 0; j < c; ++j) x[4 * c + j] = 0;
  for (auto variant : {TurboquantVariant::mse, TurboquantVariant::prod}) {
    const bool prod = variant == TurboquantVariant::prod;
    const TurboquantCoding coding{variant, 3, 42};
    const auto packed = turboquant_pack(x, n, c, coding, "test");
    // Bytes by hand: mse 2·37 + ⌈2220/8⌉ = 352; prod 2·37 + 2·37 + ⌈1480/8⌉ + ⌈740/8⌉ = 426.
    ASSERT_EQ(packed.size(), prod ? 426u : 352u);
    EXPECT_EQ(turboquant_bytes(n, c, coding), std::int64_t(packed.size()));
    std::vector<float> out(x.size());
    turboquant_unpack(packed, n, c, coding, out);
    const auto got = decode(packed, n, c, coding);
    const auto& book = turboquant_codebook(int(c), prod ? 2 : 3);
    const Eigen::MatrixXd P = *turboquant_rotation(int(c), 42), S = *turboquant_sketch(int(c), 42);
    EXPECT_LT((P * P.transpose() - Eigen::MatrixXd::Identity(c, c)).norm(), 1e-12) << "Π orthogonal";
    for (std::int64_t i = 0; i < n; ++i) {
      Eigen::VectorXd xi(c);
      for (std::int64_t j = 0; j < c; ++j) xi(j) = x[i * c + j];
      EXPECT_EQ(got.nu[i], fp16(xi.norm())) << i;
      const Eigen::VectorXd y = xi.norm() > 0 ? Eigen::VectorXd(P * xi / xi.norm()) : Eigen::VectorXd::Zero(c);
      Eigen::VectorXd centroid(c);
      for (std::int64_t j = 0; j < c; ++j) {
        std::uint32_t nearest = 0;  // brute force: every centroid, ties to the lower
        for (std::uint32_t k = 1; k < book.size(); ++k)
          if (std::abs(y(j) - book[k]) < std::abs(y(j) - book[nearest])) nearest = k;
        EXPECT_EQ(got.code[i * c + j], nearest) << i << " " << j;
        centroid(j) = book[got.code[i * c + j]];
      }
      // The rebuild from the decoded fields, in double: ν·Πᵀc (+ √(π/2)/d·γ·Sᵀs).
      Eigen::VectorXd want = got.nu[i] * P.transpose() * centroid;
      if (prod) {
        const Eigen::VectorXd r = xi - want;
        EXPECT_EQ(got.gamma[i], fp16(r.norm())) << i;
        const Eigen::VectorXd sr = S * r;
        Eigen::VectorXd s(c);
        for (std::int64_t j = 0; j < c; ++j) {
          s(j) = got.sign[i * c + j] ? 1.0 : -1.0;
          if (std::abs(sr(j)) > 1e-9 * r.norm()) {
            EXPECT_EQ(got.sign[i * c + j], sr(j) >= 0 ? 1u : 0u) << i << " " << j;
          }
        }
        want += std::sqrt(pi / 2) / c * got.gamma[i] * S.transpose() * s;
      }
      for (std::int64_t j = 0; j < c; ++j) EXPECT_NEAR(out[i * c + j], want(j), 1e-6 * (1 + want.norm())) << i << " " << j;
      if (i == 4) {
        EXPECT_EQ(got.nu[i], 0.0);
        for (std::int64_t j = 0; j < c; ++j) EXPECT_EQ(out[i * c + j], 0.0f) << "a zero row rebuilds to zero";
      }
    }
    // The bits past the last field are zero.
    const int last_bits = prod ? 740 % 8 : 2220 % 8;
    EXPECT_EQ(packed.back() >> last_bits, 0);
  }
}

// The test's rebuild of one single-instance packed form (layout of turboquant.h), in double:
// ν·Πᵀc[code] (+ √(π/2)/d·γ·Sᵀs), Π and S of (d, seed), row-major [n, d].
std::vector<double> rebuild(const std::vector<std::uint8_t>& packed, std::int64_t n, std::int64_t d, const TurboquantCoding& k) {
  const bool prod = k.variant == TurboquantVariant::prod;
  const auto got = decode(packed, n, d, k);
  const auto& book = turboquant_codebook(int(d), prod ? k.bits - 1 : k.bits);
  const Eigen::MatrixXd P = *turboquant_rotation(int(d), k.seed), S = *turboquant_sketch(int(d), k.seed);
  std::vector<double> out;
  for (std::int64_t i = 0; i < n; ++i) {
    Eigen::VectorXd centroid(d), s(d);
    for (std::int64_t j = 0; j < d; ++j) centroid(j) = book[got.code[i * d + j]];
    Eigen::VectorXd x = got.nu[i] * P.transpose() * centroid;
    if (prod) {
      for (std::int64_t j = 0; j < d; ++j) s(j) = got.sign[i * d + j] ? 1.0 : -1.0;
      x += std::sqrt(pi / 2) / d * got.gamma[i] * S.transpose() * s;
    }
    out.insert(out.end(), x.data(), x.data() + d);
  }
  return out;
}

TEST(Turboquant, FractionalBitsAreTheOutlierSplit) {
  EXPECT_EQ(parse_spec("turboquant:kbits=2.25,vbits=3.5").to_string(), "turboquant:kbits=2.25,vbits=3.5,variant=prod,seed=0");
  const auto message = [](const std::string& text) { return testing::error_of([&] { parse_spec(text); }); };
  for (const std::string bad : {"kbits=4.5", "kbits=0.5", "vbits=4.25", "vbits=0.75"}) {
    const auto m = message("turboquant:" + bad);
    EXPECT_NE(m.find(fmt::format("'{}'", bad.substr(0, bad.find('=')))), std::string::npos) << m;
  }
  const auto m = message("turboquant:kbits=1.5");  // prod's regular part needs 2 bits
  EXPECT_NE(m.find("2..4"), std::string::npos) << m;
  EXPECT_NO_THROW(parse_spec("turboquant:kbits=1.5,variant=mse"));
  // The paper's examples at d = 128: "32 outlier channels at 3 bits, 96 at 2" is f = 32/128;
  // 3.5 bits with one more bit on the outliers is 64 of 128.
  EXPECT_EQ(turboquant_outliers(2.25, 128), 32);
  EXPECT_EQ(turboquant_outliers(2.5, 128), 64);
  EXPECT_EQ(turboquant_outliers(3.5, 128), 64);
  EXPECT_EQ(turboquant_outliers(3, 128), 0);
  // Too few channels for two instances of at least 2 coordinates: an error naming the key.
  StoredTensor t{"layer0/value", {4, 8}, std::vector<float>(32, 1.0f), {}, QuantLayout::per_token, true, "fp16"};
  TurboquantParams p;
  p.value_bits = 2.1;  // round(0.1·8) = 1 outlier channel
  const auto e = testing::error_of([&] { turboquant_quantize_tensor(t, p); });
  EXPECT_NE(e.find("'vbits'"), std::string::npos) << e;
}

TEST(Turboquant, OutlierSplitPackedFormDecodedIndependently) {
  // 70 rows (groups of 32: 32, 32, 6), c = 40, o = 10 outlier channels a group: each group's own
  // set, channels scaled up so the test's top-10 is unambiguous. Prod at 2 bits (outliers at 3).
  const std::int64_t n = 70, c = 40, o = 10;
  std::mt19937_64 rng(8);
  std::normal_distribution<double> normal(0.2, 3.0);
  std::vector<float> x(n * c);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < c; ++j) {
      const std::int64_t g = i / 32, k = (j + 40 - 7 * g) % 40;  // channels 7g .. 7g + 9 (mod 40) loud
      x[i * c + j] = float(normal(rng) * (k < o ? 6 + k : 1));
    }
  for (std::int64_t j = 0; j < c; ++j) x[40 * c + j] = 0;  // a zero row
  for (auto variant : {TurboquantVariant::mse, TurboquantVariant::prod}) {
    const bool prod = variant == TurboquantVariant::prod;
    const TurboquantCoding regular{variant, 2, 42};
    const auto packed = turboquant_split_pack(x, n, c, o, regular, "test");
    // Bytes by hand: 3 groups · 10 uint8 indices = 30; outliers [70, 10] at 3 bits, regular [70, 30] at 2:
    //  mse:  (2·70 + ⌈2100/8⌉) + (2·70 + ⌈4200/8⌉) = 403 + 665;
    //  prod: (4·70 + ⌈1400/8⌉ + ⌈700/8⌉) + (4·70 + ⌈2100/8⌉ + ⌈2100/8⌉) = 543 + 806.
    const std::int64_t outlier_bytes = prod ? 543 : 403, regular_bytes = prod ? 806 : 665;
    ASSERT_EQ(std::int64_t(packed.size()), 30 + outlier_bytes + regular_bytes);
    EXPECT_EQ(turboquant_split_bytes(n, c, o, regular), std::int64_t(packed.size()));
    // The test's selection: per group the 10 largest Σ_rows x², ascending.
    std::vector<std::vector<std::int64_t>> chosen;
    for (std::int64_t g = 0; g < 3; ++g) {
      std::vector<double> norm2(c, 0.0);
      for (std::int64_t i = 32 * g; i < std::min(n, 32 * g + 32); ++i)
        for (std::int64_t j = 0; j < c; ++j) norm2[j] += double(x[i * c + j]) * x[i * c + j];
      std::vector<std::int64_t> top(c);
      std::iota(top.begin(), top.end(), 0);
      std::sort(top.begin(), top.end(), [&](auto a, auto b) { return norm2[a] > norm2[b]; });
      top.resize(o);
      std::sort(top.begin(), top.end());
      for (std::int64_t k = 0; k < o; ++k) EXPECT_EQ(packed[g * o + k], top[k]) << "group " << g << " index " << k;
      chosen.push_back(top);
    }
    // Each part decoded by the test from its bytes; the outlier instance at 3 bits, seed 42 ⊕ the
    // documented mix (its own Π and S), the regular one at 2 bits, seed 42.
    const std::vector<std::uint8_t> outlier_part(packed.begin() + 30, packed.begin() + 30 + outlier_bytes),
        regular_part(packed.begin() + 30 + outlier_bytes, packed.end());
    const auto xo = rebuild(outlier_part, n, o, {variant, 3, 42 ^ 0x9e3779b97f4a7c15ull});
    const auto xr = rebuild(regular_part, n, c - o, regular);
    std::vector<float> out(x.size());
    turboquant_split_unpack(packed, n, c, o, regular, out);
    for (std::int64_t i = 0; i < n; ++i) {
      const auto& set = chosen[i / 32];
      std::vector<double> want(c);
      double norm = 0;
      for (std::int64_t j = 0, a = 0, b = 0; j < c; ++j) {
        const bool outlier = std::find(set.begin(), set.end(), j) != set.end();
        want[j] = outlier ? xo[i * o + a++] : xr[i * (c - o) + b++];
        norm += want[j] * want[j];
      }
      for (std::int64_t j = 0; j < c; ++j) EXPECT_NEAR(out[i * c + j], want[j], 1e-6 * (1 + std::sqrt(norm))) << i << " " << j;
    }
    // Each part's ν is the fp16 norm of the sub-vector the test gathers (row 0).
    double no = 0, nr = 0;
    for (std::int64_t j = 0; j < c; ++j)
      (std::find(chosen[0].begin(), chosen[0].end(), j) != chosen[0].end() ? no : nr) += double(x[j]) * x[j];
    EXPECT_EQ(read_fp16(outlier_part, 0), fp16(std::sqrt(no)));
    EXPECT_EQ(read_fp16(regular_part, 0), fp16(std::sqrt(nr)));
    for (std::int64_t j = 0; j < c; ++j) EXPECT_EQ(out[40 * c + j], 0.0f) << "a zero row rebuilds to zero";
  }
}

TEST(Turboquant, OutlierSplitPartsMeetTheorem1AtTheirOwnWidths) {
  // kbits = 2.25 on 128-wide Gaussian rows whose channels 0..31 are 8× louder: every group picks
  // them (Σ over 32 rows: ~2048 against ~32), so each part's sub-vectors are Gaussian and their
  // directions uniform on S^31 and S^95: for the fixed Π of each instance the part's relative
  // error² has mean exactly its codebook's d·E(y − Q(y))² (the test's integral), within 5
  // standard errors, and so within Theorem 1 at 3 bits (outliers, d = 32) and 2 bits (d = 96).
  const std::int64_t n = 3000, c = 128;
  std::mt19937_64 rng(21);
  std::normal_distribution<double> normal;
  std::vector<float> x(n * c);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < c; ++j) x[i * c + j] = float(normal(rng) * (j < 32 ? 8 : 1));
  StoredTensor t{"layer0/key", {n, c}, x, {}, QuantLayout::per_channel, true, "fp16"};
  TurboquantParams p;
  p.key_bits = 2.25;
  p.key_variant = TurboquantVariant::mse;
  p.seed = 5;
  turboquant_quantize_tensor(t, p);
  EXPECT_EQ(t.format, "turboquant-mse2+32x3");
  // Effective bits a coordinate, the paper's formula: (32·3 + 96·2)/128 = 2.25. The codes take
  // n·(32·3 + 96·2)/8 bytes, beside 94 groups · 32 uint8 indices and 2 fp16 norms a row.
  const std::int64_t groups = (n + 31) / 32, codes = std::int64_t(t.packed.size()) - groups * 32 - 2 * 2 * n;
  EXPECT_EQ(codes, n * (32 * 3 + 96 * 2) / 8);
  EXPECT_DOUBLE_EQ(8.0 * double(codes) / double(n * c), (32 * 3 + 96 * 2) / 128.0);
  for (std::int64_t g = 0; g < groups; ++g)
    for (std::int64_t k = 0; k < 32; ++k) ASSERT_EQ(t.packed[g * 32 + k], k) << "group " << g;
  for (const bool outliers : {true, false}) {
    const std::int64_t j0 = outliers ? 0 : 32, d = outliers ? 32 : 96;
    const int b = outliers ? 3 : 2;
    double sum = 0, sum2 = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      double e = 0, norm = 0;
      for (std::int64_t j = j0; j < j0 + d; ++j)
        e += std::pow(double(x[i * c + j]) - t.values[i * c + j], 2), norm += double(x[i * c + j]) * x[i * c + j];
      sum += e / norm, sum2 += e * e / (norm * norm);
    }
    const double mean = sum / n, sd = std::sqrt(sum2 / n - mean * mean);
    EXPECT_NEAR(mean, expected_mse(int(d), turboquant_codebook(int(d), b)), 5 * sd / std::sqrt(double(n))) << d;
    EXPECT_LE(mean, theorem1_bound(b)) << "Theorem 1, " << b << " bits on d = " << d;
  }
}

TEST(Turboquant, FractionalBitsThroughTheRegistry) {
  // D = 32: kbits = 2.25 puts round(0.25·32) = 8 key channels at 3 bits and 24 at 2; vbits = 3.5
  // puts 16 value channels at 4 bits and 16 at 3. Bytes of an n-row tensor by hand (mse):
  //   keys:   8⌈n/32⌉ indices + (2n + n·8·3/8) + (2n + n·24·2/8) = 8⌈n/32⌉ + 13n;
  //   values: 16⌈n/32⌉ + (2n + n·16·4/8) + (2n + n·16·3/8) = 16⌈n/32⌉ + 18n.
  const auto cache = testing::random_cache({3, 2, 4, 32, 200, 16, 0}, 4);
  const CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
  const auto chain = parse_spec("turboquant:kbits=2.25,vbits=3.5,variant=mse");
  auto whole = compress_chain(ctx, chain);
  std::int64_t keys = 0, values = 0;
  for (auto* t : whole->stored()) {
    const std::int64_t n = t->shape.at(0), groups = (n + 31) / 32;
    if (t->name.ends_with("/key")) {
      ++keys;
      EXPECT_EQ(t->format, "turboquant-mse2+8x3");
      EXPECT_EQ(t->bytes(), 8 * groups + 13 * n) << t->name;
    } else if (t->name.ends_with("/value")) {
      ++values;
      EXPECT_EQ(t->format, "turboquant-mse3+16x4");
      EXPECT_EQ(t->bytes(), 16 * groups + 18 * n) << t->name;
    }
  }
  EXPECT_EQ(keys, 3 * 2);
  EXPECT_EQ(values, 3 * 2);
  const auto by_layer = compress_and_score_by_layer(ctx, chain);
  EXPECT_EQ(by_layer.bytes, score(cache, *whole, linalg::cpu_backend()).bytes);
}

TEST(Turboquant, ProdScoreIsThePapersEstimatorFromThePackedBits) {
  // ⟨q, x̂⟩ of the rebuilt row against the estimator of Algorithm 2 evaluated from the packed
  // fields, ⟨q, x̃_mse⟩ + √(π/2)/d·γ·⟨S·q, s⟩: the same up to the f32 rounding of x̂.
  const int d = 64;
  const std::int64_t n = 50;
  const auto x = unit_rows(n, d, 2);
  const TurboquantCoding coding{TurboquantVariant::prod, 3, 9};
  const auto packed = turboquant_pack(x, n, d, coding, "test");
  std::vector<float> out(x.size());
  turboquant_unpack(packed, n, d, coding, out);
  const auto got = decode(packed, n, d, coding);
  const auto& book = turboquant_codebook(d, 2);
  const Eigen::MatrixXd P = *turboquant_rotation(d, 9), S = *turboquant_sketch(d, 9);
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal;
  for (int trial = 0; trial < 5; ++trial) {
    Eigen::VectorXd q(d);
    for (auto& v : q) v = normal(rng);
    const Eigen::VectorXd Pq = P * q, Sq = S * q;
    for (std::int64_t i = 0; i < n; ++i) {
      double mse = 0, qjl = 0, score = 0, scale = 0;
      for (int j = 0; j < d; ++j) {
        mse += Pq(j) * book[got.code[i * d + j]];
        qjl += Sq(j) * (got.sign[i * d + j] ? 1 : -1);
        score += q(j) * out[i * d + j], scale += std::abs(q(j) * out[i * d + j]);
      }
      const double estimator = got.nu[i] * mse + std::sqrt(pi / 2) / d * got.gamma[i] * qjl;
      EXPECT_NEAR(score, estimator, 1e-6 * (1 + scale)) << trial << " " << i;
    }
  }
}

TEST(Turboquant, ProdIsUnbiasedAndMseIsShrunk) {
  // Over seeds (Π and S drawn afresh), for a fixed unit x and query q:
  //  prod, b = 2: E⟨q, x̂⟩ = ⟨q, x⟩ with variance ≤ (√3·π²·‖q‖²/d)·4^−b (Theorem 2);
  //  mse, b = 1: x̃ = Πᵀ·c·sign(Π·x), so E⟨q, x̃⟩ = d·c·E|y₁|·⟨q, x⟩ with c = E|y₁| the 1-bit
  //  centroid — the 2/π shrinkage the paper removes with QJL (E|y₁| from the test's integral).
  const int d = 64, seeds = 3000;
  const auto xs = unit_rows(2, d, 17);
  std::vector<float> x(xs.begin(), xs.begin() + d);
  Eigen::VectorXd xv(d), q(d);
  for (int j = 0; j < d; ++j) xv(j) = x[j], q(j) = 0.6 * x[j] + xs[d + j];  // correlated with x
  const double truth = q.dot(xv);
  const auto half = integrate(d, 0, 1, 0);
  const double mean_abs = half.first / half.mass;
  const double shrink = d * mean_abs * mean_abs;
  double sp = 0, sp2 = 0, sm = 0, sm2 = 0;
  std::vector<float> out(d);
  for (int seed = 0; seed < seeds; ++seed) {
    turboquant_unpack(turboquant_pack(x, 1, d, {TurboquantVariant::prod, 2, std::uint64_t(seed)}, "test"), 1, d,
                      {TurboquantVariant::prod, 2, std::uint64_t(seed)}, out);
    const double p = q.dot(Eigen::Map<Eigen::VectorXf>(out.data(), d).cast<double>());
    turboquant_unpack(turboquant_pack(x, 1, d, {TurboquantVariant::mse, 1, std::uint64_t(seed)}, "test"), 1, d,
                      {TurboquantVariant::mse, 1, std::uint64_t(seed)}, out);
    const double m = q.dot(Eigen::Map<Eigen::VectorXf>(out.data(), d).cast<double>());
    sp += p, sp2 += p * p, sm += m, sm2 += m * m;
  }
  const double bound = std::sqrt(3.0) * pi * pi * q.squaredNorm() / d * std::pow(4.0, -2);
  const double mean_p = sp / seeds, var_p = sp2 / seeds - mean_p * mean_p;
  const double mean_m = sm / seeds, var_m = sm2 / seeds - mean_m * mean_m;
  EXPECT_NEAR(mean_p, truth, 5 * std::sqrt(bound / seeds)) << "prod unbiased";
  EXPECT_LE(var_p, bound) << "Theorem 2";
  EXPECT_NEAR(mean_m, shrink * truth, 5 * std::sqrt(var_m / seeds)) << "mse 1-bit: shrunk by d·E|y|²";
  EXPECT_NEAR(shrink, 2 / pi, 0.02) << "≈ 2/π";
  EXPECT_GT(std::abs(shrink * truth - truth), 10 * std::sqrt(var_m / seeds)) << "the shrinkage is detectable here";
}

TEST(Turboquant, ChainsAfterEvictionThroughTheRegistry) {
  // snapkv then turboquant: the kept cells' keys (post-RoPE, prod 3 bits: 16 bytes a 32-wide row)
  // and values (mse 2 bits: 10 bytes a row) packed, indices int32; one layer at a time gives the
  // whole cache's figures (layer-local).
  const auto cache = testing::random_cache({3, 2, 4, 32, 200, 16, 0}, 9);
  const CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
  const auto chain = parse_spec("snapkv:keep=0.5,window=16+turboquant:kbits=3,vbits=2");
  auto whole = compress_chain(ctx, chain);
  const auto expected = score(cache, *whole, linalg::cpu_backend());
  const auto by_layer = compress_and_score_by_layer(ctx, chain);
  EXPECT_EQ(by_layer.bytes, expected.bytes);
  EXPECT_EQ(by_layer.key_error, expected.key_error);
  EXPECT_EQ(by_layer.value_error, expected.value_error);
  std::int64_t bytes = 0, keys = 0, values = 0;
  for (auto* t : whole->stored()) {
    const std::int64_t n = t->shape.at(0);
    bytes += t->bytes();
    if (t->name.ends_with("/key")) {
      ++keys;
      EXPECT_EQ(t->format, "turboquant-prod3");
      EXPECT_EQ(t->bytes(), 2 * n + 2 * n + n * 32 * 2 / 8 + n * 32 / 8) << t->name;
    } else if (t->name.ends_with("/value")) {
      ++values;
      EXPECT_EQ(t->format, "turboquant-mse2");
      EXPECT_EQ(t->bytes(), 2 * n + n * 32 * 2 / 8) << t->name;
    }
  }
  EXPECT_EQ(keys, 3 * 2);
  EXPECT_EQ(values, 3 * 2);
  EXPECT_EQ(whole->bytes(), bytes);
  EXPECT_EQ(expected.bytes, bytes);
  // mse keys on N(0, 1) keys: directions uniform, so the relative error² is about D_mse(3) ≈ 0.035,
  // below Theorem 1's 0.0425 (rows' norms vary; ~1200 rows keep the sample within a few %).
  const auto mse = score(cache, *compress_chain(ctx, parse_spec("snapkv:keep=0.5,window=16+turboquant:kbits=3,vbits=3,variant=mse")),
                         linalg::cpu_backend());
  EXPECT_LT(mse.key_error, std::sqrt(theorem1_bound(3)));
  EXPECT_LT(mse.value_error, std::sqrt(theorem1_bound(3)));
  EXPECT_GT(mse.key_error, std::sqrt(0.8 * expected_mse(32, turboquant_codebook(32, 3))));
}

}  // namespace
}  // namespace kvlab::compressors
