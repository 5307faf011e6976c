#include "harness/tiny_model.h"

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>

#include "core/atomic_file.h"
#include "core/error.h"
#include "harness/tiny_corpus.h"
#include "harness/tokenizer/tiny_tokenizer.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;

void check_options(const TinyModelOptions& o) {
  if (o.arch != "llama" && o.arch != "qwen2" && o.arch != "mistral" && o.arch != "qwen3" && o.arch != "mixtral" &&
      o.arch != "qwen3_moe" && o.arch != "phi3" && o.arch != "gemma2" && o.arch != "gemma3")
    fail("make-tiny-model: --arch '{}' is not one of llama, qwen2, mistral, qwen3, mixtral, qwen3_moe, phi3, gemma2, gemma3",
         o.arch);
  if (o.experts <= 0 || o.experts_per_token <= 0 || o.experts_per_token > o.experts || o.moe_intermediate <= 0)
    fail("make-tiny-model: --experts {} and --moe-intermediate {} must be positive and --experts-per-token {} in 1..{}",
         o.experts, o.moe_intermediate, o.experts_per_token, o.experts);
  if (o.layers <= 0 || o.hidden <= 0 || o.heads <= 0 || o.kv_heads <= 0 || o.intermediate <= 0)
    fail("make-tiny-model: layers, hidden, heads, kv-heads and intermediate must be positive");
  if (o.heads % o.kv_heads) fail("make-tiny-model: --kv-heads {} must divide --heads {}", o.kv_heads, o.heads);
  if (o.head_dim == 0 && o.hidden % o.heads)
    fail("make-tiny-model: --hidden {} is not divisible by --heads {} (or give --head-dim)", o.hidden, o.heads);
  if (!(o.layer_similarity >= 0 && o.layer_similarity < 1))
    fail("make-tiny-model: --layer-similarity {} must be in [0, 1)", o.layer_similarity);
  if (o.dtype != "bfloat16" && o.dtype != "float16" && o.dtype != "float32")
    fail("make-tiny-model: --dtype '{}' is not one of bfloat16, float16, float32", o.dtype);
  if (o.longrope_original_max < 0 || (o.longrope_original_max > 0 && o.arch != "phi3"))
    fail("make-tiny-model: --longrope-original-max {} needs --arch phi3 and a value ≥ 0", o.longrope_original_max);
  if (o.longrope_original_max > o.max_position_embeddings)
    fail("make-tiny-model: --longrope-original-max {} exceeds --max-position {}", o.longrope_original_max,
         o.max_position_embeddings);
}

core::DType storage_dtype(const std::string& name) {
  return name == "float32" ? core::DType::f32 : name == "float16" ? core::DType::f16 : core::DType::bf16;
}

// Draws tensors from one seeded stream, in a fixed order, so a model is reproducible.
class WeightDrawer {
 public:
  WeightDrawer(std::uint64_t seed, core::DType dtype) : rng_(seed), dtype_(dtype) {}

  core::TensorToWrite normal(core::Shape shape, double mean, double stddev) {
    core::TensorToWrite t{shape, std::vector<float>(static_cast<std::size_t>(core::element_count(shape))), dtype_};
    std::normal_distribution<double> dist(mean, stddev);
    for (auto& v : t.data) v = static_cast<float>(dist(rng_));
    return t;
  }

 private:
  std::mt19937_64 rng_;
  core::DType dtype_;
};

// Mixes around the mean: mean + s·(previous − mean) + √(1−s²)·(fresh − mean) keeps each entry's
// mean and variance and gives adjacent layers a correlation of exactly s (norm weights around 1).
void blend(core::TensorToWrite& fresh, const core::TensorToWrite& previous, double s, float mean) {
  const double c = std::sqrt(1 - s * s);
  for (std::size_t i = 0; i < fresh.data.size(); ++i)
    fresh.data[i] = static_cast<float>(mean + s * (previous.data[i] - mean) + c * (fresh.data[i] - mean));
}

}  // namespace

