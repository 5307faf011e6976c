#include "harness/kivi_on_device.h"

#include "compressors/chain.h"
#include "core/error.h"
#include "harness/fp16_store.h"
#include "harness/torch_rope.h"

namespace kvlab::harness {
namespace {

using compressors::QuantLayout;

// KIVI's groups as runs along the last axis: the quantized rows q [nq, c] as m [a, L] (q itself
// per token, qᵀ per channel), each row of m cut into ⌈L / group⌉ runs of `group` (the last one
// shorter). A per-group quantity is [a, runs]; in kivi_pack's order (per token: row, then column
// block; per channel: row block, then column) it is that, flattened per token, transposed per channel.
struct Runs {
  at::Tensor m;  // [a, L]
  std::int64_t group = 1, full = 0;  // full = the elements in whole runs, L − L mod group

  Runs(const at::Tensor& q, QuantLayout layout, std::int64_t group_size)
      : m(layout == QuantLayout::per_channel ? q.t() : q), group(group_size), full(m.size(1) / group * group) {}
  std::int64_t count() const { return (m.size(1) + group - 1) / group; }
  // Each run's min and max, [a, runs] each (one pass: per channel, m's reshape copies).
  std::pair<at::Tensor, at::Tensor> range() const {
    const std::int64_t a = m.size(0), L = m.size(1);
    std::vector<at::Tensor> lo, hi;
    const auto add = [&](const at::Tensor& runs) {  // [a, k, len]
      auto [run_lo, run_hi] = runs.aminmax(-1);
      lo.push_back(run_lo);
      hi.push_back(run_hi);
    };
    if (full > 0) add(m.narrow(1, 0, full).reshape({a, full / group, group}));
    if (L > full) add(m.narrow(1, full, L - full).reshape({a, 1, L - full}));
    return {at::cat(lo, 1), at::cat(hi, 1)};
  }
  // [a, runs] → kivi_pack's group order, [groups]; and back.
  at::Tensor packed_order(const at::Tensor& r, QuantLayout layout) const {
    return (layout == QuantLayout::per_channel ? r.t() : r).reshape({-1});
  }
  at::Tensor from_packed_order(const at::Tensor& g, QuantLayout layout) const {
    return layout == QuantLayout::per_channel ? g.reshape({count(), m.size(0)}).t() : g.reshape({m.size(0), count()});
  }
  // A per-run [a, runs] quantity spread over q's elements: [nq, c].
  at::Tensor spread(const at::Tensor& r, QuantLayout layout) const {
    const at::Tensor e = r.repeat_interleave(group, 1).narrow(1, 0, m.size(1));
    return layout == QuantLayout::per_channel ? e.t() : e;
  }
};

// fp16 values as their little-endian bytes, [2·numel] uint8 (put_u16 in kivi.cpp).
at::Tensor fp16_bytes(const at::Tensor& x) { return x.to(at::kHalf).contiguous().view(at::kByte).reshape({-1}); }

// Powers 2^(b·k), k < 8/b: the place of each of a byte's codes, lowest bits first.
at::Tensor code_places(int bits, const at::Device& device) {
  return at::pow(2, at::arange(0, 8, bits, at::TensorOptions().dtype(at::kInt).device(device)));
}

}  // namespace

const compressors::StageSpec* kivi_on_dense(const compressors::ChainSpec& chain) {
  using compressors::DevicePath, compressors::device_of;
  const auto s = compressors::stages_of(chain);
  if (s.eviction || s.repeats || device_of(s.quantizer) != DevicePath::kivi) return nullptr;
  return !s.transform || device_of(s.transform) == DevicePath::cells ? s.quantizer : nullptr;
}

at::Tensor kivi_pack_on_device(const at::Tensor& x, QuantLayout layout, bool token_rows, const compressors::KiviParams& p) {
  if (layout == QuantLayout::none) fail("kivi: layout none is not quantized");
  if (x.dim() != 2) fail("kivi: a packed tensor is [n, c], not {} dimensions", x.dim());
  const std::int64_t n = x.size(0), c = x.size(1);
  const auto k = compressors::kivi_packed_layout(layout, n, c, token_rows, p);
  const at::Tensor q = x.narrow(0, 0, k.nq).to(at::kFloat);
  std::vector<at::Tensor> parts;
  if (k.nq > 0) {
    if (!at::isfinite(q).all().item<bool>()) fail("kivi: non-finite values to quantize (values beyond fp16's ±65504 are infinite once stored at fp16)");
    const Runs runs(q, layout, p.group);
    const auto [lo, hi] = runs.range();
    const double max_code = static_cast<double>((1 << p.bits) - 1);
    const at::Tensor min = round_to_fp16(lo);
    // The range in double, as the host: hi − lo of two large floats of opposite sign must not round.
    const at::Tensor scale = round_to_fp16(((hi.to(at::kDouble) - lo.to(at::kDouble)) / max_code).to(at::kFloat));
    if (!at::isfinite(scale).all().item<bool>() || !at::isfinite(min).all().item<bool>())
      fail("kivi: a group's values exceed the fp16 range of KIVI's scale/min");
    // kivi_code: clamp, then round half to even; a constant group (scale 0) is all code 0.
    const at::Tensor s = runs.spread(scale, layout), lowest = runs.spread(min, layout);
    const at::Tensor codes =
        at::where(s == 0, at::zeros_like(q), ((q - lowest) / s).clamp(0.0, max_code).round()).to(at::kInt).reshape({-1});
    const std::int64_t per_byte = 8 / p.bits, padded = k.group_at * per_byte;
    const at::Tensor places = code_places(p.bits, x.device());
    parts.push_back(
        (at::constant_pad_nd(codes, {0, padded - codes.numel()}).view({k.group_at, per_byte}) * places).sum(1).to(at::kByte));
    parts.push_back(fp16_bytes(at::stack({runs.packed_order(scale, layout), runs.packed_order(min, layout)}, 1)));
  }
  parts.push_back(fp16_bytes(x.narrow(0, k.nq, n - k.nq)));
  return at::cat(parts);
}

at::Tensor kivi_unpack_on_device(const at::Tensor& packed, QuantLayout layout, std::int64_t n, std::int64_t c,
                                 bool token_rows, const compressors::KiviParams& p) {
  const auto k = compressors::kivi_packed_layout(layout, n, c, token_rows, p);
  if (layout == QuantLayout::none || packed.dim() != 1 || packed.numel() != k.total || packed.scalar_type() != at::kByte)
    fail("kivi: {} packed values for a [{}, {}] tensor whose packed form takes {} bytes", packed.numel(), n, c, k.total);
  const auto fp16_at = [&](std::int64_t offset, std::int64_t count) {
    // A copy: a view as fp16 needs an even offset, and the codes may end on an odd byte.
    return packed.narrow(0, offset, 2 * count).clone().view(at::kHalf).to(at::kFloat);
  };
  const at::Tensor residual = fp16_at(k.residual_at, (n - k.nq) * c).view({n - k.nq, c});
  if (k.nq == 0) return residual;
  const at::Tensor places = code_places(p.bits, packed.device());
  const at::Tensor codes = (packed.narrow(0, 0, k.group_at).to(at::kInt).unsqueeze(1).div(places, "floor") % (1 << p.bits))
                               .reshape({-1})
                               .narrow(0, 0, k.nq * c)
                               .view({k.nq, c});
  const Runs runs(codes, layout, p.group);
  const at::Tensor params = fp16_at(k.group_at, 2 * k.groups).view({k.groups, 2});
  const at::Tensor scale = runs.spread(runs.from_packed_order(params.select(1, 0), layout), layout);
  const at::Tensor min = runs.spread(runs.from_packed_order(params.select(1, 1), layout), layout);
  return at::cat({codes.to(at::kFloat) * scale + min, residual});  // kivi_dequant
}

std::int64_t kivi_store_on_device(at::Tensor x, QuantLayout layout, bool token_rows, const compressors::KiviParams& p) {
  const at::Tensor packed = kivi_pack_on_device(x, layout, token_rows, p);
  x.copy_(kivi_unpack_on_device(packed, layout, x.size(0), x.size(1), token_rows, p));
  return packed.numel();
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
