#include "cli/model_run_options.h"

namespace kvlab::cli {

void add_chat_template_options(CLI::App& cmd, harness::ModelRunRequest& r) {
  cmd.add_option("--chat-template", r.chat_template,
                 "auto (the checkpoint's own Jinja template when it ships one, rendered as transformers' "
                 "apply_chat_template does; none for a base model), own (the same, an error without one), none, or a "
                 "literal layout for checkpoints that ship no template: llama3, qwen2, mistral-v0.2, mistral-v0.3")
      ->capture_default_str();
  cmd.add_option("--chat-template-kwargs", r.chat_template_kwargs,
                 "Extra template variables as a JSON object, passed as apply_chat_template's **kwargs, e.g. "
                 "'{\"enable_thinking\": false}' for Qwen3");
}

void add_tokenize_option(CLI::App& cmd, harness::ModelRunRequest& r) {
  cmd.add_option("--tokenize", r.tokenize,
                 "apart: context and question tokenized separately, as kvpress does (exact boundary); whole: the "
                 "rendered prompt at once, the boundary token found by byte offsets")
      ->check(CLI::IsMember({"apart", "whole"}))->capture_default_str();
}

void add_model_run_options(CLI::App& cmd, harness::ModelRunRequest& r) {
  cmd.add_option("--model", r.model, "Model folder: config.json, *.safetensors, tokenizer.json or tokenizer.model")
      ->required();
  add_chat_template_options(cmd, r);
  cmd.add_option("--max-tokens", r.max_tokens, "Cut each prompt's context to fit this many tokens (0: no limit)")
      ->capture_default_str();
  cmd.add_option("--truncate", r.truncate, "Which context tokens go: end (keep the start) or middle (LongBench)")
      ->check(CLI::IsMember({"end", "middle"}))->capture_default_str();
  add_tokenize_option(cmd, r);
  cmd.add_option("--device", r.device, "cpu, cuda, or auto (cuda when available)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))->capture_default_str();
  cmd.add_option("--model-dtype", r.model_dtype,
                 "Compute type: auto (the checkpoint's dtype on CUDA, float32 on CPU), float32, bfloat16, float16")
      ->check(CLI::IsMember({"auto", "float32", "bfloat16", "float16"}))->capture_default_str();
  cmd.add_option("--limit", r.limit, "Only the first N prompts (0: all)")->capture_default_str();
  cmd.add_option("--threads", r.threads, "CPU threads for the model (0: libtorch's default)")->capture_default_str();
}

}  // namespace kvlab::cli
