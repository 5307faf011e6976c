// The CUDA backend's streamed Grams (linalg/backend.h): PanelGram with the blocks resident on
// the device, and gram_subspace with X resident between the Gram and the projection.
//
// Both stream token blocks through two pinned host buffers: the host fills (or converts) one
// while the other is copied up on the copy stream, and the compute stream runs a block's
// products once its copy has landed (events), so the host→device copy of block k+1 overlaps
// the GEMMs of block k. Precisions (GramPrecision): f32 → ?syrk/?gemm in full FP32; tf32 →
// cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_TF32 on the f32 data; bf16 → the host rounds the
// block to bfloat16 (half the bytes to copy) and cublasGemmEx multiplies bf16 with f32
// accumulation; f64 → the host widens, ?syrk/?gemm in FP64.
#include <algorithm>
#include <array>
#include <cstring>
#include <span>
#include <type_traits>

#include "core/dtype.h"
#include "core/error.h"
#include "core/parallel.h"
#include "linalg/cuda/cuda_backend.h"
#include "linalg/cuda/cuda_common.h"

namespace kvlab::linalg {
namespace {

using cuda::DeviceMemory;
using cuda::Event;
using cuda::PinnedMemory;
using cuda::StreamPair;
using cuda::Traits;

constexpr double kGiB = double(1 << 30);

// Bytes per value of what goes up to the device for a Gram accumulated in T.
template <typename T>
std::size_t upload_bytes(GramPrecision precision) {
  return precision == GramPrecision::bf16 ? 2 : sizeof(T);
}

// C (m×m, ld m) += A·Aᵀ (upper triangle) or A·Bᵀ, A and B m × k column-major (ld m), in full
// FP32 / FP64: overloads that pick the S/D routine.
void syrk_upper(cublasHandle_t blas, std::int64_t m, std::int64_t k, const float* a, float* c, std::string_view op) {
  const float one = 1;
  KVLAB_CUDA_CHECK(cublasSsyrk_64(blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, m, k, &one, a, m, &one, c, m), op);
}
void syrk_upper(cublasHandle_t blas, std::int64_t m, std::int64_t k, const double* a, double* c, std::string_view op) {
  const double one = 1;
  KVLAB_CUDA_CHECK(cublasDsyrk_64(blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, m, k, &one, a, m, &one, c, m), op);
}
void gemm_nt(cublasHandle_t blas, std::int64_t m, std::int64_t k, const float* a, const float* b, float* c,
             std::string_view op) {
  const float one = 1;
  KVLAB_CUDA_CHECK(cublasSgemm_64(blas, CUBLAS_OP_N, CUBLAS_OP_T, m, m, k, &one, a, m, b, m, &one, c, m), op);
}
void gemm_nt(cublasHandle_t blas, std::int64_t m, std::int64_t k, const double* a, const double* b, double* c,
             std::string_view op) {
  const double one = 1;
  KVLAB_CUDA_CHECK(cublasDgemm_64(blas, CUBLAS_OP_N, CUBLAS_OP_T, m, m, k, &one, a, m, b, m, &one, c, m), op);
}

// C (m×m, ld m) += A·Bᵀ for A, B = m × k column-major (ld m) device matrices, in `precision`;
// `diagonal` (A = B) uses ?syrk (upper triangle) where the precision has one.
template <typename T>
void accumulate_product(cublasHandle_t blas, GramPrecision precision, bool diagonal, std::int64_t m, std::int64_t k,
                        const void* a, const void* b, T* c, std::string_view op) {
  if (std::is_same_v<T, double> || precision == GramPrecision::f32) {
    const auto* ta = static_cast<const T*>(a);
    if (diagonal)
      syrk_upper(blas, m, k, ta, c, op);
    else
      gemm_nt(blas, m, k, ta, static_cast<const T*>(b), c, op);
  } else {  // tensor cores: tf32 or bf16 inputs, f32 accumulation; the diagonal as a full GEMM
    const bool bf16 = precision == GramPrecision::bf16;
    const cudaDataType in = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    const cublasComputeType_t compute = bf16 ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
    const float one = 1;
    KVLAB_CUDA_CHECK(cublasGemmEx_64(blas, CUBLAS_OP_N, CUBLAS_OP_T, m, m, k, &one, a, in, m, b, in, m, &one, c,
                                     CUDA_R_32F, m, compute, CUBLAS_GEMM_DEFAULT),
                     op);
  }
}

// dst[i] = convert(src[i]) for count values, in slices of 1 Mi values side by side
// (core::parallel_for): a single thread copies or converts a 2 GiB group matrix into pinned
// staging at a few GB/s, which at 128k tokens cost more than the Gram and eigensolve together.
template <typename From, typename To>
void parallel_convert(const From* src, To* dst, std::int64_t count) {
  constexpr std::int64_t slice = std::int64_t{1} << 20;
  core::parallel_for((count + slice - 1) / slice, [&](std::int64_t i) {
    const std::int64_t begin = i * slice, n = std::min(slice, count - begin);
    if constexpr (std::is_same_v<To, std::uint16_t>)  // bf16 bits, nearest even as round_gram_inputs
      core::f32_to_16bit(core::DType::bf16, std::span<const From>(src + begin, static_cast<std::size_t>(n)),
                         std::span<std::uint16_t>(dst + begin, static_cast<std::size_t>(n)));
    else if constexpr (std::is_same_v<From, To>)
      std::memcpy(dst + begin, src + begin, sizeof(To) * static_cast<std::size_t>(n));
    else
      std::copy_n(src + begin, n, dst + begin);
  });
}

template <typename T>
class CudaPanelGram final : public PanelGram<T> {
 public:
  CudaPanelGram(int panels, std::int64_t width, std::int64_t capacity, GramPrecision precision)
      : PanelGram<T>(panels, width, capacity),
        precision_(precision),
        op_(fmt::format("panel_gram ({} panels × {} columns, {} rows per block, {})", panels, width, capacity,
                        to_string(precision))),
        streams_(op_),
        uploaded_{Event(op_), Event(op_)},
        computed_{Event(op_), Event(op_)} {
    const std::size_t values = static_cast<std::size_t>(panels * capacity * width);
    const std::size_t block_bytes = this->block_count() * static_cast<std::size_t>(width * width) * sizeof(T);
    const std::size_t in_bytes = values * upload_bytes<T>(precision);
    const std::size_t need = block_bytes + 2 * in_bytes, free = cuda::free_device_bytes(op_);
    if (need > free)
      fail("linalg::cuda {}: needs {:.2f} GiB of device memory ({} cross-product blocks and two token blocks), "
           "{:.2f} GiB are free; analyse fewer layers, use a smaller token block, or --device cpu",
           op_, double(need) / kGiB, this->block_count(), double(free) / kGiB);
    blocks_.allocate(block_bytes, op_);
    KVLAB_CUDA_CHECK(cudaMemsetAsync(blocks_.as<void>(), 0, block_bytes, streams_.compute), op_);
    for (int k = 0; k < 2; ++k) {
      staging_[k].allocate(values * sizeof(T), op_);
      if (precision == GramPrecision::bf16) converted_[k].allocate(values * 2, op_);
      device_in_[k].allocate(in_bytes, op_);
    }
  }

