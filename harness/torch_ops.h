// compressors/host_ops.h's operations on torch tensors, where the model's cache lies (CPU or
// CUDA): the adapter through which a stage kernel written once (compressors/methods/*_kernel.h)
// runs on the device. Same shapes and meanings as HostOps, with torch's: a vector is [n], a
// scalar 0-d, a mask bool. Work stays on the tensors' device and queues without a host sync.
// Reductions are torch's (not in index order), so device results may differ from the host's in
// the last bit of a double; the device tests compare the stored forms the kernels lead to.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <limits>
#include <vector>

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

}  // namespace kvlab::harness
