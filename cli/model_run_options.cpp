#include "cli/model_run_options.h"

namespace kvlab::cli {

void add_model_run_options(CLI::App& cmd, harness::ModelRunRequest& r) {
  cmd.add_option("--model", r.model, "Model folder: config.json, *.safetensors, tokenizer.json or tokenizer.model")
      ->required();
  cmd.add_option("--chat-template", r.chat_template,
                 "auto (a literal layout picked by tokenizer_config.json's template; none for base models), own (the "
                 "checkpoint's own Jinja chat template, rendered as transformers' apply_chat_template does), none, "
                 "llama3, qwen2, mistral-v0.2, mistral-v0.3")
      ->capture_default_str();
  cmd.add_option("--max-tokens", r.max_tokens, "Cut each prompt's context to fit this many tokens (0: no limit)")
      ->capture_default_str();
  cmd.add_option("--truncate", r.truncate, "Which context tokens go: end (keep the start) or middle (LongBench)")
      ->check(CLI::IsMember({"end", "middle"}))->capture_default_str();
  cmd.add_option("--device", r.device, "cpu, cuda, or auto (cuda when available)")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}))->capture_default_str();
  cmd.add_option("--model-dtype", r.model_dtype,
                 "Compute type: auto (the checkpoint's dtype on CUDA, float32 on CPU), float32, bfloat16, float16")
      ->check(CLI::IsMember({"auto", "float32", "bfloat16", "float16"}))->capture_default_str();
  cmd.add_option("--limit", r.limit, "Only the first N prompts (0: all)")->capture_default_str();
  cmd.add_option("--threads", r.threads, "CPU threads for the model (0: libtorch's default)")->capture_default_str();
}

}  // namespace kvlab::cli
