// Internal to linalg/cuda: status checks that turn every CUDA / cuBLAS / cuSOLVER failure into
// a kvlab::Error naming the operation and the library call, and RAII owners for streams,
// events, handles and device / pinned host memory.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvlab::linalg::cuda {

template <typename T>
struct Traits;
template <>
struct Traits<float> {
  static constexpr cudaDataType type = CUDA_R_32F;
  static constexpr const char* name = "f32";
  static constexpr double unit_roundoff = 5.96e-8;
};
template <>
struct Traits<double> {
  static constexpr cudaDataType type = CUDA_R_64F;
  static constexpr const char* name = "f64";
  static constexpr double unit_roundoff = 1.11e-16;
};

const char* cusolver_status_name(cusolverStatus_t s);

// "linalg::cuda <op>: <routine> failed: <status> — <detail>", where routine is the expression
// up to its '(' ("cusolverDnXsyevd(solver, …)" → "cusolverDnXsyevd").
[[noreturn]] void fail_call(std::string_view op, const char* expression, std::string_view status,
                            std::string_view detail);
void check(cudaError_t e, const char* expression, std::string_view op);
void check(cublasStatus_t s, const char* expression, std::string_view op);
void check(cusolverStatus_t s, const char* expression, std::string_view op);
// cuSOLVER's devInfo: < 0 names a rejected argument, > 0 a failure to converge.
void check_info(int info, const char* routine, std::string_view op);

// Device memory (cudaMalloc), freed on destruction. A failed allocation says how much was
// asked and how much the device has free.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  DeviceMemory(std::size_t bytes, std::string_view op) { allocate(bytes, op); }
  ~DeviceMemory() { reset(); }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  void allocate(std::size_t bytes, std::string_view op);
  void reset();
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  std::size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// Page-locked host memory (cudaMallocHost): the only kind cudaMemcpyAsync copies without a
// hidden synchronous staging copy, so copies can overlap compute.
class PinnedMemory {
 public:
  PinnedMemory() = default;
  ~PinnedMemory() { reset(); }
  PinnedMemory(const PinnedMemory&) = delete;
  PinnedMemory& operator=(const PinnedMemory&) = delete;
  void allocate(std::size_t bytes, std::string_view op);
  void reset();
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
};

// Two streams (copies, compute), the cuBLAS and cuSOLVER handles bound to the compute stream.
struct StreamPair {
  cudaStream_t copy = nullptr, compute = nullptr;
  cublasHandle_t blas = nullptr;
  cusolverDnHandle_t solver = nullptr;
  cusolverDnParams_t params = nullptr;
  explicit StreamPair(std::string_view op);
  ~StreamPair();
  StreamPair(const StreamPair&) = delete;
  StreamPair& operator=(const StreamPair&) = delete;
};

class Event {
 public:
  explicit Event(std::string_view op);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// Free and total device memory (cudaMemGetInfo), bytes.
std::size_t free_device_bytes(std::string_view op);

}  // namespace kvlab::linalg::cuda

#define KVLAB_CUDA_CHECK(expression, op) ::kvlab::linalg::cuda::check((expression), #expression, (op))
