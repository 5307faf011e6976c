// CUDA backend: cuBLAS + cuSOLVER behind linalg::Backend (contract and routine choice in
// cuda_backend.h). Plain C++ calling the libraries: no kernels of our own, so nvcc is not
// needed and the file costs CI (2 cores, no GPU) one ordinary compile.
#include "linalg/cuda/cuda_backend.h"

#include <algorithm>
#include <array>
#include <memory>
#include <mutex>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "linalg/cuda/cuda_common.h"

namespace kvlab::linalg {
namespace {

using cuda::Traits;

struct Probe {
  bool available = false;
  std::string reason;
};

const Probe& probe() {
  static const Probe result = [] {
    Probe p;
    int count = 0;
    const cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();  // clear it so later runtime calls do not report it again
      p.reason = fmt::format("cudaGetDeviceCount returned {} ({})", cudaGetErrorName(e), cudaGetErrorString(e));
    } else if (count == 0) {
      p.reason = "cudaGetDeviceCount found 0 devices";
    } else {
      p.available = true;
    }
    return p;
  }();
  return result;
}

}  // namespace

bool cuda_available() { return probe().available; }
std::string cuda_unavailable_reason() { return probe().reason; }

// Checks a status inside Impl, naming the operation in flight and the library routine.
#define KVLAB_CK(expression) check((expression), #expression)

struct CudaBackend::Impl {
  // Reusable device buffers, one per role; each only grows.
  enum Slot { kA, kB, kC, kU, kV, kW, kTau, kWork, kInfo, kSlots };
  struct Buffer {
    void* ptr = nullptr;
    std::size_t bytes = 0;
  };

  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cusolverDnHandle_t solver = nullptr;
  cusolverDnParams_t params = nullptr;
  std::array<cudaEvent_t, 4> events{};  // before upload, after upload, after compute, after download
  std::array<Buffer, kSlots> buffers{};
  std::vector<char> host_work;
  std::string op = "initialisation";  // the call in flight, for error messages: "eigh (n = 4096, f64)"
  std::string description;
  Timing timing;
  SvdDriver svd_driver = SvdDriver::polar;
  bool svd_fell_back = false;
  int threads = 0;
  std::mutex workers_mutex;
  std::vector<std::unique_ptr<CudaBackend>> workers;  // worker(w) for w ≥ 1, at w − 1

  template <typename Status>
  void check(Status s, const char* expression) const {
    cuda::check(s, expression, op);
  }
  void check_info(int info, const char* routine) const { cuda::check_info(info, routine, op); }

