#include "harness/model_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>
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

// The activation under `key`: hidden_act (absent: silu, LlamaConfig's, Qwen2Config's and
// MistralConfig's default) or Gemma's hidden_activation (its default is filled in beforehand, so
// absent or null here is an error: Gemma2MLP / Gemma3MLP index ACT2FN with it).
Activation activation(const json& j, const char* key, std::string_view source) {
  const std::string name = optional_string(j, key, source);
  if (name.empty() && std::string_view(key) == "hidden_act") return Activation::silu;
  std::string accepted;
  for (const auto& [known, act] : kActivations) {
    if (known == name) return act;
    accepted += fmt::format("{}{}", accepted.empty() ? "" : ", ", known);
  }
  fail("{}: {} '{}' is not supported (accepted: {})", source, key, name, accepted);
}

// An integer with the family's default when the key is absent or null.
int int_or(const json& j, const char* key, int fallback, std::string_view source) {
  return optional_int(j, key, source).value_or(fallback);
}

// A positive number (int or float), or nullopt when absent or null.
std::optional<double> optional_positive(const json& j, const char* key, std::string_view source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (!it->is_number() || !(it->get<double>() > 0))
    fail("{}: '{}' must be a positive number or null (it is {})", source, key, it->dump());
  return it->get<double>();
}

// Gemma2Config's and Gemma3TextConfig's __init__ defaults (configuration_gemma2.py,
// configuration_gemma3.py; docs/models.md §9.2): a released config.json may leave any of these
// out (Gemma-3-4B's text_config omits vocab_size, head_dim, ...), and transformers then runs the
// default. Filled in under the file's keys; an explicit null stays null.
json gemma_defaults(bool gemma2) {
  json d = {{"vocab_size", gemma2 ? 256000 : 262208},
            {"hidden_size", 2304},
            {"intermediate_size", 9216},
            {"num_hidden_layers", 26},
            {"num_attention_heads", 8},
            {"num_key_value_heads", 4},
            {"head_dim", 256},
            {"hidden_activation", "gelu_pytorch_tanh"},
            {"max_position_embeddings", gemma2 ? 8192 : 131072},
            {"rms_norm_eps", 1e-6},
            {"bos_token_id", 2},
            {"eos_token_id", 1},
            {"tie_word_embeddings", true},
            {"rope_theta", gemma2 ? 10000.0 : 1000000.0},
            {"attention_bias", false},
            {"query_pre_attn_scalar", 256},
            {"sliding_window", 4096},
            {"final_logit_softcapping", gemma2 ? json(30.0) : json(nullptr)},
            {"attn_logit_softcapping", gemma2 ? json(50.0) : json(nullptr)}};
  if (!gemma2) {
    d["rope_local_base_freq"] = 10000.0;
    d["sliding_window_pattern"] = 6;
  }
  return d;
}

// Gemma3ForConditionalGeneration's config (model_type "gemma3"): the language model is its
// text_config (a Gemma3TextConfig); kvlab runs that text model only. The top level's dtype and
// token ids stand in where the text_config has none.
json gemma3_text_config(const json& j, std::string_view source) {
  auto it = j.find("text_config");
  if (it == j.end() || !it->is_object())
    fail("{}: model_type 'gemma3' (Gemma3ForConditionalGeneration) without a 'text_config' object; kvlab runs only "
         "the text model of a Gemma-3 checkpoint and reads its config from text_config",
         source);
  json text = *it;
  const std::string inner = text.value("model_type", std::string("gemma3_text"));
  if (inner != "gemma3_text")
    fail("{}: text_config.model_type '{}' is not gemma3_text; only the Gemma-3 text model is supported", source, inner);
  for (const char* key : {"torch_dtype", "dtype", "eos_token_id", "bos_token_id"})
    if (!text.contains(key) && j.contains(key)) text[key] = j.at(key);
  text["model_type"] = "gemma3";
  return text;
}

