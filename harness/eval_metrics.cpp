#include "harness/eval_metrics.h"

namespace kvlab::harness {

double mean_kl(const at::Tensor& base_logits, const at::Tensor& method_logits) {
  if (base_logits.size(0) == 0) return 0.0;  // the mean of nothing: torch would give NaN
  const at::Tensor lp = at::log_softmax(base_logits.to(at::kDouble), -1);
  const at::Tensor lq = at::log_softmax(method_logits.to(at::kDouble), -1);
  return (lp.exp() * (lp - lq)).sum(-1).mean().item<double>();
}

double agreement(const std::vector<std::int32_t>& base, const std::vector<std::int32_t>& method) {
  if (base.empty()) return 1.0;
  std::size_t same = 0;
  for (std::size_t i = 0; i < base.size() && i < method.size(); ++i) same += base[i] == method[i];
  return static_cast<double>(same) / static_cast<double>(base.size());
}

}  // namespace kvlab::harness
