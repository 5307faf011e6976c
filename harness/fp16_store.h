// The chain's fp16 store (compressors/compressed.h pack_fp16_storage) on torch tensors, for the
// resident routes' rebuilds: x as the host holds it (f32, so a double goes to f32 first, as the
// host's static_cast does) rounded to fp16, nearest even, and given back as f32.
#pragma once

#include <ATen/ATen.h>

namespace kvlab::harness {

inline at::Tensor round_to_fp16(const at::Tensor& x) { return x.to(at::kFloat).to(at::kHalf).to(at::kFloat); }

}  // namespace kvlab::harness
