#include "harness/dump_job.h"

#include <fmt/format.h>

#include <chrono>

#include "core/content_hash.h"
#include "core/error.h"
#include "harness/kv_dumper.h"
#include "harness/prompts.h"
#include "harness/run_setup.h"
#include "harness/tokenizer/chat_template.h"
#include "harness/tokenizer/tokenizer.h"
#include "core/stopwatch.h"

namespace kvlab::harness {

std::string run_dump(const DumpRequest& r) {
  if (r.prompts.empty() == r.text.empty()) fail("give exactly one of --prompts FILE.jsonl and --text FILE");
  if (!r.question.empty() && r.text.empty()) fail("--question goes with --text (a prompts file carries its own)");
  if (r.query_window <= 0) fail("--query-window {} must be positive", r.query_window);
  if (r.max_tokens < 0) fail("--max-tokens {} must be ≥ 0", r.max_tokens);

  // Everything that can fail on input is checked before the model loads.
  std::vector<Prompt> prompts = r.text.empty() ? load_prompts_jsonl(r.prompts)
                                               : std::vector<Prompt>{prompt_from_text(r.text, r.question)};
  if (r.limit > 0 && static_cast<std::size_t>(r.limit) < prompts.size()) prompts.resize(r.limit);
  const ModelConfig config = load_model_config(r.model);
  const auto tokenizer = load_tokenizer(r.model);
  const ChatFormat chat = choose_chat_template(r);
  const Truncation truncation = parse_truncation(r.truncate);
  const Tokenization tokenization = parse_tokenization(r.tokenize);
  std::vector<SampleToDump> samples;
  std::string report;
  for (const auto& p : prompts) {
    auto t = tokenize_prompt(*tokenizer, chat, p, r.max_tokens, truncation, tokenization);
    for (auto id : t.tokens)
      if (id < 0 || id >= config.vocab_size)
        fail("sample '{}': token id {} is outside the model's {} embedding rows (tokenizer and model disagree)", p.id,
             id, config.vocab_size);
    if (t.dropped) report += fmt::format("{}: dropped {} context tokens to fit --max-tokens {}\n", p.id, t.dropped, r.max_tokens);
    samples.push_back({p.id, std::move(t.tokens), t.context_end});
  }

  // The dump's chat_template attribute: the template, its kwargs, and how the prompt was tokenized
  // when not the default (apart).
  const std::string template_used = describe(chat) + (tokenization == Tokenization::whole ? ", tokenized whole" : "");
  const RunOptions options = choose_run_options(r, config);
  const auto load_start = std::chrono::steady_clock::now();
  const LlamaModel model(config, core::Checkpoint(r.model), options);
  const double load_s = core::seconds_since(load_start);
  const std::string id = model_id(r.model, config);
  report += fmt::format("model {} ({}) on {} in {}, loaded in {:.1f} s\ntokenizer: {}\nchat template: {}\n", id,
                        config.describe(), options.device.str(), c10::toString(options.dtype), load_s,
                        tokenizer->describe(), template_used);

  auto info = dump_info_for(model, id, tokenizer->describe(), template_used, core::parse_dtype(r.dtype), r.attn_in);
  info.model_hash = core::checkpoint_hash(r.model);  // the dump names the exact weights it came from
  core::DumpWriter writer(r.out, info);
  std::int64_t total_tokens = 0;
  const auto start = std::chrono::steady_clock::now();
  for (const auto& s : samples) {
    const auto t0 = std::chrono::steady_clock::now();
    const int window = dump_sample(model, s, r.query_window, r.attn_in, writer);
    const double secs = core::seconds_since(t0);
    total_tokens += static_cast<std::int64_t>(s.tokens.size());
    report += fmt::format("{}: {} tokens ({} context), W={}, {:.2f} s ({:.0f} tokens/s)\n", s.id, s.tokens.size(),
                          s.context_end, window, secs, s.tokens.size() / std::max(secs, 1e-9));
  }
  writer.commit();
  const double secs = core::seconds_since(start);
  report += fmt::format("wrote {}: {} sample(s), {} tokens, {} layers, {:.1f} s\n", r.out.string(), samples.size(),
                        total_tokens, config.num_layers, secs);
  return report;
}

}  // namespace kvlab::harness
