// Oracles: core::f32_to_16bit (a second bf16 rounding), hand-worked TF32 ties, ZᵀZ formed by
// Eigen in f64, integer inputs (every precision is then exact), the first-order bound on a
// Gram of rounded inputs, and Eigen's JacobiSVD for gram_subspace.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "linalg/backend.h"
#include "linalg/test_matrices.h"

namespace kvlab::linalg {
namespace {

using Eigen::MatrixXd;
using RowMatrixXd = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

std::vector<float> random_values(std::size_t n, std::uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<float> v(n);
  for (auto& x : v) x = float(scale * normal(rng));
  return v;
}

TEST(RoundGramInputs, Bf16MatchesTheDumpConverter) {
  auto v = random_values(20000, 1, 100.0);
  // Exact ties (low 16 bits = 0x8000) both ways, and values that carry into the exponent.
  for (std::uint32_t hi : {0x3f80u, 0x3f81u, 0xbf80u, 0x4049u, 0x7f7fu})
    v.push_back(std::bit_cast<float>((hi << 16) | 0x8000u));
  v.push_back(std::bit_cast<float>(0x3fffffffu));
  std::vector<std::uint16_t> bits(v.size());
  core::f32_to_16bit(core::DType::bf16, v, bits);
  std::vector<float> want(v.size());
  core::bits16_to_f32(core::DType::bf16, bits, want);
  round_gram_inputs(GramPrecision::bf16, v);
  for (std::size_t i = 0; i < v.size(); ++i) ASSERT_EQ(std::bit_cast<std::uint32_t>(v[i]), std::bit_cast<std::uint32_t>(want[i])) << i;
}

TEST(RoundGramInputs, Tf32RoundsToNearestEvenWithTenMantissaBits) {
  const float u = std::ldexp(1.f, -10);  // TF32's ulp at 1
  std::vector<float> v = {1 + u / 2, 1 + 3 * u / 2, 1 + u / 2 + u / 64, -(1 + 3 * u / 2), 1 + u,
                          std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()};
  round_gram_inputs(GramPrecision::tf32, v);
  EXPECT_EQ(v[0], 1.f);             // tie → even (down)
  EXPECT_EQ(v[1], 1 + 2 * u);       // tie → even (up)
  EXPECT_EQ(v[2], 1 + u);           // above the tie → up
  EXPECT_EQ(v[3], -(1 + 2 * u));    // symmetric for negatives
  EXPECT_EQ(v[4], 1 + u);           // representable: unchanged
  EXPECT_TRUE(std::isinf(v[5]));
  EXPECT_TRUE(std::isnan(v[6]));
  auto r = random_values(20000, 2, 1e3);
  const auto orig = r;
  round_gram_inputs(GramPrecision::tf32, r);
  for (std::size_t i = 0; i < r.size(); ++i) {
    EXPECT_EQ(std::bit_cast<std::uint32_t>(r[i]) & 0x1fffu, 0u) << i;              // 10 mantissa bits left
    EXPECT_LE(std::abs(double(r[i]) - orig[i]), std::ldexp(std::abs(double(orig[i])), -11)) << i;  // ≤ half an ulp
  }
  auto same = orig;
  round_gram_inputs(GramPrecision::f32, same);
  EXPECT_EQ(same, orig);
}

TEST(GramPrecisionNames, RoundTripAndRejectUnknown) {
  for (auto p : {GramPrecision::f32, GramPrecision::tf32, GramPrecision::bf16, GramPrecision::f64})
    EXPECT_EQ(parse_gram_precision(to_string(p)), p);
  EXPECT_THROW(parse_gram_precision("fp16"), Error);
  EXPECT_NEAR(gram_sigma_floor(GramPrecision::f32), 2.44e-4, 1e-6);
}

// Z = [Z_0 Z_1 Z_2], 3 panels × 5 columns, 10 token rows streamed in blocks of 4 (the last one short).
struct Panels {
  int panels = 3;
  std::int64_t width = 5, rows = 10, capacity = 4;
  RowMatrixXd z;  // rows × panels·width
};

Panels make_panels(bool integers) {
  Panels p;
  p.z.resize(p.rows, p.panels * p.width);
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<int> small(-8, 8);
  std::normal_distribution<double> normal;
  for (Eigen::Index i = 0; i < p.z.size(); ++i) p.z.data()[i] = integers ? small(rng) : normal(rng);
  if (!integers) p.z = p.z.cast<float>().cast<double>();  // exactly representable in f32
  return p;
}

template <typename T>
std::vector<MatrixXd> stream(PanelGram<T>& gram, const Panels& p) {
  for (std::int64_t t0 = 0; t0 < p.rows; t0 += p.capacity) {
    const std::int64_t n = std::min(p.capacity, p.rows - t0);
    T* s = gram.staging();
    for (int k = 0; k < p.panels; ++k)
      for (std::int64_t t = 0; t < n; ++t)
        for (std::int64_t c = 0; c < p.width; ++c) s[k * gram.panel_stride() + t * p.width + c] = T(p.z(t0 + t, k * p.width + c));
    gram.add(n);
  }
  gram.finish();
  std::vector<MatrixXd> blocks;
  for (int i = 0; i < p.panels; ++i)
    for (int j = i; j < p.panels; ++j)
      blocks.push_back(Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>>(gram.block(i, j), p.width, p.width)
                           .template cast<double>());
  return blocks;
}

std::vector<MatrixXd> oracle(const RowMatrixXd& z, int panels, std::int64_t width) {
  const MatrixXd full = z.transpose() * z;
  std::vector<MatrixXd> blocks;
  for (int i = 0; i < panels; ++i)
    for (int j = i; j < panels; ++j) blocks.push_back(full.block(i * width, j * width, width, width));
  return blocks;
}

TEST(HostPanelGram, IntegerInputsAreExactInEveryPrecision) {
  const Panels p = make_panels(true);  // |z| ≤ 8: products and sums are exact in bf16 inputs and f32 sums
  const auto want = oracle(p.z, p.panels, p.width);
  for (auto precision : {GramPrecision::f32, GramPrecision::tf32, GramPrecision::bf16}) {
    auto gram = cpu_backend().panel_gram(p.panels, p.width, p.capacity, precision);
    const auto got = stream(*gram, p);
    for (std::size_t b = 0; b < want.size(); ++b) EXPECT_EQ(got[b], want[b]) << to_string(precision) << " block " << b;
  }
  auto gram = cpu_backend().panel_gram_f64(p.panels, p.width, p.capacity);
  const auto got = stream(*gram, p);
  for (std::size_t b = 0; b < want.size(); ++b) EXPECT_EQ(got[b], want[b]) << "f64 block " << b;
}

// ‖ΔC‖_F / ‖ |Z|ᵀ|Z| ‖_F per precision: f32 and f64 at their unit roundoff, tf32 and bf16 within
// the first-order bound 2·u_in (each input relatively perturbed by ≤ u_in) and well above f32,
// which shows the inputs really were rounded.
TEST(HostPanelGram, RoundedPrecisionsStayWithinTheirInputBound) {
  const Panels p = make_panels(false);
  const auto want = oracle(p.z, p.panels, p.width);
  const auto scale = oracle(p.z.cwiseAbs(), p.panels, p.width);
  auto error = [&](const std::vector<MatrixXd>& got) {
    double num = 0, den = 0;
    for (std::size_t b = 0; b < want.size(); ++b) {
      num += (got[b] - want[b]).squaredNorm();
      den += scale[b].squaredNorm();
    }
    return std::sqrt(num / den);
  };
  auto run = [&](GramPrecision precision) {
    auto gram = cpu_backend().panel_gram(p.panels, p.width, p.capacity, precision);
    return error(stream(*gram, p));
  };
  const double f32 = run(GramPrecision::f32), tf32 = run(GramPrecision::tf32), bf16 = run(GramPrecision::bf16);
  auto g64 = cpu_backend().panel_gram_f64(p.panels, p.width, p.capacity);
  const double f64 = error(stream(*g64, p));
  EXPECT_LT(f64, 1e-15);
  EXPECT_LT(f32, 4 * std::ldexp(1.0, -24) * p.rows);
  EXPECT_LT(tf32, 2 * std::ldexp(1.0, -11));
  EXPECT_LT(bf16, 2 * std::ldexp(1.0, -8));
  EXPECT_GT(tf32, 20 * f32);
  EXPECT_GT(bf16, 4 * tf32);
}

TEST(HostPanelGram, DiagonalBlocksAreSymmetric) {
  const Panels p = make_panels(false);
  auto gram = cpu_backend().panel_gram(p.panels, p.width, p.capacity, GramPrecision::f32);
  const auto got = stream(*gram, p);
  EXPECT_EQ(got[0], got[0].transpose());
}

TEST(HostPanelGram, MisuseFailsClearly) {
  EXPECT_THROW(cpu_backend().panel_gram(0, 4, 4, GramPrecision::f32), Error);
  EXPECT_THROW(cpu_backend().panel_gram(2, 4, 4, GramPrecision::f64), Error);
  auto gram = cpu_backend().panel_gram(2, 3, 4, GramPrecision::f32);
  std::fill_n(gram->staging(), 2 * 4 * 3, 1.f);
  EXPECT_THROW(gram->add(5), Error);  // more rows than the block holds
  EXPECT_THROW(gram->block(0, 0), Error);  // before finish()
  gram->add(4);
  gram->finish();
  EXPECT_THROW(gram->add(1), Error);
  EXPECT_THROW(gram->block(1, 0), Error);
  EXPECT_EQ(gram->block(0, 1)[0], 4.f);
}

// gram_subspace against a one-sided Jacobi SVD of X: σ_i² = energy_i, the same subspace (‖V·Vᵀ − V_ref·V_refᵀ‖),
// and A = X·V_r.
TEST(GramSubspace, MatchesJacobiSvdInEveryPrecision) {
  const std::int64_t n = 3000, c = 48, r = 12;
  Eigen::VectorXd sigma = testing::geometric_spectrum(c, 50.0, 0.05);
  RowMatrixXd x64 = testing::matrix_with_spectrum(n, c, sigma, 21);
  Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> x = x64.cast<float>();
  MatrixXd xd = x.cast<double>();
  Eigen::JacobiSVD<MatrixXd> svd(xd, Eigen::ComputeThinV);
  const MatrixXd vref = svd.matrixV().leftCols(r);
  struct Case {
    GramPrecision precision;
    double energy_tol, subspace_tol;
  };
  // σ_r/σ₁ ≈ 0.5 here, so the subspace gap is wide and the errors are set by the Gram's input rounding.
  for (const Case& k : {Case{GramPrecision::f64, 1e-10, 1e-6}, Case{GramPrecision::f32, 1e-5, 1e-3},
                        Case{GramPrecision::tf32, 2e-3, 2e-2}, Case{GramPrecision::bf16, 2e-2, 1e-1}}) {
    SCOPED_TRACE(std::string(to_string(k.precision)));
    const SubspaceFactors s = cpu_backend().gram_subspace(x.data(), n, c, r, k.precision);
    ASSERT_EQ(s.rank, r);
    for (std::int64_t i = 0; i < r; ++i)
      EXPECT_NEAR(s.energy[std::size_t(i)], svd.singularValues()(i) * svd.singularValues()(i),
                  k.energy_tol * sigma(0) * sigma(0))
          << i;
    const MatrixXd v = Eigen::Map<const Eigen::MatrixXf>(s.v.data(), c, r).cast<double>();
    EXPECT_LT((v * v.transpose() - vref * vref.transpose()).norm(), k.subspace_tol);
    const MatrixXd a = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(s.a.data(), n, r)
                           .cast<double>();
    EXPECT_LT((a - xd * v).norm() / (xd * v).norm(), 1e-5);  // the projection is always f32
  }
  EXPECT_THROW(cpu_backend().gram_subspace(x.data(), n, c, c + 1, GramPrecision::f32), Error);
}

}  // namespace
}  // namespace kvlab::linalg