std::string tiny_model_config_json(const TinyModelOptions& o, int vocab_size) {
  check_options(o);
  json c;
  c["vocab_size"] = vocab_size;
  c["hidden_size"] = o.hidden;
  c["intermediate_size"] = o.intermediate;
  c["num_hidden_layers"] = o.layers;
  c["num_attention_heads"] = o.heads;
  c["num_key_value_heads"] = o.kv_heads;
  if (o.head_dim) c["head_dim"] = o.head_dim;
  // Qwen3 configs always write head_dim, and on the released models it is not hidden / heads
  // (Qwen3-0.6B: 128 on 1024 / 16): the tiny qwen3 mirrors that with 2 · hidden / heads.
  // Qwen3-30B-A3B likewise (128 on 2048 / 32).
  // Gemma likewise: head_dim 256 on every released model, rarely hidden / heads (Gemma-2-2B: 2304 / 8 = 288).
  const bool gemma = o.arch == "gemma2" || o.arch == "gemma3";
  if ((o.arch == "qwen3" || o.arch == "qwen3_moe" || gemma) && !o.head_dim) c["head_dim"] = 2 * (o.hidden / o.heads);
  c["hidden_act"] = gemma ? "gelu_pytorch_tanh" : "silu";
  c["max_position_embeddings"] = o.max_position_embeddings;
  c["tie_word_embeddings"] = false;
  c["torch_dtype"] = o.dtype;
  c["kvlab_tiny_model"] = {{"seed", o.seed}, {"layer_similarity", o.layer_similarity}};  // provenance only
  if (o.arch == "llama") {
    c["architectures"] = {"LlamaForCausalLM"};
    c["model_type"] = "llama";
    c["rms_norm_eps"] = 1e-5;
    c["rope_theta"] = 500000.0;
    // Llama-3.1's rule, scaled to the tiny context so all three frequency bands occur.
    c["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", std::max(1, o.max_position_embeddings / 16)}};
    c["attention_bias"] = false;
    c["mlp_bias"] = false;
  } else if (o.arch == "qwen2") {
    c["architectures"] = {"Qwen2ForCausalLM"};
    c["model_type"] = "qwen2";
    c["rms_norm_eps"] = 1e-6;
    c["rope_theta"] = 1000000.0;
    c["rope_scaling"] = nullptr;
    c["sliding_window"] = nullptr;
    c["use_sliding_window"] = false;
    c["max_window_layers"] = o.layers;
  } else if (o.arch == "qwen3") {
    // Qwen3-0.6B's layout: no biases, q_norm/k_norm, tied embeddings, the window switched off.
    c["architectures"] = {"Qwen3ForCausalLM"};
    c["model_type"] = "qwen3";
    c["rms_norm_eps"] = 1e-6;
    c["rope_theta"] = 1000000.0;
    c["rope_scaling"] = nullptr;
    c["attention_bias"] = false;
    c["tie_word_embeddings"] = true;
    c["sliding_window"] = nullptr;
    c["use_sliding_window"] = false;
    c["max_window_layers"] = o.layers;
  } else if (o.arch == "qwen3_moe") {
    // Qwen3-30B-A3B's layout: Qwen3's attention, every layer sparse, renormalised top-k, untied.
    c["architectures"] = {"Qwen3MoeForCausalLM"};
    c["model_type"] = "qwen3_moe";
    c["rms_norm_eps"] = 1e-6;
    c["rope_theta"] = 1000000.0;
    c["rope_scaling"] = nullptr;
    c["attention_bias"] = false;
    c["sliding_window"] = nullptr;
    c["use_sliding_window"] = false;
    c["max_window_layers"] = o.layers;
    c["num_experts"] = o.experts;
    c["num_experts_per_tok"] = o.experts_per_token;
    c["moe_intermediate_size"] = o.moe_intermediate;
    c["norm_topk_prob"] = true;
    c["decoder_sparse_step"] = 1;
    c["mlp_only_layers"] = json::array();
    c["router_aux_loss_coef"] = 0.001;
    c["output_router_logits"] = false;
  } else if (o.arch == "mixtral") {
    // Mixtral-8x7B's layout: Mistral's attention without a window, every layer sparse.
    c["architectures"] = {"MixtralForCausalLM"};
    c["model_type"] = "mixtral";
    c["rms_norm_eps"] = 1e-5;
    c["rope_theta"] = 1000000.0;
    c["sliding_window"] = nullptr;
    c["num_local_experts"] = o.experts;
    c["num_experts_per_tok"] = o.experts_per_token;
    c["router_jitter_noise"] = 0.0;
    c["router_aux_loss_coef"] = 0.02;
    c["output_router_logits"] = false;
  } else if (o.arch == "phi3") {
    // Phi-4-mini's attention: fused qkv_proj and gate_up_proj, partial_rotary_factor 0.75, tied
    // embeddings, no window (Phi-3.5-mini's is 262144, past any tiny context); rope_theta 10000
    // (Phi3Config's default); LongRoPE with --longrope-original-max, else none.
    c["architectures"] = {"Phi3ForCausalLM"};
    c["model_type"] = "phi3";
    c["rms_norm_eps"] = 1e-5;
    c["rope_theta"] = 10000.0;
    c["rope_scaling"] = nullptr;
    c["partial_rotary_factor"] = 0.75;
    c["original_max_position_embeddings"] = o.max_position_embeddings;
    if (o.longrope_original_max > 0) {
      // One factor per rotary frequency (rotary_dim / 2), shaped like Phi-4-mini's: short ones
      // within 1.0–1.1, long ones from 1 up to 16 (lower frequencies stretched more).
      const int head_dim = o.head_dim ? o.head_dim : o.hidden / o.heads;
      const int n = static_cast<int>(static_cast<double>(head_dim) * 0.75) / 2;
      json short_f = json::array(), long_f = json::array();
      for (int i = 0; i < n; ++i) {
        const double x = n > 1 ? static_cast<double>(i) / (n - 1) : 0.0;
        short_f.push_back(1.0 + 0.1 * x * x);
        long_f.push_back(1.0 + 15.0 * x * x);
      }
      c["rope_scaling"] = {{"type", "longrope"}, {"short_factor", short_f}, {"long_factor", long_f}};
      c["original_max_position_embeddings"] = o.longrope_original_max;
    }
    c["sliding_window"] = nullptr;
    c["tie_word_embeddings"] = true;
    c["resid_pdrop"] = 0.0;
    c["embd_pdrop"] = 0.0;
    c["attention_dropout"] = 0.0;
  } else if (gemma) {
    // Gemma-2-27B's / Gemma-3-27B's attention scale (query_pre_attn_scalar = hidden / heads, not
    // head_dim), gelu_pytorch_tanh GeGLU, tied embeddings; a window scaled to the tiny context
    // (max_position / 64: 4 tokens at 256) so that prompts outgrow it. Gemma-2: soft-capping 50 / 30,
    // the even layers sliding. Gemma-3 (the 4B+ layout): q/k norms, linear RoPE ×8 on global
    // layers, rope_local_base_freq 10⁴ on sliding ones, no soft-capping, every 6th layer global
    // (every 2nd when there are fewer than 6, so a tiny model has both kinds), written as
    // layer_types and sliding_window_pattern as transformers ≥ 4.53 saves them.
    c["architectures"] = {o.arch == "gemma2" ? "Gemma2ForCausalLM" : "Gemma3ForCausalLM"};
    c["model_type"] = o.arch == "gemma2" ? "gemma2" : "gemma3_text";
    c["hidden_activation"] = "gelu_pytorch_tanh";
    c["rms_norm_eps"] = 1e-6;
    c["tie_word_embeddings"] = true;
    c["attention_bias"] = false;
    c["attention_dropout"] = 0.0;
    c["query_pre_attn_scalar"] = o.hidden / o.heads;
    c["sliding_window"] = std::max(2, o.max_position_embeddings / 64);
    if (o.arch == "gemma2") {
      c["rope_theta"] = 10000.0;
      c["attn_logit_softcapping"] = 50.0;
      c["final_logit_softcapping"] = 30.0;
    } else {
      c["rope_theta"] = 1000000.0;
      c["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
      c["rope_local_base_freq"] = 10000.0;
      c["attn_logit_softcapping"] = nullptr;
      c["final_logit_softcapping"] = nullptr;
      const int pattern = o.layers >= 6 ? 6 : 2;
      c["sliding_window_pattern"] = pattern;
      json types = json::array();
      for (int l = 0; l < o.layers; ++l) types.push_back((l + 1) % pattern ? "sliding_attention" : "full_attention");
      c["layer_types"] = types;
    }
  } else {
    c["architectures"] = {"MistralForCausalLM"};
    c["model_type"] = "mistral";
    c["rms_norm_eps"] = 1e-5;
    c["rope_theta"] = 1000000.0;
    c["sliding_window"] = nullptr;  // v0.2 / v0.3
  }
  return c.dump(2);
}

