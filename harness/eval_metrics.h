// The two fidelity figures `kvlab eval` reports for a method on one prompt, against the
// uncompressed baseline's greedy answer: how far its next-token distributions are from the
// baseline's (teacher-forced on that answer) and how many of the answer's tokens its own greedy
// decode reproduces. Both need no task, so they mean something on tiny random models too.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

namespace kvlab::harness {

// Mean over the n steps of KL(p_base ‖ p_method) = Σ_v p_base(v) · (ln p_base(v) − ln p_method(v)),
// in nats, with p = softmax of a row of logits: the divergence weighted where the baseline puts
// its mass. Both [n, V] logits, any floating dtype (computed in f64); 0 for n = 0.
double mean_kl(const at::Tensor& base_logits, const at::Tensor& method_logits);

// Position-wise share of the baseline's tokens the method reproduced, in [0, 1]: positions the
// method did not reach count as wrong, tokens beyond the baseline's end are ignored; 1 for an
// empty baseline (nothing to reproduce).
double agreement(const std::vector<std::int32_t>& base, const std::vector<std::int32_t>& method);

}  // namespace kvlab::harness
