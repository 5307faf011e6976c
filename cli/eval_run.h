// The eval job as the CLI runs it (`kvlab eval`, sweep cells, the demo): harness::run_eval
// writing into a staged output directory (cli/output_dir.h) that moves into place whole once
// eval.json is written.
#pragma once

#include "harness/eval_job.h"

namespace kvlab::cli {

// `force`: replace request.out when it already holds files (else an error before any work).
harness::EvalOutcome run_eval_into(harness::EvalRequest request, bool force);

// Every check run_eval makes before the model loads (options, specs, the model's config and
// tokenizer, prompts or task), for `sweep run --dry-run`; writes nothing.
void check_eval(const harness::EvalRequest& request);

}  // namespace kvlab::cli
