#include "harness/model/activation.h"

#include "core/error.h"

namespace kvlab::harness {

at::Tensor activate(const at::Tensor& x, Activation a) {
  switch (a) {
    case Activation::silu: return at::silu(x);
    case Activation::gelu: return at::gelu(x, "none");
    case Activation::gelu_tanh: return at::gelu(x, "tanh");
    case Activation::relu: return at::relu(x);
  }
  fail("unknown activation");  // unreachable: the switch covers the enum
}

}  // namespace kvlab::harness
