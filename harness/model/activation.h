// The MLP activation act(·) of act(gate(x)) ⊙ up(x), as transformers' ACT2FN computes it, shared
// by the dense MLP (llama_model.cpp) and the MoE experts (moe_mlp.cpp).
#pragma once

#include <ATen/ATen.h>

#include "harness/model_config.h"

namespace kvlab::harness {

// Elementwise, in x's dtype: nn.SiLU, nn.GELU() (erf), nn.GELU("tanh") (gelu_pytorch_tanh;
// gelu_new is the same formula written out), nn.ReLU.
at::Tensor activate(const at::Tensor& x, Activation a);

}  // namespace kvlab::harness
