// window_attention_sums_where_held (torch, on the model's device) against the compressors'
// host scorer (compressors::window_attention_sums: per-row RoPE in core::Rope, an f32 gemm,
// double softmax), an independent implementation of the same quantity. Both round the same f32
// products, so they agree to 1e-5 absolute on sums of ≤ W probabilities, and the causal mask
// and the positions (gapped, as after a decode step past evicted tokens) must match exactly
// for that to hold — under a sliding window too (a key j seen from i when i − w < j ≤ i, in
// positions: with gaps of 1–3 a window of 7 holds 2–7 keys).
#include "harness/window_scores.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

#include "compressors/methods/eviction.h"
#include "core/error_of.h"
#include "linalg/backend.h"

namespace kvlab::harness {
namespace {

using compressors::CacheShape;
using core::FloatTensor;

struct Case {
  compressors::InMemoryCache cache;
  at::Tensor keys, queries, positions;  // the same data as torch sees it: [H_kv, T, D], [W, H_q, D], [T]
};

Case random_case(core::Rope rope, at::ScalarType key_dtype, int window = 0) {
  const CacheShape shape{1, 2, 6, 16, 80, 10, 0};  // L, H_kv, H_q (n_rep 3), D, T, W
  std::mt19937_64 rng(5);
  std::normal_distribution<float> normal;
  FloatTensor key({shape.tokens, shape.kv_heads, shape.head_dim}), value(key.shape),
      query({shape.query_window, shape.q_heads, shape.head_dim});
  for (auto* t : {&key, &value, &query})
    for (auto& x : t->data) x = 2 * normal(rng);  // logits of a few units: peaked but not one-hot
  std::vector<std::int64_t> positions;
  for (std::int64_t t = 0, p = 3; t < shape.tokens; ++t) positions.push_back(p += 1 + static_cast<std::int64_t>(rng() % 3));
  // Torch sees the keys in the model's dtype: round them first, so both sides score the same values.
  at::Tensor keys = at::from_blob(key.data.data(), {shape.tokens, shape.kv_heads, shape.head_dim}, at::kFloat)
                        .to(key_dtype)
                        .transpose(0, 1)
                        .contiguous();
  at::from_blob(key.data.data(), {shape.tokens, shape.kv_heads, shape.head_dim}, at::kFloat)
      .copy_(keys.transpose(0, 1));
  at::Tensor queries = at::from_blob(query.data.data(), {shape.query_window, shape.q_heads, shape.head_dim}, at::kFloat).clone();
  at::Tensor pos = at::tensor(at::ArrayRef<std::int64_t>(positions), at::kLong);
  compressors::InMemoryCache cache(shape, {key}, {value}, {query}, positions, std::move(rope));
  cache.with_windows({window});
  return {std::move(cache), keys, queries, pos};
}

void expect_host_scores(const Case& c, const at::Device& device, double tolerance) {
  for (int rows : {1, 4, 10}) {
    SCOPED_TRACE(rows);
    const auto want = compressors::window_attention_sums(c.cache, 0, rows, linalg::cpu_backend());
    const auto got = window_attention_sums_where_held(c.keys.to(device), c.queries, c.positions.to(device),
                                                      c.cache.rope(0), c.cache.window(0), rows);
    ASSERT_EQ(got.shape, want.shape);
    double worst = 0;
    for (std::size_t i = 0; i < want.data.size(); ++i) worst = std::max(worst, double{std::abs(got.data[i] - want.data[i])});
    EXPECT_LT(worst, tolerance);
  }
}

TEST(WindowScores, TorchOnTheModelsTensorsScoresAsTheHostDoes) {
  expect_host_scores(random_case(core::Rope::standard(16, 10000.0), at::kFloat), at::kCPU, 1e-5);
  expect_host_scores(random_case(core::Rope::identity(), at::kFloat), at::kCPU, 1e-5);
  expect_host_scores(random_case(core::Rope::standard(16, 500000.0), at::kBFloat16), at::kCPU, 1e-5);
  // Partial rotary (Phi-4-mini's 0.75): 12 of the 16 channels rotate, the last 4 pass through.
  const auto partial = core::Rope::from_config(R"({"head_dim": 16, "rope_theta": 10000.0, "partial_rotary_factor": 0.75})", 0);
  ASSERT_EQ(partial.rotary_dim(), 12);
  expect_host_scores(random_case(partial, at::kFloat), at::kCPU, 1e-5);
  // Sliding windows of 1 (each query sees only itself) and 7 positions.
  expect_host_scores(random_case(core::Rope::standard(16, 10000.0), at::kFloat, 1), at::kCPU, 1e-5);
  expect_host_scores(random_case(core::Rope::standard(16, 10000.0), at::kFloat, 7), at::kCPU, 1e-5);
}

// cuBLAS may sum the logits' products in another order: 1e-4 still catches a wrong mask,
// rotation or head mapping (errors of order 0.1). Skips without a device.
TEST(WindowScores, OnCudaTheyScoreAsTheHostDoes) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  expect_host_scores(random_case(core::Rope::standard(16, 10000.0), at::kFloat), at::Device(at::kCUDA), 1e-4);
  expect_host_scores(random_case(core::Rope::standard(16, 10000.0), at::kBFloat16), at::Device(at::kCUDA), 1e-4);
  expect_host_scores(random_case(core::Rope::standard(16, 10000.0), at::kFloat, 7), at::Device(at::kCUDA), 1e-4);
}

TEST(WindowScores, BadShapesAreErrors) {
  const auto c = random_case(core::Rope::standard(16, 10000.0), at::kFloat);
  EXPECT_THAT(core::error_of([&] { window_attention_sums_where_held(c.keys, c.queries, c.positions, c.cache.rope(), 0, 11); }),
              ::testing::HasSubstr("11 window queries asked for, W = 10"));
  EXPECT_THAT(core::error_of([&] {
                window_attention_sums_where_held(c.keys, c.queries, c.positions.narrow(0, 1, 79), c.cache.rope(), 0, 2);
              }),
              ::testing::HasSubstr("79 positions"));
  EXPECT_THAT(core::error_of([&] {
                window_attention_sums_where_held(c.keys, c.queries, c.positions, core::Rope::standard(8, 10000.0), 0, 2);
              }),
              ::testing::HasSubstr("RoPE: 4 frequencies for head_dim 16"));
  EXPECT_THAT(core::error_of([&] { window_attention_sums_where_held(c.keys, c.queries, c.positions, c.cache.rope(), -1, 2); }),
              ::testing::HasSubstr("sliding window -1 must be ≥ 0"));
}

}  // namespace
}  // namespace kvlab::harness
