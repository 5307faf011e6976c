// RoPE against closed forms: the llama3 band split of docs/models.md §2.3, the rotation
// as a norm-preserving map whose inverse undoes it, and the defining property that a rotated
// query·key product depends only on the position difference.
#include "core/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>

#include "core/error.h"

namespace kvlab::core {
namespace {

const char* kLlama31 = R"({"hidden_size": 4096, "num_attention_heads": 32, "rope_theta": 500000.0,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"}})";

TEST(Rope, Llama31BandsSplit29Unchanged6Blended29Divided) {
  const auto scaled = Rope::from_config(kLlama31, 0);
  const auto plain = Rope::standard(128, 500000.0);
  ASSERT_EQ(scaled.inv_freq().size(), 64u);
  int unchanged = 0, divided = 0, blended = 0;
  for (std::size_t i = 0; i < 64; ++i) {
    const double a = scaled.inv_freq()[i], b = plain.inv_freq()[i];
    if (std::abs(a - b) <= 1e-7 * b) ++unchanged;
    else if (std::abs(a - b / 8) <= 1e-7 * b) ++divided;
    else ++blended;
  }
  EXPECT_EQ(unchanged, 29);
  EXPECT_EQ(blended, 6);
  EXPECT_EQ(divided, 29);
  EXPECT_FLOAT_EQ(scaled.inv_freq()[0], 1.0f);
  EXPECT_NEAR(scaled.inv_freq()[63], 3.0689e-7, 1e-10);
}

TEST(Rope, ConfigLeniency) {
  // "type" instead of "rope_type", rope_theta default 10000, head_dim from hidden/heads.
  const auto a = Rope::from_config(R"({"hidden_size": 64, "num_attention_heads": 4,
      "rope_scaling": {"type": "linear", "factor": 2.0}})", 0);
  ASSERT_EQ(a.head_dim(), 16);
  EXPECT_FLOAT_EQ(a.inv_freq()[1], static_cast<float>(std::pow(10000.0, -2.0 / 16) / 2));
  // transformers v5: rope_parameters carries the theta.
  const auto b = Rope::from_config(R"({"head_dim": 8, "rope_parameters": {"rope_type": "default", "rope_theta": 100.0}})", 0);
  EXPECT_FLOAT_EQ(b.inv_freq()[1], static_cast<float>(std::pow(100.0, -2.0 / 8)));
  EXPECT_TRUE(Rope::from_config(R"({"rope_type": "none"})", 16).is_identity());
  EXPECT_THROW(Rope::from_config(R"({"head_dim": 8, "rope_scaling": {"rope_type": "yarn", "factor": 4}})", 0), Error);
  EXPECT_THROW(Rope::from_config("not json", 8), Error);
}

TEST(Rope, RotationPreservesNormsInvertsAndDependsOnPositionDifference) {
  const auto rope = Rope::standard(16, 10000.0);
  std::mt19937 rng(3);
  std::normal_distribution<float> n;
  std::vector<float> q(16), k(16);
  for (auto& x : q) x = n(rng);
  for (auto& x : k) x = n(rng);
  auto rotated_dot = [&](std::int64_t pq, std::int64_t pk) {
    auto a = q, b = k;
    const std::vector<std::int64_t> p1{pq}, p2{pk};
    rope.apply(a, 1, 1, p1);
    rope.apply(b, 1, 1, p2);
    double dot = 0;
    for (int i = 0; i < 16; ++i) dot += double{a[i]} * b[i];
    return dot;
  };
  EXPECT_NEAR(rotated_dot(10, 3), rotated_dot(107, 100), 1e-4);   // only p_q − p_k matters
  EXPECT_NEAR(rotated_dot(5, 5), rotated_dot(0, 0), 1e-5);        // same position: the plain product
  auto x = q;
  const std::vector<std::int64_t> pos{1234};
  rope.apply(x, 1, 1, pos);
  double n0 = 0, n1 = 0;
  for (int i = 0; i < 16; ++i) n0 += double{q[i]} * q[i], n1 += double{x[i]} * x[i];
  EXPECT_NEAR(n0, n1, 1e-4 * n0);
  // Pairing is rotate_half: dimension 0 rotates with dimension 8 at inv_freq[0] = 1.
  std::vector<float> e(16, 0.0f);
  e[0] = 1;
  const std::vector<std::int64_t> one{1};
  rope.apply(e, 1, 1, one);
  EXPECT_NEAR(e[0], std::cos(1.0), 1e-6);
  EXPECT_NEAR(e[8], std::sin(1.0), 1e-6);
  rope.apply(x, 1, 1, pos, /*inverse=*/true);
  for (int i = 0; i < 16; ++i) EXPECT_NEAR(x[i], q[i], 1e-4);
}

}  // namespace
}  // namespace kvlab::core