  void init() {
    if (!cuda_available()) fail("no CUDA device: {}", cuda_unavailable_reason());
    KVLAB_CK(cudaSetDevice(0));
    cudaDeviceProp prop{};
    KVLAB_CK(cudaGetDeviceProperties(&prop, 0));
    description = fmt::format("{} (sm_{}{}, {:.1f} GiB)", prop.name, prop.major, prop.minor,
                              double(prop.totalGlobalMem) / double(1 << 30));
    KVLAB_CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    KVLAB_CK(cublasCreate(&blas));
    KVLAB_CK(cublasSetStream(blas, stream));
    // Full FP32: TF32 would change results at the 1e-3 level (an explicit opt-in, later).
    KVLAB_CK(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH));
    KVLAB_CK(cusolverDnCreate(&solver));
    KVLAB_CK(cusolverDnSetStream(solver, stream));
    KVLAB_CK(cusolverDnCreateParams(&params));
    for (auto& e : events) KVLAB_CK(cudaEventCreate(&e));
  }

  ~Impl() {
    // Teardown may run after the CUDA runtime has unloaded at exit: statuses are ignored.
    for (auto& b : buffers)
      if (b.ptr) (void)cudaFree(b.ptr);
    for (auto& e : events)
      if (e) (void)cudaEventDestroy(e);
    if (params) (void)cusolverDnDestroyParams(params);
    if (solver) (void)cusolverDnDestroy(solver);
    if (blas) (void)cublasDestroy(blas);
    if (stream) (void)cudaStreamDestroy(stream);
  }

  void* ensure(Slot slot, std::size_t bytes) {
    Buffer& b = buffers[slot];
    if (bytes <= b.bytes && b.ptr) return b.ptr;
    // Round up to 2 MiB so slowly growing sizes do not reallocate every call.
    const std::size_t granule = std::size_t{2} << 20;
    const std::size_t want = std::max<std::size_t>((bytes + granule - 1) / granule * granule, granule);
    if (b.ptr) {
      KVLAB_CK(cudaFree(b.ptr));  // synchronises: no queued work still uses the old buffer
      b.ptr = nullptr;
      b.bytes = 0;
    }
    const cudaError_t e = cudaMalloc(&b.ptr, want);
    if (e != cudaSuccess) {
      (void)cudaGetLastError();
      b.ptr = nullptr;
      fail("linalg::cuda {}: cudaMalloc of {:.1f} MiB failed: {} (the backend already holds {:.1f} MiB)", op,
           double(want) / double(1 << 20), cudaGetErrorName(e), double(held()) / double(1 << 20));
    }
    b.bytes = want;
    return b.ptr;
  }
  template <typename T>
  T* get(Slot slot, std::int64_t count) {
    return static_cast<T*>(ensure(slot, sizeof(T) * static_cast<std::size_t>(std::max<std::int64_t>(count, 1))));
  }
  void* host(std::size_t bytes) {
    if (host_work.size() < bytes) host_work.resize(bytes);
    return bytes ? host_work.data() : nullptr;
  }
  std::size_t held() const {
    std::size_t total = 0;
    for (const auto& b : buffers) total += b.bytes;
    return total;
  }

  // Column-major rows×cols copies between a host matrix (ld) and a packed device one (ld = rows).
  template <typename T>
  void upload(T* dst, const T* src, std::int64_t ld, std::int64_t rows, std::int64_t cols) {
    if (rows == 0 || cols == 0) return;
    if (ld == rows)
      KVLAB_CK(cudaMemcpyAsync(dst, src, sizeof(T) * rows * cols, cudaMemcpyHostToDevice, stream));
    else
      KVLAB_CK(cudaMemcpy2DAsync(dst, sizeof(T) * rows, src, sizeof(T) * ld, sizeof(T) * rows, cols,
                                 cudaMemcpyHostToDevice, stream));
  }
  template <typename T>
  void download(T* dst, std::int64_t ld, const T* src, std::int64_t rows, std::int64_t cols) {
    if (rows == 0 || cols == 0) return;
    if (ld == rows)
      KVLAB_CK(cudaMemcpyAsync(dst, src, sizeof(T) * rows * cols, cudaMemcpyDeviceToHost, stream));
    else
      KVLAB_CK(cudaMemcpy2DAsync(dst, sizeof(T) * ld, src, sizeof(T) * rows, sizeof(T) * rows, cols,
                                 cudaMemcpyDeviceToHost, stream));
  }

  void mark(int i) { KVLAB_CK(cudaEventRecord(events[i], stream)); }
  void finish() {
    KVLAB_CK(cudaStreamSynchronize(stream));
    float ms[3] = {0, 0, 0};
    for (int i = 0; i < 3; ++i) KVLAB_CK(cudaEventElapsedTime(&ms[i], events[i], events[i + 1]));
    timing = Timing{ms[0], ms[1], ms[2]};
  }

  // dst (cols×rows, packed) ← srcᵀ, src rows×cols packed; on the stream.
  template <typename T>
  void transpose(T* dst, const T* src, std::int64_t rows, std::int64_t cols) {
    const T one = 1, zero = 0;
    if constexpr (std::is_same_v<T, float>)
      KVLAB_CK(cublasSgeam_64(blas, CUBLAS_OP_T, CUBLAS_OP_N, cols, rows, &one, src, rows, &zero, dst, cols, dst,
                              cols));
    else
      KVLAB_CK(cublasDgeam_64(blas, CUBLAS_OP_T, CUBLAS_OP_N, cols, rows, &one, src, rows, &zero, dst, cols, dst,
                              cols));
  }

  static void need(bool ok, std::string_view op_name, std::string_view what) {
    if (!ok) fail("linalg::cuda {}: {}", op_name, what);
  }

  // ---- operations -------------------------------------------------------------------------

  template <typename T>
  void gram(const T* x, std::int64_t n, std::int64_t c, std::int64_t ldx, T alpha, T beta, T* out,
            std::int64_t ldc) {
    need(n >= 0 && c >= 0, "gram", fmt::format("negative shape n = {}, c = {}", n, c));
    need(ldx >= std::max<std::int64_t>(c, 1) && ldc >= std::max<std::int64_t>(c, 1), "gram",
         fmt::format("ldx = {}, ldc = {} smaller than c = {}", ldx, ldc, c));
    if (c == 0) return;
    op = fmt::format("gram (n = {}, c = {}, {})", n, c, Traits<T>::name);
    T* dx = get<T>(kA, c * n);
    T* dc = get<T>(kC, c * c);
    mark(0);
    upload(dx, x, ldx, c, n);  // row-major n×c with stride ldx is column-major Xᵀ (c×n, ld ldx)
    // The whole of C goes up: syrk writes only the upper triangle, so the lower one round-trips
    // unchanged (the contract leaves it untouched). With β = 0 syrk does not read C.
    upload(dc, out, ldc, c, c);
    mark(1);
    if constexpr (std::is_same_v<T, float>)
      KVLAB_CK(cublasSsyrk_64(blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, c, n, &alpha, dx, c, &beta, dc, c));
    else
      KVLAB_CK(cublasDsyrk_64(blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, c, n, &alpha, dx, c, &beta, dc, c));
    mark(2);
    download(out, ldc, dc, c, c);
    mark(3);
    finish();
  }

  template <typename T>
  void gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, T alpha, const T* a, std::int64_t lda,
            const T* b, std::int64_t ldb, T beta, T* c, std::int64_t ldc) {
    need(m >= 0 && n >= 0 && k >= 0, "gemm", fmt::format("negative shape m = {}, n = {}, k = {}", m, n, k));
    const std::int64_t rows_a = ta ? k : m, cols_a = ta ? m : k;
    const std::int64_t rows_b = tb ? n : k, cols_b = tb ? k : n;
    need(lda >= std::max<std::int64_t>(rows_a, 1) && ldb >= std::max<std::int64_t>(rows_b, 1) &&
             ldc >= std::max<std::int64_t>(m, 1),
         "gemm", fmt::format("lda = {}, ldb = {}, ldc = {} too small for m = {}, n = {}, k = {}", lda, ldb, ldc, m, n, k));
    if (m == 0 || n == 0) return;
    op = fmt::format("gemm (m = {}, n = {}, k = {}, {})", m, n, k, Traits<T>::name);
    T* da = get<T>(kA, rows_a * cols_a);
    T* db = get<T>(kB, rows_b * cols_b);
    T* dc = get<T>(kC, m * n);
    mark(0);
    upload(da, a, lda, rows_a, cols_a);
    upload(db, b, ldb, rows_b, cols_b);
    if (beta != T(0)) upload(dc, c, ldc, m, n);  // with β = 0, C is write-only
    mark(1);
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const std::int64_t lda_d = std::max<std::int64_t>(rows_a, 1), ldb_d = std::max<std::int64_t>(rows_b, 1);
    if constexpr (std::is_same_v<T, float>)
      KVLAB_CK(cublasSgemm_64(blas, opa, opb, m, n, k, &alpha, da, lda_d, db, ldb_d, &beta, dc, m));
    else
      KVLAB_CK(cublasDgemm_64(blas, opa, opb, m, n, k, &alpha, da, lda_d, db, ldb_d, &beta, dc, m));
    mark(2);
    download(c, ldc, dc, m, n);
    mark(3);
    finish();
  }

  // op(A)·op(B) on device pointers, queued on the caller's stream (the handle goes back to
  // ours afterwards, also when the call fails).
  void resident_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                     std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc,
                     cudaStream_t user) {
    need(m >= 0 && n >= 0 && k >= 0, "resident_gemm", fmt::format("negative shape m = {}, n = {}, k = {}", m, n, k));
    need(lda >= std::max<std::int64_t>(ta ? k : m, 1) && ldb >= std::max<std::int64_t>(tb ? n : k, 1) &&
             ldc >= std::max<std::int64_t>(m, 1),
         "resident_gemm",
         fmt::format("lda = {}, ldb = {}, ldc = {} too small for m = {}, n = {}, k = {}", lda, ldb, ldc, m, n, k));
    if (m == 0 || n == 0) return;
    op = fmt::format("resident_gemm (m = {}, n = {}, k = {}, f32)", m, n, k);
    KVLAB_CK(cublasSetStream(blas, user));
    struct Restore {
      Impl& impl;
      ~Restore() { (void)cublasSetStream(impl.blas, impl.stream); }
    } restore{*this};
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    KVLAB_CK(cublasSgemm_64(blas, opa, opb, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc));
  }

  template <typename T>
  void syevd(bool vectors, T* s, std::int64_t n, std::int64_t lds, T* w) {
    const char* name = vectors ? "eigh" : "eigvalsh";
    need(n >= 0 && lds >= std::max<std::int64_t>(n, 1), name, fmt::format("n = {}, lds = {}", n, lds));
    if (n == 0) return;
    op = fmt::format("{} (n = {}, {})", name, n, Traits<T>::name);
    const cusolverEigMode_t mode = vectors ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR;
    constexpr cudaDataType type = Traits<T>::type;
    T* da = get<T>(kA, n * n);
    T* dw = get<T>(kW, n);
    int* dinfo = get<int>(kInfo, 1);
    std::size_t dev_bytes = 0, host_bytes = 0;
    KVLAB_CK(cusolverDnXsyevd_bufferSize(solver, params, mode, CUBLAS_FILL_MODE_UPPER, n, type, da, n, type, dw, type,
                                         &dev_bytes, &host_bytes));
    void* dwork = ensure(kWork, dev_bytes);
    void* hwork = host(host_bytes);
    mark(0);
    upload(da, s, lds, n, n);
    mark(1);
    KVLAB_CK(cusolverDnXsyevd(solver, params, mode, CUBLAS_FILL_MODE_UPPER, n, type, da, n, type, dw, type, dwork,
                              dev_bytes, hwork, host_bytes, dinfo));
    mark(2);
    int info = 0;
    KVLAB_CK(cudaMemcpyAsync(&info, dinfo, sizeof(int), cudaMemcpyDeviceToHost, stream));
    download(w, n, dw, n, 1);
    if (vectors) download(s, lds, da, n, n);
    mark(3);
    finish();
    check_info(info, "cusolverDnXsyevd");
  }

  template <typename T>
  void syevdx_top(T* s, std::int64_t n, std::int64_t lds, std::int64_t r, T* w, T* v, std::int64_t ldv) {
    need(r >= 1 && r <= n, "eigh_top", fmt::format("asks for {} eigenpairs of a {}×{} matrix", r, n, n));
    need(lds >= n && ldv >= n, "eigh_top", fmt::format("lds = {}, ldv = {} smaller than n = {}", lds, ldv, n));
    op = fmt::format("eigh_top (n = {}, r = {}, {})", n, r, Traits<T>::name);
    constexpr cudaDataType type = Traits<T>::type;
    T* da = get<T>(kA, n * n);
    T* dw = get<T>(kW, n);  // the routine may write up to n values
    int* dinfo = get<int>(kInfo, 1);
    T vl = 0, vu = 0;  // unused with an index range
    std::int64_t found = 0;
    const std::int64_t il = n - r + 1, iu = n;  // 1-based: the r largest (ascending order)
    std::size_t dev_bytes = 0, host_bytes = 0;
    KVLAB_CK(cusolverDnXsyevdx_bufferSize(solver, params, CUSOLVER_EIG_MODE_VECTOR, CUSOLVER_EIG_RANGE_I,
                                          CUBLAS_FILL_MODE_UPPER, n, type, da, n, &vl, &vu, il, iu, &found, type, dw,
                                          type, &dev_bytes, &host_bytes));
    void* dwork = ensure(kWork, dev_bytes);
    void* hwork = host(host_bytes);
    mark(0);
    upload(da, s, lds, n, n);
    mark(1);
    KVLAB_CK(cusolverDnXsyevdx(solver, params, CUSOLVER_EIG_MODE_VECTOR, CUSOLVER_EIG_RANGE_I, CUBLAS_FILL_MODE_UPPER,
                               n, type, da, n, &vl, &vu, il, iu, &found, type, dw, type, dwork, dev_bytes, hwork,
                               host_bytes, dinfo));
    mark(2);
    int info = 0;
    KVLAB_CK(cudaMemcpyAsync(&info, dinfo, sizeof(int), cudaMemcpyDeviceToHost, stream));
    download(w, r, dw, r, 1);
    download(v, ldv, da, n, r);  // the eigenvectors are the first `found` columns of A
    mark(3);
    finish();
    check_info(info, "cusolverDnXsyevdx");
    if (found != r) fail("linalg::cuda {}: cusolverDnXsyevdx returned {} eigenpairs, expected {}", op, found, r);
  }

  // Thin SVD. cuSOLVER's gesvd needs m ≥ n, so a wide A is factored as its transpose:
  // Aᵀ = U_t Σ V_tᵀ gives A = V_t Σ U_tᵀ, i.e. u = V_t and vt = U_tᵀ.
  template <typename T>
  void svd(T* a, std::int64_t m, std::int64_t n, std::int64_t lda, T* sigma, T* u, std::int64_t ldu, T* vt,
           std::int64_t ldvt) {
    need((u == nullptr) == (vt == nullptr), "svd_thin", "needs both U and Vᵀ or neither");
    need(m >= 0 && n >= 0 && lda >= std::max<std::int64_t>(m, 1), "svd_thin",
         fmt::format("m = {}, n = {}, lda = {}", m, n, lda));
    const std::int64_t k = std::min(m, n);
    const bool vectors = u != nullptr;
    if (vectors)
      need(ldu >= std::max<std::int64_t>(m, 1) && ldvt >= std::max<std::int64_t>(k, 1), "svd_thin",
           fmt::format("ldu = {} or ldvt = {} too small for {}×{}", ldu, ldvt, m, n));
    if (k == 0) return;
    op = fmt::format("svd_thin (m = {}, n = {}, {})", m, n, Traits<T>::name);
    const bool tall = m >= n;
    const std::int64_t big = tall ? m : n;  // the factored matrix is big×k
    T* da = get<T>(kA, big * k);
    T* du = get<T>(kU, big * k);
    T* dv = get<T>(kV, k * k);
    T* ds = get<T>(kW, k);
    T* dt = get<T>(kB, std::max(m * n, k * k));  // scratch: the wide input, then transposes
    int* dinfo = get<int>(kInfo, 1);

    svd_fell_back = false;
    mark(0);
    bool have_v = false;  // dv holds V (gesvdp) rather than Vᵀ (gesvd)
    if (svd_driver == SvdDriver::polar) {
      upload_for_svd(da, dt, a, m, n, lda, tall);
      mark(1);
      double err_sigma = 0;
      run_gesvdp(vectors, big, k, da, ds, du, dv, dinfo, &err_sigma);
      // gesvdp perturbs A when it has a σ near zero and reports the shift: beyond rounding
      // at σ₁'s scale the result is not the SVD of A, so redo it with QR iteration.
      const T s1 = sigma_max(ds);
      if (err_sigma > Traits<T>::unit_roundoff * double(s1) || (s1 == T(0) && err_sigma > 0)) {
        svd_fell_back = true;
        upload_for_svd(da, dt, a, m, n, lda, tall);
        run_gesvd(vectors, big, k, da, ds, du, dv, dinfo);
      } else {
        have_v = true;
      }
    } else {
      upload_for_svd(da, dt, a, m, n, lda, tall);
      mark(1);
      run_gesvd(vectors, big, k, da, ds, du, dv, dinfo);
    }
    mark(2);
    download(sigma, k, ds, k, 1);
    if (vectors) {
      if (tall) {  // u = U_t, vt = V_tᵀ
        download(u, ldu, du, m, k);
        if (have_v) {
          transpose(dt, dv, k, k);
          download(vt, ldvt, dt, k, n);
        } else {
          download(vt, ldvt, dv, k, n);
        }
      } else {  // u = V_t (k×k), vt = U_tᵀ (k×n); one stream, so dt's reuse is ordered
        if (have_v) {
          download(u, ldu, dv, m, k);
        } else {
          transpose(dt, dv, k, k);
          download(u, ldu, dt, m, k);
        }
        transpose(dt, du, n, k);
        download(vt, ldvt, dt, k, n);
      }
    }
    mark(3);
    finish();
  }

  template <typename T>
  void upload_for_svd(T* da, T* dt, const T* a, std::int64_t m, std::int64_t n, std::int64_t lda, bool tall) {
    if (tall) {
      upload(da, a, lda, m, n);
    } else {
      upload(dt, a, lda, m, n);
      transpose(da, dt, m, n);
    }
  }

  template <typename T>
  T sigma_max(const T* ds) {
    T s1 = 0;
    int info = 0;
    KVLAB_CK(cudaMemcpyAsync(&s1, ds, sizeof(T), cudaMemcpyDeviceToHost, stream));
    KVLAB_CK(cudaMemcpyAsync(&info, buffers[kInfo].ptr, sizeof(int), cudaMemcpyDeviceToHost, stream));
    KVLAB_CK(cudaStreamSynchronize(stream));
    check_info(info, "cusolverDnXgesvdp");
    return s1;
  }

  template <typename T>
  void run_gesvdp(bool vectors, std::int64_t big, std::int64_t k, T* da, T* ds, T* du, T* dv, int* dinfo,
                  double* err_sigma) {
    constexpr cudaDataType type = Traits<T>::type;
    const cusolverEigMode_t mode = vectors ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR;
    const int econ = 1;
    std::size_t dev_bytes = 0, host_bytes = 0;
    KVLAB_CK(cusolverDnXgesvdp_bufferSize(solver, params, mode, econ, big, k, type, da, big, type, ds, type, du, big,
                                          type, dv, k, type, &dev_bytes, &host_bytes));
    void* dwork = ensure(kWork, dev_bytes);
    void* hwork = host(host_bytes);
    KVLAB_CK(cusolverDnXgesvdp(solver, params, mode, econ, big, k, type, da, big, type, ds, type, du, big, type, dv,
                               k, type, dwork, dev_bytes, hwork, host_bytes, dinfo, err_sigma));
  }

  template <typename T>
  void run_gesvd(bool vectors, std::int64_t big, std::int64_t k, T* da, T* ds, T* du, T* dvt, int* dinfo) {
    constexpr cudaDataType type = Traits<T>::type;
    const signed char job = vectors ? 'S' : 'N';
    std::size_t dev_bytes = 0, host_bytes = 0;
    KVLAB_CK(cusolverDnXgesvd_bufferSize(solver, params, job, job, big, k, type, da, big, type, ds, type, du, big,
                                         type, dvt, k, type, &dev_bytes, &host_bytes));
    void* dwork = ensure(kWork, dev_bytes);
    void* hwork = host(host_bytes);
    KVLAB_CK(cusolverDnXgesvd(solver, params, job, job, big, k, type, da, big, type, ds, type, du, big, type, dvt, k,
                              type, dwork, dev_bytes, hwork, host_bytes, dinfo));
    int info = 0;
    KVLAB_CK(cudaMemcpyAsync(&info, dinfo, sizeof(int), cudaMemcpyDeviceToHost, stream));
    KVLAB_CK(cudaStreamSynchronize(stream));
    check_info(info, "cusolverDnXgesvd");
  }

  template <typename T>
  void orthonormalize(T* a, std::int64_t m, std::int64_t n, std::int64_t lda) {
    need(n >= 0 && n <= m, "orthonormalize", fmt::format("needs m ≥ n, got a {}×{} matrix", m, n));
    need(lda >= std::max<std::int64_t>(m, 1), "orthonormalize", fmt::format("lda = {} < m = {}", lda, m));
    if (n == 0) return;
    // orgqr exists only in cuSOLVER's 32-bit API.
    need(m <= INT32_MAX, "orthonormalize", fmt::format("m = {} exceeds cusolverDn?orgqr's 32-bit range", m));
    op = fmt::format("orthonormalize (m = {}, n = {}, {})", m, n, Traits<T>::name);
    constexpr cudaDataType type = Traits<T>::type;
    T* da = get<T>(kA, m * n);
    T* dtau = get<T>(kTau, n);
    int* dinfo = get<int>(kInfo, 2);
    const int mi = static_cast<int>(m), ni = static_cast<int>(n);
    std::size_t dev_bytes = 0, host_bytes = 0;
    KVLAB_CK(cusolverDnXgeqrf_bufferSize(solver, params, m, n, type, da, m, type, dtau, type, &dev_bytes,
                                         &host_bytes));
    int lwork = 0;
    if constexpr (std::is_same_v<T, float>)
      KVLAB_CK(cusolverDnSorgqr_bufferSize(solver, mi, ni, ni, da, mi, dtau, &lwork));
    else
      KVLAB_CK(cusolverDnDorgqr_bufferSize(solver, mi, ni, ni, da, mi, dtau, &lwork));
    void* dwork = ensure(kWork, std::max(dev_bytes, sizeof(T) * static_cast<std::size_t>(lwork)));
    void* hwork = host(host_bytes);
    mark(0);
    upload(da, a, lda, m, n);
    mark(1);
    KVLAB_CK(cusolverDnXgeqrf(solver, params, m, n, type, da, m, type, dtau, type, dwork, dev_bytes, hwork,
                              host_bytes, dinfo));
    if constexpr (std::is_same_v<T, float>)
      KVLAB_CK(cusolverDnSorgqr(solver, mi, ni, ni, da, mi, dtau, static_cast<T*>(dwork), lwork, dinfo + 1));
    else
      KVLAB_CK(cusolverDnDorgqr(solver, mi, ni, ni, da, mi, dtau, static_cast<T*>(dwork), lwork, dinfo + 1));
    mark(2);
    int info[2] = {0, 0};
    KVLAB_CK(cudaMemcpyAsync(info, dinfo, 2 * sizeof(int), cudaMemcpyDeviceToHost, stream));
    download(a, lda, da, m, n);
    mark(3);
    finish();
    check_info(info[0], "cusolverDnXgeqrf");
    check_info(info[1], "cusolverDn?orgqr");
  }
};

