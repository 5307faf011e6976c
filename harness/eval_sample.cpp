#include "harness/eval_sample.h"

#include <chrono>
#include <optional>
#include <span>

#include "harness/eval_metrics.h"
#include "harness/live_model_probe.h"
#include "core/stopwatch.h"

namespace kvlab::harness {
namespace {

using core::seconds_since;

// What every method of one prompt decodes from.
struct SampleStart {
  const ContextCapture& capture;           // the prefill's query window (and attention inputs)
  const Prefill& start;                    // the context's exact cache
  std::span<const std::int32_t> context;   // what the prefill cached
  std::span<const std::int32_t> question;  // fed after compression (empty: in-context)
  const Generation& base;                  // the baseline's answer and its step logits
};

MethodDecode decode_method(const EvalRequest& r, const EvalPlan& plan, const EvalModel& m, const EvalMethod& method,
                           const SampleStart& s, std::size_t i) {
  const auto method_start = std::chrono::steady_clock::now();
  MethodDecode out;
  CompressionResult compression;
  double compress_seconds = 0;  // inside the chain (every call of the hook)
  // Teacher-forced on the baseline's answer: the KL per step, and where the method's own
  // argmax first departs. Up to there its free greedy decode is the baseline's; only
  // beyond it does the free decode need running.
  // With --recompress-every N the chain runs again every N generated tokens, on the exact
  // copy of everything cached so far, with the query window rolled forward.
  const auto decode = [&](std::span<const std::int32_t> forced) {
    ContextCapture window = s.capture;  // rolled forward by this decode alone
    ExactKv exact;
    compress_seconds = 0;
    GenerateOptions options{.hook = [&](KvCache& cache, std::int64_t) {
                              const auto t0 = std::chrono::steady_clock::now();
                              if (r.recompress_every > 0) exact.catch_up(cache);
                              // Methods that run the model (kvzip) probe it on the prefill's cache
                              // (the plan refuses them with --recompress-every).
                              std::optional<ModelProbe> live;
                              if (method.live_model)
                                live.emplace(m.model, cache, std::vector<std::int32_t>(s.context.begin(), s.context.end()),
                                             *plan.tokenizer, plan.chat);
                              compression = compress_cache(cache, window, plan.config, method.chain, &m.checkpoint,
                                                           m.backend, r.recompress_every > 0 ? &exact : nullptr,
                                                           plan.route, live ? &*live : nullptr);
                              compress_seconds += seconds_since(t0);
                            },
                            .rehook_every = r.recompress_every,
                            .prefill_observer = {},
                            .decode_observer = {},
                            .forced = forced};
    if (r.recompress_every > 0) options.decode_observer = window.observer();
    return generate_greedy(m.model, s.start, s.question, plan.max_new_tokens, options);
  };
  const auto forced = decode(s.base.tokens);
  // Bytes and compression time of the teacher-forced decode: every method then covers the
  // same tokens (with --recompress-every, its last compression saw the same answer prefix).
  out.compression = compression;
  out.compress_seconds = compress_seconds;
  out.kl = mean_kl(s.base.step_logits, forced.step_logits);
  const bool departs = !at::equal(forced.step_logits.argmax(-1),
                                  at::tensor(std::vector<std::int64_t>(s.base.tokens.begin(), s.base.tokens.end())));
  out.tokens = departs ? decode({}).tokens : s.base.tokens;
  out.agreement = agreement(s.base.tokens, out.tokens);
  out.text = plan.tokenizer->decode(out.tokens, true);
  out.score = plan.score(i, out.text);
  out.seconds = seconds_since(method_start);
  return out;
}

}  // namespace

SampleDecode decode_sample(const EvalRequest& r, const EvalPlan& plan, const EvalModel& m, std::size_t i,
                           core::Progress& progress) {
  const auto& t = plan.tokenized[i];
  const bool in_context = r.question == "in-context";
  const std::span<const std::int32_t> all(t.tokens);
  const auto context = in_context ? all : all.first(t.context_end);
  const auto question = in_context ? std::span<const std::int32_t>() : all.subspan(t.context_end);
  // One prefill per prompt: the baseline and every method decode from copies of it, and the
  // compressors' query window (and CommonKV's layer inputs) are captured from it once.
  ContextCapture capture(plan.config.num_layers, r.query_window, plan.capture_attn_in);
  SampleDecode out;
  const auto prefill_start = std::chrono::steady_clock::now();
  const Prefill start = prefill(m.model, context, static_cast<std::int64_t>(t.tokens.size()) + plan.max_new_tokens,
                                capture.observer());
  out.prefill_seconds = seconds_since(prefill_start);
  const auto base = generate_greedy(m.model, start, question, plan.max_new_tokens);
  out.base_tokens = base.tokens;
  out.base_text = plan.tokenizer->decode(base.tokens, true);
  out.base_score = plan.score(i, out.base_text);
  progress.advance();
  const SampleStart shared{capture, start, context, question, base};
  for (const auto& method : plan.methods) {
    out.methods.push_back(decode_method(r, plan, m, method, shared, i));
    progress.advance();
  }
  return out;
}

}  // namespace kvlab::harness
