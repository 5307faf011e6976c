// The decode step's attention on the CPU: one query token per head against a layer's whole cache,
// in one pass over its keys and one over its values per KV head. torch's batched matmuls re-pack
// the cache's keys and values for every 1-row product, and OpenBLAS's threads wait between the
// small calls (bench/README.md, "kvlab eval's decode loop"); here the rep query heads of a KV head
// read each key and value row once, on torch's intra-op threads, one KV head a task.
//
// The same rules as LlamaModel::attention: scores q·k·scale in float32, soft-capped
// (cap·tanh(x/cap)) when `softcap` is set, masked to −∞ where not allowed, softmax, then the
// probabilities times the values. Only the summation order differs from the matmul route.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace kvlab::harness {

// Whether single_query_attention runs these tensors (float32 on the CPU); else the matmul route.
bool single_query_attention_applies(const at::Tensor& q, const at::Tensor& keys);

// q [H_q, D] (one token, rotated), keys / values [H_kv, Sk, D] (any strides with a unit last
// stride), allowed [Sk] bool: the causal and window mask of this query; keep [H_kv, Sk] bool (the
// cells the cache keeps) and query_keep [H_q, Sk] bool (a per-query-head selection) or undefined.
// Query head h reads KV head h / (H_q / H_kv). Returns [1, H_q·D] float32. A head whose every key
// is masked gives NaN, as softmax over −∞ does.
at::Tensor single_query_attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values, double scale,
                                  const std::optional<double>& softcap, const at::Tensor& allowed,
                                  const at::Tensor& keep, const at::Tensor& query_keep);

}  // namespace kvlab::harness
