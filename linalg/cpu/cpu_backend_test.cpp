// Oracles: Eigen's own products and decompositions (a second implementation), matrices
// with spectra known by construction, and the Eckart–Young bound.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <algorithm>

#include "core/error.h"
#include "linalg/backend.h"
#include "linalg/test_matrices.h"

namespace kvlab::linalg {
namespace {

using Eigen::MatrixXd;
using Eigen::MatrixXf;
using Eigen::VectorXd;
using RowMatrixXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMatrixXd = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Backend& be() { return cpu_backend(); }

TEST(CpuGram, MatchesEigenProductAndAccumulates) {
  // Token-major 300×40 block inside a wider row (ldx = 50), as analysis reads a layer out of a group.
  RowMatrixXd wide = testing::random_orthonormal(300, 50, 7) * 3.0;
  RowMatrixXf widef = wide.cast<float>();
  MatrixXf c = MatrixXf::Constant(40, 40, 99.f);  // garbage below the diagonal must be ignored
  be().gram(widef.data(), 200, 40, 50, 1.f, 0.f, c.data(), 40);
  be().gram(widef.data() + 200 * 50, 100, 40, 50, 1.f, 1.f, c.data(), 40);  // second token block accumulates
  MatrixXd expect = wide.leftCols(40).transpose() * wide.leftCols(40);
  for (int j = 0; j < 40; ++j)
    for (int i = 0; i <= j; ++i) EXPECT_NEAR(c(i, j), expect(i, j), 1e-5 * 9) << i << "," << j;
  EXPECT_EQ(c(39, 0), 99.f);  // the lower triangle is untouched

  RowMatrixXd x = wide.leftCols(40);
  MatrixXd cd(40, 40);
  be().gram(x.data(), 300, 40, 40, 2.0, 0.0, cd.data(), 40);
  for (int j = 0; j < 40; ++j)
    for (int i = 0; i <= j; ++i) EXPECT_NEAR(cd(i, j), 2 * expect(i, j), 1e-12);
}

TEST(CpuGemm, MatchesEigenWithTransposes) {
  MatrixXd a = testing::random_orthonormal(30, 20, 1), b = testing::random_orthonormal(30, 25, 2);
  MatrixXd c = MatrixXd::Ones(20, 25);
  be().gemm(true, false, 20, 25, 30, 2.0, a.data(), 30, b.data(), 30, 0.5, c.data(), 20);
  EXPECT_LT((c - (2.0 * a.transpose() * b + 0.5 * MatrixXd::Ones(20, 25))).norm(), 1e-12);
  MatrixXf af = a.cast<float>(), bf = b.cast<float>(), cf(30, 30);
  be().gemm(false, true, 30, 30, 20, 1.f, af.data(), 30, bf.leftCols(20).eval().data(), 30, 0.f, cf.data(), 30);
  EXPECT_LT((cf.cast<double>() - a * b.leftCols(20).transpose()).norm(), 1e-5);
}

// The Gram's eigenvalues are the squared singular values that LAPACK's SVD gives for the same matrix.
TEST(CpuEig, GramEigenvaluesEqualSquaredSingularValuesOfGesdd) {
  VectorXd sigma = testing::geometric_spectrum(64, 10.0, 1e-2);
  MatrixXd a = testing::matrix_with_spectrum(500, 64, sigma, 11);
  MatrixXd a_copy = a;
  VectorXd s(64);
  be().svd_thin(a_copy.data(), 500, 64, 500, s.data(), nullptr, 0, nullptr, 0);
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(s(i), sigma(i), 1e-12 * sigma(0)) << i;  // gesdd vs the planted σ

  RowMatrixXd rows = a;  // token-major copy
  MatrixXd g(64, 64);
  be().gram(rows.data(), 500, 64, 64, 1.0, 0.0, g.data(), 64);
  VectorXd w(64);
  be().eigvalsh(g.data(), 64, 64, w.data());
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(std::sqrt(std::max(w(63 - i), 0.0)), s(i), 1e-9 * s(0)) << i;
  EXPECT_TRUE(std::is_sorted(w.data(), w.data() + 64));  // ascending, LAPACK's order
}

TEST(CpuEig, EighReconstructsAndEighTopAgrees) {
  MatrixXd q = testing::random_orthonormal(50, 50, 3);
  VectorXd lam = VectorXd::LinSpaced(50, -2.0, 47.0);
  MatrixXd s = q * lam.asDiagonal() * q.transpose();
  MatrixXd v = s;
  VectorXd w(50);
  be().eigh(v.data(), 50, 50, w.data());
  EXPECT_LT((w - lam).cwiseAbs().maxCoeff(), 1e-12 * 50);
  EXPECT_LT((v * w.asDiagonal() * v.transpose() - s).norm(), 1e-10);
  EXPECT_LT((v.transpose() * v - MatrixXd::Identity(50, 50)).norm(), 1e-12);

  MatrixXd s2 = s, top(50, 5);
  VectorXd wt(5);
  be().eigh_top(s2.data(), 50, 50, 5, wt.data(), top.data(), 50);
  EXPECT_LT((wt - lam.tail(5)).cwiseAbs().maxCoeff(), 1e-11);
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(std::abs(top.col(i).dot(v.col(45 + i))), 1.0, 1e-10);  // same vectors up to sign

  MatrixXf sf = s.cast<float>(), topf(50, 3);
  Eigen::VectorXf wf(3);
  be().eigh_top(sf.data(), 50, 50, 3, wf.data(), topf.data(), 50);
  EXPECT_NEAR(wf(2), 47.0, 1e-4);
  EXPECT_THROW(be().eigh_top(sf.data(), 50, 50, 51, wf.data(), topf.data(), 50), Error);
}

// Above n ≈ 2900 the f32 workspace LAPACKE's size query reports rounds below LAPACK's minimum
// (1 + 6n + 2n² > 2²⁴); eigh must size it itself. Oracle: a diagonal matrix's eigenpairs.
TEST(CpuEig, LargeSinglePrecisionEighSizesItsOwnWorkspace) {
  const int n = 2950;
  Eigen::MatrixXf s = Eigen::MatrixXf::Zero(n, n);
  for (int i = 0; i < n; ++i) s(i, i) = static_cast<float>(n - i);  // eigenvalues n, n−1, …, 1
  Eigen::VectorXf w(n);
  be().eigh(s.data(), n, n, w.data());
  for (int i = 0; i < n; ++i) ASSERT_FLOAT_EQ(w(i), static_cast<float>(i + 1));
  EXPECT_NEAR(std::abs(s(n - 1, 0)), 1.0f, 1e-6f);  // eigenvalue 1 belongs to the last unit vector
}

TEST(CpuSvd, ThinSvdReconstructsAndMeetsEckartYoung) {
  VectorXd sigma = testing::geometric_spectrum(40, 5.0, 1e-3);
  MatrixXd a = testing::matrix_with_spectrum(120, 40, sigma, 5);
  MatrixXf af = a.cast<float>();
  Eigen::VectorXf s(40);
  MatrixXf u(120, 40), vt(40, 40);
  be().svd_thin(af.data(), 120, 40, 120, s.data(), u.data(), 120, vt.data(), 40);
  MatrixXd rebuilt = (u * s.asDiagonal() * vt).cast<double>();
  EXPECT_LT((rebuilt - a).norm() / a.norm(), 1e-5);
  // Rank-r truncation error equals the discarded tail exactly (Eckart–Young), up to f32 rounding.
  const int r = 10;
  MatrixXd ar = (u.leftCols(r) * s.head(r).asDiagonal() * vt.topRows(r)).cast<double>();
  double tail = sigma.tail(40 - r).norm();
  EXPECT_NEAR((a - ar).norm(), tail, 1e-5 * sigma(0));
}

// Forming a Gram squares the condition number: on a spectrum falling to 1e-8 the f64 route
// recovers every σ, while the f32 Gram loses the tail (docs/performance.md §4). This is why the
// backend offers both precisions and the analysis defaults matter.
TEST(CpuGram, IllConditionedNeedsDoublePrecision) {
  const int n = 2000, c = 64;
  VectorXd sigma = testing::geometric_spectrum(c, 1.0, 1e-8);
  RowMatrixXd x = testing::matrix_with_spectrum(n, c, sigma, 21);
  MatrixXd g(c, c);
  be().gram(x.data(), n, c, c, 1.0, 0.0, g.data(), c);
  VectorXd w(c);
  be().eigvalsh(g.data(), c, c, w.data());
  // σ_i down to 1e-6·σ₁ are resolved to 1e-3 relative in f64 (error ≈ u·(σ₁/σ_i)² = 1e-4 there).
  for (int i = 0; i < c && sigma(i) >= 1e-6; ++i)
    EXPECT_NEAR(std::sqrt(std::max(w(c - 1 - i), 0.0)) / sigma(i), 1.0, 1e-3) << "sigma index " << i;

  RowMatrixXf xf = x.cast<float>();
  MatrixXf gf(c, c);
  be().gram(xf.data(), n, c, c, 1.f, 0.f, gf.data(), c);
  Eigen::VectorXf wf(c);
  be().eigvalsh(gf.data(), c, c, wf.data());
  const int i_tail = c - 8;  // σ ≈ 1e-7: far below √u_f32 ≈ 2.4e-4, so f32 cannot see it
  double recovered = std::sqrt(std::max(double(wf(c - 1 - i_tail)), 0.0));
  EXPECT_GT(std::abs(recovered / sigma(i_tail) - 1.0), 0.5) << "f32 unexpectedly resolved σ=" << sigma(i_tail);
}

// Householder QR keeps the basis orthonormal to rounding even for a nearly rank-deficient
// input (κ ≈ 1e6, where CholQR would lose orthogonality as κ²·u ≈ 1 in f32), and the basis
// spans the input's columns: Q·Qᵀ·A = A.
TEST(CpuQr, OrthonormalizeGivesOrthonormalBasisOfTheRange) {
  const int m = 400, n = 30;
  VectorXd sigma = testing::geometric_spectrum(n, 1.0, 1e-6);
  MatrixXd a = testing::matrix_with_spectrum(m, n, sigma, 31);
  MatrixXd q(m + 5, n);  // lda > m: the padding rows must stay untouched
  q.setConstant(7.0);
  q.topRows(m) = a;
  be().orthonormalize(q.data(), m, n, m + 5);
  MatrixXd qm = q.topRows(m);
  EXPECT_LT((qm.transpose() * qm - MatrixXd::Identity(n, n)).norm(), 1e-13);
  EXPECT_LT((qm * (qm.transpose() * a) - a).norm(), 1e-13 * a.norm());
  EXPECT_EQ(q(m, 0), 7.0);

  MatrixXf af = a.cast<float>();
  be().orthonormalize(af.data(), m, n, m);
  EXPECT_LT((af.transpose() * af - Eigen::MatrixXf::Identity(n, n)).norm(), 1e-5f);
  EXPECT_THROW(be().orthonormalize(af.data(), n - 1, n, m), kvlab::Error);  // m < n
}

}  // namespace
}  // namespace kvlab::linalg
