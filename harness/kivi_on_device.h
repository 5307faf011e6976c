// KIVI (compressors/methods/kivi.h) where the model's tensors lie, CPU or CUDA: kivi_kernel.h's
// pack and unpack run on them through torch (harness/torch_ops.h), so the packed form is
// kivi_pack's, byte for byte, and nothing T-sized crosses to the host.
//
// On the dense cache the host chain stores, per layer and KV head:
//   keys   rotated (core::Rope, f32), rounded to fp16, [T, D] per channel, then rotated back;
//   values rounded to fp16, [T, D] per token;
// or, for a layer a transform leaves alone (store_uncompressed), the layer's [T, H·D] rows.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "compressors/methods/kivi.h"
#include "compressors/spec.h"
#include "core/rope.h"

namespace kvlab::harness {

// The KIVI stage when `chain` is KIVI on the dense cache and nothing else, else null.
const compressors::StageSpec* kivi_on_dense(const compressors::ChainSpec& chain);

// The packed form of x [n, c] (f32, any strides, values already at fp16) on x's device: uint8
// [compressors::kivi_bytes(…)], compressors::kivi_pack's bytes; fails where kivi_pack fails.
at::Tensor kivi_pack_on_device(const at::Tensor& x, compressors::QuantLayout layout, bool token_rows,
                               const compressors::KiviParams& p);
// Decodes a packed form (uint8, on any device) into [n, c] f32 on its device, as kivi_unpack.
at::Tensor kivi_unpack_on_device(const at::Tensor& packed, compressors::QuantLayout layout, std::int64_t n,
                                 std::int64_t c, bool token_rows, const compressors::KiviParams& p);
// Stores x [n, c] (a view, values at fp16) as KIVI does a StoredTensor of this layout and
// token_rows: x becomes the decoding of its packed form. Returns the packed form's bytes.
std::int64_t kivi_store_on_device(at::Tensor x, compressors::QuantLayout layout, bool token_rows,
                                  const compressors::KiviParams& p);

// How the chain stores a layer part it leaves dense (see the file comment).
enum class DenseStore {
  per_head,   // dense_representation: each KV head's [T, D] (kivi, full+kivi)
  per_layer,  // store_uncompressed: the layer's [T, H·D] rows (layers a transform leaves alone)
};

// One layer part as the chain stores it with KIVI, and its bytes.
struct KiviStored {
  at::Tensor rows;         // f32 [H_kv, T, D] on x's device: the decoding (keys pre-RoPE again)
  std::int64_t bytes = 0;  // the packed forms' sizes
};
// x [H_kv, T, D] (pre-RoPE keys or values, any float dtype and device), positions [T] int64 on
// x's device. Fails on non-finite values or a group whose range exceeds fp16.
KiviStored kivi_rebuild(const at::Tensor& x, compressors::Part part, const at::Tensor& positions, const core::Rope& rope,
                        const compressors::KiviParams& p, DenseStore store = DenseStore::per_head);

}  // namespace kvlab::harness
