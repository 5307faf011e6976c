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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
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
  // [n]: the rows of the k largest v among the rows where m holds (all of them when fewer);
  // of equal values the earlier row first.
  static Mask top_k(const Tensor& v, const Mask& m, std::int64_t k) {
    std::vector<Eigen::Index> rows;
    for (Eigen::Index r = 0; r < m.rows(); ++r)
      if (m(r)) rows.push_back(r);
    const auto n = static_cast<std::ptrdiff_t>(std::clamp<std::int64_t>(k, 0, static_cast<std::int64_t>(rows.size())));
    std::partial_sort(rows.begin(), rows.begin() + n, rows.end(), [&](Eigen::Index a, Eigen::Index b) {
      return v(a, 0) > v(b, 0) || (v(a, 0) == v(b, 0) && a < b);
    });
    Mask out = Mask::Constant(v.rows(), false);
    for (std::ptrdiff_t i = 0; i < n; ++i) out(rows[static_cast<std::size_t>(i)]) = true;
    return out;
  }
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

// The operations of KIVI's kernel (compressors/methods/kivi_kernel.h) in host memory: f32 matrices
// [rows, c] (Eigen, row-major; a FloatView reads one in place, a Map writes one) and byte buffers.
// Per-group quantities are [⌈rows/gr⌉, ⌈c/gc⌉], one value per gr × gc block. Arithmetic is IEEE
// f32 as kivi_pack's scalar loops were, so the packed bytes and the decoded values are theirs.
struct HostQuantOps {
  using Floats = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using FloatView = Eigen::Ref<const Floats>;
  using Bytes = std::vector<std::uint8_t>;
  using Index = Eigen::Index;

  static Index size(std::span<const std::uint8_t> b) { return static_cast<Index>(b.size()); }
  static Bytes bytes(const FloatView&, Index size) { return Bytes(static_cast<std::size_t>(size)); }
  static FloatView middle_rows(const FloatView& x, Index r0, Index rows) { return x.middleRows(r0, rows); }
  static void set_rows(Eigen::Map<Floats>& out, Index r0, const auto& rows) { out.middleRows(r0, rows.rows()) = rows; }
  // Multiples of 8·gr rows (whole bytes of codes), ~8192 values or 8 row blocks: temporaries stay in cache, in the heap.
  static Index rows_per_pass(Index, Index c, Index gr) { return 8 * gr * std::max<Index>(1, 1024 / (gr * c)); }
  static bool all_finite(const FloatView& x) { return (x - x).sum() == 0; }  // x − x: NaN unless finite; all() would not vectorise

  // Each block's min and max by std::min / std::max in row-major order (of 0 and −0 the first stays, as ever).
  static std::pair<Floats, Floats> block_minmax(const FloatView& x, Index gr, Index gc) {
    Floats lo((x.rows() + gr - 1) / gr, (x.cols() + gc - 1) / gc), hi(lo.rows(), lo.cols());
    for (Index i = 0; i < x.rows(); ++i)
      if (gc == 1 && i % gr) lo.row(i / gr) = (x.row(i) < lo.row(i / gr)).select(x.row(i), lo.row(i / gr)),
                             hi.row(i / gr) = (hi.row(i / gr) < x.row(i)).select(x.row(i), hi.row(i / gr));  // a row at once, as std::min / max
      else for (Index j = 0, b = 0; j < x.cols(); j += gc, ++b) {
        float l = i % gr ? lo(i / gr, b) : x(i, j), h = i % gr ? hi(i / gr, b) : x(i, j);
        for (Index e = j; e < std::min(x.cols(), j + gc); ++e) l = std::min(l, x(i, e)), h = std::max(h, x(i, e));
        lo(i / gr, b) = l, hi(i / gr, b) = h;
      }
    return {lo, hi};
  }
  // [rows, c]: element (i, j) is p(i / gr, j / gc).
  static Floats spread(const Floats& p, Index gr, Index gc, Index rows, Index c) {
    Floats out(rows, c);
    for (Index i = 0; i < rows; ++i)
      if (gc == 1) out.row(i) = p.row(i / gr);
      else for (Index j = 0; j < c; j += gc) out.row(i).segment(j, std::min(gc, c - j)).setConstant(p(i / gr, j / gc));
    return out;
  }

  // Elementwise on Eigen expressions, lazily (a code is one pass over its block); round_to_fp16 takes f32 or double.
  static auto to_double(const auto& x) { return x.template cast<double>(); }
  static Floats round_to_fp16(const auto& x) { return x.unaryExpr([](auto v) { return float(Eigen::half(float(v))); }); }
  // Codes: x clamped to [0, hi], rounded half to even; 0 where the scale s is 0 (a constant group).
  static Floats codes(const auto& x, const Floats& s, int hi) { return (s == 0.0f).select(0.0f, x.max(0.0f).min(float(hi)).rint()); }

  // Codes row-major, code e at bits [e·bits, e·bits + bits) of the bytes from `offset`; and back.
  static void pack_codes(Bytes& out, Index offset, const Floats& codes, int bits) {
    for (Index b = 0, per = 8 / bits; b * per < codes.size(); ++b) {  // a byte at a time: no read-modify-write per code
      std::uint32_t v = 0;
      for (Index k = 0, e = b * per; k < per && e < codes.size(); ++k, ++e) v |= std::uint32_t(codes.data()[e]) << (k * bits);
      out[offset + b] = static_cast<std::uint8_t>(v);
    }
  }
  static Floats unpack_codes(std::span<const std::uint8_t> b, Index offset, int bits, Index rows, Index c) {
    Floats out(rows, c);
    for (std::size_t e = 0, at = 8 * offset; e < std::size_t(out.size()); ++e, at += bits) out.data()[e] = float(b[at / 8] >> at % 8 & ((1u << bits) - 1));
    return out;
  }
  // x's values at fp16, little-endian, row-major at `offset`, `offset` + 2·step, …; and back.
  static void put_fp16(Bytes& out, Index offset, const FloatView& x, Index step) {
    for (Index i = 0, at = offset; i < x.rows(); ++i)
      for (Index j = 0; j < x.cols(); ++j, at += 2 * step) {
        const auto h = Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(x(i, j)));
        out[at] = static_cast<std::uint8_t>(h & 0xff), out[at + 1] = static_cast<std::uint8_t>(h >> 8);
      }
  }
  static Floats from_fp16(std::span<const std::uint8_t> b, Index offset, Index rows, Index c, Index step) {
    Floats out(rows, c);
    for (Index e = 0, at = offset; e < out.size(); ++e, at += 2 * step)
      out.data()[e] = float(Eigen::numext::bit_cast<Eigen::half>(std::uint16_t(b[at] | b[at + 1] << 8)));
    return out;
  }
};

}  // namespace kvlab::compressors
