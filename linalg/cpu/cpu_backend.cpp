// CPU backend: BLAS-3 through OpenBLAS's CBLAS, eigen/SVD through LAPACKE (?syevd, ?syevr,
// ?gesdd called directly: Eigen's EIGEN_USE_LAPACKE would route to the slow ?syev/?gesvd,
// docs/performance.md §8).
#include <cblas.h>
#include <lapacke.h>

#include <vector>

#include "core/error.h"
#include "linalg/backend.h"

namespace kvlab::linalg {
namespace {

using blas_int = lapack_int;

blas_int checked(std::int64_t v, const char* what) {
  if (v < 0 || v > std::int64_t{INT32_MAX}) fail("linalg: {} = {} is outside the 32-bit BLAS index range", what, v);
  return static_cast<blas_int>(v);
}

void check_info(lapack_int info, const char* routine, std::int64_t n) {
  if (info < 0) fail("linalg: {} rejected argument {} (n = {})", routine, -info, n);
  if (info > 0) fail("linalg: {} did not converge (info = {}, n = {})", routine, info, n);
}

// Overload sets that pick the s/d routine from the element type.
void syrk(blas_int c, blas_int n, float alpha, const float* x, blas_int ldx, float beta, float* out, blas_int ldc) {
  cblas_ssyrk(CblasColMajor, CblasUpper, CblasNoTrans, c, n, alpha, x, ldx, beta, out, ldc);
}
void syrk(blas_int c, blas_int n, double alpha, const double* x, blas_int ldx, double beta, double* out,
          blas_int ldc) {
  cblas_dsyrk(CblasColMajor, CblasUpper, CblasNoTrans, c, n, alpha, x, ldx, beta, out, ldc);
}
void gemm_call(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blas_int m, blas_int n, blas_int k, float alpha,
               const float* a, blas_int lda, const float* b, blas_int ldb, float beta, float* c, blas_int ldc) {
  cblas_sgemm(CblasColMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void gemm_call(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, blas_int m, blas_int n, blas_int k, double alpha,
               const double* a, blas_int lda, const double* b, blas_int ldb, double beta, double* c, blas_int ldc) {
  cblas_dgemm(CblasColMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
// ?syevd with the workspace sizes of the LAPACK documentation computed as integers: LAPACKE's
// size query returns LWORK = 1 + 6n + 2n² as a float, which rounds below the minimum once it
// passes 2²⁴ (n ≳ 2900 in single precision) and the call then rejects argument 9.
template <typename T, typename Work>
lapack_int syevd_sized(Work work, char jobz, blas_int n, T* s, blas_int lds, T* w) {
  const std::int64_t nn = n;
  const std::int64_t lwork = n <= 1 ? 1 : (jobz == 'V' ? 1 + 6 * nn + 2 * nn * nn : 2 * nn + 1);
  const std::int64_t liwork = n <= 1 || jobz == 'N' ? 1 : 3 + 5 * nn;
  std::vector<T> buf(static_cast<std::size_t>(lwork));
  std::vector<lapack_int> ibuf(static_cast<std::size_t>(liwork));
  return work(LAPACK_COL_MAJOR, jobz, 'U', n, s, lds, w, buf.data(), checked(lwork, "syevd lwork"), ibuf.data(),
              checked(liwork, "syevd liwork"));
}
lapack_int syevd(char jobz, blas_int n, float* s, blas_int lds, float* w) {
  return syevd_sized(LAPACKE_ssyevd_work, jobz, n, s, lds, w);
}
lapack_int syevd(char jobz, blas_int n, double* s, blas_int lds, double* w) {
  return syevd_sized(LAPACKE_dsyevd_work, jobz, n, s, lds, w);
}
lapack_int syevr(blas_int n, float* s, blas_int lds, blas_int il, blas_int iu, lapack_int* found, float* w, float* v,
                 blas_int ldv, lapack_int* support) {
  return LAPACKE_ssyevr(LAPACK_COL_MAJOR, 'V', 'I', 'U', n, s, lds, 0.f, 0.f, il, iu, 0.f, found, w, v, ldv, support);
}
lapack_int syevr(blas_int n, double* s, blas_int lds, blas_int il, blas_int iu, lapack_int* found, double* w,
                 double* v, blas_int ldv, lapack_int* support) {
  return LAPACKE_dsyevr(LAPACK_COL_MAJOR, 'V', 'I', 'U', n, s, lds, 0.0, 0.0, il, iu, 0.0, found, w, v, ldv, support);
}
lapack_int gesdd(char jobz, blas_int m, blas_int n, float* a, blas_int lda, float* s, float* u, blas_int ldu,
                 float* vt, blas_int ldvt) {
  return LAPACKE_sgesdd(LAPACK_COL_MAJOR, jobz, m, n, a, lda, s, u, ldu, vt, ldvt);
}
lapack_int gesdd(char jobz, blas_int m, blas_int n, double* a, blas_int lda, double* s, double* u, blas_int ldu,
                 double* vt, blas_int ldvt) {
  return LAPACKE_dgesdd(LAPACK_COL_MAJOR, jobz, m, n, a, lda, s, u, ldu, vt, ldvt);
}

lapack_int geqrf(blas_int m, blas_int n, float* a, blas_int lda, float* tau) {
  return LAPACKE_sgeqrf(LAPACK_COL_MAJOR, m, n, a, lda, tau);
}
lapack_int geqrf(blas_int m, blas_int n, double* a, blas_int lda, double* tau) {
  return LAPACKE_dgeqrf(LAPACK_COL_MAJOR, m, n, a, lda, tau);
}
lapack_int orgqr(blas_int m, blas_int n, float* a, blas_int lda, const float* tau) {
  return LAPACKE_sorgqr(LAPACK_COL_MAJOR, m, n, n, a, lda, tau);
}
lapack_int orgqr(blas_int m, blas_int n, double* a, blas_int lda, const double* tau) {
  return LAPACKE_dorgqr(LAPACK_COL_MAJOR, m, n, n, a, lda, tau);
}

class CpuBackend final : public Backend {
 public:
  std::string_view name() const override { return "cpu"; }

  void gram(const float* x, std::int64_t n, std::int64_t c, std::int64_t ldx, float alpha, float beta, float* out,
            std::int64_t ldc) override {
    gram_impl(x, n, c, ldx, alpha, beta, out, ldc);
  }
  void gram(const double* x, std::int64_t n, std::int64_t c, std::int64_t ldx, double alpha, double beta,
            double* out, std::int64_t ldc) override {
    gram_impl(x, n, c, ldx, alpha, beta, out, ldc);
  }
  void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
            std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) override {
    gemm_impl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha, const double* a,
            std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c, std::int64_t ldc) override {
    gemm_impl(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
  void eigvalsh(float* s, std::int64_t n, std::int64_t lds, float* w) override { syevd_impl('N', s, n, lds, w); }
  void eigvalsh(double* s, std::int64_t n, std::int64_t lds, double* w) override { syevd_impl('N', s, n, lds, w); }
  void eigh(float* s, std::int64_t n, std::int64_t lds, float* w) override { syevd_impl('V', s, n, lds, w); }
  void eigh(double* s, std::int64_t n, std::int64_t lds, double* w) override { syevd_impl('V', s, n, lds, w); }
  void eigh_top(float* s, std::int64_t n, std::int64_t lds, std::int64_t r, float* w, float* v,
                std::int64_t ldv) override {
    eigh_top_impl(s, n, lds, r, w, v, ldv);
  }
  void eigh_top(double* s, std::int64_t n, std::int64_t lds, std::int64_t r, double* w, double* v,
                std::int64_t ldv) override {
    eigh_top_impl(s, n, lds, r, w, v, ldv);
  }
  void svd_thin(float* a, std::int64_t m, std::int64_t n, std::int64_t lda, float* sigma, float* u, std::int64_t ldu,
                float* vt, std::int64_t ldvt) override {
    svd_impl(a, m, n, lda, sigma, u, ldu, vt, ldvt);
  }
  void svd_thin(double* a, std::int64_t m, std::int64_t n, std::int64_t lda, double* sigma, double* u,
                std::int64_t ldu, double* vt, std::int64_t ldvt) override {
    svd_impl(a, m, n, lda, sigma, u, ldu, vt, ldvt);
  }

  void orthonormalize(float* a, std::int64_t m, std::int64_t n, std::int64_t lda) override {
    orthonormalize_impl(a, m, n, lda);
  }
  void orthonormalize(double* a, std::int64_t m, std::int64_t n, std::int64_t lda) override {
    orthonormalize_impl(a, m, n, lda);
  }

  void set_threads(int threads) override {
    if (threads > 0) openblas_set_num_threads(threads);
  }
  int threads() const override { return openblas_get_num_threads(); }

 private:
  template <typename T>
  static void gram_impl(const T* x, std::int64_t n, std::int64_t c, std::int64_t ldx, T alpha, T beta, T* out,
                        std::int64_t ldc) {
    if (ldx < c || ldc < c) fail("linalg: gram with ldx = {}, ldc = {} smaller than c = {}", ldx, ldc, c);
    if (c == 0) return;
    // X row-major n×c is column-major Xᵀ (c×n): XᵀX = (Xᵀ)(Xᵀ)ᵀ, SYRK "NoTrans".
    syrk(checked(c, "c"), checked(n, "n"), alpha, x, checked(std::max<std::int64_t>(ldx, 1), "ldx"), beta, out, checked(ldc, "ldc"));
  }

  template <typename T>
  static void gemm_impl(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a,
                        std::int64_t lda, const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
    gemm_call(ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, checked(m, "m"), checked(n, "n"),
              checked(k, "k"), alpha, a, checked(lda, "lda"), b, checked(ldb, "ldb"), beta, c, checked(ldc, "ldc"));
  }

  template <typename T>
  static void syevd_impl(char jobz, T* s, std::int64_t n, std::int64_t lds, T* w) {
    if (n == 0) return;
    check_info(syevd(jobz, checked(n, "n"), s, checked(lds, "lds"), w), "?syevd", n);
  }

  template <typename T>
  static void eigh_top_impl(T* s, std::int64_t n, std::int64_t lds, std::int64_t r, T* w, T* v, std::int64_t ldv) {
    if (r < 1 || r > n) fail("linalg: eigh_top asks for {} eigenpairs of a {}×{} matrix", r, n, n);
    lapack_int found = 0;
    std::vector<lapack_int> support(static_cast<std::size_t>(2 * r));
    // syevr writes all eigenvalues it computes into w, which must hold n entries.
    std::vector<T> all(static_cast<std::size_t>(n));
    lapack_int info = syevr(checked(n, "n"), s, checked(lds, "lds"), checked(n - r + 1, "il"), checked(n, "iu"),
                            &found, all.data(), v, checked(ldv, "ldv"), support.data());
    check_info(info, "?syevr", n);
    if (found != r) fail("linalg: ?syevr returned {} eigenpairs, expected {}", found, r);
    std::copy(all.begin(), all.begin() + r, w);
  }

  template <typename T>
  static void orthonormalize_impl(T* a, std::int64_t m, std::int64_t n, std::int64_t lda) {
    if (n > m) fail("linalg: orthonormalize needs m ≥ n, got a {}×{} matrix", m, n);
    if (lda < std::max<std::int64_t>(m, 1)) fail("linalg: orthonormalize with lda = {} < m = {}", lda, m);
    if (n == 0) return;
    std::vector<T> tau(static_cast<std::size_t>(n));
    check_info(geqrf(checked(m, "m"), checked(n, "n"), a, checked(lda, "lda"), tau.data()), "?geqrf", n);
    check_info(orgqr(checked(m, "m"), checked(n, "n"), a, checked(lda, "lda"), tau.data()), "?orgqr", n);
  }

  template <typename T>
  static void svd_impl(T* a, std::int64_t m, std::int64_t n, std::int64_t lda, T* sigma, T* u, std::int64_t ldu,
                       T* vt, std::int64_t ldvt) {
    if ((u == nullptr) != (vt == nullptr)) fail("linalg: svd_thin needs both U and Vᵀ or neither");
    const std::int64_t k = std::min(m, n);
    if (k == 0) return;
    T dummy = 0;
    const char jobz = u ? 'S' : 'N';
    lapack_int info = gesdd(jobz, checked(m, "m"), checked(n, "n"), a, checked(lda, "lda"), sigma, u ? u : &dummy,
                            u ? checked(ldu, "ldu") : 1, vt ? vt : &dummy, vt ? checked(ldvt, "ldvt") : 1);
    check_info(info, "?gesdd", k);
  }
};

}  // namespace

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

}  // namespace kvlab::linalg
