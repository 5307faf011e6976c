// compressors/host_ops.h's operations on torch tensors, where the model's cache lies (CPU or
// CUDA): the adapter through which a stage kernel written once (compressors/methods/*_kernel.h)
// runs on the device. Same shapes and meanings as HostOps, with torch's: a vector is [n], a
// scalar 0-d, a mask bool. Work stays on the tensors' device and queues without a host sync.
// Reductions are torch's (not in index order), so device results may differ from the host's in
// the last bit of a double; the device tests compare the stored forms the kernels lead to.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "harness/fp16_store.h"

namespace kvlab::harness {

struct TorchOps {
  using Tensor = at::Tensor;
  using Mask = at::Tensor;

  static Tensor row_norm(const Tensor& x) { return x.square().sum(-1).sqrt(); }
  static Tensor div_rows(const Tensor& x, const Tensor& v) { return x / v.unsqueeze(-1); }
  static Tensor mul_rows(const Tensor& x, const Tensor& v) { return x * v.unsqueeze(-1); }
  static Tensor zeros_like(const Tensor& x) { return at::zeros_like(x); }
  static Tensor sin(const Tensor& x) { return x.sin(); }
  static Tensor atan2(const Tensor& y, const Tensor& x) { return at::atan2(y, x); }

  static Mask ne(const Tensor& v, double s) { return v != s; }
  static Mask lt(const Tensor& v, double s) { return v < s; }
  static Mask gt(const Tensor& v, const Tensor& scalar) { return v > scalar; }
  static Mask le(const Tensor& v, const Tensor& scalar) { return v <= scalar; }
  static Mask both(const Mask& a, const Mask& b) { return a.logical_and(b); }

  static Tensor where(const Mask& m, const Tensor& a, double b) { return at::where(m, a, b); }
  static Tensor where(const Mask& m, double a, const Tensor& b) { return at::where(m, a, b); }
  static Tensor where_rows(const Mask& m, const Tensor& a, const Tensor& b) { return at::where(m.unsqueeze(-1), a, b); }

  static Tensor masked_min(const Tensor& v, const Mask& m) {
    return at::where(m, v, std::numeric_limits<double>::infinity()).amin();
  }
  static Tensor masked_max(const Tensor& v, const Mask& m) {
    return at::where(m, v, -std::numeric_limits<double>::infinity()).amax();
  }
  static Tensor min(const Tensor& a, const Tensor& b) { return at::minimum(a, b); }
  static Tensor max(const Tensor& a, const Tensor& b) { return at::maximum(a, b); }
  // A stable descending sort: of equal values the earlier row first, as the host's.
  static Mask top_k(const Tensor& v, const Mask& m, std::int64_t k) {
    const Tensor order =
        std::get<1>(at::sort(at::where(m, v, -std::numeric_limits<double>::infinity()), true, 0, true));
    const Tensor first = order.narrow(0, 0, std::clamp<std::int64_t>(k, 0, v.size(0)));
    return at::zeros_like(m).index_fill_(0, first, true).logical_and_(m);
  }
  static Tensor lerp_finite(const Tensor& lo, const Tensor& hi, double f, double otherwise) {
    return at::where(lo.isfinite(), lo + f * (hi - lo), otherwise);
  }

  // CommonKV (compressors/methods/commonkv_kernel.h): f32 matrices [n, c]. Row selection is exact;
  // torch's GEMM and double sums run in other orders than the host's BLAS and loops (last bits).
  using Tensor32 = at::Tensor;
  static Tensor row_dot(const Tensor32& a, const Tensor32& b) { return (a.to(at::kDouble) * b.to(at::kDouble)).sum(-1); }
  static Tensor32 rows(const Tensor32& x, const Mask& m, bool want) { return x.index({want ? m : m.logical_not()}); }
  // y + w·x (one multiply-add per element, which torch, like GCC on the host, may fuse).
  static Tensor32 axpy(const Tensor32& y, const Tensor32& x, float w) { return at::add(y, x, w); }
  static Tensor32 interleave_rows(const Mask& m, const Tensor32& a, const Tensor32& b) {
    return at::empty({m.size(0), a.size(0) ? a.size(1) : b.size(1)}, a.options()).index_put_({m}, a).index_put_({~m}, b);
  }
  static Tensor32 matmul_t(const Tensor32& x, const Tensor32& y) { return at::matmul(x, y.t()); }
  static Tensor32 add_row(const Tensor32& x, const Tensor32& b) { return x + b; }
  static std::vector<double> host(const Tensor& v) {
    const at::Tensor c = v.to(at::kCPU, at::kDouble).contiguous();
    return {c.data_ptr<double>(), c.data_ptr<double>() + c.numel()};
  }
  static Mask mask(const std::vector<std::uint8_t>& flags, const Tensor32& like) {
    return at::tensor(flags).to(like.device(), at::kBool);
  }
};

// compressors/host_ops.h's HostQuantOps (compressors/methods/kivi_kernel.h) on torch tensors, f32
// [rows, c] and uint8 [size] on their device. One pass takes every row; finiteness checks sync.
struct TorchQuantOps {
  using Tensor = at::Tensor;

