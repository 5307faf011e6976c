// MiniCache alone (compressors/methods/minicache.h) on the model's own tensors, CPU or CUDA, so
// nothing T-sized crosses to the host: the host stage's kernel (compressors/methods/
// minicache_kernel.h) run through torch (harness/torch_ops.h), giving the stored form the host
// stage gives — per KV head, fp16 directions and magnitudes of the merged rows, both layers'
// fp16 rows and int32 tokens of the retained ones — and the rebuild decoded from it.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "compressors/spec.h"

namespace kvlab::harness {

// The minicache stage when `chain` is minicache and nothing else, else null.
const compressors::StageSpec* minicache_alone(const compressors::ChainSpec& chain);

// What one KV head of a merged (pair, part) stores, on the cache's device; the host stage's
// StoredTensors "pair<a>-<a+1>/<part>/head<h>/…" hold the same values.
struct MinicacheHeadStored {
  at::Tensor direction;   // [m, D] fp16: the merged rows' unit directions, in token order
  at::Tensor magnitudes;  // [2, m] fp16: ‖x1‖ (row 0) and ‖x2‖ (row 1) of the merged rows
  at::Tensor retained1, retained2;  // [r, D] fp16: the earlier and the later layer's rows kept unmerged
  at::Tensor index;       // [r] int32: their tokens, ascending
  std::int64_t bytes() const;  // the stored tensors' sizes
};

// Merges one part of a layer pair: x1 (earlier layer), x2 (later) [H_kv, T, D], any float dtype,
// on the device where the work runs; `spec` is a minicache stage (its t, gamma, retain, scope).
std::vector<MinicacheHeadStored> minicache_store_pair(const at::Tensor& x1, const at::Tensor& x2,
                                                      const compressors::StageSpec& spec);

// Layer `which` of the pair (0 the earlier, 1 the later) decoded from its stored heads, as the
// host stage's reconstruct does: [H_kv, T, D] f32 on their device.
at::Tensor minicache_rebuild(const std::vector<MinicacheHeadStored>& heads, int which, std::int64_t tokens);

}  // namespace kvlab::harness
