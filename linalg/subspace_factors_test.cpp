// canonicalize_signs: the invariants it promises, checked on factors from the CPU backend with
// columns negated by hand (what another eigensolver may return).
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>

#include "core/error.h"
#include "linalg/backend.h"
#include "linalg/test_matrices.h"

namespace kvlab::linalg {
namespace {

using RowF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

SubspaceFactors negated(SubspaceFactors f, std::int64_t column) {
  const auto r = static_cast<std::size_t>(f.rank), c = f.v.size() / r, n = f.a.size() / r, j = static_cast<std::size_t>(column);
  for (std::size_t i = 0; i < c; ++i) f.v[j * c + i] = -f.v[j * c + i];
  for (std::size_t t = 0; t < n; ++t) f.a[t * r + j] = -f.a[t * r + j];
  return f;
}

TEST(CanonicalSigns, AnySignPatternGivesTheSameFactorsBitForBit) {
  const std::int64_t n = 300, c = 40, r = 6;
  const RowF x = testing::matrix_with_spectrum(n, c, testing::geometric_spectrum(c, 10.0, 1e-2), 5).cast<float>();
  SubspaceFactors base = cpu_backend().gram_subspace(x.data(), n, c, r, GramPrecision::f64);
  const RowF product = Eigen::Map<const RowF>(base.a.data(), n, r) *
                       Eigen::Map<const Eigen::MatrixXf>(base.v.data(), c, r).transpose();
  SubspaceFactors canonical = base;
  canonical.canonicalize_signs();
  // The product A·V_rᵀ is untouched and every column's largest entry is now positive.
  const RowF after = Eigen::Map<const RowF>(canonical.a.data(), n, r) *
                     Eigen::Map<const Eigen::MatrixXf>(canonical.v.data(), c, r).transpose();
  EXPECT_EQ(product, after);
  for (std::int64_t j = 0; j < r; ++j) {
    const auto column = Eigen::Map<const Eigen::VectorXf>(canonical.v.data() + j * c, c);
    Eigen::Index largest = 0;
    column.cwiseAbs().maxCoeff(&largest);
    EXPECT_GT(column[largest], 0) << "component " << j;
  }
  // Every one of the 2^r sign patterns canonicalizes to the same bits.
  for (int pattern = 0; pattern < (1 << r); ++pattern) {
    SubspaceFactors flipped = canonical;
    for (std::int64_t j = 0; j < r; ++j)
      if (pattern >> j & 1) flipped = negated(flipped, j);
    flipped.canonicalize_signs();
    EXPECT_EQ(flipped.v, canonical.v) << "pattern " << pattern;
    EXPECT_EQ(flipped.a, canonical.a) << "pattern " << pattern;
  }
}

TEST(CanonicalSigns, ToleratesRankZeroAndRejectsRaggedFactors) {
  SubspaceFactors empty;
  EXPECT_NO_THROW(empty.canonicalize_signs());
  SubspaceFactors ragged{.rank = 2, .energy = {1, 1}, .v = {1, 2, 3}, .a = {1, 2}};
  EXPECT_THROW(ragged.canonicalize_signs(), kvlab::Error);
}

}  // namespace
}  // namespace kvlab::linalg
