// MoeMlp alone against the sparse MoE written out per token in doubles (docs/models.md §7.3):
// p = softmax(W_r x), the k largest, weights p_e (over their sum when normalised),
// y = Σ weight · W_down(act(W_gate x) ⊙ W_up x). f32 against double: 1e-5 on outputs O(0.1–1).
#include "harness/model/moe_mlp.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace kvlab::harness {
namespace {

struct Oracle {
  std::vector<std::vector<double>> out;      // [S][d]
  std::vector<std::vector<double>> weights;  // [S][k], largest probability first
  double min_margin = INFINITY;              // k-th vs (k+1)-th probability, over tokens
};

double at2(const at::Tensor& t, std::int64_t i, std::int64_t j) { return t[i][j].item<double>(); }

Oracle oracle(const at::Tensor& x, const at::Tensor& router, const std::vector<MoeExpert>& experts, int k, bool normalise) {
  const std::int64_t S = x.size(0), d = x.size(1), E = router.size(0);
  Oracle o;
  for (std::int64_t t = 0; t < S; ++t) {
    std::vector<double> p(E);
    for (std::int64_t e = 0; e < E; ++e)
      for (std::int64_t i = 0; i < d; ++i) p[e] += at2(router, e, i) * at2(x, t, i);
    const double top = *std::max_element(p.begin(), p.end());
    double total = 0;
    for (double& v : p) total += (v = std::exp(v - top));
    for (double& v : p) v /= total;
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    if (k < E) o.min_margin = std::min(o.min_margin, p[order[k - 1]] - p[order[k]]);
    double chosen = 0;
    for (int i = 0; i < k; ++i) chosen += p[order[i]];
    std::vector<double> y(d, 0.0), w;
    for (int i = 0; i < k; ++i) {
      const MoeExpert& ex = experts[order[i]];
      const double weight = normalise ? p[order[i]] / chosen : p[order[i]];
      w.push_back(weight);
      const std::int64_t I = ex.gate.size(0);
      std::vector<double> h(I);
      for (std::int64_t j = 0; j < I; ++j) {
        double g = 0, u = 0;
        for (std::int64_t c = 0; c < d; ++c) {
          g += at2(ex.gate, j, c) * at2(x, t, c);
          u += at2(ex.up, j, c) * at2(x, t, c);
        }
        h[j] = g / (1 + std::exp(-g)) * u;  // SiLU
      }
      for (std::int64_t c = 0; c < d; ++c) {
        double acc = 0;
        for (std::int64_t j = 0; j < I; ++j) acc += at2(ex.down, c, j) * h[j];
        y[c] += weight * acc;
      }
    }
    o.out.push_back(y);
    o.weights.push_back(w);
  }
  return o;
}

TEST(MoeMlp, MatchesThePerTokenDefinitionForEveryTopKWithAndWithoutRenormalisation) {
  at::manual_seed(5);
  const std::int64_t S = 9, d = 12, E = 5, I = 7;
  const at::Tensor x = at::randn({S, d});
  const at::Tensor router = at::randn({E, d}) / std::sqrt(double(d)) * 3;  // logits O(3): unequal experts
  std::vector<MoeExpert> experts;
  for (int e = 0; e < E; ++e)
    experts.push_back({at::randn({I, d}) / std::sqrt(double(d)), at::randn({I, d}) / std::sqrt(double(d)),
                       at::randn({d, I}) / std::sqrt(double(I))});
  for (int k = 1; k <= E; ++k)
    for (bool normalise : {true, false}) {
      const MoeMlp moe(router, experts, k, normalise, Activation::silu);
      const auto expected = oracle(x, router, experts, k, normalise);
      ASSERT_GT(expected.min_margin, 1e-4) << "k " << k << ": a near tie; f32 could pick another expert";
      const at::Tensor y = moe.forward(x);
      const MoeRouting r = moe.route(x);
      ASSERT_EQ(r.weights.sizes(), (at::IntArrayRef{S, k}));
      for (std::int64_t t = 0; t < S; ++t) {
        for (std::int64_t c = 0; c < d; ++c) EXPECT_NEAR(y[t][c].item<double>(), expected.out[t][c], 1e-5) << k;
        for (int i = 0; i < k; ++i) EXPECT_NEAR(r.weights[t][i].item<double>(), expected.weights[t][i], 1e-6) << k;
        // Renormalised weights sum to 1; top-k = E then is the full softmax mixture.
        if (normalise) {
          EXPECT_NEAR(r.weights[t].sum().item<double>(), 1.0, 1e-6);
        }
      }
    }
}

TEST(MoeMlp, RoutingWeightsAreCastToTheActivationDtype) {
  // transformers 4.x: routing_weights.to(hidden_states.dtype) after the f32 softmax, so a bf16
  // run multiplies each expert's bf16 output by a bf16 weight.
  at::manual_seed(6);
  const at::Tensor x = at::randn({4, 8}).to(at::kBFloat16);
  std::vector<MoeExpert> experts;
  for (int e = 0; e < 3; ++e)
    experts.push_back({at::randn({5, 8}).to(at::kBFloat16), at::randn({5, 8}).to(at::kBFloat16),
                       at::randn({8, 5}).to(at::kBFloat16)});
  const MoeMlp moe(at::randn({3, 8}).to(at::kBFloat16), experts, 2, false, Activation::silu);
  EXPECT_EQ(moe.route(x).weights.scalar_type(), at::kBFloat16);
  EXPECT_EQ(moe.forward(x).scalar_type(), at::kBFloat16);
}

TEST(MoeMlp, RefusesATopKOutsideTheExperts) {
  std::vector<MoeExpert> experts(2, MoeExpert{at::zeros({3, 4}), at::zeros({3, 4}), at::zeros({4, 3})});
  EXPECT_THROW(MoeMlp(at::zeros({2, 4}), experts, 3, true, Activation::silu), Error);
  EXPECT_THROW(MoeMlp(at::zeros({2, 4}), experts, 0, true, Activation::silu), Error);
  EXPECT_THROW(MoeMlp(at::zeros({3, 4}), experts, 1, true, Activation::silu), Error);  // router of 3 experts
}

}  // namespace
}  // namespace kvlab::harness