  static std::int64_t size(const Tensor& b) { return b.numel(); }
  static Tensor bytes(const Tensor& x, std::int64_t size) { return at::zeros({size}, x.options().dtype(at::kByte)); }
  static Tensor middle_rows(const Tensor& x, std::int64_t r0, std::int64_t rows) { return x.narrow(0, r0, rows).to(at::kFloat); }
  static void set_rows(Tensor& out, std::int64_t r0, const Tensor& rows) { out.narrow(0, r0, rows.size(0)).copy_(rows); }
  static std::int64_t rows_per_pass(std::int64_t nq, std::int64_t, std::int64_t) { return std::max<std::int64_t>(nq, 1); }
  static bool all_finite(const Tensor& x) { return at::isfinite(x).all().item<bool>(); }

  // Blocks as runs along the last axis (of the transpose per channel), padded with their last value.
  static std::pair<Tensor, Tensor> block_minmax(const Tensor& x, std::int64_t gr, std::int64_t gc) {
    const Tensor m = gr == 1 ? x : x.t();
    const std::int64_t g = gr * gc, pad = (g - m.size(1) % g) % g;
    auto [lo, hi] = at::replication_pad1d(m, {0, pad}).view({m.size(0), -1, g}).aminmax(-1);
    return gr == 1 ? std::pair{lo, hi} : std::pair{lo.t(), hi.t()};
  }
  static Tensor spread(const Tensor& p, std::int64_t gr, std::int64_t gc, std::int64_t rows, std::int64_t c) {
    return p.repeat_interleave(gr, 0).narrow(0, 0, rows).repeat_interleave(gc, 1).narrow(1, 0, c);
  }
  static Tensor to_double(const Tensor& x) { return x.to(at::kDouble); }
  static Tensor round_to_fp16(const Tensor& x) { return harness::round_to_fp16(x); }
  static Tensor codes(const Tensor& x, const Tensor& s, int hi) { return at::where(s == 0, at::zeros_like(x), x.clamp(0, hi).round()); }

  // Code k of a byte counts 2^(k·bits) (exact in f32: every sum is below 256).
  static void pack_codes(Tensor& out, std::int64_t offset, const Tensor& codes, int bits) {
    const std::int64_t per = 8 / bits, count = (codes.numel() + per - 1) / per;
    const Tensor padded = at::constant_pad_nd(codes.reshape({-1}), {0, count * per - codes.numel()}).view({count, per});
    out.narrow(0, offset, count).copy_((padded * at::exp2(at::arange(0, 8, bits, codes.options()))).sum(1));
  }
  static Tensor unpack_codes(const Tensor& b, std::int64_t offset, int bits, std::int64_t rows, std::int64_t c) {
    const Tensor bytes = b.narrow(0, offset, (rows * c * bits + 7) / 8).to(at::kFloat).unsqueeze(1);
    const Tensor codes = (bytes / at::exp2(at::arange(0, 8, bits, bytes.options()))).floor().remainder(1 << bits);
    return codes.reshape({-1}).narrow(0, 0, rows * c).view({rows, c});
  }
  static void put_fp16(Tensor& out, std::int64_t offset, const Tensor& x, std::int64_t step) {
    const Tensor bytes = x.to(at::kHalf).contiguous().view(at::kByte).view({x.numel(), 2});
    out.as_strided({x.numel(), 2}, {2 * step, 1}, out.storage_offset() + offset).copy_(bytes);
  }
  static Tensor from_fp16(const Tensor& b, std::int64_t offset, std::int64_t rows, std::int64_t c, std::int64_t step) {
    const Tensor pairs = b.as_strided({rows * c, 2}, {2 * step, 1}, b.storage_offset() + offset);
    return pairs.clone(at::MemoryFormat::Contiguous).view(at::kHalf).to(at::kFloat).view({rows, c});  // a copy: fp16 needs an even offset
  }
};

}  // namespace kvlab::harness
