// What `dump` and `eval` share before the model runs: the device and compute dtype a request
// asks for, and the model's name for provenance.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "harness/model/llama_model.h"

namespace kvlab::harness {

// device: auto | cpu | cuda; model_dtype: auto | float32 | bfloat16 | float16. auto picks CUDA
// when libtorch has it, and then the checkpoint's dtype; float32 on the CPU (libtorch's CPU bf16
// GEMMs are slow and f32 is exact for dumps).
RunOptions choose_run_options(const ModelConfig& config, std::string_view device, std::string_view model_dtype);

// config.json's _name_or_path when set, else the folder's name.
std::string model_id(const std::filesystem::path& dir, const ModelConfig& config);

}  // namespace kvlab::harness