// Which layers slide (docs/models.md §9.4): layer_types ("sliding_attention" / "full_attention",
// one per layer) when the config has it; else Gemma2Config's rule, layer i slides when (i + 1) % 2
// (the even layers), or Gemma3TextConfig's, when (i + 1) % sliding_window_pattern (every 6th global).
std::vector<bool> gemma_sliding_layers(const json& j, int layers, bool gemma2, std::string_view source) {
  std::vector<bool> sliding(layers);
  if (auto it = j.find("layer_types"); it != j.end() && !it->is_null()) {
    if (!it->is_array() || static_cast<int>(it->size()) != layers)
      fail("{}: 'layer_types' must list one of sliding_attention / full_attention per layer ({} layers)", source, layers);
    for (int l = 0; l < layers; ++l) {
      const auto& t = (*it)[l];
      if (t != "sliding_attention" && t != "full_attention")
        fail("{}: layer_types[{}] is {}; accepted: sliding_attention, full_attention", source, l, t.dump());
      sliding[l] = t == "sliding_attention";
    }
    return sliding;
  }
  const int pattern = gemma2 ? 2 : int_or(j, "sliding_window_pattern", 6, source);
  if (pattern <= 0) fail("{}: sliding_window_pattern {} must be ≥ 1", source, pattern);
  for (int l = 0; l < layers; ++l) sliding[l] = (l + 1) % pattern != 0;
  return sliding;
}

// Gemma-3's two RoPEs (Gemma3RotaryEmbedding twice, docs/models.md §9.5): global layers use
// rope_theta with rope_scaling (default or linear: the 4B+ models scale by 8), sliding layers
// rope_local_base_freq with the default rule. transformers v5 nests both in rope_parameters
// under "full_attention" / "sliding_attention"; both layouts are read.
// Gemma-3's global and local RoPEs, and (rope_config, local_rope_config) the objects they are built from.
std::pair<core::Rope, core::Rope> gemma3_ropes(const json& j, int head_dim, std::string_view source,
                                               std::string& rope_config, std::string& local_rope_config) {
  json global = {{"rope_theta", j.at("rope_theta")}}, local = {{"rope_theta", j.at("rope_local_base_freq")}};
  if (auto it = j.find("rope_scaling"); it != j.end() && it->is_object()) global["rope_scaling"] = *it;
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) {
    if (it->contains("full_attention") || it->contains("sliding_attention")) {
      if (auto f = it->find("full_attention"); f != it->end() && f->is_object()) global["rope_scaling"] = *f;
      if (auto s = it->find("sliding_attention"); s != it->end() && s->is_object()) local["rope_scaling"] = *s;
    } else {
      global["rope_scaling"] = *it;
    }
  }
  for (const auto* part : {&global, &local})
    if (auto it = part->find("rope_scaling"); it != part->end() && it->is_object())
      for (const char* type_key : {"rope_type", "type"})
        if (auto t = it->find(type_key); t != it->end() && t->is_string() && *t != "default" && *t != "linear")
          fail("{}: rope type '{}' is not supported on gemma3 (kvlab runs default and linear, the types released "
               "Gemma-3 checkpoints use)",
               source, t->get<std::string>());
  rope_config = global.dump();
  local_rope_config = local.dump();
  try {
    return {core::Rope::from_config(rope_config, head_dim), core::Rope::from_config(local_rope_config, head_dim)};
  } catch (const Error& e) {
    fail("{}: {}", source, e.what());
  }
}

