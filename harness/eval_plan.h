// `kvlab eval`'s plan: the request checked and turned into the methods to run and the tokenized
// prompts to run them on, before the model loads, so that a bad option, spec, prompt file or
// task fails before anything is computed or written. Internal to the eval job (eval_job.h).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "compressors/spec.h"
#include "datasets/task_metrics.h"
#include "harness/compression_hook.h"
#include "harness/eval_job.h"
#include "harness/model_config.h"
#include "harness/prompts.h"
#include "harness/tokenizer/chat_template.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {

struct EvalMethod {
  std::string spec;  // canonical (ChainSpec::to_string)
  compressors::ChainSpec chain;
  bool live_model = false;  // a stage runs the model while compressing (MethodNeeds::live_model: kvzip)
};

struct EvalPlan {
  std::vector<EvalMethod> methods;  // every --method, sweeps expanded, in the request's order
  bool capture_attn_in = false;     // some chain needs every token's attention input (needs_attn_in)
  CompressRoute route = CompressRoute::automatic;
  datasets::ScoreOptions scoring;
  ModelConfig config;
  std::unique_ptr<Tokenizer> tokenizer;
  ChatFormat chat;
  std::vector<Prompt> prompts;               // at most --limit of them
  std::vector<datasets::TaskSample> tasks;   // --task / --longbench: tasks[i] became prompts[i]; else empty
  std::vector<TokenizedPrompt> tokenized;    // parallel to prompts
  int max_new_tokens = 0;                    // greedy tokens per prompt, at most

  bool scored() const { return !tasks.empty(); }
  // The task's score of prompt i's decoded answer, in [0, 1]; −1 without a task.
  double score(std::size_t i, const std::string& text) const;
};

// Fails (kvlab::Error) on anything the request gets wrong that can be known without the model.
EvalPlan plan_eval(const EvalRequest& request);

// Whether `chain` compresses with the attention inputs of every token, captured at prefill.
bool needs_attn_in(const compressors::ChainSpec& chain);

}  // namespace kvlab::harness
