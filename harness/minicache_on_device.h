// MiniCache alone (compressors/methods/minicache.h) run by torch on the model's own tensors, CPU or CUDA,
// so nothing T-sized crosses to the host: the rebuild of each merged (pair, part) computed where
// the cache lies, in the host stage's precisions. Per (token, KV head) row pair x1, x2 (pre-RoPE):
// norms and Ω = 2·atan2(‖u1 − u2‖, ‖u1 + u2‖) in double; the threshold min Ω + γ·(max Ω − min Ω)
// over the pair (scope=global) or each KV head, zero rows excluded; rows on the retained side
// come back as themselves at fp16, all others as e·‖x‖ with the SLERP direction e and both norms
// at fp16 (the host's fallbacks for Ω ≈ 0 or π and zero rows included).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "compressors/spec.h"

namespace kvlab::harness {

// The minicache stage when `chain` is minicache and nothing else, else null.
const compressors::StageSpec* minicache_alone(const compressors::ChainSpec& chain);

struct MergedPair {
  at::Tensor first, second;        // [H_kv, T, D] f32 rebuilds of the earlier and the later layer
  std::int64_t merged = 0;         // (token, KV head) rows stored as one direction and two norms
  std::int64_t retained = 0;       // rows kept as both originals
};

// Merges one part of a layer pair: x1 (earlier layer), x2 (later) [H_kv, T, D], any float dtype,
// on the device where the work runs; `spec` is a minicache stage (its t, gamma, retain, scope).
MergedPair minicache_merge_pair(const at::Tensor& x1, const at::Tensor& x2, const compressors::StageSpec& spec);

}  // namespace kvlab::harness
