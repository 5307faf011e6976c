// The tensor operations a stage kernel is written against (compressors/methods/*_kernel.h), in
// host memory. A kernel is a template over an `Ops` type; this one runs it on Eigen arrays of
// doubles, and the harness's adapter (harness/torch_ops.h) runs the same kernel on the model's
// own tensors, CPU or CUDA, with torch. So a stage is written once and both devices store the
// same form. The compressors library never sees torch.
//
// Shapes: a matrix is [n, D] rows; a vector is [n] (here [n, 1]); a scalar is a one-element
// tensor (here [1, 1]) that broadcasts against a vector. Masks are boolean with a vector's shape.
// Every operation is elementwise in IEEE double, so a kernel's host results are those of the
// scalar loops it replaces; the one reduction, row_norm, sums in index order.
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "linalg/backend.h"

namespace kvlab::compressors {

struct HostOps {
  using Tensor = Eigen::Array<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Mask = Eigen::Array<bool, Eigen::Dynamic, 1>;

  // [n]: √(Σ_d x_d²) of every row, the sum in index order.
  static Tensor row_norm(const Tensor& x) {
    Tensor out(x.rows(), 1);
    for (Eigen::Index r = 0; r < x.rows(); ++r) {
      double s = 0;
      for (Eigen::Index d = 0; d < x.cols(); ++d) s += x(r, d) * x(r, d);
      out(r, 0) = std::sqrt(s);
    }
    return out;
  }
  // Row r of x divided / multiplied by v[r].
  static Tensor div_rows(const Tensor& x, const Tensor& v) { return x.colwise() / v.col(0); }
  static Tensor mul_rows(const Tensor& x, const Tensor& v) { return x.colwise() * v.col(0); }
  static Tensor zeros_like(const Tensor& x) { return Tensor::Zero(x.rows(), x.cols()); }

  // std's functions, not Eigen's vectorised approximations.
  static Tensor sin(const Tensor& x) { return x.unaryExpr([](double v) { return std::sin(v); }); }
  static Tensor atan2(const Tensor& y, const Tensor& x) {
    return y.binaryExpr(x, [](double a, double b) { return std::atan2(a, b); });
  }

  static Mask ne(const Tensor& v, double s) { return v.col(0) != s; }
  static Mask lt(const Tensor& v, double s) { return v.col(0) < s; }
  static Mask gt(const Tensor& v, const Tensor& scalar) { return v.col(0) > scalar(0, 0); }
  static Mask le(const Tensor& v, const Tensor& scalar) { return v.col(0) <= scalar(0, 0); }
  static Mask both(const Mask& a, const Mask& b) { return a && b; }

  // Vectors: a where m, else b (a number or a vector).
  static Tensor where(const Mask& m, const Tensor& a, double b) { return m.select(a.col(0), b); }
  static Tensor where(const Mask& m, double a, const Tensor& b) { return m.select(a, b.col(0)); }
  // Matrices: row r of a where m[r], else row r of b.
  static Tensor where_rows(const Mask& m, const Tensor& a, const Tensor& b) {
    Tensor out = b;
    for (Eigen::Index r = 0; r < out.rows(); ++r)
      if (m(r)) out.row(r) = a.row(r);
    return out;
  }

  // Scalars: min / max of v over the rows where m holds (+∞ / −∞ when none does), and the
  // elementwise min / max of two scalars.
  static Tensor masked_min(const Tensor& v, const Mask& m) {
    constexpr double inf = std::numeric_limits<double>::infinity();
    return Tensor::Constant(1, 1, v.rows() == 0 ? inf : m.select(v.col(0), inf).minCoeff());
  }
  static Tensor masked_max(const Tensor& v, const Mask& m) {
    constexpr double inf = std::numeric_limits<double>::infinity();
    return Tensor::Constant(1, 1, v.rows() == 0 ? -inf : m.select(v.col(0), -inf).maxCoeff());
  }
  static Tensor min(const Tensor& a, const Tensor& b) { return a.min(b); }
  static Tensor max(const Tensor& a, const Tensor& b) { return a.max(b); }
  // lo + f·(hi − lo) where lo is finite, else `otherwise`.
  static Tensor lerp_finite(const Tensor& lo, const Tensor& hi, double f, double otherwise) {
    return Tensor::Constant(1, 1, std::isfinite(lo(0, 0)) ? lo(0, 0) + f * (hi(0, 0) - lo(0, 0)) : otherwise);
  }