  ~CudaPanelGram() override {
    // Queued work may still read the buffers: wait (ignoring errors, a throw is in flight or done).
    if (streams_.copy) (void)cudaStreamSynchronize(streams_.copy);
    if (streams_.compute) (void)cudaStreamSynchronize(streams_.compute);
  }

  T* staging() override {
    // The buffer handed out was last read by the copy queued two add()s ago.
    KVLAB_CUDA_CHECK(cudaEventSynchronize(uploaded_[current_].get()), op_);
    return staging_[current_].template as<T>();
  }

  void add(std::int64_t rows) override {
    if (finished_) fail("linalg::cuda {}: add() after finish()", op_);
    if (rows < 0 || rows > this->capacity()) fail("linalg::cuda {}: {} rows in a block of capacity {}", op_, rows,
                                                  this->capacity());
    if (rows == 0) return;
    const int k = current_;
    const std::int64_t W = this->width(), stride = this->panel_stride();
    const void* source = staging_[k].template as<void>();
    if (precision_ == GramPrecision::bf16) {
      // staging() waited for staging_[k]'s last copy; converted_[k] went up in that same copy.
      KVLAB_CUDA_CHECK(cudaEventSynchronize(uploaded_[k].get()), op_);
      for (int p = 0; p < this->panels(); ++p)
        parallel_convert(staging_[k].template as<float>() + p * stride,
                         converted_[k].template as<std::uint16_t>() + p * stride, rows * W);
      source = converted_[k].template as<void>();
    }
    // The device buffer is free once the products of the block it held two add()s ago ran.
    const std::size_t ub = upload_bytes<T>(precision_);
    KVLAB_CUDA_CHECK(cudaStreamWaitEvent(streams_.copy, computed_[k].get(), 0), op_);
    KVLAB_CUDA_CHECK(cudaMemcpy2DAsync(device_in_[k].template as<void>(), stride * ub, source, stride * ub,
                                       rows * W * ub, this->panels(), cudaMemcpyHostToDevice, streams_.copy),
                     op_);
    KVLAB_CUDA_CHECK(cudaEventRecord(uploaded_[k].get(), streams_.copy), op_);
    KVLAB_CUDA_CHECK(cudaStreamWaitEvent(streams_.compute, uploaded_[k].get(), 0), op_);
    const auto* in = device_in_[k].template as<char>();
    for (int i = 0; i < this->panels(); ++i)
      for (int j = i; j < this->panels(); ++j)
        accumulate_product<T>(streams_.blas, precision_, i == j, W, rows, in + i * stride * ub, in + j * stride * ub,
                              device_block(i, j), op_);
    KVLAB_CUDA_CHECK(cudaEventRecord(computed_[k].get(), streams_.compute), op_);
    current_ ^= 1;
  }

