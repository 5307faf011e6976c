// The Llama-family decoder (Llama-3.x, Qwen2/2.5, Mistral, Qwen3, Mixtral, Qwen3-MoE) in libtorch,
// with HF's numerics (docs/models.md §1.3): RMSNorm in fp32, RoPE cos/sin in fp32 with rotate-half
// pairing, softmax in fp32, q/k/v biases for Qwen2, Qwen3's per-head q_norm/k_norm before RoPE, GQA
// by repeat-interleave (query head h reads KV head h / n_rep), Mistral v0.1's sliding window, and
// on Mixtral / Qwen3-MoE a sparse MoE MLP (moe_mlp.h) in the layers the config makes sparse, and
// Phi-3's fused qkv_proj / gate_up_proj and partial rotary (docs/models.md §8), and Gemma-2 /
// Gemma-3's (1 + w) norms around attention and MLP, √d embeddings, soft-capping, per-layer sliding
// windows and local RoPE (docs/models.md §9). CPU or CUDA; f32, bf16 or f16.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "core/safetensors.h"
#include "harness/model/kv_cache.h"
#include "harness/model/moe_mlp.h"
#include "harness/model_config.h"

namespace kvlab::harness {

struct RunOptions {
  at::Device device{at::kCPU};
  at::ScalarType dtype = at::kFloat;  // compute and cache dtype
  // Query tokens per attention/MLP chunk; 0 = auto, sized so the fp32 scores and the MLP
  // activations of one chunk stay within a budget (CPU: under glibc's mmap threshold; CUDA:
  // about 4 GiB), so a 128k-token prefill never materialises [H_q, S, S].
  std::int64_t max_chunk_tokens = 0;
};

// What one layer computed in a forward call over S tokens (views, valid during the callback).
struct LayerTap {
  int layer;
  const at::Tensor& attn_in;    // [S, d_model] the normalized attention input (input_layernorm output)
  const at::Tensor& query;      // [S, H_q, D] pre-RoPE: q_proj(x) + b_q (Qwen3, Gemma-3: q_norm of it)
  const at::Tensor& key;        // [S, H_kv, D] pre-RoPE: k_proj(x) + b_k (Qwen3, Gemma-3: k_norm of it)
  const at::Tensor& value;      // [S, H_kv, D]
  const at::Tensor& positions;  // [S] int64
};
using LayerObserver = std::function<void(const LayerTap&)>;

class LlamaModel {
 public:
  // Copies every weight to options.device/dtype (nothing points into the mapping afterwards).
  // Checks that each tensor docs/models.md §1.4 names exists with its shape — an error names the
  // tensor and the checkpoint — accepts F32/F16/BF16 storage, ignores *.rotary_emb.inv_freq
  // buffers, ties lm_head to embed_tokens when the config says so, loads q_norm/k_norm [D]
  // when the config has them (Qwen3, Qwen3-MoE) and, in sparse layers, the router and every
  // expert instead of the dense MLP (Mixtral, Qwen3-MoE: docs/models.md §7.4).
  LlamaModel(ModelConfig config, const core::Checkpoint& weights, RunOptions options);
  static LlamaModel load(const std::filesystem::path& dir, RunOptions options);  // config.json + safetensors

  const ModelConfig& config() const { return config_; }
  const RunOptions& options() const { return options_; }

  // Runs `ids` ([S] integer, any device) at positions cache->next_position() + 0..S-1, appends
  // their pre-RoPE K and V to `cache` (LongRoPE: this call's q and k rotate with the table of
  // next_position() + S, the cached keys keep the rotation they had, as HF's forward;
  // docs/models.md §2.6), and calls `observer` once per layer, in order. With cache == nullptr
  // the positions are 0..S-1 and nothing is kept (the dump path: memory is one layer's
  // tensors). Returns f32 logits: [S, V] when all_logits, else [1, V] (the last token).
  at::Tensor forward(const at::Tensor& ids, KvCache* cache, const LayerObserver& observer = {},
                     bool all_logits = false) const;

  // RoPE of x [S, H, D] at `positions` [S] (the rotation attention applies), in x's dtype; under
  // LongRoPE with the table of a forward whose largest position is max(positions). The
  // two-argument form is for models with one RoPE on every layer (an error on Gemma-3, whose
  // sliding layers rotate with rope_local_base_freq: name the layer).
  at::Tensor rotate(const at::Tensor& x, const at::Tensor& positions) const;
  at::Tensor rotate(const at::Tensor& x, const at::Tensor& positions, int layer) const;

