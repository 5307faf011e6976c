// run_eval wires the parts together: the plan (eval_plan.h, everything checked before the model
// loads), one sample at a time (eval_sample.h) and the reports (eval_report.h).
#include "harness/eval_job.h"

#include "harness/eval_plan.h"
#include "harness/eval_report.h"
#include "harness/eval_sample.h"
#include "harness/run_setup.h"
#include "linalg/select_backend.h"

namespace kvlab::harness {

EvalOutcome run_eval(const EvalRequest& r) {
  const EvalPlan plan = plan_eval(r);
  const RunOptions options = choose_run_options(r, plan.config);
  const core::Checkpoint checkpoint(r.model);
  const LlamaModel model(plan.config, checkpoint, options);
  // Compressors run their linear algebra where the model runs (cuBLAS/cuSOLVER beside a CUDA model).
  auto& backend = linalg::backend_for(options.device.is_cuda() && linalg::cuda_backend_built() ? "cuda" : "cpu");
  const EvalModel running{model, checkpoint, backend};
  core::Progress progress("eval", static_cast<std::int64_t>(plan.prompts.size() * (1 + plan.methods.size())));
  std::vector<SampleDecode> samples;
  for (std::size_t i = 0; i < plan.prompts.size(); ++i) samples.push_back(decode_sample(r, plan, running, i, progress));
  return write_eval_report(r, plan, options, samples);
}

}  // namespace kvlab::harness