std::map<std::string, core::TensorToWrite> tiny_weights(const ModelConfig& config, const TinyModelOptions& o) {
  WeightDrawer draw(o.seed, storage_dtype(o.dtype));
  const std::int64_t d = config.hidden_size, inter = config.intermediate_size, dq = std::int64_t{config.num_heads} * config.head_dim,
                     dkv = std::int64_t{config.num_kv_heads} * config.head_dim, vocab = config.vocab_size;
  const double s = o.layer_similarity;
  std::map<std::string, core::TensorToWrite> w;
  w["model.embed_tokens.weight"] = draw.normal({vocab, d}, 0, 1);
  std::map<std::string, core::TensorToWrite> previous;
  for (int l = 0; l < config.num_layers; ++l) {
    // name suffix → (shape, mean, stddev)
    struct Spec {
      std::string name;
      core::Shape shape;
      float mean;
      double stddev;
    };
    // Gemma's norms multiply by (1 + w): their weights sit around 0 (HF initialises them to 0).
    const float norm_mean = config.unit_offset_norm ? 0 : 1;
    std::vector<Spec> specs = {{"input_layernorm.weight", {d}, norm_mean, 0.1}};
    if (config.fused_projections)  // Phi-3's qkv_proj: q rows, then k, then v
      specs.push_back({"self_attn.qkv_proj.weight", {dq + 2 * dkv, d}, 0, 1 / std::sqrt(double(d))});
    else
      for (const auto& [name, rows] : {std::pair{"q", dq}, std::pair{"k", dkv}, std::pair{"v", dkv}})
        specs.push_back({fmt::format("self_attn.{}_proj.weight", name), {rows, d}, 0, 1 / std::sqrt(double(d))});
    specs.push_back({"self_attn.o_proj.weight", {d, dq}, 0, 1 / std::sqrt(double(dq))});
    specs.push_back({"post_attention_layernorm.weight", {d}, norm_mean, 0.1});
    if (config.sandwich_norms)
      for (const char* name : {"pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight"})
        specs.push_back({name, {d}, norm_mean, 0.1});
    if (config.sparse_layer(l)) {  // the router, then each expert's gate, up, down
      const std::int64_t experts = config.moe->num_experts, ie = config.moe->expert_intermediate_size;
      specs.push_back({config.moe_tensor_name(MoeTensor::router, 0), {experts, d}, 0, 1 / std::sqrt(double(d))});
      for (int e = 0; e < experts; ++e) {
        specs.push_back({config.moe_tensor_name(MoeTensor::gate, e), {ie, d}, 0, 1 / std::sqrt(double(d))});
        specs.push_back({config.moe_tensor_name(MoeTensor::up, e), {ie, d}, 0, 1 / std::sqrt(double(d))});
        specs.push_back({config.moe_tensor_name(MoeTensor::down, e), {d, ie}, 0, 1 / std::sqrt(double(ie))});
      }
    } else if (config.fused_projections) {  // Phi-3's gate_up_proj: gate rows, then up
      specs.push_back({"mlp.gate_up_proj.weight", {2 * inter, d}, 0, 1 / std::sqrt(double(d))});
      specs.push_back({"mlp.down_proj.weight", {d, inter}, 0, 1 / std::sqrt(double(inter))});
    } else {
      specs.push_back({"mlp.gate_proj.weight", {inter, d}, 0, 1 / std::sqrt(double(d))});
      specs.push_back({"mlp.up_proj.weight", {inter, d}, 0, 1 / std::sqrt(double(d))});
      specs.push_back({"mlp.down_proj.weight", {d, inter}, 0, 1 / std::sqrt(double(inter))});
    }
    if (config.qkv_bias)
      for (const auto& [name, rows] : {std::pair{"q", dq}, std::pair{"k", dkv}, std::pair{"v", dkv}})
        specs.push_back({fmt::format("self_attn.{}_proj.bias", name), {rows}, 0, 0.1});
    if (config.qk_norm)  // Qwen3's per-head RMSNorm weights, around 1 like the other norms
      for (const char* name : {"self_attn.q_norm.weight", "self_attn.k_norm.weight"})
        specs.push_back({name, {config.head_dim}, norm_mean, 0.1});
    for (const auto& spec : specs) {
      auto t = draw.normal(spec.shape, spec.mean, spec.stddev);
      // A tensor the previous layer lacks (a sparse layer after a dense one) is drawn fresh.
      if (l > 0 && s > 0 && previous.count(spec.name)) blend(t, previous.at(spec.name), s, spec.mean);
      previous[spec.name] = t;
      w[fmt::format("model.layers.{}.{}", l, spec.name)] = std::move(t);
    }
  }
  w["model.norm.weight"] = draw.normal({d}, config.unit_offset_norm ? 0 : 1, 0.1);
  if (!config.tie_word_embeddings) w["lm_head.weight"] = draw.normal({vocab, d}, 0, 1 / std::sqrt(double(d)));
  return w;
}

