// MiniCache's merge of one KV head's rows of a layer pair (docs/methods/minicache.md §1–3),
// written once for every device: `Ops` is compressors/host_ops.h's HostOps in the host stage
// (minicache.cpp) and the harness's TorchOps on the model's own tensors (harness/torch_ops.h,
// harness/minicache_on_device.cpp). Inputs are the head's rows in double: x1 of the earlier layer,
// x2 of the later, [n, D] each (keys pre-RoPE, as xKV's re-implementation merges them).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace kvlab::compressors {

// Norms and angle of every row pair of a head.
template <class Ops>
struct MinicacheAngles {
  typename Ops::Tensor norm1, norm2;  // [n] ‖x1‖, ‖x2‖
  typename Ops::Tensor omega;         // [n] Ω ∈ [0, π]; 0 where a row is zero
  typename Ops::Mask valid;           // [n] neither row is zero: Ω is defined and takes part in the threshold
};

template <class Ops>
MinicacheAngles<Ops> minicache_angles(const typename Ops::Tensor& x1, const typename Ops::Tensor& x2) {
  using T = typename Ops::Tensor;
  MinicacheAngles<Ops> g;
  g.norm1 = Ops::row_norm(x1);
  g.norm2 = Ops::row_norm(x2);
  g.valid = Ops::both(Ops::ne(g.norm1, 0), Ops::ne(g.norm2, 0));  // xKV divides by a zero norm (NaN)
  const T u1 = Ops::div_rows(x1, g.norm1), u2 = Ops::div_rows(x2, g.norm2);
  // Ω = 2·atan2(‖u1 − u2‖, ‖u1 + u2‖) is arccos(u1·u2) (the paper, xKV) at full precision near 0
  // and π, where arccos loses half the digits; identical rows give Ω = 0 exactly.
  const T omega = 2.0 * Ops::atan2(Ops::row_norm(u1 - u2), Ops::row_norm(u1 + u2));
  g.omega = Ops::where(g.valid, omega, 0.0);
  return g;
}

// The retention threshold of a scope group (every head of the pair, or one): min Ω + γ·(max Ω −
// min Ω) over its valid rows; 0 when it has none (then every row is a zero row, merged anyway).
// A scalar tensor.
template <class Ops>
typename Ops::Tensor minicache_threshold(const std::vector<const MinicacheAngles<Ops>*>& group, double gamma) {
  typename Ops::Tensor lo = Ops::masked_min(group[0]->omega, group[0]->valid);
  typename Ops::Tensor hi = Ops::masked_max(group[0]->omega, group[0]->valid);
  for (std::size_t i = 1; i < group.size(); ++i) {
    lo = Ops::min(lo, Ops::masked_min(group[i]->omega, group[i]->valid));
    hi = Ops::max(hi, Ops::masked_max(group[i]->omega, group[i]->valid));
  }
  return Ops::lerp_finite(lo, hi, gamma, 0.0);
}

// [n] the rows kept unmerged (both originals stored): valid, and Ω above the threshold (retain
// = above, the abstract) or at most it (below, xKV's and CommonKV's code). Zero rows always merge:
// e·0 restores them exactly.
template <class Ops>
typename Ops::Mask minicache_retained(const MinicacheAngles<Ops>& g, const typename Ops::Tensor& threshold,
                                      bool retain_above) {
  return Ops::both(g.valid, retain_above ? Ops::gt(g.omega, threshold) : Ops::le(g.omega, threshold));
}

// [n] the rows kept unmerged by KVCache-Factory's rule (retain = top; Zefan-Cai/KVCache-Factory
// pyramidkv/minicache.py, select_minicache_retention_indices): per KV head the k = ⌈γ·T⌉ rows of
// largest Ω (that file ranks Ω/π, the same order), T the head's tokens. Where Ω ties, the earlier
// token is kept (torch.topk leaves the order of ties unspecified). Zero rows take no part and
// always merge, as above; k is capped at the valid rows. ⌈γ·T⌉ is taken of the double product, as
// Python's math.ceil(seq_len * ratio) does (γ = 0.07, T = 100 gives 8).
template <class Ops>
typename Ops::Mask minicache_top_retained(const MinicacheAngles<Ops>& g, double gamma, std::int64_t tokens) {
  const auto k = static_cast<std::int64_t>(std::ceil(gamma * static_cast<double>(tokens)));
  return Ops::top_k(g.omega, g.valid, k);
}

