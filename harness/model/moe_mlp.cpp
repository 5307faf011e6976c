#include "harness/model/moe_mlp.h"

#include <fmt/ranges.h>

#include "core/error.h"
#include "harness/model/activation.h"

namespace kvlab::harness {

MoeMlp::MoeMlp(at::Tensor router, std::vector<MoeExpert> experts, int top_k, bool normalize_top_k, Activation act)
    : router_(std::move(router)), experts_(std::move(experts)), top_k_(top_k), normalize_top_k_(normalize_top_k),
      act_(act) {
  if (router_.dim() != 2 || router_.size(0) != static_cast<std::int64_t>(experts_.size()))
    fail("MoE: the router has shape [{}], not [{} experts, d]", fmt::join(router_.sizes(), ", "), experts_.size());
  if (top_k_ < 1 || top_k_ > num_experts()) fail("MoE: top_k {} must be in 1..{}", top_k_, num_experts());
}

MoeRouting MoeMlp::route(const at::Tensor& x) const {
  // MixtralSparseMoeBlock / Qwen3MoeSparseMoeBlock: gate(x) in the activation dtype, softmax with
  // dtype=torch.float, topk (sorted, largest first), optional renormalisation in f32, then
  // routing_weights.to(hidden_states.dtype).
  const at::Tensor logits = at::matmul(x, router_.t());
  const at::Tensor probs = at::softmax(logits.to(at::kFloat), -1);
  auto [top, index] = at::topk(probs, top_k_, -1, /*largest=*/true, /*sorted=*/true);
  if (normalize_top_k_) top = top / top.sum(-1, /*keepdim=*/true);
  return {top.to(x.scalar_type()), index};
}

at::Tensor MoeMlp::forward(const at::Tensor& x) const {
  const MoeRouting routing = route(x);
  at::Tensor out = at::zeros_like(x);
  // Which (token, slot) pairs chose each expert: one host transfer for the whole chunk.
  const at::Tensor chosen = routing.experts.flatten().cpu();  // [S·k], slot-major within a token
  const auto* e_of = chosen.data_ptr<std::int64_t>();
  std::vector<std::vector<std::int64_t>> pairs(experts_.size());  // flat indices t·k + slot
  for (std::int64_t i = 0; i < chosen.numel(); ++i) pairs[e_of[i]].push_back(i);
  const at::Tensor flat_weights = routing.weights.flatten();
  const auto index_options = at::TensorOptions().dtype(at::kLong);
  for (std::size_t e = 0; e < experts_.size(); ++e) {  // ascending expert index, as transformers loops
    if (pairs[e].empty()) continue;
    const at::Tensor flat = at::tensor(pairs[e], index_options).to(x.device());
    const at::Tensor tokens = at::floor_divide(flat, top_k_);
    const at::Tensor xs = x.index_select(0, tokens);
    const MoeExpert& ex = experts_[e];
    const at::Tensor hidden = activate(at::matmul(xs, ex.gate.t()), act_) * at::matmul(xs, ex.up.t());
    const at::Tensor y = at::matmul(hidden, ex.down.t()) * flat_weights.index_select(0, flat).unsqueeze(1);
    out.index_add_(0, tokens, y.to(out.scalar_type()));
  }
  return out;
}

}  // namespace kvlab::harness
