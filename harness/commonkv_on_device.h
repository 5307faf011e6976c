// CommonKV (compressors/methods/commonkv.h), alone or followed by kivi, run by torch where the model's cache lies, CPU or CUDA:
// the latents c = h·Pᵀ, their first/last-layer cosines, the merged latents and each layer's
// rebuild c·Dᵀ + b are computed there and written into the cache, so no layer's K/V crosses to
// the host. The pieces that are small or host-side already stay shared with the chain: the weight
// SVD (commonkv_factors, from the checkpoint), the global no-merge budget over the [groups·T]
// cosines (commonkv_merged). The bytes are those of what it stores there. The attention inputs h are
// the capture's (host f32, ContextCapture with attn_in), uploaded a layer at a time. Precisions
// as the chain: f32 latents and products, cosines in double, every stored tensor (latents, D, b)
// rounded to fp16 before the rebuild. Leftover layers (L mod g) keep the model's values. With a
// kivi stage after commonkv, the latents, D and the leftover layers become what KIVI stores of
// them (kivi_on_device.h); P is stored (KIVI'd too) only to be counted; the biases stay fp16.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>

#include "compressors/cache_source.h"
#include "compressors/spec.h"
#include "core/safetensors.h"
#include "harness/model/kv_cache.h"
#include "linalg/backend.h"

namespace kvlab::harness {

// commonkv alone or followed by kivi: the stages (null commonkv when the chain is anything else).
struct CommonKvChain {
  const compressors::StageSpec* commonkv = nullptr;
  const compressors::StageSpec* kivi = nullptr;
};
CommonKvChain commonkv_chain(const compressors::ChainSpec& chain);

// Rebuilds the layers of `cache` ([H_kv, T, D] per layer, `shape` its shape, `rope` the model's)
// as `chain` would; attn_in(l) is layer l's normalized attention input [T, d_model] (any device
// and float dtype). Returns the bytes the chain stores. Fails as the chain does (no checkpoint,
// g > L, a misshapen weight or attn_in).
std::int64_t commonkv_in_place(KvCache& cache, const compressors::CacheShape& shape, const core::Rope& rope,
                               const std::function<const at::Tensor&(int layer)>& attn_in, const CommonKvChain& chain,
                               const core::Checkpoint* checkpoint, linalg::Backend& backend);

}  // namespace kvlab::harness
