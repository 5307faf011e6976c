#include "harness/eval_plan.h"

#include <algorithm>

#include "datasets/jieba.h"
#include "datasets/longbench.h"
#include "datasets/ruler.h"
#include "core/error.h"
#include "harness/run_setup.h"

namespace kvlab::harness {
namespace {

// The prompts of a generated task, sized with the model's own tokenizer (as RULER does): the
// chat template's tokens and one token per part boundary are reserved.
std::vector<datasets::TaskSample> task_samples(const EvalRequest& r, const Tokenizer& tokenizer, const ChatFormat& chat) {
  const auto ref = datasets::parse_task_ref(r.task);
  if (ref.suite != datasets::TaskRef::Suite::ruler)
    fail("--task {}: only ruler:* tasks are generated; LongBench files go through --longbench FILE.jsonl",
         r.task);
  const auto task = datasets::parse_ruler_task(ref.name);
  datasets::RulerOptions options;
  options.max_seq_length = r.length;
  options.seed = r.seed;
  options.depth_percent = r.depth_percent;
  std::int64_t context_end = 0;
  const auto template_only = encode_chat(tokenizer, chat, render_chat(chat, "", ""), &context_end);
  options.reserved_tokens = static_cast<std::int64_t>(template_only.size()) + 3;
  if (r.max_new_tokens > 0) options.tokens_to_generate = r.max_new_tokens;
  datasets::RulerResourcePaths paths;
  if (!r.words.empty()) paths.words = r.words;
  paths.essay = r.essay;
  paths.qa = r.qa;
  const datasets::RulerGenerator generator(task, options, datasets::load_ruler_resources(task, options, paths),
                                           [&](std::string_view text) {
                                             return static_cast<std::int64_t>(tokenizer.encode(text, false).size());
                                           });
  return generator.samples(r.samples);
}

// A LongBench-format file's records as samples, cut to `length` tokens with LongBench's
// middle-truncation rule on the model's own tokens.
std::vector<datasets::TaskSample> longbench_samples(const EvalRequest& r, const Tokenizer& tokenizer) {
  std::vector<datasets::TaskSample> out;
  const auto records = datasets::load_longbench_jsonl(r.longbench);
  for (std::size_t i = 0; i < records.size() && (r.limit <= 0 || static_cast<int>(i) < r.limit); ++i) {
    auto sample = datasets::longbench_sample(records[i], static_cast<std::int64_t>(i));
    if (r.length > 0)
      datasets::longbench_truncate(
          sample, r.length, [&](std::string_view text) { return tokenizer.encode(text, false); },
          [&](std::span<const std::int32_t> ids) { return tokenizer.decode(ids, true); });
    out.push_back(std::move(sample));
  }
  return out;
}

// Every --method, sweeps expanded. Observation windows come from the captured queries, so a
// window beyond --query-window fails here, before the model loads.
std::vector<EvalMethod> plan_methods(const EvalRequest& r) {
  std::vector<EvalMethod> methods;
  for (const auto& m : r.methods)
    for (auto& chain : compressors::expand_sweep(m)) {
      bool live_model = false;
      for (const auto& stage : chain.stages) {
        live_model |= compressors::method(stage.method).needs.live_model;
        for (const auto& [key, value] : stage.params)
          if (key == "window" && stage.get_int("window") > r.query_window)
            fail("{}: window={} exceeds --query-window {} (the queries compressors see); raise --query-window",
                 chain.to_string(), value, r.query_window);
      }
      if (live_model && r.recompress_every > 0)
        fail("{}: runs the model on the prefill's cache, which --recompress-every does not keep; run it without",
             chain.to_string());
      methods.push_back({chain.to_string(), std::move(chain), live_model});
    }
  return methods;
}

// The prompts (from the task when there is one, else the prompt file), each tokenized.
void plan_prompts(const EvalRequest& r, EvalPlan& plan) {
  if (!r.task.empty() || !r.longbench.empty()) {
    plan.tasks = r.task.empty() ? longbench_samples(r, *plan.tokenizer) : task_samples(r, *plan.tokenizer, plan.chat);
    if (plan.tasks.empty()) fail("{}: no samples", r.longbench.string());
    if (plan.tasks.front().language == "zh") datasets::default_jieba();  // a missing jieba fails now, not after decoding
    for (const auto& t : plan.tasks)
      plan.prompts.push_back({.id = t.id, .context = t.context, .question = t.question,
                              .answer_prefix = t.answer_prefix, .answers = t.answers});
  } else {
    plan.prompts = load_prompts_jsonl(r.prompts);
  }
  if (r.limit > 0 && static_cast<std::size_t>(r.limit) < plan.prompts.size()) plan.prompts.resize(r.limit);
  const Truncation truncation = parse_truncation(r.truncate);
  const Tokenization tokenization = parse_tokenization(r.tokenize);
  for (const auto& p : plan.prompts)
    plan.tokenized.push_back(tokenize_prompt(*plan.tokenizer, plan.chat, p, r.max_tokens, truncation, tokenization));
}

}  // namespace

// Whether a chain reads attention inputs (its methods' registry entries say so): the prefill
// captures them only then.
bool needs_attn_in(const compressors::ChainSpec& chain) {
  return std::any_of(chain.stages.begin(), chain.stages.end(), [](const compressors::StageSpec& s) {
    return compressors::method(s.method).needs.attention_inputs;
  });
}

double EvalPlan::score(std::size_t i, const std::string& text) const {
  return tasks.empty() ? -1.0 : datasets::score_prediction(tasks[i], text, scoring);
}

EvalPlan plan_eval(const EvalRequest& r) {
  if (int(!r.prompts.empty()) + int(!r.task.empty()) + int(!r.longbench.empty()) != 1)
    fail("give exactly one of --prompts FILE.jsonl, --task ruler:NAME and --longbench FILE.jsonl");
  EvalPlan plan;
  // jieba's files are read on the first Chinese score (LongBench's *_zh datasets), checked in plan_prompts.
  plan.scoring = {datasets::parse_scoring_variant(r.scoring), datasets::jieba_segmenter()};
  if (r.question != "in-context" && r.question != "after-compression")
    fail("--question '{}': expected in-context or after-compression", r.question);
  if (r.max_new_tokens < 0) fail("--max-new-tokens {} must be ≥ 0", r.max_new_tokens);
  if (r.query_window <= 0) fail("--query-window {} must be positive", r.query_window);
  if (r.recompress_every < 0) fail("--recompress-every {} must be ≥ 0", r.recompress_every);
  plan.route = parse_compress_route(r.compress_route);
  plan.methods = plan_methods(r);
  for (const auto& m : plan.methods) plan.capture_attn_in |= needs_attn_in(m.chain);
  plan.config = load_model_config(r.model);
  plan.tokenizer = load_tokenizer(r.model);
  plan.chat = choose_chat_template(r);
  plan_prompts(r, plan);
  plan.max_new_tokens = r.max_new_tokens > 0 ? r.max_new_tokens
                        : plan.tasks.empty() ? 32
                                             : static_cast<int>(plan.tasks.front().max_new_tokens);
  return plan;
}

}  // namespace kvlab::harness
