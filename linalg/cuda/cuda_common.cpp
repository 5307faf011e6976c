#include "linalg/cuda/cuda_common.h"

#include "core/error.h"

namespace kvlab::linalg::cuda {

const char* cusolver_status_name(cusolverStatus_t s) {
  switch (s) {
    case CUSOLVER_STATUS_SUCCESS: return "CUSOLVER_STATUS_SUCCESS";
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_MAPPING_ERROR: return "CUSOLVER_STATUS_MAPPING_ERROR";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED: return "CUSOLVER_STATUS_MATRIX_TYPE_NOT_SUPPORTED";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    case CUSOLVER_STATUS_INVALID_WORKSPACE: return "CUSOLVER_STATUS_INVALID_WORKSPACE";
    default: return "CUSOLVER_STATUS_(other)";
  }
}

void fail_call(std::string_view op, const char* expression, std::string_view status, std::string_view detail) {
  std::string_view call(expression);
  call = call.substr(0, call.find('('));
  fail("linalg::cuda {}: {} failed: {}{}{}", op, call, status, detail.empty() ? "" : " — ", detail);
}

void check(cudaError_t e, const char* expression, std::string_view op) {
  if (e == cudaSuccess) return;
  (void)cudaGetLastError();  // clear it so later runtime calls do not report it again
  fail_call(op, expression, cudaGetErrorName(e), cudaGetErrorString(e));
}
void check(cublasStatus_t s, const char* expression, std::string_view op) {
  if (s != CUBLAS_STATUS_SUCCESS) fail_call(op, expression, cublasGetStatusName(s), cublasGetStatusString(s));
}
void check(cusolverStatus_t s, const char* expression, std::string_view op) {
  if (s != CUSOLVER_STATUS_SUCCESS) fail_call(op, expression, cusolver_status_name(s), "");
}
void check_info(int info, const char* routine, std::string_view op) {
  if (info < 0) fail("linalg::cuda {}: {} rejected argument {}", op, routine, -info);
  if (info > 0) fail("linalg::cuda {}: {} did not converge (info = {})", op, routine, info);
}

std::size_t free_device_bytes(std::string_view op) {
  std::size_t free = 0, total = 0;
  KVLAB_CUDA_CHECK(cudaMemGetInfo(&free, &total), op);
  return free;
}

void DeviceMemory::allocate(std::size_t bytes, std::string_view op) {
  reset();
  if (bytes == 0) return;
  const cudaError_t e = cudaMalloc(&ptr_, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    ptr_ = nullptr;
    std::size_t free = 0, total = 0;
    (void)cudaMemGetInfo(&free, &total);
    fail("linalg::cuda {}: cudaMalloc of {:.1f} MiB failed: {} ({:.1f} of {:.1f} MiB free)", op,
         double(bytes) / double(1 << 20), cudaGetErrorName(e), double(free) / double(1 << 20),
         double(total) / double(1 << 20));
  }
  bytes_ = bytes;
}

void DeviceMemory::reset() {
  if (ptr_) (void)cudaFree(ptr_);  // teardown may run after the runtime unloaded at exit
  ptr_ = nullptr;
  bytes_ = 0;
}

void PinnedMemory::allocate(std::size_t bytes, std::string_view op) {
  reset();
  if (bytes == 0) return;
  const cudaError_t e = cudaMallocHost(&ptr_, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    ptr_ = nullptr;
    fail("linalg::cuda {}: cudaMallocHost of {:.1f} MiB of pinned host memory failed: {}", op,
         double(bytes) / double(1 << 20), cudaGetErrorName(e));
  }
}

void PinnedMemory::reset() {
  if (ptr_) (void)cudaFreeHost(ptr_);
  ptr_ = nullptr;
}

StreamPair::StreamPair(std::string_view op) {
  // A throwing constructor runs no destructor: release what was made before rethrowing.
  try {
    KVLAB_CUDA_CHECK(cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking), op);
    KVLAB_CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking), op);
    KVLAB_CUDA_CHECK(cublasCreate(&blas), op);
    KVLAB_CUDA_CHECK(cublasSetStream(blas, compute), op);
    KVLAB_CUDA_CHECK(cusolverDnCreate(&solver), op);
    KVLAB_CUDA_CHECK(cusolverDnSetStream(solver, compute), op);
    KVLAB_CUDA_CHECK(cusolverDnCreateParams(&params), op);
  } catch (...) {
    this->~StreamPair();
    throw;
  }
}

StreamPair::~StreamPair() {
  if (params) (void)cusolverDnDestroyParams(params);
  if (solver) (void)cusolverDnDestroy(solver);
  if (blas) (void)cublasDestroy(blas);
  if (compute) (void)cudaStreamDestroy(compute);
  if (copy) (void)cudaStreamDestroy(copy);
  params = nullptr;
  solver = nullptr;
  blas = nullptr;
  compute = copy = nullptr;
}

Event::Event(std::string_view op) {
  KVLAB_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), op);
}
Event::~Event() {
  if (event_) (void)cudaEventDestroy(event_);
}

}  // namespace kvlab::linalg::cuda
