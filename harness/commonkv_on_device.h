// CommonKV (compressors/methods/commonkv.h), alone or followed by kivi, run by torch where the
// model's cache lies, CPU or CUDA: the host stage's kernel (compressors/methods/commonkv_kernel.h)
// through TorchOps makes the stage's stored form there, tensor for tensor, and each layer is
// rebuilt from it, so no layer's K/V crosses to the host. Only the latents c = h·Pᵀ are torch's
// own product (h: the capture's attn_in, uploaded a layer at a time). Leftover layers (L mod g)
// keep the model's values (leftover=dense) or are the kernel's shortened, unmerged group (svd). With kivi after commonkv, the latents, P, D and the leftover layers
// become what KIVI stores of them (kivi_on_device.h); the biases stay fp16.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>

#include "compressors/methods/commonkv_kernel.h"
#include "harness/model/kv_cache.h"
#include "harness/torch_ops.h"

namespace kvlab::harness {

// commonkv alone or followed by kivi: the stages (null commonkv when the chain is anything else).
struct CommonKvChain {
  const compressors::StageSpec* commonkv = nullptr;
  const compressors::StageSpec* kivi = nullptr;
};
CommonKvChain commonkv_chain(const compressors::ChainSpec& chain);

// The stored form of `commonkv` (its StageSpec) for the grouped layers, made on `device` and handed
// to `store` as compressors::commonkv_stage does, values f32 at fp16 (the host's StoredTensor::values).
// attn_in(l): layer l's normalized attention input [T, d_model], any device and float dtype.
using CommonKvStored = compressors::CommonkvStored<TorchOps>;
void commonkv_store(const compressors::CacheShape& shape, const std::function<const at::Tensor&(int layer)>& attn_in,
                    const compressors::StageSpec& commonkv, const core::Checkpoint* checkpoint,
                    linalg::Backend& backend, const at::Device& device,
                    const std::function<void(CommonKvStored&&)>& store);

// Rebuilds the layers of `cache` ([H_kv, T, D] per layer, `shape` its shape, `rope_of(l)` layer l's RoPE)
// as `chain` would, from commonkv_store's form. Returns the bytes the chain stores.
std::int64_t commonkv_in_place(KvCache& cache, const compressors::CacheShape& shape,
                               const std::function<const core::Rope&(int layer)>& rope_of,
                               const std::function<const at::Tensor&(int layer)>& attn_in, const CommonKvChain& chain,
                               const core::Checkpoint* checkpoint, linalg::Backend& backend);

}  // namespace kvlab::harness
