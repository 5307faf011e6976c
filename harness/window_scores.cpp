#include "harness/window_scores.h"

#include <cmath>
#include <limits>

#include "core/error.h"
#include "harness/torch_rope.h"

namespace kvlab::harness {

core::FloatTensor window_attention_sums_where_held(const at::Tensor& keys, const at::Tensor& queries,
                                                   const at::Tensor& positions, const core::Rope& rope, int window,
                                                   int rows) {
  const std::int64_t H = keys.size(0), T = keys.size(1), D = keys.size(2), W = queries.size(0), Hq = queries.size(1);
  if (rows < 1 || rows > W) fail("window scores: {} window queries asked for, W = {}", rows, W);
  if (window < 0) fail("window scores: sliding window {} must be ≥ 0 (0: none)", window);
  if (queries.size(2) != D || Hq % H != 0 || positions.numel() != T)
    fail("window scores: queries [{}, {}, {}] do not fit keys [{}, {}, {}] with {} positions", W, Hq, queries.size(2),
         H, T, D, positions.numel());
  const std::int64_t n_rep = Hq / H, M = rows * n_rep;
  const auto on_device = at::TensorOptions().device(keys.device());
  const at::Tensor pos = positions.to(keys.device(), at::kLong);
  const at::Tensor query_pos = pos.narrow(0, T - rows, rows);
  // [rows, H_q, D] → [H_kv, rows·n_rep, D]: row m = w·n_rep + r is query head g·n_rep + r.
  const at::Tensor q = rope_rotate(queries.narrow(0, W - rows, rows).to(on_device.dtype(at::kFloat)), query_pos, rope)
                           .view({rows, H, n_rep, D})
                           .permute({1, 0, 2, 3})
                           .reshape({H, M, D});
  // The causal mask: window row w sees keys at positions ≤ its own, and under a sliding window
  // only those with query − key < window. [rows, 1, T] → [M, T].
  at::Tensor hidden_rows = pos.unsqueeze(0) > query_pos.unsqueeze(1);
  if (window > 0) hidden_rows = hidden_rows | (query_pos.unsqueeze(1) - pos.unsqueeze(0) >= window);
  const at::Tensor hidden = hidden_rows.unsqueeze(1).expand({rows, n_rep, T}).reshape({M, T});
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  at::Tensor out = at::empty({H, n_rep, T}, on_device.dtype(at::kDouble));
  for (std::int64_t g = 0; g < H; ++g) {
    const at::Tensor k = rope_rotate(keys[g].to(at::kFloat).unsqueeze(1), pos, rope).squeeze(1);  // [T, D]
    const at::Tensor logits = at::matmul(q[g], k.t()).mul_(scale).to(at::kDouble)                  // [M, T]
                                  .masked_fill_(hidden, -std::numeric_limits<double>::infinity());
    // A query sees at least its own token (positions ascend), so no row is all −inf.
    out[g].copy_(logits.softmax(-1).view({rows, n_rep, T}).sum(0));
  }
  core::FloatTensor sums({Hq, T});
  at::from_blob(sums.data.data(), {Hq, T}, at::kFloat).copy_(out.view({Hq, T}));
  return sums;
}

}  // namespace kvlab::harness
