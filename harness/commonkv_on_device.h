// CommonKV alone (compressors/commonkv.h) run by torch where the model's cache lies, CPU or CUDA:
// the latents c = h·Pᵀ, their first/last-layer cosines, the merged latents and each layer's
// rebuild c·Dᵀ + b are computed there and written into the cache, so no layer's K/V crosses to
// the host. The pieces that are small or host-side already stay shared with the chain: the weight
// SVD (commonkv_factors, from the checkpoint), the global no-merge budget over the [groups·T]
// cosines (commonkv_merged), the byte count (commonkv_group_bytes). The attention inputs h are
// the capture's (host f32, ContextCapture with attn_in), uploaded a layer at a time. Precisions
// as the chain: f32 latents and products, cosines in double, every stored tensor (latents, D, b)
// rounded to fp16 before the rebuild. Leftover layers (L mod g) keep the model's values.
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

// The commonkv stage when `chain` is commonkv and nothing else, else null.
const compressors::StageSpec* commonkv_alone(const compressors::ChainSpec& chain);

// Rebuilds every grouped layer of `cache` ([H_kv, T, D] per layer, `shape` its shape) as the
// chain of `stage` would; attn_in(l) is layer l's normalized attention input [T, d_model] (any
// device and float dtype). Returns the bytes the chain stores. Fails as the chain does (no
// checkpoint, g > L, a misshapen weight or attn_in).
std::int64_t commonkv_in_place(KvCache& cache, const compressors::CacheShape& shape,
                               const std::function<const at::Tensor&(int layer)>& attn_in,
                               const compressors::StageSpec& stage, const core::Checkpoint* checkpoint,
                               linalg::Backend& backend);

}  // namespace kvlab::harness
