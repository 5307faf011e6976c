#include "harness/eval_job.h"

#include <fmt/format.h>

#include <chrono>
#include <set>
#include <nlohmann/json.hpp>
#include <optional>

#include "compressors/spec.h"
#include "datasets/longbench.h"
#include "datasets/ruler.h"
#include "datasets/jieba.h"
#include "datasets/task_metrics.h"
#include "core/atomic_file.h"
#include "core/content_hash.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/version.h"
#include "harness/compression_hook.h"
#include "harness/eval_metrics.h"
#include "harness/prompts.h"
#include "harness/run_setup.h"
#include "harness/tokenizer/chat_template.h"
#include "linalg/select_backend.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// FNV-1a over the token ids: identifies the exact prompt a prediction came from.
std::string token_hash(const std::vector<std::int32_t>& tokens) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::int32_t t : tokens)
    for (int b = 0; b < 4; ++b) h = (h ^ ((static_cast<std::uint32_t>(t) >> (8 * b)) & 0xff)) * 1099511628211ull;
  return fmt::format("fnv1a64:{:016x}", h);
}

bool needs_attn_in(const compressors::ChainSpec& chain) {
  for (const auto& s : chain.stages)
    if (s.method == "commonkv") return true;
  return false;
}

struct MethodRun {
  std::string spec;  // canonical
  compressors::ChainSpec chain;
  double agreement = 0, exact = 0, kl = 0, accuracy = 0, seconds = 0, compress_seconds = 0;
  std::int64_t bytes = 0, dense_bytes = 0;
  std::set<std::string> routes = {};  // CompressionResult::route of every sample
};

// Where the answer sits, for depth × length figures, in percent of the haystack: the requested
// depth when one was fixed (--depth), else the measured depth of the first needle that carries a
// reference answer, else of the first needle; none without needles.
std::optional<double> needle_depth_percent(const datasets::TaskSample& sample) {
  if (sample.needles.empty()) return std::nullopt;
  if (sample.depth_percent >= 0) return sample.depth_percent;
  for (const auto& needle : sample.needles)
    for (const auto& answer : sample.answers)
      if (!answer.empty() && needle.text.find(answer) != std::string::npos) return 100.0 * needle.depth;
  return 100.0 * sample.needles.front().depth;
}

// The prompts of a generated task, sized with the model's own tokenizer (as RULER does): the
// chat template's tokens and one token per part boundary are reserved.
std::vector<datasets::TaskSample> task_samples(const EvalRequest& r, const Tokenizer& tokenizer, ChatTemplate chat) {
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

}  // namespace