  // CommonKV (compressors/methods/commonkv_kernel.h) works on f32 matrices [n, c], as the chain
  // keeps its latents; these ops are the loops and GEMM calls the stage had, so its results stay.
  using Tensor32 = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  // [n]: Σ_d a·b of every row pair, in double, summed in index order.
  static Tensor row_dot(const Tensor32& a, const Tensor32& b) {
    Tensor out = Tensor::Zero(a.rows(), 1);
    for (Eigen::Index r = 0; r < a.rows(); ++r)
      for (Eigen::Index d = 0; d < a.cols(); ++d) out(r, 0) += static_cast<double>(a(r, d)) * b(r, d);
    return out;
  }
  // The rows r of x where m[r] == want, in order.
  static Tensor32 rows(const Tensor32& x, const Mask& m, bool want) {
    std::vector<Eigen::Index> keep;
    for (Eigen::Index r = 0; r < m.rows(); ++r)
      if (m(r) == want) keep.push_back(r);
    return x(keep, Eigen::all);
  }
  // y + w·x, elementwise in f32 (a plain loop: the compiler fuses it as it did the stage's).
  static Tensor32 axpy(Tensor32 y, const Tensor32& x, float w) {
    for (Eigen::Index i = 0; i < y.size(); ++i) y.data()[i] += w * x.data()[i];
    return y;
  }
  // [n, c]: row r is a's next row where m[r], else b's next row (a, b in order).
  static Tensor32 interleave_rows(const Mask& m, const Tensor32& a, const Tensor32& b) {
    Tensor32 out(m.rows(), a.rows() ? a.cols() : b.cols());
    for (Eigen::Index r = 0, i = 0, j = 0; r < m.rows(); ++r) out.row(r) = m(r) ? a.row(i++) : b.row(j++);
    return out;
  }
  // x·yᵀ [n, m] of x [n, k] and y [m, k] in f32, by `backend`'s GEMM (the process's CPU BLAS unless
  // given): column-major, outᵀ (m×n) = (yᵀ)ᵀ·xᵀ with yᵀ (k×m) and xᵀ (k×n) as they lie.
  static Tensor32 matmul_t(const Tensor32& x, const Tensor32& y, linalg::Backend& backend = linalg::cpu_backend()) {
    Tensor32 out = Tensor32::Zero(x.rows(), y.rows());
    if (out.size() > 0 && x.cols() > 0)
      backend.gemm(true, false, y.rows(), x.rows(), x.cols(), 1.f, y.data(), x.cols(), x.data(), x.cols(), 0.f,
                   out.data(), y.rows());
    return out;
  }
  static Tensor32 zeros_like(const Tensor32& x) { return Tensor32::Zero(x.rows(), x.cols()); }
  // A vector [n] in a host vector; a mask [n] from flags (nonzero: true), made where `like` is.
  static std::vector<double> host(const Tensor& v) { return {v.data(), v.data() + v.rows()}; }
  static Mask mask(const std::vector<std::uint8_t>& flags, const Tensor32&) {
    return Eigen::Map<const Eigen::Array<std::uint8_t, Eigen::Dynamic, 1>>(flags.data(), flags.size()) != 0;
  }
  // x + b on every row, b [1, c].
  static Tensor32 add_row(const Tensor32& x, const Tensor32& b) { return x.rowwise() + b.row(0); }
};

}  // namespace kvlab::compressors
