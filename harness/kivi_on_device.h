// KIVI on the dense cache (the chain "kivi" or "full+kivi", compressors/kivi.h) run by torch on
// the model's own tensors, CPU or CUDA, so nothing T-sized crosses to the host: the host route's
// store rebuilt where the cache lies. Per layer and KV head, as the host chain stores them:
//   keys   rotated (core::Rope, f32), rounded to fp16, the first T − T mod R tokens quantized per
//          channel in blocks of `group` tokens, the rest kept at fp16, then rotated back;
//   values rounded to fp16, the first max(0, T − R) tokens quantized per token in groups of
//          `group` channels of the head's D, the rest kept at fp16.
// Each group: fp16 min and scale = fp16((max − min) / (2^b − 1)), codes clamp(round((x − min) /
// scale)) rounded half to even, values code·scale + min (kivi_group_params, kivi_code).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "compressors/kivi.h"
#include "compressors/spec.h"
#include "core/rope.h"

namespace kvlab::harness {

// The KIVI stage when `chain` is KIVI on the dense cache and nothing else, else null.
const compressors::StageSpec* kivi_on_dense(const compressors::ChainSpec& chain);

// How the chain stores a layer part it leaves dense, which decides KIVI's per-token groups (the
// per-channel ones are the same either way).
enum class DenseStore {
  per_head,   // dense_representation: each KV head's [T, D] (kivi, full+kivi)
  per_layer,  // store_uncompressed: the layer's [T, H·D] rows (layers a transform leaves alone)
};

// The rebuild of one layer part: x [H_kv, T, D] (pre-RoPE keys or values, any float dtype and
// device), positions [T] int64 on x's device. Returns f32 [H_kv, T, D] on x's device (keys
// pre-RoPE again). Fails on non-finite values or a group whose range exceeds fp16, as the host
// stage does.
at::Tensor kivi_rebuild(const at::Tensor& x, compressors::Part part, const at::Tensor& positions, const core::Rope& rope,
                        const compressors::KiviParams& p, DenseStore store = DenseStore::per_head);

// KIVI on an [n, c] f32 matrix (a view, any strides, values already at fp16), in place:
// quantize∘dequantize as kivi_quantize_tensor does a StoredTensor of this layout and token_rows.
void kivi_quantize_matrix(at::Tensor x, compressors::QuantLayout layout, bool token_rows,
                          const compressors::KiviParams& p);

// Bytes the host chain stores for one layer (both parts, every head): compressors::kivi_bytes
// of each head's [T, D] key (per channel) and value (per token) tensors.
std::int64_t kivi_layer_bytes(std::int64_t tokens, int kv_heads, int head_dim, const compressors::KiviParams& p);

}  // namespace kvlab::harness
