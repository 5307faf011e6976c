#include "harness/model_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/parse_json.h"
#include "core/read_file.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;

// Every integer field is an `int` here (and in the tensor shapes built from it): a value outside
// int's range would wrap (2**40 → 0, then a division by zero), so it is refused by name. Large
// positive JSON integers parse as unsigned, negative ones as signed; both are compared unwrapped.
int to_int(const json& v, const char* key, std::string_view source) {
  if (!v.is_number_integer()) fail("{}: '{}' must be an integer", source, key);
  const bool fits = v.is_number_unsigned()
                        ? v.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<int>::max())
                        : v.get<std::int64_t>() >= std::numeric_limits<int>::min() &&
                              v.get<std::int64_t>() <= std::numeric_limits<int>::max();
  if (!fits)
    fail("{}: '{}' = {} is outside the range of a 32-bit integer ({}..{})", source, key, v.dump(),
         std::numeric_limits<int>::min(), std::numeric_limits<int>::max());
  return v.get<int>();
}

std::optional<int> optional_int(const json& j, const char* key, std::string_view source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  return to_int(*it, key, source);
}

int required_int(const json& j, const char* key, std::string_view source) {
  const auto value = optional_int(j, key, source);
  if (!value) fail("{}: '{}' is missing", source, key);
  if (*value <= 0) fail("{}: '{}' must be a positive integer (it is {})", source, key, *value);
  return *value;
}

std::string optional_string(const json& j, const char* key, std::string_view source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (!it->is_string()) fail("{}: '{}' must be a string (it is {})", source, key, it->dump());
  return it->get<std::string>();
}

bool flag(const json& j, const char* key, bool fallback, std::string_view source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail("{}: '{}' must be true or false", source, key);
  return it->get<bool>();
}

// eos_token_id: an int or a list of ints (Llama-3.1 lists three).
std::vector<int> token_list(const json& j, const char* key, std::string_view source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return {};
  if (!it->is_array()) return {to_int(*it, key, source)};
  std::vector<int> out;
  for (const auto& v : *it) out.push_back(to_int(v, key, source));
  return out;
}

// transformers' ACT2FN names kvlab computes; an activation's first name is its canonical one.
constexpr std::pair<std::string_view, Activation> kActivations[] = {
    {"silu", Activation::silu},           {"swish", Activation::silu},
    {"gelu", Activation::gelu},           {"gelu_pytorch_tanh", Activation::gelu_tanh},
    {"gelu_new", Activation::gelu_tanh},  {"relu", Activation::relu}};

// hidden_act: absent means silu (LlamaConfig's, Qwen2Config's and MistralConfig's default).
Activation activation(const json& j, std::string_view source) {
  const std::string name = optional_string(j, "hidden_act", source);
  if (name.empty()) return Activation::silu;
  std::string accepted;
  for (const auto& [known, act] : kActivations) {
    if (known == name) return act;
    accepted += fmt::format("{}{}", accepted.empty() ? "" : ", ", known);
  }
  fail("{}: hidden_act '{}' is not supported (accepted: {})", source, name, accepted);
}

}  // namespace

std::string_view to_string(Activation a) {
  for (const auto& [name, act] : kActivations)
    if (act == a) return name;
  return "?";
}

std::string ModelConfig::describe() const {
  return fmt::format("{} {} layers d={} I={} H_q={} H_kv={} D={} vocab={} rope {}{}{}{}{}", model_type, num_layers,
                     hidden_size, intermediate_size, num_heads, num_kv_heads, head_dim, vocab_size, rope.describe(),
                     qkv_bias ? " qkv-bias" : "", qk_norm ? " qk-norm" : "", hidden_act == Activation::silu ? "" : " act=" + std::string(to_string(hidden_act)),
                     sliding_window ? fmt::format(" window={}", *sliding_window) : std::string());
}

