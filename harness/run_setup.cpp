#include "harness/run_setup.h"

#include <ATen/Parallel.h>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace kvlab::harness {

RunOptions choose_run_options(const ModelRunRequest& request, const ModelConfig& config) {
  if (request.threads > 0) at::set_num_threads(request.threads);
  const std::string_view device = request.device, model_dtype = request.model_dtype;
  if (device != "auto" && device != "cpu" && device != "cuda") fail("--device '{}': expected auto, cpu or cuda", device);
  if (device == "cuda" && !at::hasCUDA())
    fail("--device cuda: this libtorch has no CUDA device (Debian's libtorch is CPU-only); use --device cpu");
  const bool cuda = device == "cuda" || (device == "auto" && at::hasCUDA());
  RunOptions o;
  o.device = cuda ? at::Device(at::kCUDA) : at::Device(at::kCPU);
  std::string dtype(model_dtype);
  if (dtype == "auto") dtype = cuda && !config.torch_dtype.empty() ? config.torch_dtype : "float32";
  if (dtype == "float32") o.dtype = at::kFloat;
  else if (dtype == "bfloat16") o.dtype = at::kBFloat16;
  else if (dtype == "float16") o.dtype = at::kHalf;
  else fail("--model-dtype '{}': expected auto, float32, bfloat16 or float16", dtype);
  return o;
}

ChatFormat choose_chat_template(const ModelRunRequest& request) {
  return choose_chat_format(request.model, request.chat_template, parse_template_kwargs(request.chat_template_kwargs));
}

std::string model_id(const std::filesystem::path& dir, const ModelConfig& config) {
  const auto j = nlohmann::json::parse(config.json);
  if (auto it = j.find("_name_or_path"); it != j.end() && it->is_string() && !it->get<std::string>().empty())
    return it->get<std::string>();
  const auto canonical = std::filesystem::weakly_canonical(dir);
  return canonical.filename().empty() ? canonical.parent_path().filename().string() : canonical.filename().string();
}

}  // namespace kvlab::harness
