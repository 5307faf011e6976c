// One prompt of `kvlab eval`: one prefill; the uncompressed baseline's greedy decode from it; for
// every method, the decode from its compressed cache teacher-forced on the baseline's answer (KL,
// bytes) and, where the method's argmax departs from that answer, its own free greedy decode.
// Internal to the eval job (eval_job.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/progress.h"
#include "core/safetensors.h"
#include "harness/compression_hook.h"
#include "harness/eval_plan.h"
#include "harness/model/llama_model.h"
#include "linalg/backend.h"

namespace kvlab::harness {

// What every sample runs on: the loaded model, its checkpoint (compressors that read weights)
// and the linear algebra the compressors use (beside the model: cuBLAS beside a CUDA model).
struct EvalModel {
  const LlamaModel& model;
  const core::Checkpoint& checkpoint;
  linalg::Backend& backend;
};

struct MethodDecode {  // one method on one prompt
  std::vector<std::int32_t> tokens;  // its greedy answer (the baseline's when it never departs)
  std::string text;                  // tokens decoded, special tokens skipped
  double agreement = 0;              // eval_metrics.h agreement with the baseline's tokens
  double kl = 0;                     // eval_metrics.h mean_kl over the baseline's answer, nats
  double score = -1;                 // the task's score of `text` (−1 without a task)
  // The teacher-forced decode's compression (its last one with --recompress-every): every method
  // then covers the same tokens.
  CompressionResult compression;
  double compress_seconds = 0;  // inside the chain during the teacher-forced decode
  double seconds = 0;           // the method's decodes, end to end
};

struct SampleDecode {  // one prompt
  double prefill_seconds = 0;  // shared by the baseline and every method
  std::vector<std::int32_t> base_tokens;
  std::string base_text;
  double base_score = -1;             // the task's score of base_text (−1 without a task)
  std::vector<MethodDecode> methods;  // parallel to plan.methods
};

// Prompt i of the plan; `progress` advances once for the baseline and once per method.
SampleDecode decode_sample(const EvalRequest& request, const EvalPlan& plan, const EvalModel& model, std::size_t i,
                           core::Progress& progress);

}  // namespace kvlab::harness
