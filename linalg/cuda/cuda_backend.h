// linalg::Backend over cuBLAS + cuSOLVER on one CUDA device (device 0 of those visible).
//
// Built only when CMake finds the CUDA toolkit (KVLAB_CUDA=AUTO|ON); code that uses it checks
// `#if KVLAB_HAVE_CUDA` (defined by the kvlab_linalg_cuda target) and links kvlab_linalg_cuda.
// This header pulls in no CUDA header, so callers compile with the plain C++ compiler.
//
// Every Backend entry point takes HOST pointers, like the CPU backend: a call copies its inputs
// to the device, runs the library routine on one stream, copies the results back and waits.
// Device buffers are kept between calls and only ever grow (a stream of equal-sized calls
// allocates once); `release_memory()` hands them back. Routines (docs/performance.md §1, §6):
//   gram            cublas{S,D}syrk (upper), full-precision FP32/FP64 (no TF32)
//   gemm            cublas{S,D}gemm
//   eigvalsh, eigh  cusolverDnXsyevd (divide and conquer)
//   eigh_top        cusolverDnXsyevdx by index range il = n−r+1 … iu = n
//   svd_thin        cusolverDnXgesvdp (polar decomposition) by default, falling back to
//                   cusolverDnXgesvd when gesvdp had to perturb a near-zero σ; never gesvdj
//   orthonormalize  cusolverDnXgeqrf + cusolverDn{S,D}orgqr
// Every CUDA / cuBLAS / cuSOLVER status other than success becomes a kvlab::Error that names
// the operation, its shape and the library call at fault.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "linalg/backend.h"

namespace kvlab::linalg {

// True when the CUDA runtime sees at least one device. Never throws; the answer is cached.
bool cuda_available();
// Why cuda_available() is false ("cudaGetDeviceCount: cudaErrorNoDevice …"), or "" when true.
std::string cuda_unavailable_reason();

class CudaBackend final : public Backend {
 public:
  // Which cuSOLVER driver svd_thin uses.
  enum class SvdDriver {
    polar,  // Xgesvdp, with Xgesvd as fallback when gesvdp perturbed σ (h_err_sigma > u·σ₁)
    qr,     // Xgesvd (Householder bidiagonalisation + QR iteration): slowest, most robust
  };

  // Device-side time of the last completed call, from CUDA events on the backend's stream (ms).
  struct Timing {
    double upload_ms = 0;    // host → device copies of the inputs
    double compute_ms = 0;   // the library routines (and on-device transposes)
    double download_ms = 0;  // device → host copies of the results
  };

  // Throws kvlab::Error("no CUDA device: …") when cuda_available() is false.
  CudaBackend();
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  std::string_view name() const override { return "cuda"; }

  void gram(const float* x, std::int64_t n, std::int64_t c, std::int64_t ldx, float alpha, float beta, float* out,
            std::int64_t ldc) override;
  void gram(const double* x, std::int64_t n, std::int64_t c, std::int64_t ldx, double alpha, double beta,
            double* out, std::int64_t ldc) override;
  void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
            std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) override;
  void gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, double alpha,
            const double* a, std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c,
            std::int64_t ldc) override;
  void eigvalsh(float* s, std::int64_t n, std::int64_t lds, float* w) override;
  void eigvalsh(double* s, std::int64_t n, std::int64_t lds, double* w) override;
  void eigh(float* s, std::int64_t n, std::int64_t lds, float* w) override;
  void eigh(double* s, std::int64_t n, std::int64_t lds, double* w) override;
  void eigh_top(float* s, std::int64_t n, std::int64_t lds, std::int64_t r, float* w, float* vectors,
                std::int64_t ldv) override;
  void eigh_top(double* s, std::int64_t n, std::int64_t lds, std::int64_t r, double* w, double* vectors,
                std::int64_t ldv) override;
  void svd_thin(float* a, std::int64_t m, std::int64_t n, std::int64_t lda, float* sigma, float* u, std::int64_t ldu,
                float* vt, std::int64_t ldvt) override;
  void svd_thin(double* a, std::int64_t m, std::int64_t n, std::int64_t lda, double* sigma, double* u,
                std::int64_t ldu, double* vt, std::int64_t ldvt) override;
  void orthonormalize(float* a, std::int64_t m, std::int64_t n, std::int64_t lda) override;
  void orthonormalize(double* a, std::int64_t m, std::int64_t n, std::int64_t lda) override;

  // Streamed Grams kept on the device (cuda_panel_gram.cpp): blocks resident, pinned double
  // buffers, the copy of one token block overlapping the products of the previous one.
  std::unique_ptr<PanelGram<float>> panel_gram(int panels, std::int64_t width, std::int64_t capacity,
                                               GramPrecision precision) override;
  std::unique_ptr<PanelGram<double>> panel_gram_f64(int panels, std::int64_t width, std::int64_t capacity) override;
  // X uploaded once and kept for the projection; falls back to the base (host-pointer) route
  // when X, the Gram and A would take more than 90 % of the free device memory.
  SubspaceFactors gram_subspace(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                             GramPrecision precision) override;

  // X, Y and W stay on the device through the subspace iteration (cuda_randomized.cpp); falls
  // back to the base route when they would not fit in 90 % of the free device memory.
  SubspaceFactors randomized_subspace(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                      const RandomizedOptions& options) override;

  // Resident calls (backend.h) on device pointers: the Gram of the caller's X in one product on
  // a stream of ours after the caller's stream has synchronised, Xsyevdx on the device, only V_r
  // and the eigenvalues come back; resident_gemm is one cuBLAS Sgemm queued on the caller's stream.
  SubspaceFactors resident_gram_top(const float* x, const void* gram_input, std::int64_t n, std::int64_t c,
                                    std::int64_t r, GramPrecision precision, void* stream) override;
  // bf16 and f64 Grams multiply the caller's converted copy (no conversion kernels of our own).
  bool resident_gram_reads_input(GramPrecision precision) const override {
    return precision == GramPrecision::bf16 || precision == GramPrecision::f64;
  }
  // HMT with Y and W on the device beside the caller's X; only W = (QᵀX)ᵀ (c × ℓ) comes to the host.
  SubspaceFactors resident_randomized_top(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                          const RandomizedOptions& options, void* stream) override;
  void resident_gemm(bool trans_a, bool trans_b, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                     const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                     std::int64_t ldc, void* stream) override;

  // Not a thread count inside a call (the device has its own parallelism) but how many
  // independent calls a fan-out keeps in flight (Backend::worker): 0 (the default) or 1 is one
  // at a time. A cuSOLVER eigensolve leaves most of a large GPU idle in its latency-bound
  // steps, so several side by side can fill it.
  void set_threads(int threads) override;
  int threads() const override;
  // worker(0) is this backend; worker(w > 0) another CudaBackend on the same device, with a
  // stream, handles and buffers of its own, created on first use and kept (thread-safe).
  Backend& worker(int w) override;

  void set_svd_driver(SvdDriver driver);
  SvdDriver svd_driver() const;
  // True when the last polar svd_thin fell back to Xgesvd.
  bool last_svd_fell_back() const;

  Timing last_timing() const;
  // Bytes of device memory the backend holds in its reusable buffers.
  std::size_t device_bytes_held() const;
  // Frees the reusable device buffers (the next call allocates again).
  void release_memory();
  // "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)".
  std::string device_description() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The process-wide CUDA backend, created on first use. Throws kvlab::Error("no CUDA device: …")
// when there is none (and again on every later call, never a crash).
CudaBackend& cuda_backend();

}  // namespace kvlab::linalg
