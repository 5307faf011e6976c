// Quest's decode-time page selection against a plain-loop transcription of the authors' rule
// (mit-han-lab/Quest: per page and KV head the channel max/min of the keys in fp16; per query
// head the bound Σ_c max(q_c·min_c, q_c·max_c); the current page plus the best budget − 1 earlier
// pages), and its count of what a step reads.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "core/dtype.h"
#include "harness/paged_selection.h"

namespace kvlab::harness {
namespace {

float to_fp16(float x) {
  std::uint16_t bits = 0;
  core::f32_to_16bit(core::DType::f16, std::span<const float>(&x, 1), std::span<std::uint16_t>(&bits, 1));
  float back = 0;
  core::bits16_to_f32(core::DType::f16, std::span<const std::uint16_t>(&bits, 1), std::span<float>(&back, 1));
  return back;
}

// The oracle: [H_q][S] attended cells, by loops in double over the fp16-rounded page max/min.
std::vector<std::vector<bool>> oracle(const at::Tensor& q, const at::Tensor& keys, std::int64_t P, std::int64_t budget) {
  const std::int64_t Hkv = keys.size(0), S = keys.size(1), D = keys.size(2), Hq = q.size(0), rep = Hq / Hkv;
  const std::int64_t pages = (S + P - 1) / P;
  std::vector<std::vector<bool>> out(static_cast<std::size_t>(Hq), std::vector<bool>(static_cast<std::size_t>(S), false));
  for (std::int64_t h = 0; h < Hq; ++h) {
    const std::int64_t g = h / rep;
    std::vector<double> bound(static_cast<std::size_t>(pages), 0.0);
    for (std::int64_t p = 0; p < pages; ++p)
      for (std::int64_t c = 0; c < D; ++c) {
        float mx = -INFINITY, mn = INFINITY;
        for (std::int64_t t = p * P; t < std::min(S, (p + 1) * P); ++t) {
          mx = std::max(mx, keys[g][t][c].item<float>());
          mn = std::min(mn, keys[g][t][c].item<float>());
        }
        const double qc = q[h][c].item<float>();
        bound[static_cast<std::size_t>(p)] += std::max(qc * to_fp16(mn), qc * to_fp16(mx));
      }
    std::vector<std::int64_t> order(static_cast<std::size_t>(pages - 1));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return bound[a] > bound[b]; });
    std::vector<bool> chosen(static_cast<std::size_t>(pages), false);
    chosen.back() = true;
    for (std::int64_t j = 0; j < budget - 1; ++j) chosen[static_cast<std::size_t>(order[j])] = true;
    for (std::int64_t t = 0; t < S; ++t) out[h][t] = chosen[static_cast<std::size_t>(t / P)];
  }
  return out;
}

TEST(PagedSelection, SelectsThePagesOfTheAuthorsRule) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  const auto random = [&](std::vector<std::int64_t> shape) {
    auto t = at::empty(shape, at::kFloat);
    auto* p = t.data_ptr<float>();
    for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = normal(rng);
    return t;
  };
  struct Case { std::int64_t Hq, Hkv, S, D, P, budget; };
  for (const Case k : {Case{4, 2, 37, 8, 4, 3}, Case{2, 2, 64, 16, 16, 2}, Case{8, 2, 23, 8, 2, 5}}) {
    const auto q = random({k.Hq, k.D}), keys = random({k.Hkv, k.S, k.D});
    PagedQuerySelection selection({.page_size = k.P, .page_budget = k.budget, .skip_layers = 1}, 1.0, 0.0);
    EXPECT_FALSE(selection.select(0, q, keys).defined()) << "layers below skip_layers attend everything";
    const auto mask = selection.select(1, q, keys);
    ASSERT_TRUE(mask.defined());
    ASSERT_EQ(mask.sizes(), (std::vector<std::int64_t>{k.Hq, k.S}));
    const auto expected = oracle(q, keys, k.P, k.budget);
    int mismatches = 0;
    for (std::int64_t h = 0; h < k.Hq; ++h)
      for (std::int64_t t = 0; t < k.S; ++t) mismatches += mask[h][t].item<bool>() != expected[h][t];
    EXPECT_EQ(mismatches, 0) << "Hq " << k.Hq << " S " << k.S << " P " << k.P;
    // No more pages than the budget: every cell, no mask.
    PagedQuerySelection wide({.page_size = k.P, .page_budget = (k.S + k.P - 1) / k.P, .skip_layers = 0}, 1.0, 0.0);
    EXPECT_FALSE(wide.select(0, q, keys).defined());
  }
}

