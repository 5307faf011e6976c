// KIVI's packed form (kivi.h's kivi_pack / kivi_unpack, docs/methods/kivi.md §5) written once for
// every device: `Ops` is compressors/host_ops.h's HostQuantOps in the host stage (kivi.cpp) and
// harness/torch_ops.h's TorchQuantOps on the model's tensors (harness/kivi_on_device.cpp). A group is
// a gr × gc block of the quantized rows [nq, c]: group × 1 per channel, 1 × group per token (shorter
// at the end of an axis); per-group quantities are [⌈rows/gr⌉, ⌈c/gc⌉], row-major in packed order.
// Rows go in passes of Ops::rows_per_pass (whole blocks, whole bytes of codes).
#pragma once

#include <algorithm>
#include <string_view>

#include "compressors/methods/kivi.h"
#include "core/error.h"

namespace kvlab::compressors {

// The packed form of x [n, c] (f32, values already at fp16), kivi_bytes(…) bytes.
template <class Ops, class X>
auto kivi_pack_kernel(const X& x, std::int64_t n, std::int64_t c, QuantLayout layout, bool token_rows, const KiviParams& p,
                      std::string_view what) {
  if (layout == QuantLayout::none) fail("{}: layout none is not quantized", what);
  const auto k = kivi_packed_layout(layout, n, c, token_rows, p);
  const std::int64_t gr = layout == QuantLayout::per_channel ? p.group : 1, gc = p.group / gr;
  auto out = Ops::bytes(x, k.total);
  for (std::int64_t r0 = 0, step = Ops::rows_per_pass(k.nq, c, gr); r0 < k.nq; r0 += step) {
    const std::int64_t rows = std::min(step, k.nq - r0), at = k.group_at + 4 * (r0 / gr) * ((c + gc - 1) / gc);
    const auto q = Ops::middle_rows(x, r0, rows);
    if (!Ops::all_finite(q)) fail("{}: non-finite values to quantize (beyond fp16's ±65504 is infinite at fp16)", what);
    const auto [lo, hi] = Ops::block_minmax(q, gr, gc);
    // fp16 min and scale; the range in double (hi − lo of two large floats of opposite sign must not round).
    const auto min = Ops::round_to_fp16(lo), scale = Ops::round_to_fp16((Ops::to_double(hi) - Ops::to_double(lo)) / ((1 << p.bits) - 1.0));
    if (!Ops::all_finite(scale) || !Ops::all_finite(min)) fail("{}: a group's values exceed the fp16 range of KIVI's scale/min", what);
    // Ops::codes clamps before rounding as KIVI's pack does: the fp16 min can sit a little above the
    // true min, the fp16 scale a little below the true one.
    const auto s = Ops::spread(scale, gr, gc, rows, c);
    Ops::pack_codes(out, r0 * c * p.bits / 8, Ops::codes((q - Ops::spread(min, gr, gc, rows, c)) / s, s, (1 << p.bits) - 1), p.bits);
    Ops::put_fp16(out, at, scale, 2), Ops::put_fp16(out, at + 2, min, 2);  // 4 bytes a group: scale, min
  }
  Ops::put_fp16(out, k.residual_at, Ops::middle_rows(x, k.nq, n - k.nq), 1);
  return out;
}

// Decodes a packed form (kivi_bytes(…) long, else fails) into out [n, c] f32 and returns it: code·scale
// + min (one FMA where the compiler contracts it, as GCC does under -march=native), fp16 residual rows.
template <class Ops, class Packed, class Out>
Out kivi_unpack_kernel(const Packed& packed, std::int64_t n, std::int64_t c, QuantLayout layout, bool token_rows,
                       const KiviParams& p, Out&& out) {
  const auto k = kivi_packed_layout(layout, n, c, token_rows, p);
  if (layout == QuantLayout::none || Ops::size(packed) != k.total)
    fail("kivi: {} bytes for a [{}, {}] tensor whose packed form takes {}", Ops::size(packed), n, c, k.total);
  const std::int64_t gr = layout == QuantLayout::per_channel ? p.group : 1, gc = p.group / gr, bc = (c + gc - 1) / gc;
  for (std::int64_t r0 = 0, step = Ops::rows_per_pass(k.nq, c, gr); r0 < k.nq; r0 += step) {
    const std::int64_t rows = std::min(step, k.nq - r0), br = (rows + gr - 1) / gr, at = k.group_at + 4 * (r0 / gr) * bc;
    const auto scale = Ops::from_fp16(packed, at, br, bc, 2), min = Ops::from_fp16(packed, at + 2, br, bc, 2);
    Ops::set_rows(out, r0, Ops::unpack_codes(packed, r0 * c * p.bits / 8, p.bits, rows, c) * Ops::spread(scale, gr, gc, rows, c) +
                               Ops::spread(min, gr, gc, rows, c));
  }
  Ops::set_rows(out, k.nq, Ops::from_fp16(packed, k.residual_at, n - k.nq, c, 1));
  return out;
}

}  // namespace kvlab::compressors