  void finish() override {
    if (finished_) return;
    const std::int64_t W = this->width();
    host_blocks_.resize(this->block_count() * static_cast<std::size_t>(W * W));
    KVLAB_CUDA_CHECK(cudaStreamSynchronize(streams_.copy), op_);
    KVLAB_CUDA_CHECK(cudaMemcpyAsync(host_blocks_.data(), blocks_.as<T>(), host_blocks_.size() * sizeof(T),
                                     cudaMemcpyDeviceToHost, streams_.compute),
                     op_);
    KVLAB_CUDA_CHECK(cudaStreamSynchronize(streams_.compute), op_);
    for (int i = 0; i < this->panels(); ++i)
      symmetrize_from_upper(host_blocks_.data() + this->block_index(i, i) * W * W, W, W);
    // The device memory goes back now: what follows (eigensolves) wants it.
    blocks_.reset();
    for (int k = 0; k < 2; ++k) {
      device_in_[k].reset();
      staging_[k].reset();
      converted_[k].reset();
    }
    finished_ = true;
  }

  const T* block(int i, int j) const override {
    if (!finished_) fail("linalg::cuda {}: block() before finish()", op_);
    if (i < 0 || i > j || j >= this->panels())
      fail("linalg::cuda {}: no block ({}, {}) of {} panels (i ≤ j)", op_, i, j, this->panels());
    return host_blocks_.data() + this->block_index(i, j) * static_cast<std::size_t>(this->width() * this->width());
  }

 private:
  T* device_block(int i, int j) {
    return blocks_.as<T>() + this->block_index(i, j) * static_cast<std::size_t>(this->width() * this->width());
  }

