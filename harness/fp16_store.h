// What the resident routes store, as buffers in the dtype the chain keeps them in, so a route's
// bytes are the sizes of what it stores (stored_bytes), as the host chain's are of its
// StoredTensors' packed buffers (compressors/compressed.h), never a formula of shapes.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace kvlab::harness {

// x as the chain stores an fp16 tensor (compressors/compressed.h pack_fp16_storage): as the host
// holds it (f32, so a double goes to f32 first, as the host's static_cast does), then fp16,
// nearest even. The buffer itself.
inline at::Tensor fp16_buffer(const at::Tensor& x) { return x.to(at::kFloat).to(at::kHalf); }
// The same values given back as f32, for the resident routes' rebuilds.
inline at::Tensor round_to_fp16(const at::Tensor& x) { return fp16_buffer(x).to(at::kFloat); }
// The bytes a stored buffer holds (fp16 values, int32 token indices, KIVI's packed uint8).
inline std::int64_t stored_bytes(const at::Tensor& buffer) { return buffer.numel() * buffer.element_size(); }

}  // namespace kvlab::harness