#undef KVLAB_CK

CudaBackend::CudaBackend() : impl_(std::make_unique<Impl>()) { impl_->init(); }
CudaBackend::~CudaBackend() = default;

void CudaBackend::gram(const float* x, std::int64_t n, std::int64_t c, std::int64_t ldx, float alpha, float beta,
                       float* out, std::int64_t ldc) {
  impl_->gram(x, n, c, ldx, alpha, beta, out, ldc);
}
void CudaBackend::gram(const double* x, std::int64_t n, std::int64_t c, std::int64_t ldx, double alpha, double beta,
                       double* out, std::int64_t ldc) {
  impl_->gram(x, n, c, ldx, alpha, beta, out, ldc);
}
void CudaBackend::gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha, const float* a,
                       std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c, std::int64_t ldc) {
  impl_->gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void CudaBackend::gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, double alpha,
                       const double* a, std::int64_t lda, const double* b, std::int64_t ldb, double beta, double* c,
                       std::int64_t ldc) {
  impl_->gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
void CudaBackend::resident_gemm(bool ta, bool tb, std::int64_t m, std::int64_t n, std::int64_t k, float alpha,
                                const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float beta, float* c,
                                std::int64_t ldc, void* stream) {
  impl_->resident_gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, static_cast<cudaStream_t>(stream));
}
void CudaBackend::eigvalsh(float* s, std::int64_t n, std::int64_t lds, float* w) { impl_->syevd(false, s, n, lds, w); }
void CudaBackend::eigvalsh(double* s, std::int64_t n, std::int64_t lds, double* w) {
  impl_->syevd(false, s, n, lds, w);
}
void CudaBackend::eigh(float* s, std::int64_t n, std::int64_t lds, float* w) { impl_->syevd(true, s, n, lds, w); }
void CudaBackend::eigh(double* s, std::int64_t n, std::int64_t lds, double* w) { impl_->syevd(true, s, n, lds, w); }
void CudaBackend::eigh_top(float* s, std::int64_t n, std::int64_t lds, std::int64_t r, float* w, float* v,
                           std::int64_t ldv) {
  impl_->syevdx_top(s, n, lds, r, w, v, ldv);
}
void CudaBackend::eigh_top(double* s, std::int64_t n, std::int64_t lds, std::int64_t r, double* w, double* v,
                           std::int64_t ldv) {
  impl_->syevdx_top(s, n, lds, r, w, v, ldv);
}
void CudaBackend::svd_thin(float* a, std::int64_t m, std::int64_t n, std::int64_t lda, float* sigma, float* u,
                           std::int64_t ldu, float* vt, std::int64_t ldvt) {
  impl_->svd(a, m, n, lda, sigma, u, ldu, vt, ldvt);
}
void CudaBackend::svd_thin(double* a, std::int64_t m, std::int64_t n, std::int64_t lda, double* sigma, double* u,
                           std::int64_t ldu, double* vt, std::int64_t ldvt) {
  impl_->svd(a, m, n, lda, sigma, u, ldu, vt, ldvt);
}
void CudaBackend::orthonormalize(float* a, std::int64_t m, std::int64_t n, std::int64_t lda) {
  impl_->orthonormalize(a, m, n, lda);
}
void CudaBackend::orthonormalize(double* a, std::int64_t m, std::int64_t n, std::int64_t lda) {
  impl_->orthonormalize(a, m, n, lda);
}