TEST(PagedSelection, PagesKeptFromStepToStepSelectAsAFreshRuleDoes) {
  // Decoding appends a key per step: a selection that keeps complete pages' metadata from step to
  // step selects as a fresh one that sees the grown keys for the first time, at every length
  // (complete and partial current pages alike).
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  auto keys = at::empty({2, 40, 8}, at::kFloat), q = at::empty({4, 8}, at::kFloat);
  for (auto* t : {&keys, &q})
    for (std::int64_t i = 0; i < t->numel(); ++i) t->data_ptr<float>()[i] = normal(rng);
  const compressors::PagedSelection rule{.page_size = 4, .page_budget = 3, .skip_layers = 0};
  PagedQuerySelection kept(rule, 1.0, 0.0);
  for (std::int64_t S = 9; S <= 40; ++S) {
    const auto grown = keys.narrow(1, 0, S);
    const auto got = kept.select(0, q, grown);
    const auto fresh = PagedQuerySelection(rule, 1.0, 0.0).select(0, q, grown);
    ASSERT_EQ(got.defined(), S > 12) << "ranked once the cache spans more than 3 pages; S = " << S;
    ASSERT_EQ(fresh.defined(), S > 12) << S;
    if (S > 12) {
      EXPECT_TRUE(at::equal(got, fresh)) << "S = " << S;
    }
  }
}

TEST(PagedSelection, EqualBoundsGoToTheEarlierPage) {
  // Pages 0, 1 and 2 hold the same keys (equal bounds); page 3 is the current one. A budget of
  // 2 pages attends the current page and page 0.
  const std::int64_t P = 2;
  auto keys = at::zeros({1, 8, 2}, at::kFloat);
  for (int p = 0; p < 3; ++p) {
    keys[0][p * P][0] = 1.0f;
    keys[0][p * P + 1][1] = -1.0f;
  }
  const auto q = at::tensor({1.0f, 1.0f}).view({1, 2});
  PagedQuerySelection selection({.page_size = P, .page_budget = 2, .skip_layers = 0}, 1.0, 0.0);
  const auto mask = selection.select(0, q, keys);
  const std::vector<bool> expected = {true, true, false, false, false, false, true, true};
  for (int t = 0; t < 8; ++t) EXPECT_EQ(mask[0][t].item<bool>(), expected[t]) << t;
}

TEST(PagedSelection, CountsWhatEachStepReads) {
  // 2 layers: layer 0 skipped (all 10 cells × 2 KV heads), layer 1 ranked: 4 pages of 3 (the
  // last holds 1 token), budget 2. Query heads 0 and 1 share KV head 0; when they choose
  // different earlier pages, KV head 0 reads both once. By hand from the oracle's choice.
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  auto keys = at::empty({2, 10, 4}, at::kFloat), q = at::empty({4, 4}, at::kFloat);
  for (auto* t : {&keys, &q})
    for (std::int64_t i = 0; i < t->numel(); ++i) t->data_ptr<float>()[i] = normal(rng);
  const double cell = 5.0, meta = 16.0;
  PagedQuerySelection selection({.page_size = 3, .page_budget = 2, .skip_layers = 1}, cell, meta);
  EXPECT_EQ(selection.loaded_bytes_per_step(), 0.0) << "no step yet";
  selection.select(0, q, keys);
  selection.select(1, q, keys);
  const auto chosen = oracle(q, keys, 3, 2);
  double cells = 0;
  for (int g = 0; g < 2; ++g)
    for (int t = 0; t < 10; ++t) cells += chosen[2 * g][t] || chosen[2 * g + 1][t];
  const double expected = 10 * 2 * cell + cells * cell + 2 * 3 * meta;  // metadata of the 3 ranked pages per KV head
  EXPECT_DOUBLE_EQ(selection.loaded_bytes_per_step(), expected);
  selection.select(0, q, keys);  // a second step, the same reads: the mean stays
  selection.select(1, q, keys);
  EXPECT_DOUBLE_EQ(selection.loaded_bytes_per_step(), expected);
}

}  // namespace
}  // namespace kvlab::harness
