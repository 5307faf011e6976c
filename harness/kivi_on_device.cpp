#include "harness/kivi_on_device.h"

#include "compressors/chain.h"
#include "compressors/methods/kivi_kernel.h"
#include "core/error.h"
#include "harness/fp16_store.h"
#include "harness/torch_ops.h"
#include "harness/torch_rope.h"

namespace kvlab::harness {

using compressors::QuantLayout;

const compressors::StageSpec* kivi_on_dense(const compressors::ChainSpec& chain) {
  using compressors::DevicePath, compressors::device_of;
  const auto s = compressors::stages_of(chain);
  if (s.eviction || s.repeats || device_of(s.quantizer) != DevicePath::kivi) return nullptr;
  return !s.transform || device_of(s.transform) == DevicePath::cells ? s.quantizer : nullptr;
}

at::Tensor kivi_pack_on_device(const at::Tensor& x, QuantLayout layout, bool token_rows, const compressors::KiviParams& p) {
  if (x.dim() != 2) fail("kivi: a packed tensor is [n, c], not {} dimensions", x.dim());
  return compressors::kivi_pack_kernel<TorchQuantOps>(x, x.size(0), x.size(1), layout, token_rows, p, "kivi");
}

at::Tensor kivi_unpack_on_device(const at::Tensor& packed, QuantLayout layout, std::int64_t n, std::int64_t c,
                                 bool token_rows, const compressors::KiviParams& p) {
  if (packed.dim() != 1 || packed.scalar_type() != at::kByte) fail("kivi: a packed form is 1-D uint8, not {}-D", packed.dim());
  at::Tensor out = at::empty({n, c}, packed.options().dtype(at::kFloat));
  return compressors::kivi_unpack_kernel<TorchQuantOps>(packed, n, c, layout, token_rows, p, out);
}

std::int64_t kivi_store_on_device(at::Tensor x, QuantLayout layout, bool token_rows, const compressors::KiviParams& p) {
  const at::Tensor packed = kivi_pack_on_device(x, layout, token_rows, p);
  compressors::kivi_unpack_kernel<TorchQuantOps>(packed, x.size(0), x.size(1), layout, token_rows, p, x);  // x becomes the decoding
  return stored_bytes(packed);
}

KiviStored kivi_rebuild(const at::Tensor& x, compressors::Part part, const at::Tensor& positions, const core::Rope& rope,
                        const compressors::KiviParams& p, DenseStore store) {
  const bool key = part == compressors::Part::key;
  const std::int64_t H = x.size(0), T = x.size(1), D = x.size(2);
  if (!at::isfinite(x).all().item<bool>()) fail("kivi: the cache holds non-finite values");
  // Token-major [T, H, D] as the host stores it; keys post-RoPE, all at fp16.
  at::Tensor rows = x.transpose(0, 1).to(at::kFloat);
  if (key) rows = rope_rotate(rows, positions, rope);
  rows = round_to_fp16(rows).contiguous();
  const auto layout = key ? QuantLayout::per_channel : QuantLayout::per_token;
  KiviStored out;
  if (store == DenseStore::per_layer)
    out.bytes = kivi_store_on_device(rows.view({T, H * D}), layout, true, p);
  else
    for (std::int64_t h = 0; h < H; ++h) out.bytes += kivi_store_on_device(rows.select(1, h), layout, true, p);
  if (key) rows = rope_rotate(rows, positions, rope, /*inverse=*/true);
  out.rows = rows.transpose(0, 1);
  return out;
}

}  // namespace kvlab::harness
