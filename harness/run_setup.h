// What `dump` and `eval` share before the model runs: the device and compute dtype a request
// asks for, and the model's name for provenance.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "harness/model/llama_model.h"
#include "harness/model_run_request.h"
#include "harness/tokenizer/chat_template.h"

namespace kvlab::harness {

// The request's device and compute dtype (auto picks CUDA when libtorch has it, and then the
// checkpoint's dtype; float32 on the CPU: libtorch's CPU bf16 GEMMs are slow and f32 is exact for
// dumps). Sets libtorch's CPU threads when the request names a count.
RunOptions choose_run_options(const ModelRunRequest& request, const ModelConfig& config);

// The request's chat template and template kwargs (choose_chat_format: "auto" is the checkpoint's
// own template, none for base models).
ChatFormat choose_chat_template(const ModelRunRequest& request);

// config.json's _name_or_path when set, else the folder's name.
std::string model_id(const std::filesystem::path& dir, const ModelConfig& config);

}  // namespace kvlab::harness