// The sparse MoE block's keys (docs/models.md §7.2). Mixtral: MixtralConfig (num_local_experts
// 8 — or v5's alias num_experts —, num_experts_per_tok 2, experts of intermediate_size, the top-k
// weights always renormalised: MixtralSparseMoeBlock has no switch), every layer sparse.
// Qwen3-MoE: Qwen3MoeConfig (num_experts 128, num_experts_per_tok 8, moe_intermediate_size 768,
// norm_topk_prob false, decoder_sparse_step 1, mlp_only_layers []); layer l is sparse when
// l ∉ mlp_only_layers, num_experts > 0 and (l + 1) % decoder_sparse_step == 0
// (Qwen3MoeDecoderLayer), else it has Qwen3MoeMLP of intermediate_size.
MoeConfig parse_moe(const json& j, const ModelConfig& c, std::string_view source) {
  MoeConfig m;
  const bool mixtral = c.model_type == "mixtral";
  if (mixtral) {
    const auto local = optional_int(j, "num_local_experts", source), alias = optional_int(j, "num_experts", source);
    if (local && alias && *local != *alias)
      fail("{}: num_local_experts {} and num_experts {} disagree (MixtralConfig maps num_experts to num_local_experts)",
           source, *local, *alias);
    m.num_experts = local ? *local : alias.value_or(8);
    if (m.num_experts <= 0) fail("{}: num_local_experts {} must be positive", source, m.num_experts);
    m.top_k = int_or(j, "num_experts_per_tok", 2, source);
    m.expert_intermediate_size = c.intermediate_size;
    m.normalize_top_k = true;  // every layer sparse: step 1, no dense layer
  } else {
    m.num_experts = int_or(j, "num_experts", 128, source);
    if (m.num_experts < 0) fail("{}: num_experts {} must be ≥ 0 (0: every layer dense)", source, m.num_experts);
    m.top_k = int_or(j, "num_experts_per_tok", 8, source);
    m.expert_intermediate_size = int_or(j, "moe_intermediate_size", 768, source);
    if (m.expert_intermediate_size <= 0)
      fail("{}: moe_intermediate_size {} must be positive", source, m.expert_intermediate_size);
    m.normalize_top_k = flag(j, "norm_topk_prob", false, source);
    m.decoder_sparse_step = int_or(j, "decoder_sparse_step", 1, source);
    if (m.decoder_sparse_step <= 0)
      fail("{}: decoder_sparse_step {} must be ≥ 1 (layer l is sparse when (l + 1) % step == 0)", source,
           m.decoder_sparse_step);
    if (auto it = j.find("mlp_only_layers"); it != j.end() && !it->is_null()) {
      if (!it->is_array()) fail("{}: 'mlp_only_layers' must be a list of layer indices", source);
      for (const auto& v : *it) {
        const int l = to_int(v, "mlp_only_layers", source);
        if (l < 0 || l >= c.num_layers)
          fail("{}: mlp_only_layers entry {} is outside the layers 0..{}", source, l, c.num_layers - 1);
        m.mlp_only_layers.push_back(l);
      }
      std::sort(m.mlp_only_layers.begin(), m.mlp_only_layers.end());
      m.mlp_only_layers.erase(std::unique(m.mlp_only_layers.begin(), m.mlp_only_layers.end()), m.mlp_only_layers.end());
    }
  }
  if (m.count_sparse(c.num_layers) > 0 && (m.top_k <= 0 || m.top_k > m.num_experts))
    fail("{}: num_experts_per_tok {} must be in 1..{} ({} {})", source, m.top_k, m.num_experts,
         mixtral ? "num_local_experts" : "num_experts", m.num_experts);
  return m;
}

}  // namespace

bool MoeConfig::sparse(int layer) const {
  return num_experts > 0 && (layer + 1) % decoder_sparse_step == 0 &&
         !std::binary_search(mlp_only_layers.begin(), mlp_only_layers.end(), layer);
}

int MoeConfig::count_sparse(int num_layers) const {
  if (num_experts <= 0) return 0;
  int n = num_layers / decoder_sparse_step;  // l + 1 a multiple of the step, l < num_layers
  for (int l : mlp_only_layers) n -= l < num_layers && (l + 1) % decoder_sparse_step == 0;
  return n;
}

std::string ModelConfig::moe_tensor_name(MoeTensor tensor, int expert) const {
  const bool mixtral = model_type == "mixtral";
  const char* block = mixtral ? "block_sparse_moe" : "mlp";
  if (tensor == MoeTensor::router) return fmt::format("{}.gate.weight", block);
  const char* name = tensor == MoeTensor::gate ? (mixtral ? "w1" : "gate_proj")
                     : tensor == MoeTensor::up ? (mixtral ? "w3" : "up_proj")
                                               : (mixtral ? "w2" : "down_proj");
  return fmt::format("{}.experts.{}.{}.weight", block, expert, name);
}

std::optional<int> ModelConfig::window(int layer) const {
  if (!sliding_window || (!sliding_layers.empty() && !sliding_layers.at(layer))) return std::nullopt;
  return sliding_window;
}

const core::Rope& ModelConfig::rope_of(int layer) const {
  return uses_local_rope(layer) ? *local_rope : rope;
}

std::string_view to_string(Activation a) {
  for (const auto& [name, act] : kActivations)
    if (act == a) return name;
  return "?";
}

