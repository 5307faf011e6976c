// The token-side Gram route of linalg/backend.h token_gram_subspace: when X has fewer rows than
// columns (n < c) the n×n Gram K = X·Xᵀ has the same non-zero spectrum as the c×c XᵀX, at
// (n/c)² of the eigensolve and n/c of the product. V_r follows from K's eigenvectors U_r:
// X = U·Σ·Vᵀ gives V_r = Xᵀ·U_r·Σ_r⁻¹.
#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/profile.h"
#include "linalg/backend.h"

namespace kvlab::linalg {
namespace {

// out [c, n] row-major = the transpose of x [n, c] row-major, widened to R; in 64 × 64 tiles, so
// both sides stay in cache (a plain double loop strides one of them by a whole row: 10× slower).
template <typename R>
void transpose(const float* x, std::int64_t n, std::int64_t c, R* out) {
  constexpr std::int64_t kTile = 64;
  for (std::int64_t t0 = 0; t0 < n; t0 += kTile)
    for (std::int64_t j0 = 0; j0 < c; j0 += kTile)
      for (std::int64_t j = j0; j < std::min(j0 + kTile, c); ++j)
        for (std::int64_t t = t0; t < std::min(t0 + kTile, n); ++t) out[j * n + t] = R(x[t * c + j]);
}

// Resizes a reused buffer; its old contents are overwritten by every use below.
template <typename R>
R* sized(std::vector<R>& buffer, std::int64_t count) {
  buffer.resize(static_cast<std::size_t>(count));
  return buffer.data();
}

template <typename R>
void token_eigenpairs(Backend& backend, const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                      TokenGramScratch::Buffers<R>& buf, SubspaceFactors& out) {
  // Y = Xᵀ, row-major [c, n] in R: backend.gram(Y) = YᵀY = X·Xᵀ, one ?syrk.
  R* xt = sized(buf.xt, c * n);
  transpose(x, n, c, xt);
  R* k = sized(buf.gram, n * n);
  backend.gram(xt, c, n, n, R(1), R(0), k, n);
  std::vector<R> w(static_cast<std::size_t>(r));
  R* u = sized(buf.top, n * r);
  {
    const core::ProfileScope scope("linalg: token Gram eigenpairs");  // half of the route's time (bench/README.md)
    backend.eigh_top(k, n, n, r, w.data(), u, n);  // ascending: column r − 1 is the largest
  }
  // U_r·Σ_r⁻¹ in descending order; a zero eigenvalue leaves its column zero (its direction is
  // not in X's row space), and the orthonormalisation below completes it.
  buf.scaled.assign(static_cast<std::size_t>(n * r), R(0));
  R* scaled = buf.scaled.data();
  out.energy.assign(static_cast<std::size_t>(r), 0.0);
  for (std::int64_t j = 0; j < r; ++j) {
    const R lambda = w[static_cast<std::size_t>(r - 1 - j)];
    if (!(lambda > R(0))) continue;
    out.energy[static_cast<std::size_t>(j)] = double(lambda);
    const R inv_sigma = R(1) / std::sqrt(lambda);
    for (std::int64_t t = 0; t < n; ++t) scaled[j * n + t] = u[(r - 1 - j) * n + t] * inv_sigma;
  }
  // V_r [c × r] = Xᵀ·(U_r·Σ_r⁻¹): Xᵀ is xt's column-major view [n × c] transposed.
  R* v = sized(buf.v, c * r);
  backend.gemm(true, false, c, r, n, R(1), xt, n, scaled, n, R(0), v, c);
  // Householder QR restores the orthonormality the division by small σ_j loses (the error of
  // u_j grows by σ₁²/σ_j²) and fills zero columns; the orthonormal columns come back as ±
  // themselves (canonicalize_signs fixes the sign).
  backend.orthonormalize(v, c, r, c);
  out.v.assign(v, v + c * r);
}

}  // namespace

SubspaceFactors token_gram_subspace(Backend& backend, const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                    bool f64, TokenGramScratch* scratch) {
  if (n < 1 || c < n || r < 1 || r > n)
    fail("linalg token_gram_subspace: needs 1 ≤ r ≤ n ≤ c (got n = {}, c = {}, r = {})", n, c, r);
  TokenGramScratch local;
  TokenGramScratch& buffers = scratch ? *scratch : local;
  SubspaceFactors out;
  out.rank = r;
  if (f64)
    token_eigenpairs(backend, x, n, c, r, buffers.f64, out);
  else
    token_eigenpairs(backend, x, n, c, r, buffers.f32, out);
  // A = X·V_r in f32 as every route forms it: Aᵀ (r×n, the column-major view of row-major A) = V_rᵀ·Xᵀ.
  out.a.resize(static_cast<std::size_t>(n * r));
  backend.gemm(true, false, r, n, c, 1.f, out.v.data(), c, x, c, 0.f, out.a.data(), r);
  return out;
}

}  // namespace kvlab::linalg
