#include "harness/kivi_on_device.h"

#include "core/error.h"
#include "harness/fp16_store.h"
#include "harness/torch_rope.h"

namespace kvlab::harness {
namespace {

// Quantize∘dequantize of groups along the last dimension of x [..., g] (f32), in place.
void fake_quantize_last_dim(at::Tensor x, int bits) {
  if (x.numel() == 0) return;
  const double max_code = static_cast<double>((1 << bits) - 1);
  const auto [lo, hi] = x.aminmax(-1, /*keepdim=*/true);
  const at::Tensor min = round_to_fp16(lo);
  // The range in double, as the host: hi − lo of two large floats of opposite sign must not round.
  const at::Tensor scale = round_to_fp16(((hi.to(at::kDouble) - lo.to(at::kDouble)) / max_code).to(at::kFloat));
  if (!at::isfinite(min).all().item<bool>() || !at::isfinite(scale).all().item<bool>())
    fail("kivi: a group's values are not finite or exceed the fp16 range of KIVI's scale/min");
  // A constant group (scale 0) is all min: code 0.
  const at::Tensor code = at::where(scale == 0, at::zeros_like(x), ((x - min) / scale).clamp(0.0, max_code).round());
  x.copy_(code * scale + min);
}

// Groups of `group` consecutive entries along dimension `dim` of x (f32, a view into the result),
// the last one shorter when the length is not a multiple: each block is moved so that the grouped
// axis is last, viewed as [..., blocks, group], and quantized.
void fake_quantize_along(at::Tensor x, std::int64_t dim, std::int64_t group, int bits) {
  const std::int64_t n = x.size(dim), full = n / group * group;
  for (const auto& [begin, length, size] : {std::tuple{std::int64_t{0}, full, group}, std::tuple{full, n - full, n - full}}) {
    if (length == 0) continue;
    at::Tensor block = x.narrow(dim, begin, length).movedim(dim, -1).contiguous();  // [..., length]
    auto sizes = block.sizes().vec();
    sizes.back() = length / size;
    sizes.push_back(size);
    fake_quantize_last_dim(block.view(sizes), bits);
    x.narrow(dim, begin, length).movedim(dim, -1).copy_(block);
  }
}

}  // namespace

const compressors::StageSpec* kivi_on_dense(const compressors::ChainSpec& chain) {
  const auto& s = chain.stages;
  if (s.size() == 1 && s[0].method == "kivi") return &s[0];
  if (s.size() == 2 && s[0].method == "full" && s[1].method == "kivi") return &s[1];
  return nullptr;
}

void kivi_quantize_matrix(at::Tensor x, compressors::QuantLayout layout, bool token_rows,
                          const compressors::KiviParams& p) {
  if (layout == compressors::QuantLayout::none) return;
  const std::int64_t nq = compressors::kivi_quantized_rows(layout, x.size(0), token_rows, p);
  if (!at::isfinite(x.narrow(0, 0, nq)).all().item<bool>()) fail("kivi: non-finite values to quantize");
  // Per channel: groups of rows of one column; per token: groups of columns of one row.
  fake_quantize_along(x.narrow(0, 0, nq), layout == compressors::QuantLayout::per_channel ? 0 : 1, p.group, p.bits);
}

at::Tensor kivi_rebuild(const at::Tensor& x, compressors::Part part, const at::Tensor& positions, const core::Rope& rope,
                        const compressors::KiviParams& p, DenseStore store) {
  const bool key = part == compressors::Part::key;
  const std::int64_t H = x.size(0), T = x.size(1), D = x.size(2);
  if (!at::isfinite(x).all().item<bool>()) fail("kivi: the cache holds non-finite values");
  // Token-major [T, H, D] as the host stores it; keys post-RoPE, all at fp16.
  at::Tensor rows = x.transpose(0, 1).to(at::kFloat);
  if (key) rows = rope_rotate(rows, positions, rope);
  rows = round_to_fp16(rows).contiguous();
  if (key) {  // per channel: a column of [T, H·D] whatever the store
    kivi_quantize_matrix(rows.view({T, H * D}), compressors::QuantLayout::per_channel, true, p);
  } else if (store == DenseStore::per_layer) {
    kivi_quantize_matrix(rows.view({T, H * D}), compressors::QuantLayout::per_token, true, p);
  } else {  // each head's [T, D] on its own: the quantized rows are the first nq tokens of every head
    const std::int64_t nq = compressors::kivi_quantized_rows(compressors::QuantLayout::per_token, T, true, p);
    fake_quantize_along(rows.narrow(0, 0, nq).view({nq * H, D}), 1, p.group, p.bits);
  }
  if (key) rows = rope_rotate(rows, positions, rope, /*inverse=*/true);
  return rows.transpose(0, 1);
}

std::int64_t kivi_layer_bytes(std::int64_t tokens, int kv_heads, int head_dim, const compressors::KiviParams& p) {
  using compressors::QuantLayout;
  return kv_heads * (compressors::kivi_bytes(QuantLayout::per_channel, tokens, head_dim, true, p) +
                     compressors::kivi_bytes(QuantLayout::per_token, tokens, head_dim, true, p));
}

}  // namespace kvlab::harness
