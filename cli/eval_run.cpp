#include "cli/eval_run.h"

#include "cli/output_dir.h"
#include "harness/eval_plan.h"

namespace kvlab::cli {

harness::EvalOutcome run_eval_into(harness::EvalRequest request, bool force) {
  OutputDir out(request.out, force);
  request.out = out.staging();
  auto outcome = harness::run_eval(request);
  out.commit();
  // The summary's last line names the folder it wrote: the final one, not the staging folder.
  const std::string staging = out.staging().string();
  if (const auto at = outcome.summary.rfind(staging); at != std::string::npos)
    outcome.summary.replace(at, staging.size(), out.path().string());
  return outcome;
}

void check_eval(const harness::EvalRequest& request) { harness::plan_eval(request); }

}  // namespace kvlab::cli
