// Oracles: Eckart–Young (the optimum from Eigen's JacobiSVD) and the identity
// ‖X − X·V·Vᵀ‖² = ‖X‖² − Σ‖X·v_i‖² for orthonormal V, which makes the returned energies exact.
#include <gtest/gtest.h>

#include <Eigen/Dense>

#include "core/error.h"
#include "linalg/backend.h"
#include "linalg/test_matrices.h"

namespace kvlab::linalg {
namespace {

using Eigen::MatrixXd;
using RowF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

TEST(RandomizedSubspace, IsNearOptimalOrthonormalAndDeterministic) {
  const std::int64_t n = 2000, c = 96, r = 10;
  const Eigen::VectorXd sigma = testing::geometric_spectrum(c, 10.0, 1e-4);  // fast decay (HMT's good case)
  const RowF x = testing::matrix_with_spectrum(n, c, sigma, 31).cast<float>();
  const MatrixXd xd = x.cast<double>();
  const double optimum = std::sqrt(sigma.tail(c - r).squaredNorm());
  for (bool f64 : {true, false}) {
    SCOPED_TRACE(f64 ? "f64 small SVD" : "f32 small SVD");
    const SubspaceFactors s = cpu_backend().randomized_subspace(x.data(), n, c, r, {10, 2, 7, 0, f64});
    const MatrixXd v = Eigen::Map<const Eigen::MatrixXf>(s.v.data(), c, r).cast<double>();
    EXPECT_LT((v.transpose() * v - MatrixXd::Identity(r, r)).norm(), 1e-5);
    const double err = (xd - xd * v * v.transpose()).norm();
    EXPECT_LT(err / optimum, 1.02);  // HMT p = 10, q = 2 on this decay: within 2 % of Eckart–Young
    double kept = 0;
    for (double e : s.energy) kept += e;
    EXPECT_NEAR(std::sqrt(std::max(xd.squaredNorm() - kept, 0.0)), err, 1e-3 * xd.norm());
    const MatrixXd a = Eigen::Map<const RowF>(s.a.data(), n, r).cast<double>();
    EXPECT_LT((a - xd * v).norm() / (xd * v).norm(), 1e-5);
  }
  const auto a = cpu_backend().randomized_subspace(x.data(), n, c, r, {10, 2, 7, 0, true});
  const auto b = cpu_backend().randomized_subspace(x.data(), n, c, r, {10, 2, 7, 0, true});
  const auto other = cpu_backend().randomized_subspace(x.data(), n, c, r, {10, 0, 7, 1, true});  // another stream
  EXPECT_EQ(a.v, b.v);
  EXPECT_NE(a.v, other.v);
  EXPECT_THROW(cpu_backend().randomized_subspace(x.data(), n, c, c + 1, {}), Error);
}

TEST(RandomizedSketch, DependsOnSeedAndStreamOnly) {
  EXPECT_EQ(randomized_sketch(5, 3, 1, 2), randomized_sketch(5, 3, 1, 2));
  EXPECT_NE(randomized_sketch(5, 3, 1, 2), randomized_sketch(5, 3, 1, 3));
  EXPECT_NE(randomized_sketch(5, 3, 1, 2), randomized_sketch(5, 3, 2, 2));
}

}  // namespace
}  // namespace kvlab::linalg
