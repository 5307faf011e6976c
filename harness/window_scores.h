// Eviction's window scores computed by torch where the model's tensors lie (CPU or CUDA), so an
// eviction method on the compression hook reads no layer to the host: only the [H_q, T] scores
// cross. The same quantity as compressors::window_attention_sums (eviction.h), in the same
// precisions: queries and keys rotated in f32 at their true positions, f32 logits, softmax with
// the causal (and sliding-window) mask and the sum over the window in double.
#pragma once

#include <ATen/ATen.h>

#include "core/rope.h"
#include "core/tensor.h"

namespace kvlab::harness {

// keys [H_kv, T, D] pre-RoPE (any float dtype; its device is where the work runs); queries
// [W, H_q, D] pre-RoPE, any device and float dtype (the last `rows` are used, 1 ≤ rows ≤ W);
// positions [T] int64, ascending (the window's queries sit at the last `rows`). Returns host f32
// [H_q, T]: entry (h, t) = Σ_w softmax_t(q_{w,h}·k_t/√D) over the keys the query sees: positions j
// with p − window < j ≤ p for a query at p (window 0: every j ≤ p; compressors/attention.h sees).
// One KV head at a time: its [rows·H_q/H_kv, T] double scores are the largest temporary.
core::FloatTensor window_attention_sums_where_held(const at::Tensor& keys, const at::Tensor& queries,
                                                   const at::Tensor& positions, const core::Rope& rope, int window,
                                                   int rows);

}  // namespace kvlab::harness
