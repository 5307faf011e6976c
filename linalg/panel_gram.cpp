// The backend-generic parts of linalg/backend.h: Gram precisions, the host PanelGram (any
// backend's gram/gemm with host pointers) and the Gram-route truncated SVD built on it.
#include <algorithm>
#include <bit>
#include <cmath>

#include "core/error.h"
#include "linalg/backend.h"

namespace kvlab::linalg {
namespace {

// Round to nearest even, keeping all but the low `dropped` mantissa bits of each f32.
void round_mantissa(std::span<float> values, int dropped) {
  const std::uint32_t low = (std::uint32_t{1} << dropped) - 1, half = low >> 1;
  for (float& v : values) {
    std::uint32_t bits = std::bit_cast<std::uint32_t>(v);
    if ((bits & 0x7f800000u) == 0x7f800000u) continue;  // inf or NaN: as is
    bits += half + ((bits >> dropped) & 1u);               // a carry into the exponent is correct rounding
    v = std::bit_cast<float>(bits & ~low);
  }
}

template <typename T>
class HostPanelGram final : public PanelGram<T> {
 public:
  HostPanelGram(Backend& backend, int panels, std::int64_t width, std::int64_t capacity, GramPrecision precision)
      : PanelGram<T>(panels, width, capacity),
        backend_(backend),
        precision_(precision),
        staging_(static_cast<std::size_t>(panels * capacity * width)),
        blocks_(this->block_count(), std::vector<T>(static_cast<std::size_t>(width * width), T(0))) {}

  T* staging() override { return staging_.data(); }

  void add(std::int64_t rows) override {
    if (finished_) fail("linalg panel_gram: add() after finish()");
    if (rows < 0 || rows > this->capacity())
      fail("linalg panel_gram: {} rows in a block of capacity {}", rows, this->capacity());
    if (rows == 0) return;
    const std::int64_t W = this->width();
    if constexpr (std::is_same_v<T, float>)
      for (int p = 0; p < this->panels(); ++p)
        round_gram_inputs(precision_, std::span<float>(panel(p), static_cast<std::size_t>(rows * W)));
    for (int i = 0; i < this->panels(); ++i) {
      backend_.gram(panel(i), rows, W, W, T(1), T(1), mutable_block(i, i), W);
      for (int j = i + 1; j < this->panels(); ++j)
        backend_.gemm(false, true, W, W, rows, T(1), panel(i), W, panel(j), W, T(1), mutable_block(i, j), W);
    }
  }

  void finish() override {
    if (finished_) return;
    for (int i = 0; i < this->panels(); ++i) symmetrize_from_upper(mutable_block(i, i), this->width(), this->width());
    finished_ = true;
  }

  const T* block(int i, int j) const override {
    if (!finished_) fail("linalg panel_gram: block() before finish()");
    if (i < 0 || i > j || j >= this->panels())
      fail("linalg panel_gram: no block ({}, {}) of {} panels (i ≤ j)", i, j, this->panels());
    return blocks_[this->block_index(i, j)].data();
  }

 private:
  T* panel(int p) { return staging_.data() + std::int64_t{p} * this->panel_stride(); }
  T* mutable_block(int i, int j) { return blocks_[this->block_index(i, j)].data(); }