  struct Layer {  // one decoder layer's weights; undefined biases (and q/k norms) are absent
    at::Tensor input_norm, q, q_bias, k, k_bias, v, v_bias, o, o_bias, q_norm, k_norm;
    at::Tensor qkv;  // Phi-3's fused qkv_proj [H_q·D + 2·H_kv·D, d] (q, k, v undefined then)
    at::Tensor post_norm;  // the MLP's input norm: post_attention_layernorm (Gemma: pre_feedforward_layernorm)
    at::Tensor attn_out_norm, mlp_out_norm;  // Gemma: post_attention_layernorm, post_feedforward_layernorm (else undefined)
    at::Tensor gate, gate_bias, up, up_bias, down, down_bias;  // the dense MLP (undefined when sparse)
    at::Tensor gate_up;  // Phi-3's fused gate_up_proj [2·I, d], gate rows first (gate, up undefined then)
    std::shared_ptr<const MoeMlp> moe;  // the sparse MoE MLP of a sparse layer, else null
  };

 private:
  struct RopeTables {
    at::Tensor cos, sin;  // [S, 1, rotary_dim] in the activation dtype, computed in fp32
  };
  // cos and sin times `scale` in fp32 before the cast (LongRoPE's attention factor; 1: no product).
  static RopeTables rope_tables(const at::Tensor& positions, at::ScalarType dtype, const at::Tensor& inv_freq,
                                double scale = 1.0);
  // The global table a forward whose largest position + 1 is `seq_len` rotates with: LongRoPE's
  // long table past original_max_position_embeddings, else inv_freq_ (docs/models.md §2.6).
  const at::Tensor& global_inv_freq(std::int64_t seq_len) const;
  static at::Tensor apply_rope(const at::Tensor& x, const RopeTables& tables);
  at::Tensor norm(const at::Tensor& x, const at::Tensor& weight) const;  // the family's RMSNorm
  // Layer `layer`'s attention: its window (config.window) and the family's scale and soft-cap;
  // keep [H_kv, Sk] masks cells for every query of a KV head's group, or, with H_q rows (an eviction
  // per query head, KvCache::keep), each query head's own; query_keep [H_q, Sk] per query head
  // (a single query's selection, KvCache::query_selection). Both optional.
  at::Tensor attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                       const at::Tensor& q_positions, const at::Tensor& k_positions, const at::Tensor& keep,
                       int layer, const at::Tensor& query_keep) const;
  at::Tensor mlp(const Layer& layer, const at::Tensor& h) const;
  std::int64_t chunk_tokens(std::int64_t keys) const;

  ModelConfig config_;
  RunOptions options_;
  at::Tensor embed_, norm_, lm_head_, inv_freq_;  // inv_freq_: LongRoPE's short table
  at::Tensor long_inv_freq_;  // LongRoPE's long table (config.rope.for_length past the switch), else undefined
  at::Tensor local_inv_freq_;  // Gemma-3's sliding layers (config.local_rope), else undefined
  std::vector<Layer> layers_;
};

// Prefills `context`, calls `hook(cache, context.size())` — the point where a compressor replaces
// the context's cache — then feeds `question` from that cache and decodes greedily until a token
// of config.eos_token_ids or max_new_tokens. With an empty question the first token comes from
// the prefill's logits (computed before the hook). With `forced` tokens the decode is
// teacher-forced: those tokens are fed instead of the argmax (eos does not stop it) and
// step_logits are the distributions they were scored with.
using PrefillHook = std::function<void(KvCache&, std::int64_t cached_tokens)>;
struct GenerateOptions {  // members default-initialised, so designated initialisers may name any subset
  PrefillHook hook = {};
  // 0: the question and generated tokens are cached exactly, as the papers do. N > 0: `hook`
  // runs again, on the whole cache, after every N generated tokens are cached (streaming
  // compression of decode tokens: KIVI's quantized blocks, continuous eviction).
  int rehook_every = 0;
  LayerObserver prefill_observer = {};  // sees the context prefill's layers (a compressor's query window)
  LayerObserver decode_observer = {};   // sees the question's and every decode step's layers
  std::span<const std::int32_t> forced = {};
};
struct Generation {
  std::vector<std::int32_t> tokens;  // generated ids (the eos token included when reached)
  at::Tensor step_logits;            // [n_generated, V] f32: the distribution each token was chosen from
};
Generation generate_greedy(const LlamaModel& model, std::span<const std::int32_t> context,
                           std::span<const std::int32_t> question, int max_new_tokens,
                           const GenerateOptions& options = {});

// A context prefilled once and decoded from many times — the baseline and each compressor —
// instead of recomputing the prefill per method (at long contexts the prefill dominates).
struct Prefill {
  KvCache cache;      // the context's exact cache
  at::Tensor logits;  // [1, V] f32: the next-token distribution after the context
};
// `reserve_tokens`: the cache's capacity hint (context + question + new tokens).
Prefill prefill(const LlamaModel& model, std::span<const std::int32_t> context, std::int64_t reserve_tokens,
                const LayerObserver& observer = {});
// generate_greedy from a copy of `start` (which stays as it is): the same tokens and logits as
// generate_greedy on the context itself. options.prefill_observer is not used (the prefill ran).
Generation generate_greedy(const LlamaModel& model, const Prefill& start, std::span<const std::int32_t> question,
                           int max_new_tokens, const GenerateOptions& options = {});

}  // namespace kvlab::harness
