// single_query_attention against attention written out in torch ops (scores, mask, softmax,
// products), on GQA shapes with every mask the decoder passes: causal/window, kept cells, a
// per-query-head selection, Gemma-2's soft-cap, and strided (capacity-backed) caches.
#include "harness/model/single_query_attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <optional>

namespace kvlab::harness {
namespace {

// softmax(mask(cap(q·kᵀ·scale)))·v per query head, head h reading KV head h / rep.
at::Tensor oracle(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale, std::optional<double> cap,
                  const at::Tensor& mask /* [H_q, Sk] bool */) {
  const std::int64_t rep = q.size(0) / k.size(0);
  const at::Tensor kq = k.repeat_interleave(rep, 0), vq = v.repeat_interleave(rep, 0);  // [H_q, Sk, D]
  at::Tensor s = at::bmm(kq.to(at::kDouble), q.to(at::kDouble).unsqueeze(2)).squeeze(2) * scale;  // [H_q, Sk]
  if (cap) s = (s / *cap).tanh() * *cap;
  s = s.masked_fill(mask.logical_not(), -INFINITY);
  const at::Tensor p = at::softmax(s, -1);
  return at::bmm(p.unsqueeze(1), vq.to(at::kDouble)).squeeze(1).reshape({1, -1}).to(at::kFloat);
}

TEST(SingleQueryAttention, MatchesTorchOpsUnderEveryMask) {
  at::manual_seed(3);
  const std::int64_t Hkv = 2, rep = 3, Hq = Hkv * rep, D = 8, Sk = 37;
  // A capacity-backed cache: [H_kv, 50, D] narrowed to Sk tokens, so the head stride is not Sk·D.
  const at::Tensor k = at::randn({Hkv, 50, D}).narrow(1, 0, Sk), v = at::randn({Hkv, 50, D}).narrow(1, 0, Sk);
  const at::Tensor q = at::randn({Hq, D}) * 2;
  const at::Tensor allowed = at::arange(Sk) > 5;                  // a window: the first 6 keys out of reach
  at::Tensor keep = at::rand({Hkv, Sk}) > 0.3;                    // evicted cells
  at::Tensor query_keep = at::rand({Hq, Sk}) > 0.4;               // a per-query-head selection
  keep.index_put_({at::indexing::Slice(), Sk - 1}, true);         // every head keeps at least its last key
  query_keep.index_put_({at::indexing::Slice(), Sk - 1}, true);
  const double scale = 1 / std::sqrt(static_cast<double>(D));
  for (const std::optional<double> cap : {std::optional<double>(), std::optional<double>(2.0)})
    for (const bool with_keep : {false, true})
      for (const bool with_query_keep : {false, true}) {
        at::Tensor mask = allowed.unsqueeze(0).expand({Hq, Sk});
        if (with_keep) mask = mask & keep.repeat_interleave(rep, 0);
        if (with_query_keep) mask = mask & query_keep;
        const at::Tensor got = single_query_attention(q, k, v, scale, cap, allowed, with_keep ? keep : at::Tensor(),
                                                      with_query_keep ? query_keep : at::Tensor());
        const at::Tensor want = oracle(q, k, v, scale, cap, mask);
        // f32 scores and sums over ≤ 37 terms of O(1) values: a few ulps of 1, far below 1e-5.
        EXPECT_LT((got - want).abs().max().item<double>(), 1e-5)
            << "cap " << cap.has_value() << " keep " << with_keep << " query_keep " << with_query_keep;
      }
}

TEST(SingleQueryAttention, RefusesOtherDtypesAndShapes) {
  const at::Tensor k = at::randn({2, 4, 8}), q = at::randn({4, 8}), all = at::ones({4}, at::kBool);
  EXPECT_FALSE(single_query_attention_applies(q.to(at::kBFloat16), k));
  EXPECT_THROW(single_query_attention(at::randn({3, 8}), k, k, 1.0, {}, all, {}, {}), std::exception);  // 3 % 2 heads
  EXPECT_THROW(single_query_attention(q, k, k, 1.0, {}, at::ones({5}, at::kBool), {}, {}), std::exception);
}

}  // namespace
}  // namespace kvlab::harness
