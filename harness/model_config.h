// A Llama-family model's config.json, read with transformers' leniency (docs/models.md
// §1.2): head_dim absent → hidden_size / num_attention_heads; num_key_value_heads absent → MHA;
// eos_token_id an int or a list; torch_dtype or dtype; rope parameters in rope_scaling (key
// "rope_type" or "type") or transformers-v5 rope_parameters (core::Rope reads those). The
// families differ only in the flags below: Qwen2's q/k/v biases, Mistral v0.1's sliding window,
// tied embeddings on the small Qwen2.5 and Qwen3 models, Qwen3's per-head q/k RMSNorm, and the
// sparse mixture-of-experts MLP of Mixtral and Qwen3-MoE (`moe`, docs/models.md §7), and Phi-3's
// fused qkv_proj / gate_up_proj with partial rotary (docs/models.md §8), and Gemma-2 / Gemma-3's
// (1 + w) norms, four norms per layer, √d-scaled embeddings, soft-capping, query_pre_attn_scalar,
// per-layer sliding windows and Gemma-3's separate RoPE for sliding layers (docs/models.md §9).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/rope.h"

namespace kvlab::harness {

// The MLP's activation (hidden_act): the names of transformers' ACT2FN that kvlab computes.
// silu (alias swish) is what every Llama, Qwen2 and Mistral checkpoint uses; the others exist for
// configs that set them (transformers' model code applies whatever ACT2FN[hidden_act] gives).
enum class Activation {
  silu,       // x·σ(x)                                   "silu", "swish"
  gelu,       // x·Φ(x), Φ by erf                         "gelu"
  gelu_tanh,  // ½x(1 + tanh(√(2/π)(x + 0.044715x³)))     "gelu_new", "gelu_pytorch_tanh"
  relu,       // max(x, 0)                                "relu"
};

std::string_view to_string(Activation a);  // its transformers name ("silu", "gelu", "gelu_pytorch_tanh", "relu")

// One stored tensor of a sparse MoE block (docs/models.md §7.4).
enum class MoeTensor {
  router,  // [E, d_model]: Mixtral block_sparse_moe.gate, Qwen3-MoE mlp.gate
  gate,    // [I_e, d_model]: Mixtral experts.e.w1, Qwen3-MoE experts.e.gate_proj
  up,      // [I_e, d_model]: Mixtral experts.e.w3, Qwen3-MoE experts.e.up_proj
  down,    // [d_model, I_e]: Mixtral experts.e.w2, Qwen3-MoE experts.e.down_proj
};

// The sparse MoE MLP (Mixtral's MixtralSparseMoeBlock, Qwen3-MoE's Qwen3MoeSparseMoeBlock):
// router logits → softmax in f32 over all E experts → the top_k largest → (renormalised to sum
// 1 when normalize_top_k) → cast to the activation dtype → Σ weight · expert(x), each expert
// act(gate(x)) ⊙ up(x) → down, no biases.
struct MoeConfig {
  int num_experts = 0;                 // E (Mixtral num_local_experts, Qwen3-MoE num_experts)
  int top_k = 0;                       // experts per token, 1 ≤ top_k ≤ E (num_experts_per_tok)
  int expert_intermediate_size = 0;    // I_e (Mixtral intermediate_size, Qwen3-MoE moe_intermediate_size)
  bool normalize_top_k = true;         // Mixtral always; Qwen3-MoE: norm_topk_prob
  int decoder_sparse_step = 1;         // Qwen3-MoE: layer l may be sparse when (l + 1) % step == 0; Mixtral: 1
  std::vector<int> mlp_only_layers;    // Qwen3-MoE: layers kept dense (sorted, distinct); Mixtral: none