ModelConfig parse_model_config(std::string_view json_text, std::string_view source) {
  const json j = core::parse_json(json_text, source);
  if (!j.is_object()) fail("{}: not a JSON object", source);

  ModelConfig c;
  c.json = std::string(json_text);
  c.model_type = optional_string(j, "model_type", source);
  if (c.model_type != "llama" && c.model_type != "qwen2" && c.model_type != "mistral" && c.model_type != "qwen3")
    fail("{}: model_type '{}' is not supported (llama, qwen2, mistral, qwen3)", source, c.model_type);
  const bool qwen3 = c.model_type == "qwen3";
  c.vocab_size = required_int(j, "vocab_size", source);
  c.hidden_size = required_int(j, "hidden_size", source);
  c.intermediate_size = required_int(j, "intermediate_size", source);
  c.num_layers = required_int(j, "num_hidden_layers", source);
  c.num_heads = required_int(j, "num_attention_heads", source);
  // Absent num_key_value_heads: MHA for llama/qwen2/mistral; Qwen3Config's default is the
  // constant 32 (Qwen3-8B's value), not num_attention_heads (configuration_qwen3.py).
  const auto kv_heads = optional_int(j, "num_key_value_heads", source);
  c.num_kv_heads = kv_heads.value_or(qwen3 ? 32 : c.num_heads);
  if (c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads)
    fail("{}: num_key_value_heads {}{} must divide num_attention_heads {}", source, c.num_kv_heads,
         kv_heads ? "" : " (absent: Qwen3Config's default)", c.num_heads);
  // An explicit head_dim wins (Mistral-Nemo-style configs have head_dim·heads ≠ hidden_size).
  // Absent: hidden_size / num_attention_heads, except on qwen3, whose Qwen3Config defaults it to
  // the constant 128 (configuration_qwen3.py; Qwen3-0.6B has 16 heads of 128 on d_model 1024).
  const auto head_dim = optional_int(j, "head_dim", source);
  c.head_dim = head_dim.value_or(qwen3 ? 128 : 0);
  if (c.head_dim == 0) {
    if (c.hidden_size % c.num_heads) fail("{}: hidden_size {} is not divisible by num_attention_heads {} and head_dim is absent", source, c.hidden_size, c.num_heads);
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim <= 0 || c.head_dim % 2) fail("{}: head_dim {} must be positive and even (RoPE pairs)", source, c.head_dim);
  if (auto it = j.find("rms_norm_eps"); it != j.end() && !it->is_null()) {
    if (!it->is_number() || !(it->get<double>() > 0)) fail("{}: 'rms_norm_eps' must be a positive number", source);
    c.rms_norm_eps = it->get<double>();
  }
  c.hidden_act = activation(j, source);
  const bool attention_bias = flag(j, "attention_bias", false, source);
  c.qkv_bias = c.model_type == "qwen2" || attention_bias;  // Qwen2's model code hard-codes q/k/v bias
  c.o_bias = c.model_type != "qwen2" && attention_bias;
  c.mlp_bias = flag(j, "mlp_bias", false, source) && !qwen3;  // Qwen3MLP: bias=False, whatever the config says
  c.tie_word_embeddings = flag(j, "tie_word_embeddings", false, source);
  c.qk_norm = qwen3;  // Qwen3Attention's q_norm / k_norm (no config key: always there)
  // Sliding window: Mistral applies it whenever set (v0.1: 4096); Qwen2 and Qwen3 only with
  // use_sliding_window: true, and then only on layers ≥ max_window_layers (their configs'
  // layer_types), which kvlab does not model, so it refuses rather than run the wrong attention.
  // With use_sliding_window false (the default, and every released checkpoint) transformers
  // drops sliding_window and every layer attends to the full causal prefix.
  const auto window = optional_int(j, "sliding_window", source);
  if (c.model_type == "mistral" && window) c.sliding_window = window;
  if ((c.model_type == "qwen2" || qwen3) && flag(j, "use_sliding_window", false, source))
    fail("{}: use_sliding_window: true is not supported for {}: transformers then applies sliding_window only to "
         "layers >= max_window_layers, and per-layer sliding-window attention is a separate item kvlab does not "
         "implement yet (released {} checkpoints set use_sliding_window: false)",
         source, c.model_type, c.model_type == "qwen2" ? "Qwen2/Qwen2.5" : "Qwen3");
  if (c.sliding_window && *c.sliding_window <= 0) fail("{}: sliding_window {} must be positive", source, *c.sliding_window);
  c.max_position_embeddings = optional_int(j, "max_position_embeddings", source).value_or(0);
  c.bos_token_id = optional_int(j, "bos_token_id", source);
  c.eos_token_ids = token_list(j, "eos_token_id", source);
  c.torch_dtype = optional_string(j, "torch_dtype", source);
  if (c.torch_dtype.empty()) c.torch_dtype = optional_string(j, "dtype", source);
  try {
    c.rope = core::Rope::from_config(json_text, c.head_dim);
  } catch (const Error& e) {
    fail("{}: {}", source, e.what());
  }
  return c;
}

ModelConfig load_model_config(const std::filesystem::path& dir) {
  const auto file = std::filesystem::is_directory(dir) ? dir / "config.json" : dir;
  if (!std::filesystem::exists(file)) fail("{}: no config.json (is this a Hugging Face model folder?)", dir.string());
  ModelConfig c = parse_model_config(core::read_file(file, "model config"), file.string());
  const auto generation = file.parent_path() / "generation_config.json";
  if (std::filesystem::exists(generation)) {
    const json g = core::parse_json(core::read_file(generation, "generation config"), generation.string());
    // generation_config's list is what generation stops on (Llama-3.1 adds <|eot_id|> there).
    auto eos = token_list(g, "eos_token_id", generation.string());
    for (int id : c.eos_token_ids)
      if (std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
    if (!eos.empty()) c.eos_token_ids = eos;
  }
  return c;
}

}  // namespace kvlab::harness
