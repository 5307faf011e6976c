// `kvlab eval`'s outputs, made from the decoded samples: DIR/eval.json (provenance, options,
// per-method means, every sample's predictions beside the baseline's), DIR/methods.csv (one row
// per method), DIR/samples.csv (one row per sample and method) and the table the CLI prints.
// Internal to the eval job (eval_job.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "harness/eval_job.h"
#include "harness/eval_plan.h"
#include "harness/eval_sample.h"
#include "harness/model/llama_model.h"

namespace kvlab::harness {

// "fnv1a64:" and 16 hex digits: FNV-1a 64 (core/fnv1a.h) over each token id's 4 little-endian
// bytes, in order. Identifies the exact prompt a prediction came from.
std::string prompt_hash(const std::vector<std::int32_t>& tokens);

// Writes the three files under request.out (eval.json last: its presence means complete) and
// returns the table with what was written to eval.json. `samples` is parallel to plan.prompts;
// `options` says where the model ran.
EvalOutcome write_eval_report(const EvalRequest& request, const EvalPlan& plan, const RunOptions& options,
                              const std::vector<SampleDecode>& samples);

}  // namespace kvlab::harness
