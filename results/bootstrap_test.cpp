#include "results/bootstrap.h"

#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"

namespace kvlab::results {
namespace {

TEST(Bootstrap, EqualDifferencesGiveAPointInterval) {
  // Every resample of n copies of c has mean c: the CI is [c, c] whatever the seed.
  const std::vector<double> d(50, -0.25);
  for (std::uint64_t seed : {0u, 1u, 99u}) {
    const auto r = bootstrap_mean(d, seed);
    EXPECT_EQ(r.mean, -0.25);
    EXPECT_EQ(r.ci.low, -0.25);
    EXPECT_EQ(r.ci.high, -0.25);
    EXPECT_EQ(r.n, 50u);
  }
}

TEST(Bootstrap, IsDeterministicForASeedAndBracketsTheMean) {
  std::vector<double> d;
  for (int i = 0; i < 50; ++i) d.push_back(i % 5 == 0 ? 1.0 : 0.0);  // mean 0.2
  const auto a = bootstrap_mean(d, 7), b = bootstrap_mean(d, 7), c = bootstrap_mean(d, 8);
  EXPECT_EQ(a.ci.low, b.ci.low);
  EXPECT_EQ(a.ci.high, b.ci.high);
  EXPECT_TRUE(a.ci.low != c.ci.low || a.ci.high != c.ci.high);
  EXPECT_DOUBLE_EQ(a.mean, 0.2);
  EXPECT_LT(a.ci.low, 0.2);
  EXPECT_GT(a.ci.high, 0.2);
  // The normal approximation: ±1.96·√(p(1−p)/n) = ±0.111; the percentile CI is close to it.
  EXPECT_NEAR(a.ci.high - a.ci.low, 2 * 0.111, 0.04);
  // Resampled means of 0/1 values are multiples of 1/50.
  EXPECT_GE(a.ci.low, 0.0);
  EXPECT_LE(a.ci.high, 0.4);
}

TEST(Bootstrap, RejectsEmptyInputAndBadSettings) {
  EXPECT_THROW(bootstrap_mean({}, 0), Error);
  const std::vector<double> d{1, 2};
  EXPECT_THROW(bootstrap_mean(d, 0, 0), Error);
  EXPECT_THROW(bootstrap_mean(d, 0, 10, 1.5), Error);
}

}  // namespace
}  // namespace kvlab::results