EvalOutcome run_eval(const EvalRequest& r) {
  if (int(!r.prompts.empty()) + int(!r.task.empty()) + int(!r.longbench.empty()) != 1)
    fail("give exactly one of --prompts FILE.jsonl, --task ruler:NAME and --longbench FILE.jsonl");
  // jieba's files are read on the first Chinese score (LongBench's *_zh datasets), checked below.
  const datasets::ScoreOptions scoring{datasets::parse_scoring_variant(r.scoring), datasets::jieba_segmenter()};
  if (r.question != "in-context" && r.question != "after-compression")
    fail("--question '{}': expected in-context or after-compression", r.question);
  if (r.max_new_tokens < 0) fail("--max-new-tokens {} must be ≥ 0", r.max_new_tokens);
  if (r.query_window <= 0) fail("--query-window {} must be positive", r.query_window);
  if (r.recompress_every < 0) fail("--recompress-every {} must be ≥ 0", r.recompress_every);
  const CompressRoute route = parse_compress_route(r.compress_route);
  // Input errors surface before the model loads: specs, prompts, config, tokenizer.
  std::vector<MethodRun> runs;
  for (const auto& m : r.methods)
    for (auto& chain : compressors::expand_sweep(m)) {
      // Observation windows come from the captured queries: check them before the model loads.
      for (const auto& stage : chain.stages)
        for (const auto& [key, value] : stage.params)
          if (key == "window" && stage.get_int("window") > r.query_window)
            fail("{}: window={} exceeds --query-window {} (the queries compressors see); raise --query-window",
                 chain.to_string(), value, r.query_window);
      runs.push_back({chain.to_string(), std::move(chain)});
    }
  const ModelConfig config = load_model_config(r.model);
  const auto tokenizer = load_tokenizer(r.model);
  const ChatTemplate chat = choose_chat_template(r, config);
  std::vector<Prompt> prompts;
  std::vector<datasets::TaskSample> tasks;  // parallel to prompts when --task
  if (!r.task.empty() || !r.longbench.empty()) {
    tasks = r.task.empty() ? longbench_samples(r, *tokenizer) : task_samples(r, *tokenizer, chat);
    if (tasks.empty()) fail("{}: no samples", r.longbench.string());
    if (tasks.front().language == "zh") datasets::default_jieba();  // a missing jieba fails now, not after decoding
    for (const auto& t : tasks)
      prompts.push_back({.id = t.id, .context = t.context, .question = t.question, .answer_prefix = t.answer_prefix,
                         .answers = t.answers});
  } else {
    prompts = load_prompts_jsonl(r.prompts);
  }
  if (r.limit > 0 && static_cast<std::size_t>(r.limit) < prompts.size()) prompts.resize(r.limit);
  const int max_new = r.max_new_tokens > 0 ? r.max_new_tokens
                      : tasks.empty()      ? 32
                                           : static_cast<int>(tasks.front().max_new_tokens);
  // A task's score of a decoded answer (−1 without a task).
  const auto score = [&](std::size_t i, const std::string& text) {
    return tasks.empty() ? -1.0 : datasets::score_prediction(tasks[i], text, scoring);
  };
  const Truncation truncation = parse_truncation(r.truncate);
  std::vector<TokenizedPrompt> tokenized;
  for (const auto& p : prompts) tokenized.push_back(tokenize_prompt(*tokenizer, chat, p, r.max_tokens, truncation));

  const RunOptions options = choose_run_options(r, config);
  const core::Checkpoint checkpoint(r.model);
  const LlamaModel model(config, checkpoint, options);
  // Compressors run their linear algebra where the model runs (cuBLAS/cuSOLVER beside a CUDA model).
  auto& backend = linalg::backend_for(options.device.is_cuda() && linalg::cuda_backend_built() ? "cuda" : "cpu");

  json samples = json::array();
  double baseline_accuracy = 0, total_prefill_seconds = 0;
  bool any_needs_attn_in = false;
  for (const auto& run : runs) any_needs_attn_in |= needs_attn_in(run.chain);
  core::Progress progress("eval", static_cast<std::int64_t>(prompts.size() * (1 + runs.size())));
  const bool in_context = r.question == "in-context";
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const auto& t = tokenized[i];
    const std::span<const std::int32_t> all(t.tokens);
    const auto context = in_context ? all : all.first(t.context_end);
    const auto question = in_context ? std::span<const std::int32_t>() : all.subspan(t.context_end);
    // One prefill per prompt: the baseline and every method decode from copies of it, and the
    // compressors' query window (and CommonKV's layer inputs) are captured from it once.
    ContextCapture capture(config.num_layers, r.query_window, any_needs_attn_in);
    const auto prefill_start = std::chrono::steady_clock::now();
    const Prefill start = prefill(model, context, static_cast<std::int64_t>(t.tokens.size()) + max_new, capture.observer());
    const double prefill_seconds = seconds_since(prefill_start);
    total_prefill_seconds += prefill_seconds;
    const auto base = generate_greedy(model, start, question, max_new);
    const std::string base_text = tokenizer->decode(base.tokens, true);
    const double base_score = score(i, base_text);
    baseline_accuracy += base_score;
    progress.advance();
    json sample = {{"id", prompts[i].id},
                   {"prompt_tokens", t.tokens.size()},
                   {"context_tokens", t.context_end},
                   {"prompt_hash", token_hash(t.tokens)},
                   {"prefill_seconds", prefill_seconds},
                   {"baseline", {{"tokens", base.tokens}, {"text", base_text}}},
                   {"methods", json::array()}};
    if (!tasks.empty()) {
      sample["answers"] = tasks[i].answers;
      sample["baseline"]["score"] = base_score;
      if (tasks[i].target_tokens > 0) sample["target_tokens"] = tasks[i].target_tokens;
      if (const auto depth = needle_depth_percent(tasks[i])) sample["needle_depth"] = *depth;
    }
    for (auto& run : runs) {
      const auto method_start = std::chrono::steady_clock::now();
      CompressionResult compression;
      double compress_seconds = 0;  // inside the chain (every call of the hook)
      // Teacher-forced on the baseline's answer: the KL per step, and where the method's own
      // argmax first departs. Up to there its free greedy decode is the baseline's; only
      // beyond it does the free decode need running.
      // With --recompress-every N the chain runs again every N generated tokens, on the exact
      // copy of everything cached so far, with the query window rolled forward.
      const auto decode = [&](std::span<const std::int32_t> forced, int max_new) {
        ContextCapture window = capture;  // rolled forward by this decode alone
        ExactKv exact;
        compress_seconds = 0;
        GenerateOptions options{.hook = [&](KvCache& cache, std::int64_t) {
                                  const auto t0 = std::chrono::steady_clock::now();
                                  if (r.recompress_every > 0) exact.catch_up(cache);
                                  compression = compress_cache(cache, window, config, run.chain, &checkpoint, backend,
                                                               r.recompress_every > 0 ? &exact : nullptr, route);
                                  compress_seconds += seconds_since(t0);
                                },
                                .rehook_every = r.recompress_every,
                                .prefill_observer = {},
                                .decode_observer = {},
                                .forced = forced};
        if (r.recompress_every > 0) options.decode_observer = window.observer();
        return generate_greedy(model, start, question, max_new, options);
      };
      const auto forced = decode(base.tokens, max_new);
      // Bytes and compression time of the teacher-forced decode: every method then covers the
      // same tokens (with --recompress-every, its last compression saw the same answer prefix).
      const CompressionResult forced_compression = compression;
      const double forced_compress_seconds = compress_seconds;
      const double kl = mean_kl(base.step_logits, forced.step_logits);
      const bool departs = !at::equal(forced.step_logits.argmax(-1),
                                      at::tensor(std::vector<std::int64_t>(base.tokens.begin(), base.tokens.end())));
      const auto tokens = departs ? decode({}, max_new).tokens : base.tokens;
      const double agree = agreement(base.tokens, tokens);
      const std::string text = tokenizer->decode(tokens, true);
      const double method_score = score(i, text);
      run.accuracy += method_score;
      run.agreement += agree;
      run.exact += tokens == base.tokens;
      run.kl += kl;
      run.bytes += forced_compression.bytes;
      run.dense_bytes += forced_compression.dense_bytes;
      run.seconds += seconds_since(method_start);
      run.compress_seconds += forced_compress_seconds;
      run.routes.insert(forced_compression.route);
      sample["methods"].push_back({{"spec", run.spec},
                                   {"tokens", tokens},
                                   {"text", text},
                                   {"agreement", agree},
                                   {"exact", tokens == base.tokens},
                                   {"kl", kl},
                                   {"bytes", forced_compression.bytes},
                                   {"compression_ratio", forced_compression.ratio()},
                                   {"compress_seconds", forced_compress_seconds},
                                   {"compress_route", forced_compression.route}});
      if (!tasks.empty()) sample["methods"].back()["score"] = method_score;
      progress.advance();
    }
    samples.push_back(std::move(sample));
  }

  const double n = static_cast<double>(prompts.size());
  json methods = json::array();
  const bool scored = !tasks.empty();
  const auto accuracy_cell = [&](double sum) { return scored ? fmt::format("{:>8.3f}", sum / n) : fmt::format("{:>8}", "-"); };
  std::string table = fmt::format("{:>8} {:>8} {:>9} {:>7} {:>10} {:>11}  method (canonical spec)\n", "ratio", "accuracy",
                                  "agreement", "exact", "KL", "compress s");
  table += fmt::format("{:>7.2f}x {} {:>9.3f} {:>7.3f} {:>10.3g} {:>11}  baseline (uncompressed)\n", 1.0,
                       accuracy_cell(baseline_accuracy), 1.0, 1.0, 0.0, "-");
  std::string csv = "method,compression_ratio,bytes,accuracy,agreement,exact_match,kl,seconds,compress_seconds\n";
  for (const auto& run : runs) {
    const double ratio = run.bytes ? static_cast<double>(run.dense_bytes) / run.bytes : 0.0;
    methods.push_back({{"spec", run.spec},
                       {"compression_ratio", ratio},
                       {"bytes", run.bytes},
                       {"agreement", run.agreement / n},
                       {"exact_match", run.exact / n},
                       {"kl", run.kl / n},
                       {"seconds", run.seconds},
                       {"compress_seconds", run.compress_seconds},
                       {"compress_routes", run.routes}});
    if (scored) methods.back()["accuracy"] = run.accuracy / n;
    table += fmt::format("{:>7.2f}x {} {:>9.3f} {:>7.3f} {:>10.3g} {:>11.4f}  {}\n", ratio, accuracy_cell(run.accuracy),
                         run.agreement / n, run.exact / n, run.kl / n, run.compress_seconds / n, run.spec);
    csv += fmt::format("\"{}\",{},{},{},{},{},{},{:.3f},{:.4f}\n", run.spec, ratio, run.bytes,
                       scored ? fmt::format("{}", run.accuracy / n) : "", run.agreement / n, run.exact / n, run.kl / n,
                       run.seconds, run.compress_seconds);
  }
  std::string samples_csv = "sample,method,score,agreement,exact,kl,compression_ratio\n";
  for (const auto& s : samples)
    for (const auto& m : s["methods"])
      samples_csv += fmt::format("{},\"{}\",{},{},{},{},{}\n", s["id"].get<std::string>(), m["spec"].get<std::string>(),
                                 m.contains("score") ? fmt::format("{}", m["score"].get<double>()) : "",
                                 m["agreement"].get<double>(), m["exact"].get<bool>() ? 1 : 0, m["kl"].get<double>(),
                                 m["compression_ratio"].get<double>());
  const json report = {
      {"kvlab", {{"version", kVersion}, {"git_revision", kGitRevision}}},
      {"model", {{"id", model_id(r.model, config)}, {"path", r.model.string()}, {"hash", core::checkpoint_hash(r.model)},
                 {"config", json::parse(config.json)},
                 {"device", options.device.str()}, {"dtype", c10::toString(options.dtype)}}},
      {"tokenizer", tokenizer->describe()},
      {"chat_template", std::string(to_string(chat))},
      {"options", {{"prompts", !r.task.empty() ? r.task : !r.longbench.empty() ? r.longbench.string() : r.prompts.string()}, {"question", r.question}, {"max_new_tokens", max_new},
                   {"query_window", r.query_window}, {"max_tokens", r.max_tokens}, {"truncate", r.truncate},
                   {"generated_tokens_cached", r.recompress_every > 0
                                                   ? fmt::format("recompressed every {} tokens", r.recompress_every)
                                                   : std::string("uncompressed")},
                   {"recompress_every", r.recompress_every}, {"compress_route", r.compress_route}}},
      {"metrics", {{"agreement", "share of the baseline's greedy tokens reproduced, position by position"},
                   {"exact_match", "share of samples whose greedy output equals the baseline's"},
                   {"kl", "mean over the baseline's answer steps of KL(p_baseline || p_method), nats, teacher-forced"}}},
      {"task", tasks.empty() ? json(nullptr)
                             : json{{"name", r.task.empty() ? tasks.front().task : r.task}, {"length", r.length},
                                     {"depth_percent", r.depth_percent ? json(*r.depth_percent) : json(nullptr)}, {"samples", prompts.size()}, {"seed", r.seed},
                                     {"scoring", r.scoring}, {"metric", tasks.front().metric},
                                     {"baseline_accuracy", baseline_accuracy / n}}},
      {"timing", {{"prefill_seconds", total_prefill_seconds},
                  {"note", "prefill: once per prompt, shared by the baseline and every method; compress_seconds: "
                           "time inside the chain during the teacher-forced decode; seconds: a method's decodes"}}},
      {"methods", methods},
      {"samples", samples}};
  std::filesystem::create_directories(r.out);
  core::write_file_atomic(r.out / "samples.csv", samples_csv);
  core::write_file_atomic(r.out / "methods.csv", csv);
  core::write_file_atomic(r.out / "eval.json", report.dump(2) + "\n");  // last: its presence means complete
  return {table + fmt::format("{} prompt(s), prefill {:.3f} s each (shared by every method; compress s is per prompt), "
                              "{} new tokens at most, question {}; wrote {}\n", prompts.size(), total_prefill_seconds / n, max_new,
                              r.question, r.out.string()),
          report};
}

}  // namespace kvlab::harness
