// mean_kl and agreement against values worked out by hand. The logits are chosen so that the
// mistakes these figures invite give other numbers: KL in the other direction, a sum for the
// mean, agreement over the method's length or over the longer of the two.
#include "harness/eval_metrics.h"

#include <gtest/gtest.h>

#include <cmath>

namespace kvlab::harness {
namespace {

// [n, 2] f64 logits from their rows.
at::Tensor logits(std::vector<double> rows) {
  const auto n = static_cast<std::int64_t>(rows.size() / 2);
  return at::tensor(rows, at::kDouble).reshape({n, 2});
}

// One step. Base logits (0, 0): p = (1/2, 1/2); method logits (ln 9, 0): q = (9/10, 1/10).
//   KL(p‖q) = ½ ln(½ / (9/10)) + ½ ln(½ / (1/10)) = ½ ln(5/9 · 5) = ln(5/3) ≈ 0.5108
//   KL(q‖p) = (9/10) ln(9/5) + (1/10) ln(1/5)                        ≈ 0.3681 (the wrong direction)
TEST(EvalMetrics, KlWeighsByTheBaselinesDistribution) {
  const double kl = mean_kl(logits({0, 0}), logits({std::log(9.0), 0}));
  EXPECT_NEAR(kl, std::log(5.0 / 3.0), 1e-12);
  // Swapping the arguments gives the reverse direction, which this pair tells apart.
  EXPECT_NEAR(mean_kl(logits({std::log(9.0), 0}), logits({0, 0})), 0.9 * std::log(1.8) - 0.1 * std::log(5.0), 1e-12);
}

// Two steps with different KLs: step 0 as above, ln(5/3) ≈ 0.5108; step 1 base (ln 3, 0):
// p = (3/4, 1/4), method (0, 0): q = (1/2, 1/2),
//   KL(p‖q) = ¾ ln(3/2) + ¼ ln(1/2) = ¾ ln 3 − ln 2 ≈ 0.1308.
// Mean (ln(5/3) + ¾ ln 3 − ln 2) / 2 ≈ 0.3208; their sum would be ≈ 0.6416, the mean of the
// reverse directions (0.3681 + ½ ln(4/3)) / 2 ≈ 0.2560.
TEST(EvalMetrics, KlIsTheMeanOverSteps) {
  const double kl = mean_kl(logits({0, 0, std::log(3.0), 0}), logits({std::log(9.0), 0, 0, 0}));
  EXPECT_NEAR(kl, (std::log(5.0 / 3.0) + 0.75 * std::log(3.0) - std::log(2.0)) / 2, 1e-12);
}

// No steps (an empty baseline answer): 0, not the NaN of an empty mean.
TEST(EvalMetrics, KlOfNoStepsIsZero) {
  EXPECT_EQ(mean_kl(at::zeros({0, 5}), at::zeros({0, 5})), 0.0);
}

TEST(EvalMetrics, AgreementComparesPositionByPosition) {
  const std::vector<std::int32_t> base = {5, 6, 7, 8};
  EXPECT_EQ(agreement(base, {5, 6, 7, 8}), 1.0);
  EXPECT_EQ(agreement(base, {5, 9, 7, 8}), 0.75);  // 3 of 4 positions
  EXPECT_EQ(agreement(base, {6, 7, 8, 5}), 0.0);   // the same tokens, each one place off
}

// Positions the method did not reach count as wrong: 2 of the baseline's 4 (over the method's
// own length it would be 2/2 = 1).
TEST(EvalMetrics, AgreementOfAShorterAnswer) {
  EXPECT_EQ(agreement({5, 6, 7, 8}, {5, 6}), 0.5);
  EXPECT_EQ(agreement({5, 6}, {}), 0.0);
}

// Tokens beyond the baseline's end are ignored: 2 of the baseline's 2 (over the longer answer
// it would be 2/4), and 1 of 2 where one of them differs.
TEST(EvalMetrics, AgreementOfALongerAnswer) {
  EXPECT_EQ(agreement({5, 6}, {5, 6, 7, 8}), 1.0);
  EXPECT_EQ(agreement({5, 6}, {5, 9, 7}), 0.5);
}

TEST(EvalMetrics, AgreementWithAnEmptyBaselineIsOne) {
  EXPECT_EQ(agreement({}, {}), 1.0);
  EXPECT_EQ(agreement({}, {5, 6}), 1.0);
}

}  // namespace
}  // namespace kvlab::harness