  // Qwen3MoeDecoderLayer's rule (Mixtral: every layer): a MoE block, else the dense MLP of
  // intermediate_size. Computed, not stored, so a huge num_hidden_layers costs nothing.
  bool sparse(int layer) const;
  int count_sparse(int num_layers) const;  // how many of layers 0..num_layers-1 are sparse
};

struct ModelConfig {
  std::string model_type;             // "llama" | "qwen2" | "mistral" | "qwen3" | "mixtral" | "qwen3_moe" | "phi3"
                                      // | "gemma2" | "gemma3_text" | "gemma3" (its text_config: the text model only)
  int vocab_size = 0;                 // embedding rows (may exceed the tokenizer's size: padding)
  int hidden_size = 0;                // d_model
  int intermediate_size = 0;          // MLP width I
  int num_layers = 0;                 // num_hidden_layers
  int num_heads = 0;                  // query heads H_q
  int num_kv_heads = 0;               // key/value heads H_kv (divides H_q: GQA group n_rep = H_q / H_kv)
  int head_dim = 0;                   // D
  double rms_norm_eps = 1e-6;
  Activation hidden_act = Activation::silu;  // the MLP's act(gate(x)) ⊙ up(x)
  bool qkv_bias = false;              // q/k/v projections carry a bias (Qwen2 always; attention_bias elsewhere)
  bool o_bias = false;                // o_proj bias (attention_bias on llama; never on Qwen2)
  bool mlp_bias = false;              // gate/up/down biases (llama's mlp_bias)
  bool tie_word_embeddings = false;   // lm_head reuses embed_tokens (lm_head.weight absent)
  bool qk_norm = false;               // RMSNorm over D of each q and k head before RoPE (Qwen3's q_norm/k_norm)
  bool fused_projections = false;     // Phi-3: self_attn.qkv_proj (q, k, v rows) and mlp.gate_up_proj (gate, up rows)
  std::optional<int> sliding_window;  // attend to at most this many most recent keys (Mistral v0.1, Mixtral), else full
  // Which layers the window applies to (Gemma: layer_types' "sliding_attention"); empty: every
  // layer (Mistral, Mixtral, Phi-3). Read through window(layer).
  std::vector<bool> sliding_layers;
  // Gemma's numerics (docs/models.md §9.3), off for the other families:
  bool unit_offset_norm = false;      // RMSNorm output x̂·(1 + w) computed in f32, then cast (Gemma*RMSNorm)
  bool scale_embeddings = false;      // embeddings × √hidden_size, the factor cast to the activation dtype
  bool sandwich_norms = false;        // post_attention_layernorm on the attention output, pre_/post_feedforward_layernorm around the MLP
  std::optional<double> query_pre_attn_scalar;  // attention scores × this^−½ (else head_dim^−½)
  std::optional<double> attn_logit_softcap;     // scores → cap·tanh(scores / cap) before the mask (Gemma-2: 50)
  std::optional<double> final_logit_softcap;    // logits → cap·tanh(logits / cap) (Gemma-2: 30)
  std::optional<core::Rope> local_rope;         // RoPE of sliding layers when it differs from `rope` (Gemma-3)
  // With local_rope: the config objects (Rope::from_config's input, config.json's terms) `rope` and
  // local_rope are built from, which a dump records per layer (docs/dump-format.md layer_rope_config).
  std::string rope_config, local_rope_config;
  std::optional<MoeConfig> moe;       // Mixtral and Qwen3-MoE; absent on dense families
  int max_position_embeddings = 0;
  std::optional<int> bos_token_id;
  std::vector<int> eos_token_ids;     // generation stops on any of these
  std::string torch_dtype;            // "bfloat16" | "float16" | "float32" | "" when absent
  core::Rope rope;                    // the frequency rule (default, linear, llama3); Gemma-3: of the global layers
  std::string json;                   // config.json as read, for provenance

  int n_rep() const { return num_heads / num_kv_heads; }
  // The window layer `layer` attends with (keys j with i − window < j ≤ i), none for a full layer.
  std::optional<int> window(int layer) const;
  // Whether layer `layer` rotates with local_rope (Gemma-3's sliding layers), and the RoPE it
  // rotates its queries and keys with.
  bool uses_local_rope(int layer) const { return local_rope && window(layer); }
  const core::Rope& rope_of(int layer) const;
  bool sparse_layer(int layer) const { return moe && moe->sparse(layer); }
  // The HF name of a sparse layer's tensor after "model.layers.{layer}." (`expert` ignored for
  // the router): "block_sparse_moe.experts.3.w1.weight" (Mixtral), "mlp.experts.3.gate_proj.weight".
  std::string moe_tensor_name(MoeTensor tensor, int expert) const;
  std::string gemma_description() const;  // describe()'s Gemma part ("" for the other families)
  std::string describe() const;  // one line: "llama 4 layers d=256 H_q=8 H_kv=2 D=32 rope llama3 ..."
};

// Parses config.json text; `source` names it in errors. Every missing or inconsistent field is
// a kvlab::Error naming the field (heads not dividing, head_dim odd, unknown model_type or
// hidden_act, an integer outside its field's range, a field of the wrong JSON type, ...).
ModelConfig parse_model_config(std::string_view json_text, std::string_view source = "config.json");
// Reads `dir`/config.json (or `dir` itself when it is a file) and merges generation_config.json's
// eos_token_id when present (Llama-3.1 and Qwen2.5 list their stop tokens there).
ModelConfig load_model_config(const std::filesystem::path& dir);

}  // namespace kvlab::harness
