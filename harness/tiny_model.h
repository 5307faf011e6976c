// Tiny Llama-family checkpoints for tests and the demo (`kvlab make-tiny-model`): a real HF
// folder — config.json, generation_config.json, model.safetensors, tokenizer files — with
// seeded random weights, so every loader runs exactly the code a downloaded checkpoint runs.
// No libtorch here: the weights are written through core::write_safetensors.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "core/safetensors.h"
#include "harness/model_config.h"

namespace kvlab::harness {

struct TinyModelOptions {
  std::string arch = "llama";   // llama (llama3 RoPE, BPE tokenizer.json) | qwen2 (q/k/v bias, NFC BPE)
                                // | mistral (sentencepiece tokenizer.model) | qwen3 (q_norm/k_norm,
                                // head_dim 2·hidden/heads unless given, tied embeddings, qwen2's tokenizer)
                                // | mixtral (mistral + sparse MoE, mistral's tokenizer) | qwen3_moe
                                // (qwen3's attention, untied, sparse MoE with norm_topk_prob, qwen2's tokenizer)
                                // | phi3 (fused qkv_proj / gate_up_proj, partial rotary 0.75, tied
                                // embeddings, mistral's sentencepiece tokenizer) | gemma2 (soft-capping,
                                // even layers sliding) | gemma3 (q/k norms, local RoPE, 1 global layer in
                                // 6, or in 2 below 6 layers): both with Gemma's norms, √d embeddings,
                                // head_dim 2·hidden/heads, query_pre_attn_scalar hidden/heads, window
                                // max_position/64, tied embeddings, mistral's sentencepiece tokenizer
  int layers = 4;
  int hidden = 64;              // d_model
  int heads = 4;                // H_q
  int kv_heads = 2;             // H_kv (divides heads)
  int head_dim = 0;             // D; 0 → hidden / heads (qwen3: 2 · hidden / heads, written to config.json)
  int intermediate = 128;       // MLP width (mixtral: each expert's; qwen3_moe: the dense layers')
  int experts = 4;              // mixtral, qwen3_moe: experts per sparse layer E
  int experts_per_token = 2;    // mixtral, qwen3_moe: top-k (1..experts)
  int moe_intermediate = 64;    // qwen3_moe: moe_intermediate_size (each expert's width)
  int vocab = 512;              // tokenizer vocabulary target (byte-level BPE: ≥ 256 + specials)
  // Cross-layer structure: layer l's weights = s·(layer l−1's) + √(1−s²)·(fresh draw), so at
  // s > 0 adjacent layers' K/V correlate as in real models (xKV Fig. 2); 0 = independent.
  double layer_similarity = 0.0;
  std::uint64_t seed = 0;
  std::string dtype = "bfloat16";  // storage dtype of model.safetensors: bfloat16 | float16 | float32
  int max_position_embeddings = 8192;
  // phi3 only: > 0 writes Phi-4-mini-style LongRoPE (rope_scaling type "longrope", short factors
  // near 1, long ones rising to 16) with this original_max_position_embeddings, so a prompt longer
  // than it switches tables (docs/models.md §8.6); 0: no rope_scaling.
  int longrope_original_max = 0;
};

// The config.json text for `options` with `vocab_size` embedding rows.
std::string tiny_model_config_json(const TinyModelOptions& options, int vocab_size);

// Seeded random weights with HF names and shapes (docs/models.md §1.4) for `config`:
// projections ~ N(0, 1/fan_in), embeddings ~ N(0, 1), norms (Qwen3's q_norm/k_norm [D] too)
// 1 + N(0, 0.1²) (Gemma's, used as 1 + w: N(0, 0.1²), with its pre/post-feed-forward norms), Qwen2 biases N(0, 0.1²). Sparse layers (config.sparse_layer) draw the router
// [E, d] ~ N(0, 1/d) and each expert's gate/up/down (fan-in rule) where a dense layer draws its
// MLP; with config.fused_projections (Phi-3) one qkv_proj and one gate_up_proj, drawn as one
// tensor each. Same options and config → same bytes.
std::map<std::string, core::TensorToWrite> tiny_weights(const ModelConfig& config, const TinyModelOptions& options);

// Writes the whole folder (created if missing; existing kvlab files replaced atomically) and
// returns its config.
ModelConfig write_tiny_model(const std::filesystem::path& dir, const TinyModelOptions& options);

}  // namespace kvlab::harness
