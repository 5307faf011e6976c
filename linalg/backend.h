// linalg::Backend: the dense linear algebra kvlab needs, behind one API so the CPU
// (OpenBLAS + LAPACKE) and CUDA (cuBLAS + cuSOLVER, a later issue) paths are interchangeable.
//
// Conventions: matrices are column-major with an explicit leading dimension (the BLAS /
// LAPACK convention). A token-major block of KV rows, X ∈ R^{n×c} stored row-major with row
// stride ldx, is the column-major matrix Xᵀ (c×n, ld = ldx), so `gram` takes it as it lies in
// memory. Symmetric matrices use the upper triangle only. Eigenvalues come back ascending
// (LAPACK's order): the top r are the last r.
//
// Precision: forming a Gram squares the condition number; singular values below √u·σ₁ of
// the Gram's precision are noise (u = 6e-8 in f32, 1e-16 in f64; reference/perf.md §4). Use
// the f64 overloads where the kept tail is small (σ_r/σ₁ ≲ 1e-3).
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

namespace kvlab::linalg {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;

  // C ← α·XᵀX + β·C for X = n token rows × c columns, row-major with row stride ldx ≥ c.
  // C is c×c column-major (ld ldc ≥ c); only its upper triangle is read and written.
  virtual void gram(const float* x, std::int64_t n, std::int64_t c, std::int64_t ldx, float alpha, float beta,
                    float* out, std::int64_t ldc) = 0;
  virtual void gram(const double* x, std::int64_t n, std::int64_t c, std::int64_t ldx, double alpha, double beta,
                    double* out, std::int64_t ldc) = 0;

  // C ← α·op(A)·op(B) + β·C, column-major; op(A) is m×k, op(B) is k×n.
  virtual void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                    const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                    std::int64_t ldc) = 0;
  virtual void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, double alpha,
                    const double* a, std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c,
                    std::int64_t ldc) = 0;

  // Eigenvalues of the symmetric n×n matrix S (upper triangle; S is destroyed) into w[n],
  // ascending. Divide and conquer (?syevd), values only.
  virtual void eigvalsh(float* s, std::int64_t n, std::int64_t lds, float* w) = 0;
  virtual void eigvalsh(double* s, std::int64_t n, std::int64_t lds, double* w) = 0;

  // Full eigendecomposition (?syevd): w[n] ascending, S overwritten by the orthonormal
  // eigenvectors (column i belongs to w[i]).
  virtual void eigh(float* s, std::int64_t n, std::int64_t lds, float* w) = 0;
  virtual void eigh(double* s, std::int64_t n, std::int64_t lds, double* w) = 0;

  // The r largest eigenpairs (?syevr by index): w[r] ascending, vectors [n×r] (ld ldv).
  // S is destroyed.
  virtual void eigh_top(float* s, std::int64_t n, std::int64_t lds, std::int64_t r, float* w, float* vectors,
                        std::int64_t ldv) = 0;
  virtual void eigh_top(double* s, std::int64_t n, std::int64_t lds, std::int64_t r, double* w, double* vectors,
                        std::int64_t ldv) = 0;

  // Thin SVD (?gesdd, never ?gesvd) of A (m×n column-major, destroyed), k = min(m, n):
  // sigma[k] descending; u [m×k] and vt [k×n] when non-null (both or neither).
  virtual void svd_thin(float* a, std::int64_t m, std::int64_t n, std::int64_t lda, float* sigma, float* u,
                        std::int64_t ldu, float* vt, std::int64_t ldvt) = 0;
  virtual void svd_thin(double* a, std::int64_t m, std::int64_t n, std::int64_t lda, double* sigma, double* u,
                        std::int64_t ldu, double* vt, std::int64_t ldvt) = 0;

  // Orthonormal basis of the range of A (m×n column-major, m ≥ n, overwritten): A ← Q of the
  // Householder QR A = QR (?geqrf + ?orgqr). Unlike CholQR its orthogonality does not degrade
  // with κ(A) (reference/perf.md §5), which the randomized SVD's re-orthonormalisation needs.
  virtual void orthonormalize(float* a, std::int64_t m, std::int64_t n, std::int64_t lda) = 0;
  virtual void orthonormalize(double* a, std::int64_t m, std::int64_t n, std::int64_t lda) = 0;

  // Threads the backend may use inside one call (0 = its default).
  virtual void set_threads(int threads) = 0;
  virtual int threads() const = 0;
};

// The process-wide CPU backend (OpenBLAS + LAPACKE).
Backend& cpu_backend();

// Fills the strictly lower triangle of an n×n column-major matrix from its upper triangle.
template <typename T>
void symmetrize_from_upper(T* s, std::int64_t n, std::int64_t lds) {
  for (std::int64_t j = 0; j < n; ++j)
    for (std::int64_t i = j + 1; i < n; ++i) s[i + j * lds] = s[j + i * lds];
}

}  // namespace kvlab::linalg