// Gemma's part of describe(): sliding layers, soft-caps, the scale and the local RoPE.
std::string ModelConfig::gemma_description() const {
  if (!unit_offset_norm) return "";
  const auto sliding = std::count(sliding_layers.begin(), sliding_layers.end(), true);
  std::string out = fmt::format(" sliding-layers={}/{} query_pre_attn_scalar={}", sliding, num_layers,
                                query_pre_attn_scalar.value_or(head_dim));
  if (attn_logit_softcap) out += fmt::format(" attn-softcap={}", *attn_logit_softcap);
  if (final_logit_softcap) out += fmt::format(" final-softcap={}", *final_logit_softcap);
  if (local_rope) out += fmt::format(" local-rope {}", local_rope->describe());
  return out;
}

std::string ModelConfig::describe() const {
  std::string experts;
  if (moe) {
    const int sparse = moe->count_sparse(num_layers);
    experts = fmt::format(" moe E={} top-{} I_e={}{} sparse-layers={}/{}", moe->num_experts, moe->top_k,
                          moe->expert_intermediate_size, moe->normalize_top_k ? " renormalised" : "", sparse, num_layers);
  }
  return fmt::format("{} {} layers d={} I={} H_q={} H_kv={} D={} vocab={} rope {}{}{}{}{}{}{}", model_type, num_layers,
                     hidden_size, intermediate_size, num_heads, num_kv_heads, head_dim, vocab_size, rope.describe(),
                     fused_projections ? " fused-qkv/gate-up" : "", qkv_bias ? " qkv-bias" : "", qk_norm ? " qk-norm" : "", hidden_act == Activation::silu ? "" : " act=" + std::string(to_string(hidden_act)),
                     sliding_window ? fmt::format(" window={}", *sliding_window) : std::string(), experts) +
         gemma_description();
}