  Backend& backend_;
  GramPrecision precision_;
  std::vector<T> staging_;
  std::vector<std::vector<T>> blocks_;
  bool finished_ = false;
};

// The Gram of X in `precision` (upper triangle), then its top r eigenpairs. An f32 Gram is one
// ?syrk on X as it lies; the others stream X through a PanelGram<R> (one panel), which rounds
// or widens a block at a time.
template <typename R>
void gram_eigenpairs(Backend& backend, const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                     GramPrecision precision, SubspaceFactors& out) {
  std::vector<R> s;
  if constexpr (std::is_same_v<R, float>) {
    if (precision == GramPrecision::f32) {
      s.resize(static_cast<std::size_t>(c * c));
      backend.gram(x, n, c, c, 1.f, 0.f, s.data(), c);
    }
  }
  if (s.empty()) {
    const std::int64_t block = std::min(n, std::max<std::int64_t>(1, (std::int64_t{1} << 22) / c));  // ≈ 16 MiB of f32
    auto gram = make_panel_gram<R>(backend, 1, c, block, precision);
    for (std::int64_t t0 = 0; t0 < n; t0 += block) {
      const std::int64_t rows = std::min(block, n - t0);
      std::copy(x + t0 * c, x + (t0 + rows) * c, gram->staging());
      gram->add(rows);
    }
    gram->finish();
    s.assign(gram->block(0, 0), gram->block(0, 0) + c * c);
  }
  std::vector<R> w(static_cast<std::size_t>(r)), vectors(static_cast<std::size_t>(c * r));
  backend.eigh_top(s.data(), c, c, r, w.data(), vectors.data(), c);
  take_top_eigenpairs(w, vectors, c, r, out);
}

}  // namespace

void check_panel_gram_shape(int panels, std::int64_t width, std::int64_t capacity) {
  if (panels < 1 || width < 1 || capacity < 1)
    fail("linalg panel_gram: needs at least one panel, column and row per block (got {} panels of {} columns, "
         "{} rows per block)",
         panels, width, capacity);
}

std::string_view to_string(GramPrecision precision) {
  switch (precision) {
    case GramPrecision::f32: return "f32";
    case GramPrecision::tf32: return "tf32";
    case GramPrecision::bf16: return "bf16";
    case GramPrecision::f64: return "f64";
  }
  return "?";
}

GramPrecision parse_gram_precision(std::string_view name) {
  for (auto p : {GramPrecision::f32, GramPrecision::tf32, GramPrecision::bf16, GramPrecision::f64})
    if (name == to_string(p)) return p;
  fail("unknown Gram precision '{}': expected f32, tf32, bf16 or f64", name);
}

double gram_sigma_floor(GramPrecision precision) {
  switch (precision) {
    case GramPrecision::f32: return std::sqrt(std::ldexp(1.0, -24));
    case GramPrecision::tf32: return std::sqrt(std::ldexp(1.0, -11));
    case GramPrecision::bf16: return std::sqrt(std::ldexp(1.0, -8));
    case GramPrecision::f64: return std::sqrt(std::ldexp(1.0, -53));
  }
  return 1;
}

void round_gram_inputs(GramPrecision precision, std::span<float> values) {
  if (precision == GramPrecision::tf32) round_mantissa(values, 13);  // 23 − 10 mantissa bits
  if (precision == GramPrecision::bf16) round_mantissa(values, 16);  // 23 − 7
}

std::unique_ptr<PanelGram<float>> Backend::panel_gram(int panels, std::int64_t width, std::int64_t capacity,
                                                      GramPrecision precision) {
  check_panel_gram_shape(panels, width, capacity);
  if (precision == GramPrecision::f64) fail("linalg panel_gram: an f64 Gram is panel_gram_f64");
  return std::make_unique<HostPanelGram<float>>(*this, panels, width, capacity, precision);
}

std::unique_ptr<PanelGram<double>> Backend::panel_gram_f64(int panels, std::int64_t width, std::int64_t capacity) {
  check_panel_gram_shape(panels, width, capacity);
  return std::make_unique<HostPanelGram<double>>(*this, panels, width, capacity, GramPrecision::f64);
}

SubspaceFactors Backend::gram_subspace(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                    GramPrecision precision) {
  SubspaceFactors out = Backend::resident_gram_top(x, nullptr, n, c, r, precision, nullptr);
  // A = X·V_r: Aᵀ (r×n, the column-major view of row-major A) = V_rᵀ·Xᵀ.
  out.a.resize(static_cast<std::size_t>(n * r));
  gemm(true, false, r, n, c, 1.f, out.v.data(), c, x, c, 0.f, out.a.data(), r);
  return out;
}

SubspaceFactors Backend::resident_gram_top(const float* x, const void*, std::int64_t n, std::int64_t c,
                                           std::int64_t r, GramPrecision precision, void*) {
  if (n < 1 || c < 1 || r < 1 || r > c)
    fail("linalg gram_subspace: needs 1 ≤ r ≤ c and n ≥ 1 (got n = {}, c = {}, r = {})", n, c, r);
  SubspaceFactors out;
  out.rank = r;
  if (precision == GramPrecision::f64)
    gram_eigenpairs<double>(*this, x, n, c, r, precision, out);
  else
    gram_eigenpairs<float>(*this, x, n, c, r, precision, out);
  return out;
}

void Backend::resident_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                            const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                            std::int64_t ldc, void*) {
  gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace kvlab::linalg