// A layer pair's retention: per KV head the rows kept unmerged ([n] masks) under `retain` —
// below / above the Ω threshold of the scope's group (`per_head`: each head alone; else every head
// of the pair together), or top, ranked per head — and the thresholds that decided it (one per
// group; none for top). `tokens` is T, the head's rows, for top's ⌈γ·T⌉.
template <class Ops>
struct MinicacheRetention {
  std::vector<typename Ops::Mask> keep;
  std::vector<typename Ops::Tensor> thresholds;
};
template <class Ops>
MinicacheRetention<Ops> minicache_retention(const std::vector<MinicacheAngles<Ops>>& heads, const std::string& retain,
                                            bool per_head, double gamma, std::int64_t tokens) {
  MinicacheRetention<Ops> r;
  if (retain == "top") {
    for (const auto& g : heads) r.keep.push_back(minicache_top_retained(g, gamma, tokens));
    return r;
  }
  std::vector<const MinicacheAngles<Ops>*> all;
  for (const auto& g : heads) {
    if (per_head) r.thresholds.push_back(minicache_threshold<Ops>({&g}, gamma));
    all.push_back(&g);
  }
  if (!per_head) r.thresholds.push_back(minicache_threshold<Ops>(all, gamma));
  for (std::size_t h = 0; h < heads.size(); ++h)
    r.keep.push_back(minicache_retained(heads[h], r.thresholds[per_head ? h : 0], retain == "above"));
  return r;
}

// [n, D] the merged unit direction e of every row pair, SLERP with weight t on x2 (so e·‖x1‖ and
// e·‖x2‖ restore the rows), with the fallbacks of docs/methods/minicache.md §3.
template <class Ops>
typename Ops::Tensor minicache_directions(const typename Ops::Tensor& x1, const typename Ops::Tensor& x2,
                                          const MinicacheAngles<Ops>& g, double t) {
  using T = typename Ops::Tensor;
  const T u1 = Ops::div_rows(x1, g.norm1), u2 = Ops::div_rows(x2, g.norm2);
  // Ω ≈ 0 (or π): SLERP's 0/0. xKV falls back to (1−t)·x1 + t·x2 on the raw rows and multiplies
  // by the norm again (the row comes back scaled by ‖x‖); interpolating the unit directions and
  // normalising below is SLERP's limit.
  const T s = Ops::sin(g.omega);
  const auto small = Ops::lt(s, 1e-7);
  const T w1 = Ops::where(small, 1 - t, Ops::sin((1 - t) * g.omega) / s);
  const T w2 = Ops::where(small, t, Ops::sin(t * g.omega) / s);
  const T mix = Ops::mul_rows(u1, w1) + Ops::mul_rows(u2, w2);
  const T norm = Ops::row_norm(mix);
  // Antipodal rows at t = 0.5: every direction orthogonal to both is a midpoint; take the end t
  // leans to (the later layer at 0.5). Otherwise divide by the norm, which only removes rounding.
  const T e = Ops::where_rows(Ops::lt(norm, 1e-12), t >= 0.5 ? u2 : u1, Ops::div_rows(mix, norm));
  // A zero row: the other row's direction restores both (the zero one as e·0); two zero rows: 0.
  const T other = Ops::where_rows(Ops::ne(g.norm1, 0), u1, Ops::where_rows(Ops::ne(g.norm2, 0), u2, Ops::zeros_like(u1)));
  return Ops::where_rows(g.valid, e, other);
}

}  // namespace kvlab::compressors
