// The sparse mixture-of-experts MLP of Mixtral (MixtralSparseMoeBlock) and Qwen3-MoE
// (Qwen3MoeSparseMoeBlock), with transformers' eager numerics (docs/models.md §7.3):
//   logits = x·W_rᵀ                      [S, E] in the activation dtype (no bias)
//   p = softmax(logits) in f32           over all E experts
//   (w, idx) = top-k of p                [S, k], largest first
//   w /= Σ w                             Mixtral always, Qwen3-MoE when norm_topk_prob
//   w cast to the activation dtype       (transformers 4.x; v5 keeps it in f32: §7.3)
//   out = Σ_e w · down(act(gate(x)) ⊙ up(x))   experts in ascending index order, each added
//                                               into zeros in the activation dtype (index_add_)
// Only the experts a token routes to run for it; there is no capacity and no dropped token.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "harness/model_config.h"

namespace kvlab::harness {

struct MoeExpert {
  at::Tensor gate;  // [I_e, d] (Mixtral w1, Qwen3-MoE gate_proj)
  at::Tensor up;    // [I_e, d] (Mixtral w3, Qwen3-MoE up_proj)
  at::Tensor down;  // [d, I_e] (Mixtral w2, Qwen3-MoE down_proj)
};

struct MoeRouting {
  at::Tensor weights;  // [S, k] in the activation dtype: the (renormalised) top-k probabilities
  at::Tensor experts;  // [S, k] int64: their expert indices, largest probability first
};

class MoeMlp {
 public:
  // router [E, d]; experts.size() == E; 1 ≤ top_k ≤ E. All tensors on one device, one dtype.
  MoeMlp(at::Tensor router, std::vector<MoeExpert> experts, int top_k, bool normalize_top_k, Activation act);

  // x [S, d] (the post-attention RMSNorm output) → [S, d] in x's dtype.
  at::Tensor forward(const at::Tensor& x) const;
  // The routing forward() uses for x [S, d].
  MoeRouting route(const at::Tensor& x) const;

  int num_experts() const { return static_cast<int>(experts_.size()); }

 private:
  at::Tensor router_;
  std::vector<MoeExpert> experts_;
  int top_k_;
  bool normalize_top_k_;
  Activation act_;
};

}  // namespace kvlab::harness