void CudaBackend::set_threads(int threads) { impl_->threads = threads; }
Backend& CudaBackend::worker(int w) {
  if (w <= 0) return *this;
  const std::lock_guard lock(impl_->workers_mutex);
  auto& workers = impl_->workers;
  if (workers.size() < static_cast<std::size_t>(w)) workers.resize(static_cast<std::size_t>(w));
  auto& slot = workers[static_cast<std::size_t>(w - 1)];
  if (!slot) slot = std::make_unique<CudaBackend>();
  return *slot;
}
int CudaBackend::threads() const { return impl_->threads; }
void CudaBackend::set_svd_driver(SvdDriver driver) { impl_->svd_driver = driver; }
CudaBackend::SvdDriver CudaBackend::svd_driver() const { return impl_->svd_driver; }
bool CudaBackend::last_svd_fell_back() const { return impl_->svd_fell_back; }
CudaBackend::Timing CudaBackend::last_timing() const { return impl_->timing; }
std::size_t CudaBackend::device_bytes_held() const { return impl_->held(); }
std::string CudaBackend::device_description() const { return impl_->description; }

void CudaBackend::release_memory() {
  for (auto& b : impl_->buffers) {
    if (b.ptr) (void)cudaFree(b.ptr);
    b = Impl::Buffer{};
  }
}

CudaBackend& cuda_backend() {
  // A throwing constructor leaves the static uninitialised: a later call tries again and
  // throws the same "no CUDA device" error.
  static CudaBackend backend;
  return backend;
}

}  // namespace kvlab::linalg