  GramPrecision precision_;
  std::string op_;
  StreamPair streams_;
  std::array<Event, 2> uploaded_, computed_;
  std::array<PinnedMemory, 2> staging_, converted_;
  std::array<DeviceMemory, 2> device_in_;
  DeviceMemory blocks_;
  std::vector<T> host_blocks_;
  int current_ = 0;
  bool finished_ = false;
};

// The top r eigenpairs of a device Gram (c×c, upper triangle, destroyed) by Xsyevdx on s's
// compute stream: v [c × r] and energy [r] on the host, largest first (take_top_eigenpairs).
template <typename R>
SubspaceFactors top_eigenpairs_on_device(StreamPair& s, R* gram, std::int64_t c, std::int64_t r,
                                         const std::string& op) {
  constexpr cudaDataType type = Traits<R>::type;
  DeviceMemory w(sizeof(R) * c, op), info(sizeof(int), op);
  R vl = 0, vu = 0;
  std::int64_t found = 0;
  std::size_t dev_bytes = 0, host_bytes = 0;
  KVLAB_CUDA_CHECK(cusolverDnXsyevdx_bufferSize(s.solver, s.params, CUSOLVER_EIG_MODE_VECTOR, CUSOLVER_EIG_RANGE_I,
                                                CUBLAS_FILL_MODE_UPPER, c, type, gram, c, &vl, &vu, c - r + 1, c,
                                                &found, type, w.as<R>(), type, &dev_bytes, &host_bytes),
                   op);
  DeviceMemory work(std::max<std::size_t>(dev_bytes, 1), op);
  std::vector<char> host_work(std::max<std::size_t>(host_bytes, 1));
  KVLAB_CUDA_CHECK(cusolverDnXsyevdx(s.solver, s.params, CUSOLVER_EIG_MODE_VECTOR, CUSOLVER_EIG_RANGE_I,
                                     CUBLAS_FILL_MODE_UPPER, c, type, gram, c, &vl, &vu, c - r + 1, c, &found, type,
                                     w.as<R>(), type, work.as<void>(), dev_bytes, host_work.data(), host_bytes,
                                     info.as<int>()),
                   op);
  std::vector<R> values(static_cast<std::size_t>(r)), vectors(static_cast<std::size_t>(c * r));
  int status = 0;
  KVLAB_CUDA_CHECK(cudaMemcpyAsync(&status, info.as<int>(), sizeof(int), cudaMemcpyDeviceToHost, s.compute), op);
  KVLAB_CUDA_CHECK(cudaMemcpyAsync(values.data(), w.as<R>(), sizeof(R) * r, cudaMemcpyDeviceToHost, s.compute), op);
  KVLAB_CUDA_CHECK(cudaMemcpyAsync(vectors.data(), gram, sizeof(R) * c * r, cudaMemcpyDeviceToHost, s.compute), op);
  KVLAB_CUDA_CHECK(cudaStreamSynchronize(s.compute), op);
  cuda::check_info(status, "cusolverDnXsyevdx", op);
  if (found != r) fail("linalg::cuda {}: cusolverDnXsyevdx returned {} eigenpairs, expected {}", op, found, r);
  SubspaceFactors out;
  out.rank = r;
  take_top_eigenpairs(values, vectors, c, r, out);
  return out;
}

// gram_subspace with X resident on the device: one upload of X (f32, through pinned buffers;
// bf16 and f64 Grams also upload the converted block), the Gram accumulated block by block,
// Xsyevdx for the top r on the device Gram, A = X·V_r by one Sgemm on the resident X.
template <typename R>
SubspaceFactors resident_gram_subspace(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                    GramPrecision precision, std::int64_t chunk, const std::string& op) {
  StreamPair s(op);
  std::array<Event, 2> uploaded{Event(op), Event(op)}, computed{Event(op), Event(op)};
  const bool convert = precision == GramPrecision::bf16 || precision == GramPrecision::f64;
  const std::size_t cb = upload_bytes<R>(precision);  // bytes per converted value
  DeviceMemory xd(sizeof(float) * n * c, op), gram(sizeof(R) * c * c, op);
  std::array<PinnedMemory, 2> staging, converted;
  std::array<DeviceMemory, 2> converted_d;
  for (int k = 0; k < 2; ++k) {
    staging[k].allocate(sizeof(float) * chunk * c, op);
    if (convert) {
      converted[k].allocate(cb * chunk * c, op);
      converted_d[k].allocate(cb * chunk * c, op);
    }
  }
  KVLAB_CUDA_CHECK(cudaMemsetAsync(gram.as<void>(), 0, gram.bytes(), s.compute), op);
  int k = 0;
  for (std::int64_t t0 = 0; t0 < n; t0 += chunk, k ^= 1) {
    const std::int64_t rows = std::min(chunk, n - t0), count = rows * c;
    KVLAB_CUDA_CHECK(cudaEventSynchronize(uploaded[k].get()), op);  // staging[k]'s last copy is done
    parallel_convert(x + t0 * c, staging[k].as<float>(), count);
    if (precision == GramPrecision::bf16) parallel_convert(x + t0 * c, converted[k].as<std::uint16_t>(), count);
    if (precision == GramPrecision::f64) parallel_convert(x + t0 * c, converted[k].as<double>(), count);
    KVLAB_CUDA_CHECK(cudaStreamWaitEvent(s.copy, computed[k].get(), 0), op);  // converted_d[k] is free
    KVLAB_CUDA_CHECK(cudaMemcpyAsync(xd.as<float>() + t0 * c, staging[k].as<float>(), sizeof(float) * count,
                                     cudaMemcpyHostToDevice, s.copy),
                     op);
    if (convert)
      KVLAB_CUDA_CHECK(cudaMemcpyAsync(converted_d[k].as<void>(), converted[k].as<void>(), cb * count,
                                       cudaMemcpyHostToDevice, s.copy),
                       op);
    KVLAB_CUDA_CHECK(cudaEventRecord(uploaded[k].get(), s.copy), op);
    KVLAB_CUDA_CHECK(cudaStreamWaitEvent(s.compute, uploaded[k].get(), 0), op);
    // Row-major rows×c is the column-major c×rows matrix Xᵀ: C += Xᵀ·X is "A·Aᵀ" of that view.
    const void* block = convert ? converted_d[k].as<void>() : static_cast<const void*>(xd.as<float>() + t0 * c);
    accumulate_product<R>(s.blas, precision, true, c, rows, block, block, gram.as<R>(), op);
    KVLAB_CUDA_CHECK(cudaEventRecord(computed[k].get(), s.compute), op);
  }
  for (int j = 0; j < 2; ++j) converted_d[j].reset();  // cudaFree waits for the queued products

  SubspaceFactors out = top_eigenpairs_on_device<R>(s, gram.as<R>(), c, r, op);
  gram.reset();
  // A = X·V_r on the resident X: Aᵀ (r×n) = V_rᵀ·Xᵀ.
  DeviceMemory vd(sizeof(float) * c * r, op), ad(sizeof(float) * n * r, op);
  KVLAB_CUDA_CHECK(cudaMemcpyAsync(vd.as<float>(), out.v.data(), vd.bytes(), cudaMemcpyHostToDevice, s.compute), op);
  const float one = 1, zero = 0;
  KVLAB_CUDA_CHECK(cublasSgemm_64(s.blas, CUBLAS_OP_T, CUBLAS_OP_N, r, n, c, &one, vd.as<float>(), c, xd.as<float>(), c,
                                  &zero, ad.as<float>(), r),
                   op);
  out.a.resize(static_cast<std::size_t>(n * r));
  KVLAB_CUDA_CHECK(cudaMemcpyAsync(out.a.data(), ad.as<float>(), ad.bytes(), cudaMemcpyDeviceToHost, s.compute), op);
  KVLAB_CUDA_CHECK(cudaStreamSynchronize(s.compute), op);
  return out;
}

}  // namespace

std::unique_ptr<PanelGram<float>> CudaBackend::panel_gram(int panels, std::int64_t width, std::int64_t capacity,
                                                          GramPrecision precision) {
  check_panel_gram_shape(panels, width, capacity);
  if (precision == GramPrecision::f64) fail("linalg panel_gram: an f64 Gram is panel_gram_f64");
  return std::make_unique<CudaPanelGram<float>>(panels, width, capacity, precision);
}

std::unique_ptr<PanelGram<double>> CudaBackend::panel_gram_f64(int panels, std::int64_t width,
                                                               std::int64_t capacity) {
  check_panel_gram_shape(panels, width, capacity);
  return std::make_unique<CudaPanelGram<double>>(panels, width, capacity, GramPrecision::f64);
}

SubspaceFactors CudaBackend::gram_subspace(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                        GramPrecision precision) {
  if (n < 1 || c < 1 || r < 1 || r > c) return Backend::gram_subspace(x, n, c, r, precision);  // its error
  const std::string op =
      fmt::format("gram_subspace (n = {}, c = {}, r = {}, {})", n, c, r, to_string(precision));
  const std::int64_t chunk = std::min(n, std::max<std::int64_t>(1, (std::int64_t{32} << 20) / (4 * c)));
  const std::size_t gram_bytes = (precision == GramPrecision::f64 ? 8 : 4) * static_cast<std::size_t>(c * c);
  // Resident X, the Gram and its eigensolver workspace (≈ another Gram), V_r and A, two converted blocks.
  const std::size_t need = 4 * static_cast<std::size_t>(n * c + c * r + n * r) + 2 * gram_bytes +
                           16 * static_cast<std::size_t>(chunk * c);
  if (need > cuda::free_device_bytes(op) / 10 * 9)
    return Backend::gram_subspace(x, n, c, r, precision);  // streams X twice through host pointers
  if (precision == GramPrecision::f64) return resident_gram_subspace<double>(x, n, c, r, precision, chunk, op);
  return resident_gram_subspace<float>(x, n, c, r, precision, chunk, op);
}

// The Gram of X already on the device (the caller's buffer, no copy), accumulated in one product
// on a stream of our own once the caller's stream has written X, then the top r eigenpairs.
SubspaceFactors CudaBackend::resident_gram_top(const float* x, const void* gram_input, std::int64_t n, std::int64_t c,
                                               std::int64_t r, GramPrecision precision, void* stream) {
  if (n < 1 || c < 1 || r < 1 || r > c)
    return Backend::resident_gram_top(x, gram_input, n, c, r, precision, stream);  // its error, before any read
  const std::string op =
      fmt::format("resident_gram_top (n = {}, c = {}, r = {}, {})", n, c, r, to_string(precision));
  const bool converted = resident_gram_reads_input(precision);
  if (converted && !gram_input) fail("linalg::cuda {}: a {} Gram needs X converted (gram_input)", op, to_string(precision));
  const void* in = converted ? gram_input : static_cast<const void*>(x);
  StreamPair s(op);
  KVLAB_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), op);  // X is written
  const auto run = [&]<typename R>(R) {
    DeviceMemory gram(sizeof(R) * c * c, op);
    KVLAB_CUDA_CHECK(cudaMemsetAsync(gram.as<void>(), 0, gram.bytes(), s.compute), op);
    // Row-major X (n×c) is the column-major c×n matrix Xᵀ: C = Xᵀ·X is "A·Aᵀ" of that view.
    accumulate_product<R>(s.blas, precision, true, c, n, in, in, gram.as<R>(), op);
    return top_eigenpairs_on_device<R>(s, gram.as<R>(), c, r, op);
  };
  return precision == GramPrecision::f64 ? run(double{}) : run(float{});
}

}  // namespace kvlab::linalg
