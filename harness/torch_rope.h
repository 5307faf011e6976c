// core::Rope applied with torch where a tensor lies (CPU or CUDA), as core::Rope::apply does on
// host rows: angle = position · inv_freq in f32, cos/sin in f32, rotate-half pairing
// (dimension j with j + D/2). For the compression hook's work on the model's own tensors; the
// model itself rotates with its own tables (llama_model.h), in the activation dtype.
#pragma once

#include <ATen/ATen.h>

#include "core/rope.h"

namespace kvlab::harness {

// x [n, heads, D] f32 (any strides, e.g. a transposed [H, T, D] cache), positions [n] int64 on
// x's device; returns the rotation (by −θ when `inverse`) as a new f32 tensor. The identity
// RoPE returns x itself. Fails when the RoPE's D/2 frequencies do not fit D.
at::Tensor rope_rotate(const at::Tensor& x, const at::Tensor& positions, const core::Rope& rope, bool inverse = false);

}  // namespace kvlab::harness
