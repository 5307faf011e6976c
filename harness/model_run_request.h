// What every job that runs a model over prompts (`dump`, `eval`) is asked, in one place: the
// checkpoint, how prompts become tokens, and where and in what precision the model runs.
// Torch-free, so the CLI declares these options once for both commands.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace kvlab::harness {

struct ModelRunRequest {
  std::filesystem::path model;         // HF model folder
  std::string chat_template = "auto";  // auto | own | none | llama3 | qwen2 | mistral-v0.2 | mistral-v0.3
  std::string chat_template_kwargs;    // JSON object of template variables ("" = none), e.g. {"enable_thinking": false}
  std::string tokenize = "apart";      // apart (context and question separately, as kvpress) | whole
  std::int64_t max_tokens = 0;         // context budget per prompt (0: no limit)
  std::string truncate = "end";        // end | middle: which context tokens go
  std::string device = "auto";         // auto | cpu | cuda
  std::string model_dtype = "auto";    // auto | float32 | bfloat16 | float16
  int limit = 0;                       // only the first N prompts (0: all)
  int threads = 0;                     // CPU threads for the model (0: libtorch's default)
};

}  // namespace kvlab::harness
