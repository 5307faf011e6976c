// CudaBackend::randomized_subspace: the HMT subspace iteration of Backend::randomized_subspace
// with X, Y and W resident on the device (X goes up once instead of 2q + 3 times), the same Ω
// (randomized_sketch) and the same finish (sketch_top_vectors), so CPU and GPU agree to f32
// rounding. Products: cublasSgemm; re-orthonormalisation: cusolverDnXgeqrf + cusolverDnSorgqr.
#include <algorithm>

#include "core/error.h"
#include "linalg/cuda/cuda_backend.h"
#include "linalg/cuda/cuda_common.h"

namespace kvlab::linalg {
namespace {

using cuda::DeviceMemory;
using cuda::StreamPair;

// Householder QR of the m×k device matrix `a` (ld m), replaced by its Q; on s.compute.
class DeviceOrthonormalizer {
 public:
  DeviceOrthonormalizer(StreamPair& s, std::int64_t max_k, std::string_view op)
      : s_(s), op_(op), tau_(sizeof(float) * max_k, op), info_(2 * sizeof(int), op) {}

  void operator()(float* a, std::int64_t m, std::int64_t k) {
    if (m > INT32_MAX) fail("linalg::cuda {}: m = {} exceeds cusolverDnSorgqr's 32-bit range", op_, m);
    const int mi = static_cast<int>(m), ki = static_cast<int>(k);
    std::size_t dev_bytes = 0, host_bytes = 0;
    KVLAB_CUDA_CHECK(cusolverDnXgeqrf_bufferSize(s_.solver, s_.params, m, k, CUDA_R_32F, a, m, CUDA_R_32F,
                                                 tau_.as<float>(), CUDA_R_32F, &dev_bytes, &host_bytes),
                     op_);
    int lwork = 0;
    KVLAB_CUDA_CHECK(cusolverDnSorgqr_bufferSize(s_.solver, mi, ki, ki, a, mi, tau_.as<float>(), &lwork), op_);
    const std::size_t need = std::max(dev_bytes, sizeof(float) * static_cast<std::size_t>(lwork));
    if (work_.bytes() < need) work_.allocate(need, op_);  // cudaFree of the old one waits for its users
    if (host_.size() < host_bytes) host_.resize(host_bytes);
    KVLAB_CUDA_CHECK(cusolverDnXgeqrf(s_.solver, s_.params, m, k, CUDA_R_32F, a, m, CUDA_R_32F, tau_.as<float>(),
                                      CUDA_R_32F, work_.as<void>(), dev_bytes, host_.data(), host_bytes,
                                      info_.as<int>()),
                     op_);
    KVLAB_CUDA_CHECK(cusolverDnSorgqr(s_.solver, mi, ki, ki, a, mi, tau_.as<float>(), work_.as<float>(), lwork,
                                      info_.as<int>() + 1),
                     op_);
  }

  // The devInfo of the last geqrf and orgqr (a rejected argument recurs every call, so the
  // last ones tell).
  void check() {
    int info[2] = {0, 0};
    KVLAB_CUDA_CHECK(cudaMemcpyAsync(info, info_.as<int>(), sizeof(info), cudaMemcpyDeviceToHost, s_.compute), op_);
    KVLAB_CUDA_CHECK(cudaStreamSynchronize(s_.compute), op_);
    cuda::check_info(info[0], "cusolverDnXgeqrf", op_);
    cuda::check_info(info[1], "cusolverDnSorgqr", op_);
  }