ModelConfig write_tiny_model(const std::filesystem::path& dir, const TinyModelOptions& o) {
  check_options(o);
  std::filesystem::create_directories(dir);
  // Qwen3 ships Qwen2's tokenizer (Qwen2TokenizerFast: the same regex, NFC and byte-level BPE),
  // so the tiny qwen3 gets the tiny qwen2 tokenizer (and its chat template).
  // Qwen3-MoE ships the same tokenizer; Mixtral ships Mistral's sentencepiece one.
  const bool qwen = o.arch == "qwen2" || o.arch == "qwen3" || o.arch == "qwen3_moe";
  // Phi-3 ships a Llama-2-style sentencepiece tokenizer.model (LlamaTokenizer): mistral's tiny one.
  // Gemma ships a sentencepiece tokenizer.model (GemmaTokenizer) too.
  const bool sentencepiece = o.arch == "mixtral" || o.arch == "phi3" || o.arch == "gemma2" || o.arch == "gemma3";
  const std::string family = qwen ? "qwen2" : sentencepiece ? "mistral" : o.arch;
  const auto tok = write_tiny_tokenizer(dir, family, tiny_corpus(), o.vocab, o.seed);
  // Qwen2 and Qwen3 checkpoints pad the embedding to a multiple of 64 rows beyond the tokenizer
  // (Qwen2.5: 151665 → 152064; Qwen3: 151669 → 151936); the tiny ones do the same.
  // Phi-3 likewise (32011 tokens → 32064 rows).
  const int rows = qwen || o.arch == "phi3" ? (tok.vocab_size + 63) / 64 * 64 : tok.vocab_size;
  auto config_json = json::parse(tiny_model_config_json(o, rows));
  if (tok.bos_id) config_json["bos_token_id"] = *tok.bos_id;
  config_json["eos_token_id"] = tok.eos_ids.size() == 1 ? json(tok.eos_ids[0]) : json(tok.eos_ids);
  const std::string text = config_json.dump(2);
  ModelConfig config = parse_model_config(text, (dir / "config.json").string());
  core::write_safetensors(dir / "model.safetensors", tiny_weights(config, o));
  core::write_file_atomic(dir / "generation_config.json",
                          json{{"eos_token_id", tok.eos_ids}, {"do_sample", false}}.dump(2) + "\n");
  core::write_file_atomic(dir / "config.json", text + "\n");  // last: a folder with config.json is complete
  return config;
}

}  // namespace kvlab::harness
