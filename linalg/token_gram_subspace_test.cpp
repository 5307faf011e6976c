// token_gram_subspace (fewer rows than columns) against a one-sided Jacobi SVD of X (Eigen, not
// LAPACK): σ_i² = energy_i, the same subspace (‖V·Vᵀ − V_ref·V_refᵀ‖), orthonormal V, A = X·V_r;
// and a rank-deficient X, whose missing directions the orthonormalisation completes.
#include <gtest/gtest.h>

#include <Eigen/Dense>

#include "core/error.h"
#include "linalg/backend.h"
#include "linalg/test_matrices.h"

namespace kvlab::linalg {
namespace {

using Eigen::MatrixXd;
using RowF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

MatrixXd v_of(const SubspaceFactors& s, std::int64_t c) {
  return Eigen::Map<const Eigen::MatrixXf>(s.v.data(), c, s.rank).cast<double>();
}
MatrixXd a_of(const SubspaceFactors& s, std::int64_t n) {
  return Eigen::Map<const RowF>(s.a.data(), n, s.rank).cast<double>();
}

TEST(TokenGramSubspace, MatchesJacobiSvdInBothPrecisions) {
  const std::int64_t n = 40, c = 300, r = 12;
  const Eigen::VectorXd sigma = testing::geometric_spectrum(n, 50.0, 0.05);
  const RowF x = testing::matrix_with_spectrum(n, c, sigma, 31).cast<float>();
  const MatrixXd xd = x.cast<double>();
  Eigen::JacobiSVD<MatrixXd> svd(xd, Eigen::ComputeThinV);
  const MatrixXd vref = svd.matrixV().leftCols(r);
  // σ_r/σ₁ ≈ 0.43: a wide gap, so the errors are those of the Gram's arithmetic (f64: the f32
  // inputs are exact in f64; f32: n·ε₃₂ relative to σ₁², the tolerances of GramSubspace).
  struct Case {
    bool f64;
    double energy_tol, subspace_tol;
  };
  for (const Case& k : {Case{true, 1e-10, 1e-6}, Case{false, 1e-5, 1e-3}}) {
    SCOPED_TRACE(k.f64 ? "f64" : "f32");
    const SubspaceFactors s = token_gram_subspace(cpu_backend(), x.data(), n, c, r, k.f64);
    ASSERT_EQ(s.rank, r);
    for (std::int64_t i = 0; i < r; ++i)
      EXPECT_NEAR(s.energy[std::size_t(i)], svd.singularValues()(i) * svd.singularValues()(i),
                  k.energy_tol * sigma(0) * sigma(0))
          << i;
    const MatrixXd v = v_of(s, c);
    EXPECT_LT((v.transpose() * v - MatrixXd::Identity(r, r)).norm(), 1e-6);  // f32 storage of Q
    EXPECT_LT((v * v.transpose() - vref * vref.transpose()).norm(), k.subspace_tol);
    EXPECT_LT((a_of(s, n) - xd * v).norm() / (xd * v).norm(), 1e-5);  // the projection is f32
  }
}

TEST(TokenGramSubspace, RankDeficientRowsGiveZeroEnergyAndAnOrthonormalCompletion) {
  // X of rank 5 asked for r = 8: the last three eigenvalues of K are 0 (or rounding noise), their
  // columns come from the orthonormalisation, and A·V_rᵀ still rebuilds X exactly (to f32).
  const std::int64_t n = 20, c = 64, r = 8, k = 5;
  const Eigen::VectorXd sigma = testing::geometric_spectrum(k, 10.0, 0.5);
  const RowF x = testing::matrix_with_spectrum(n, c, sigma, 7).cast<float>();
  const MatrixXd xd = x.cast<double>();
  const SubspaceFactors s = token_gram_subspace(cpu_backend(), x.data(), n, c, r, /*f64=*/true);
  for (std::int64_t i = k; i < r; ++i) EXPECT_LT(s.energy[std::size_t(i)], 1e-10 * sigma(0) * sigma(0)) << i;
  const MatrixXd v = v_of(s, c);
  EXPECT_LT((v.transpose() * v - MatrixXd::Identity(r, r)).norm(), 1e-6);
  EXPECT_LT((a_of(s, n) * v.transpose() - xd).norm(), 1e-5 * xd.norm());
}

// A scratch carried from call to call (a larger matrix, then a smaller rank-deficient one whose
// zero columns must not inherit the larger call's values, then the larger again) gives the
// same bits as fresh buffers: the oracle is the call without scratch.
TEST(TokenGramSubspace, ReusedScratchGivesTheBitsOfFreshBuffers) {
  const RowF big = testing::matrix_with_spectrum(30, 90, testing::geometric_spectrum(30, 20.0, 0.1), 5).cast<float>();
  RowF small = testing::matrix_with_spectrum(12, 40, testing::geometric_spectrum(4, 5.0, 0.5), 9).cast<float>();
  small.bottomRows(8).setZero();  // zero token rows: K has exact zero eigenvalues, left as zero columns
  struct Call {
    const RowF* x;
    std::int64_t r;
  };
  for (bool f64 : {true, false}) {
    SCOPED_TRACE(f64 ? "f64" : "f32");
    TokenGramScratch scratch;
    for (const Call& call : {Call{&big, 10}, Call{&small, 8}, Call{&big, 10}}) {
      const auto n = call.x->rows(), c = call.x->cols();
      const SubspaceFactors fresh = token_gram_subspace(cpu_backend(), call.x->data(), n, c, call.r, f64);
      const SubspaceFactors reused = token_gram_subspace(cpu_backend(), call.x->data(), n, c, call.r, f64, &scratch);
      EXPECT_EQ(reused.energy, fresh.energy);
      EXPECT_EQ(reused.v, fresh.v);
      EXPECT_EQ(reused.a, fresh.a);
    }
  }
}

TEST(TokenGramSubspace, RefusesShapesItDoesNotCover) {
  const std::vector<float> x(6 * 10, 1.f);
  EXPECT_THROW(token_gram_subspace(cpu_backend(), x.data(), 6, 10, 7, true), Error);   // r > n
  EXPECT_THROW(token_gram_subspace(cpu_backend(), x.data(), 10, 6, 2, true), Error);   // n > c: the column side
  EXPECT_THROW(token_gram_subspace(cpu_backend(), x.data(), 6, 10, 0, false), Error);  // r < 1
}

}  // namespace
}  // namespace kvlab::linalg