 private:
  StreamPair& s_;
  std::string_view op_;
  DeviceMemory tau_, info_, work_;
  std::vector<char> host_;
};

// HMT on the device X (row-major n×c, ld c) with device scratch Y (n×ℓ) and W (c×ℓ): Ω up, the
// subspace iteration, W = (QᵀX)ᵀ down for the small SVD on the host; V_r comes back in out.v
// (energy and a empty).
SubspaceFactors device_randomized_vectors(StreamPair& s, const float* X, std::int64_t n, std::int64_t c,
                                          std::int64_t r, std::int64_t ell, const Backend::RandomizedOptions& o,
                                          Backend& host_svd, float* Y, float* W, const std::string& op) {
  DeviceOrthonormalizer orthonormalize(s, ell, op);
  const auto omega = randomized_sketch(c, ell, o.seed, o.stream);
  KVLAB_CUDA_CHECK(cudaMemcpyAsync(W, omega.data(), sizeof(float) * omega.size(), cudaMemcpyHostToDevice, s.compute),
                   op);
  const float one = 1, zero = 0;
  // Row-major X is the column-major c×n matrix Xᵀ (ld c).
  auto x_times = [&](const float* b) {  // Y = X·B, B = c×ℓ
    KVLAB_CUDA_CHECK(cublasSgemm_64(s.blas, CUBLAS_OP_T, CUBLAS_OP_N, n, ell, c, &one, X, c, b, c, &zero, Y, n), op);
  };
  auto xt_times_y = [&] {  // W = Xᵀ·Y
    KVLAB_CUDA_CHECK(cublasSgemm_64(s.blas, CUBLAS_OP_N, CUBLAS_OP_N, c, ell, n, &one, X, c, Y, n, &zero, W, c), op);
  };
  x_times(W);  // Y = X·Ω
  orthonormalize(Y, n, ell);
  for (std::int64_t it = 0; it < o.iters; ++it) {
    xt_times_y();
    orthonormalize(W, c, ell);
    x_times(W);
    orthonormalize(Y, n, ell);
  }
  xt_times_y();  // (QᵀX)ᵀ
  orthonormalize.check();
  std::vector<float> w(static_cast<std::size_t>(c * ell));
  KVLAB_CUDA_CHECK(cudaMemcpyAsync(w.data(), W, sizeof(float) * w.size(), cudaMemcpyDeviceToHost, s.compute), op);
  KVLAB_CUDA_CHECK(cudaStreamSynchronize(s.compute), op);
  SubspaceFactors out;
  out.rank = r;
  sketch_top_vectors(host_svd, w, c, ell, r, o.small_svd_f64, out.v);  // an ℓ-column SVD: host pointers are fine
  return out;
}

// The checks and ℓ of both entry points; false: the base version's error applies.
bool randomized_shape_ok(std::int64_t n, std::int64_t c, std::int64_t r, const Backend::RandomizedOptions& o) {
  return n >= 1 && c >= 1 && r >= 1 && r <= std::min(n, c) && o.oversample >= 0 && o.iters >= 0;
}

}  // namespace

SubspaceFactors CudaBackend::randomized_subspace(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                                 const RandomizedOptions& o) {
  if (!randomized_shape_ok(n, c, r, o)) return Backend::randomized_subspace(x, n, c, r, o);  // its error
  const std::int64_t ell = std::min(r + o.oversample, std::min(n, c));
  const std::string op = fmt::format("randomized_subspace (n = {}, c = {}, r = {}, ℓ = {})", n, c, r, ell);
  // X, Y (also A), W (also Ω and V_r), and a QR workspace of about Y's size.
  const std::size_t need = sizeof(float) * static_cast<std::size_t>(n * c + 2 * n * ell + c * ell);
  if (need > cuda::free_device_bytes(op) / 10 * 9) return Backend::randomized_subspace(x, n, c, r, o);

  StreamPair s(op);
  DeviceMemory xd(sizeof(float) * n * c, op), yd(sizeof(float) * n * ell, op), wd(sizeof(float) * c * ell, op);
  KVLAB_CUDA_CHECK(cudaMemcpyAsync(xd.as<float>(), x, xd.bytes(), cudaMemcpyHostToDevice, s.compute), op);
  float *X = xd.as<float>(), *Y = yd.as<float>(), *W = wd.as<float>();
  SubspaceFactors out = device_randomized_vectors(s, X, n, c, r, ell, o, *this, Y, W, op);
  // A = X·V_r on the resident X (Aᵀ = V_rᵀ·Xᵀ, r×n), into Y's memory; V_r into W's.
  KVLAB_CUDA_CHECK(cudaMemcpyAsync(W, out.v.data(), sizeof(float) * out.v.size(), cudaMemcpyHostToDevice, s.compute),
                   op);
  const float one = 1, zero = 0;
  KVLAB_CUDA_CHECK(cublasSgemm_64(s.blas, CUBLAS_OP_T, CUBLAS_OP_N, r, n, c, &one, W, c, X, c, &zero, Y, r), op);
  out.a.resize(static_cast<std::size_t>(n * r));
  KVLAB_CUDA_CHECK(cudaMemcpyAsync(out.a.data(), Y, sizeof(float) * out.a.size(), cudaMemcpyDeviceToHost, s.compute),
                   op);
  KVLAB_CUDA_CHECK(cudaStreamSynchronize(s.compute), op);
  out.energy = column_energies(out.a, n, r);
  return out;
}

// The caller's device X, no copy of it: our stream starts once the caller's has written X.
SubspaceFactors CudaBackend::resident_randomized_top(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                                     const RandomizedOptions& o, void* stream) {
  if (!randomized_shape_ok(n, c, r, o)) return Backend::resident_randomized_top(x, n, c, r, o, stream);  // its error
  const std::int64_t ell = std::min(r + o.oversample, std::min(n, c));
  const std::string op = fmt::format("resident_randomized_top (n = {}, c = {}, r = {}, ℓ = {})", n, c, r, ell);
  StreamPair s(op);
  DeviceMemory yd(sizeof(float) * n * ell, op), wd(sizeof(float) * c * ell, op);
  KVLAB_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), op);  // X is written
  return device_randomized_vectors(s, x, n, c, r, ell, o, *this, yd.as<float>(), wd.as<float>(), op);
}

}  // namespace kvlab::linalg