ModelConfig parse_model_config(std::string_view json_text, std::string_view source) {
  const json file = core::parse_json(json_text, source);
  if (!file.is_object()) fail("{}: not a JSON object", source);

  ModelConfig c;
  c.json = std::string(json_text);
  c.model_type = optional_string(file, "model_type", source);
  if (c.model_type != "llama" && c.model_type != "qwen2" && c.model_type != "mistral" && c.model_type != "qwen3" &&
      c.model_type != "mixtral" && c.model_type != "qwen3_moe" && c.model_type != "phi3" && c.model_type != "gemma2" &&
      c.model_type != "gemma3_text" && c.model_type != "gemma3")
    fail("{}: model_type '{}' is not supported (llama, qwen2, mistral, qwen3, mixtral, qwen3_moe, phi3, gemma2, "
         "gemma3_text, gemma3)",
         source, c.model_type);
  const bool qwen3 = c.model_type == "qwen3", mixtral = c.model_type == "mixtral", qwen3_moe = c.model_type == "qwen3_moe";
  const bool phi3 = c.model_type == "phi3", gemma2 = c.model_type == "gemma2";
  const bool gemma3 = c.model_type == "gemma3_text" || c.model_type == "gemma3", gemma = gemma2 || gemma3;
  // The keys the model reads: the file itself, or Gemma-3's text_config, with the Gemma
  // configuration classes' defaults under absent keys.
  json j = c.model_type == "gemma3" ? gemma3_text_config(file, source) : file;
  if (gemma) {
    const json defaults = gemma_defaults(gemma2);  // named: items() is a view into it
    for (const auto& [key, value] : defaults.items())
      if (!j.contains(key)) j[key] = value;
  }
  c.vocab_size = required_int(j, "vocab_size", source);
  c.hidden_size = required_int(j, "hidden_size", source);
  c.intermediate_size = required_int(j, "intermediate_size", source);
  c.num_layers = required_int(j, "num_hidden_layers", source);
  c.num_heads = required_int(j, "num_attention_heads", source);
  // Absent num_key_value_heads: MHA for llama/qwen2/mistral; Qwen3Config's default is the
  // constant 32 (Qwen3-8B's value), not num_attention_heads (configuration_qwen3.py);
  // MixtralConfig's 8 (null there means MHA); Qwen3MoeConfig's 4.
  const auto kv_heads = optional_int(j, "num_key_value_heads", source);
  const bool kv_heads_null = j.contains("num_key_value_heads") && j.at("num_key_value_heads").is_null();
  const char* kv_default_owner = qwen3 ? "Qwen3Config" : mixtral ? "MixtralConfig" : "Qwen3MoeConfig";
  if (qwen3_moe && kv_heads_null) fail("{}: 'num_key_value_heads' is null; Qwen3MoeConfig needs an integer", source);
  c.num_kv_heads = kv_heads.value_or(qwen3 ? 32 : mixtral && !kv_heads_null ? 8 : qwen3_moe ? 4 : c.num_heads);
  const bool family_default = !kv_heads && !kv_heads_null && (qwen3 || mixtral || qwen3_moe);
  if (c.num_kv_heads <= 0 || c.num_heads % c.num_kv_heads)
    fail("{}: num_key_value_heads {}{} must divide num_attention_heads {}", source, c.num_kv_heads,
         family_default ? fmt::format(" (absent: {}'s default)", kv_default_owner) : std::string(), c.num_heads);
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
  if (mixtral || phi3) c.rms_norm_eps = 1e-5;  // MixtralConfig's and Phi3Config's default (the others: 1e-6)
  if (auto it = j.find("rms_norm_eps"); it != j.end() && !it->is_null()) {
    if (!it->is_number() || !(it->get<double>() > 0)) fail("{}: 'rms_norm_eps' must be a positive number", source);
    c.rms_norm_eps = it->get<double>();
  }
  // Gemma2MLP / Gemma3MLP: ACT2FN[config.hidden_activation]; a hidden_act key is not read.
  c.hidden_act = activation(j, gemma ? "hidden_activation" : "hidden_act", source);
  // MixtralAttention hard-codes bias=False on q/k/v/o (MixtralConfig has no attention_bias).
  // Phi3Attention likewise (qkv_proj and o_proj bias=False; Phi3Config has no attention_bias).
  const bool attention_bias = flag(j, "attention_bias", false, source) && !mixtral && !phi3;
  c.qkv_bias = c.model_type == "qwen2" || attention_bias;  // Qwen2's model code hard-codes q/k/v bias
  c.o_bias = c.model_type != "qwen2" && attention_bias;
  // Qwen3MLP, Qwen3MoeMLP and Mixtral's experts: bias=False, whatever the config says.
  // Phi3MLP: gate_up_proj and down_proj bias=False; Gemma2MLP / Gemma3MLP likewise.
  c.mlp_bias = flag(j, "mlp_bias", false, source) && !qwen3 && !qwen3_moe && !mixtral && !phi3 && !gemma;
  // Phi3Attention's one qkv_proj [H_q·D + 2·H_kv·D, d] (rows: q, then k, then v) and Phi3MLP's
  // gate_up_proj [2·I, d] (rows: gate, then up: `gate, up = gate_up_proj(x).chunk(2, dim=-1)`).
  c.fused_projections = phi3;
  c.tie_word_embeddings = flag(j, "tie_word_embeddings", false, source);
  c.qk_norm = qwen3 || qwen3_moe || gemma3;  // Qwen3(Moe)Attention's and Gemma3Attention's q_norm / k_norm (always there)
  // Sliding window: Mistral applies it whenever set (v0.1: 4096); Qwen2 and Qwen3 only with
  // use_sliding_window: true, and then only on layers ≥ max_window_layers (their configs'
  // layer_types), which kvlab does not model, so it refuses rather than run the wrong attention.
  // With use_sliding_window false (the default, and every released checkpoint) transformers
  // drops sliding_window and every layer attends to the full causal prefix.
  // Mixtral is Mistral's attention: MixtralModel masks every layer with sliding_window when it is
  // set (create_sliding_window_causal_mask), as MistralModel does, so kvlab applies it the same way.
  // Qwen3-MoE: Qwen3MoeConfig keeps sliding_window only under use_sliding_window, and transformers
  // releases disagree on which layers then slide (max_window_layers in 4.5x, all in v5): refused.
  const auto window = optional_int(j, "sliding_window", source);
  // Phi3Model likewise: create_sliding_window_causal_mask whenever config.sliding_window is set
  // (Phi-3-mini-4k: 2047), on every layer (modeling_phi3.py Phi3Model.forward).
  if ((c.model_type == "mistral" || mixtral || phi3) && window) c.sliding_window = window;
  if ((c.model_type == "qwen2" || qwen3 || qwen3_moe) && flag(j, "use_sliding_window", false, source))
    fail("{}: use_sliding_window: true is not supported for {}: transformers then applies sliding_window only to "
         "some layers (>= max_window_layers), and per-layer sliding-window attention is a separate item kvlab does "
         "not implement yet (released {} checkpoints set use_sliding_window: false)",
         source, c.model_type, c.model_type == "qwen2" ? "Qwen2/Qwen2.5" : qwen3 ? "Qwen3" : "Qwen3-MoE");
  // Gemma: the window on the layers layer_types makes sliding (Gemma2Attention / Gemma3Attention:
  // sliding_window if is_sliding else None); the others attend to the full causal prefix.
  if (gemma) {
    if (!window) fail("{}: 'sliding_window' is null; {} needs the window of its sliding layers", source, c.model_type);
    c.sliding_window = window;
    c.sliding_layers = gemma_sliding_layers(j, c.num_layers, gemma2, source);
  }
  if (c.sliding_window && *c.sliding_window <= 0) fail("{}: sliding_window {} must be positive", source, *c.sliding_window);
  if (gemma) {  // docs/models.md §9.3
    c.unit_offset_norm = c.scale_embeddings = c.sandwich_norms = true;
    c.query_pre_attn_scalar = optional_positive(j, "query_pre_attn_scalar", source);
    if (!c.query_pre_attn_scalar) fail("{}: 'query_pre_attn_scalar' is null; {} scales scores by its −½ power", source, c.model_type);
    c.attn_logit_softcap = optional_positive(j, "attn_logit_softcapping", source);
    c.final_logit_softcap = optional_positive(j, "final_logit_softcapping", source);
  }
  c.max_position_embeddings = optional_int(j, "max_position_embeddings", source).value_or(0);
  c.bos_token_id = optional_int(j, "bos_token_id", source);
  c.eos_token_ids = token_list(j, "eos_token_id", source);
  c.torch_dtype = optional_string(j, "torch_dtype", source);
  if (c.torch_dtype.empty()) c.torch_dtype = optional_string(j, "dtype", source);
  if (mixtral || qwen3_moe) c.moe = parse_moe(j, c, source);
  // MixtralConfig's rope_theta default is 10⁶ (default_theta), not RoPE's usual 10⁴.
  std::string rope_text(json_text);
  const bool theta_given = (j.contains("rope_theta") && !j.at("rope_theta").is_null()) ||
                           (j.contains("rope_parameters") && j.at("rope_parameters").is_object() &&
                            j.at("rope_parameters").contains("rope_theta")) ||
                           (j.contains("rope_scaling") && j.at("rope_scaling").is_object() &&
                            j.at("rope_scaling").contains("rope_theta"));
  if (mixtral && !theta_given) {
    json with_theta = j;
    with_theta["rope_theta"] = 1000000.0;
    rope_text = with_theta.dump();
  }
  if (phi3) {
    // Phi3Config maps rope_scaling types "su" and "yarn" to LongRoPE (convert_rope_params_to_dict);
    // core::Rope reads all three as longrope on phi3 (docs/models.md §2.6, §8.4).
    for (const char* key : {"rope_scaling", "rope_parameters"})
      if (auto it = j.find(key); it != j.end() && it->is_object())
        for (const char* type_key : {"rope_type", "type"})
          if (auto t = it->find(type_key); t != it->end() && t->is_string()) {
            if (*t == "longrope" || *t == "su" || *t == "yarn") continue;
            // Phi3Config.validate_rope raises on any other type.
            if (*t != "default")
              fail("{}: {}.{} '{}' is not a phi3 rope type (Phi3Config accepts default or longrope: su, yarn)", source, key,
                   type_key, t->get<std::string>());
          }
  }
  if (gemma3) {
    std::tie(c.rope, c.local_rope) = gemma3_ropes(j, c.head_dim, source, c.rope_config, c.local_rope_config);
    return c;
  }
  if (gemma2) rope_text = j.dump();  // rope_theta's Gemma2Config default filled in
  try {
    c.rope = core::Rope::from_config(rope_text, c.head_dim);
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
