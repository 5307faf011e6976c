#include "analysis/energy_rank.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace kvlab::analysis {
namespace {

TEST(EnergyRank, HandWorkedSpectrum) {
  // Energies 8, 4, 2, 1, 1 → cumulative 0.5, 0.75, 0.875, 0.9375, 1.
  const std::vector<double> w{8, 4, 2, 1, 1};
  EXPECT_EQ(rank_for_energy(w, 0.5), 1);
  EXPECT_EQ(rank_for_energy(w, 0.51), 2);
  EXPECT_EQ(rank_for_energy(w, 0.9), 4);
  EXPECT_EQ(rank_for_energy(w, 0.95), 5);
  EXPECT_EQ(rank_for_energy(w, 1.0), 5);
  const auto c = cumulative_energy(w);
  EXPECT_DOUBLE_EQ(c[2], 0.875);
}

TEST(EnergyRank, FlatSpectrumNeedsCeilOfFraction) {
  const std::vector<double> w(100, 3.0);
  EXPECT_EQ(rank_for_energy(w, 0.95), 95);
  EXPECT_EQ(rank_for_energy(w, 0.951), 96);
}

TEST(EnergyRank, ZeroSpectrumAndBadLevels) {
  EXPECT_EQ(rank_for_energy(std::vector<double>(4, 0.0), 0.9), 0);
  EXPECT_THROW(rank_for_energy(std::vector<double>{1.0}, 0.0), Error);
  EXPECT_THROW(rank_for_energy(std::vector<double>{1.0}, 1.5), Error);
}

}  // namespace
}  // namespace kvlab::analysis
