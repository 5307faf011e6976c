#include "harness/model/llama_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "harness/model/activation.h"

namespace kvlab::harness {
namespace {

at::ScalarType scalar_type(const std::string& dtype, const core::Checkpoint& ckpt, const std::string& name) {
  if (dtype == "F32") return at::kFloat;
  if (dtype == "F16") return at::kHalf;
  if (dtype == "BF16") return at::kBFloat16;
  fail("{}: tensor '{}' has dtype {}; weights must be F32, F16 or BF16", ckpt.path().string(), name, dtype);
}

// Copies one stored tensor out of the mapping (memcpy: the data need not be aligned) and moves
// it to the run's device and dtype, after checking its shape.
at::Tensor load_weight(const core::Checkpoint& ckpt, const std::string& name, std::vector<std::int64_t> shape,
                const RunOptions& o) {
  if (!ckpt.has(name)) fail("{}: tensor '{}' is missing", ckpt.path().string(), name);
  const auto& stored = ckpt.shape(name);
  if (stored != core::Shape(shape.begin(), shape.end()))
    fail("{}: tensor '{}' has shape [{}], the config implies [{}]", ckpt.path().string(), name,
         fmt::join(stored, ", "), fmt::join(shape, ", "));
  const auto bytes = ckpt.raw(name);
  at::Tensor host = at::empty(shape, at::TensorOptions().dtype(scalar_type(ckpt.dtype(name), ckpt, name)));
  std::memcpy(host.data_ptr(), bytes.data(), bytes.size());
  return host.to(o.device, o.dtype);
}

at::Tensor optional_load(const core::Checkpoint& ckpt, bool present, const std::string& name,
                         std::vector<std::int64_t> shape, const RunOptions& o) {
  return present ? load_weight(ckpt, name, std::move(shape), o) : at::Tensor();
}

at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return b.defined() ? at::addmm(b, x, w.t()) : at::matmul(x, w.t());
}

// HF's RMSNorm over the last axis, x̂ = x·rsqrt(mean(x²) + eps) in fp32. LlamaRMSNorm (and
// Qwen3's, Mistral's, Phi-3's): x̂ cast back to the activation dtype, then times w. Gemma2RMSNorm /
// Gemma3RMSNorm (unit_offset): x̂·(1 + w) in fp32, then cast. q_norm/k_norm are this over D of [S, H, D].
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps, bool unit_offset) {
  const at::Tensor x32 = x.to(at::kFloat);
  const at::Tensor normed = x32 * at::rsqrt(x32.pow(2).mean(-1, true) + eps);
  if (unit_offset) return (normed * (weight.to(at::kFloat) + 1.0)).to(x.scalar_type());
  return weight * normed.to(x.scalar_type());
}

// Gemma's tanh soft-capping, cap·tanh(x / cap), in x's dtype (Gemma2's attention scores and
// final logits: modeling_gemma2.py eager_attention_forward and Gemma2ForCausalLM.forward).
at::Tensor soft_cap(const at::Tensor& x, const std::optional<double>& cap) {
  return cap ? (x / *cap).tanh() * *cap : x;
}

// Where the decoder's tensors live: "model." (…ForCausalLM), or a Gemma3ForConditionalGeneration
// checkpoint's language model ("language_model.model." as released, "model.language_model." as
// transformers ≥ 4.52 saves it), whose text part kvlab runs.
std::string decoder_root(const ModelConfig& c, const core::Checkpoint& ckpt) {
  if (c.model_type == "gemma3")
    for (const char* root : {"language_model.model.", "model.language_model."})
      if (ckpt.has(std::string(root) + "embed_tokens.weight")) return root;
  return "model.";
}

}  // namespace

LlamaModel::LlamaModel(ModelConfig config, const core::Checkpoint& ckpt, RunOptions options)
    : config_(std::move(config)), options_(options) {
  const ModelConfig& c = config_;
  const std::int64_t d = c.hidden_size, q = std::int64_t{c.num_heads} * c.head_dim,
                     kv = std::int64_t{c.num_kv_heads} * c.head_dim, inter = c.intermediate_size;
  const std::string root = decoder_root(c, ckpt);
  embed_ = load_weight(ckpt, root + "embed_tokens.weight", {c.vocab_size, d}, options_);
  norm_ = load_weight(ckpt, root + "norm.weight", {d}, options_);
  const std::string head = root == "language_model.model." ? "language_model.lm_head.weight" : "lm_head.weight";
  lm_head_ = c.tie_word_embeddings ? embed_ : load_weight(ckpt, head, {c.vocab_size, d}, options_);
  for (int l = 0; l < c.num_layers; ++l) {
    const auto p = fmt::format("{}layers.{}.", root, l);
    Layer layer;
    layer.input_norm = load_weight(ckpt, p + "input_layernorm.weight", {d}, options_);
    if (c.fused_projections) {  // Phi-3: one [q + 2·kv, d] matrix, used fused as Phi3Attention does
      layer.qkv = load_weight(ckpt, p + "self_attn.qkv_proj.weight", {q + 2 * kv, d}, options_);
    } else {
      layer.q = load_weight(ckpt, p + "self_attn.q_proj.weight", {q, d}, options_);
      layer.k = load_weight(ckpt, p + "self_attn.k_proj.weight", {kv, d}, options_);
      layer.v = load_weight(ckpt, p + "self_attn.v_proj.weight", {kv, d}, options_);
    }
    layer.o = load_weight(ckpt, p + "self_attn.o_proj.weight", {d, q}, options_);
    layer.q_bias = optional_load(ckpt, c.qkv_bias, p + "self_attn.q_proj.bias", {q}, options_);
    layer.k_bias = optional_load(ckpt, c.qkv_bias, p + "self_attn.k_proj.bias", {kv}, options_);
    layer.v_bias = optional_load(ckpt, c.qkv_bias, p + "self_attn.v_proj.bias", {kv}, options_);
    layer.o_bias = optional_load(ckpt, c.o_bias, p + "self_attn.o_proj.bias", {d}, options_);
    layer.q_norm = optional_load(ckpt, c.qk_norm, p + "self_attn.q_norm.weight", {c.head_dim}, options_);
    layer.k_norm = optional_load(ckpt, c.qk_norm, p + "self_attn.k_norm.weight", {c.head_dim}, options_);
    if (c.sandwich_norms) {  // Gemma: post_attention_layernorm is on the attention output; the MLP's input norm is pre_feedforward
      layer.attn_out_norm = load_weight(ckpt, p + "post_attention_layernorm.weight", {d}, options_);
      layer.post_norm = load_weight(ckpt, p + "pre_feedforward_layernorm.weight", {d}, options_);
      layer.mlp_out_norm = load_weight(ckpt, p + "post_feedforward_layernorm.weight", {d}, options_);
    } else {
      layer.post_norm = load_weight(ckpt, p + "post_attention_layernorm.weight", {d}, options_);
    }
    if (c.sparse_layer(l)) {
      const std::int64_t experts = c.moe->num_experts, ie = c.moe->expert_intermediate_size;
      const auto tensor = [&](MoeTensor t, int e, std::vector<std::int64_t> shape) {
        return load_weight(ckpt, p + c.moe_tensor_name(t, e), std::move(shape), options_);
      };
      std::vector<MoeExpert> all;
      for (int e = 0; e < experts; ++e)
        all.push_back({tensor(MoeTensor::gate, e, {ie, d}), tensor(MoeTensor::up, e, {ie, d}),
                       tensor(MoeTensor::down, e, {d, ie})});
      layer.moe = std::make_shared<const MoeMlp>(tensor(MoeTensor::router, 0, {experts, d}), std::move(all),
                                                 c.moe->top_k, c.moe->normalize_top_k, c.hidden_act);
      layers_.push_back(std::move(layer));
      continue;
    }
    if (c.fused_projections) {  // Phi-3: gate_up_proj [2·I, d], gate rows first
      layer.gate_up = load_weight(ckpt, p + "mlp.gate_up_proj.weight", {2 * inter, d}, options_);
    } else {
      layer.gate = load_weight(ckpt, p + "mlp.gate_proj.weight", {inter, d}, options_);
      layer.up = load_weight(ckpt, p + "mlp.up_proj.weight", {inter, d}, options_);
    }
    layer.down = load_weight(ckpt, p + "mlp.down_proj.weight", {d, inter}, options_);
    layer.gate_bias = optional_load(ckpt, c.mlp_bias, p + "mlp.gate_proj.bias", {inter}, options_);
    layer.up_bias = optional_load(ckpt, c.mlp_bias, p + "mlp.up_proj.bias", {inter}, options_);
    layer.down_bias = optional_load(ckpt, c.mlp_bias, p + "mlp.down_proj.bias", {d}, options_);
    layers_.push_back(std::move(layer));
  }
  const auto frequencies = [&](const core::Rope& rope) {
    const auto& inv = rope.inv_freq();
    if (inv.empty() || static_cast<int>(inv.size()) > c.head_dim / 2)
      fail("{}: RoPE has {} frequencies for head_dim {}", ckpt.path().string(), inv.size(), c.head_dim);
    return at::tensor(std::vector<float>(inv.begin(), inv.end()), at::kFloat).to(options_.device);
  };
  inv_freq_ = frequencies(c.rope);  // LongRoPE: the short table (Rope::from_config starts there)
  if (c.rope.is_length_dependent()) long_inv_freq_ = frequencies(c.rope.for_length(c.rope.original_max_position() + 1));
  if (c.local_rope) local_inv_freq_ = frequencies(*c.local_rope);
}

at::Tensor LlamaModel::norm(const at::Tensor& x, const at::Tensor& weight) const {
  return rms_norm(x, weight, config_.rms_norm_eps, config_.unit_offset_norm);
}

LlamaModel LlamaModel::load(const std::filesystem::path& dir, RunOptions options) {
  return LlamaModel(load_model_config(dir), core::Checkpoint(dir), options);
}

LlamaModel::RopeTables LlamaModel::rope_tables(const at::Tensor& positions, at::ScalarType dtype,
                                               const at::Tensor& inv_freq, double scale) {
  // Angles p·inv_freq[j] in fp32, duplicated so frequency j sits at j and j + D/2 (rotate-half).
  const at::Tensor angles = at::outer(positions.to(at::kFloat), inv_freq);  // [S, D/2]
  const at::Tensor emb = at::cat({angles, angles}, -1);                       // [S, D]
  at::Tensor cos = emb.cos(), sin = emb.sin();
  if (scale != 1.0) {  // `emb.cos() * self.attention_scaling`: an f32 product with the f32-cast scalar
    cos = cos * scale;
    sin = sin * scale;
  }
  return {cos.to(dtype).unsqueeze(1), sin.to(dtype).unsqueeze(1)};  // [S, 1, D]
}

const at::Tensor& LlamaModel::global_inv_freq(std::int64_t seq_len) const {
  // dynamic_rope_update's longrope_frequency_update: seq_len = max(position_ids) + 1 of this
  // forward; the long table when it exceeds original_max_position_embeddings.
  return long_inv_freq_.defined() && seq_len > config_.rope.original_max_position() ? long_inv_freq_ : inv_freq_;
}

at::Tensor LlamaModel::apply_rope(const at::Tensor& x, const RopeTables& tables) {
  const std::int64_t rotary = tables.cos.size(-1), half = rotary / 2;
  if (rotary == x.size(-1)) {
    const at::Tensor rotated_half = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
    return x * tables.cos + rotated_half * tables.sin;
  }
  // Partial rotary (Phi-4-mini): apply_rotary_pos_emb rotates x[..., :rotary] and concatenates
  // x[..., rotary:] unchanged (modeling_phi3.py).
  const at::Tensor r = x.narrow(-1, 0, rotary);
  const at::Tensor rotated_half = at::cat({-r.narrow(-1, half, half), r.narrow(-1, 0, half)}, -1);
  return at::cat({r * tables.cos + rotated_half * tables.sin, x.narrow(-1, rotary, x.size(-1) - rotary)}, -1);
}

at::Tensor LlamaModel::rotate(const at::Tensor& x, const at::Tensor& positions) const {
  if (config_.local_rope) fail("rotate: this model's layers use two RoPEs (Gemma-3); name the layer");
  return rotate(x, positions, 0);
}

at::Tensor LlamaModel::rotate(const at::Tensor& x, const at::Tensor& positions, int layer) const {
  if (config_.uses_local_rope(layer)) return apply_rope(x, rope_tables(positions, x.scalar_type(), local_inv_freq_));
  const std::int64_t seq_len =
      long_inv_freq_.defined() && positions.numel() ? positions.max().item<std::int64_t>() + 1 : 0;
  return apply_rope(x,
                    rope_tables(positions, x.scalar_type(), global_inv_freq(seq_len), config_.rope.attention_factor()));
}

std::int64_t LlamaModel::chunk_tokens(std::int64_t keys) const {
  if (options_.max_chunk_tokens > 0) return options_.max_chunk_tokens;
  const double e = static_cast<double>(at::elementSize(options_.dtype));
  // Attention, per query token: H_q × keys scores in the activation dtype, their fp32 copy and
  // fp32 probabilities, the probabilities cast back. MLP: gate, up, activation and product [I] each.
  const double per_token = (2 * e + 8) * config_.num_heads * static_cast<double>(keys) + 4 * e * config_.intermediate_size;
  if (options_.device.is_cpu()) {
    // On the CPU every temporary above glibc's mmap threshold (32 MiB at most) is a fresh
    // mapping whose pages the kernel zeroes on first touch: at 512 MiB chunks a prefill spent a
    // third of its time in the kernel. Chunks whose largest temporary (the fp32 scores) stays
    // under 24 MiB are served from the heap instead; 16 queries at least, to keep GEMMs efficient.
    const double largest = 4.0 * std::max<double>(config_.num_heads * static_cast<double>(keys), config_.intermediate_size);
    return std::max<std::int64_t>(16, static_cast<std::int64_t>(24.0 * 1024 * 1024 / largest));
  }
  // CUDA's caching allocator reuses blocks. Each chunk costs a host sync (the key prefix's
  // length) and a few kernel launches, so small chunks starve the GPU: at 128k keys a 512 MiB
  // budget meant 10-query chunks. 4 GiB of temporaries is small beside the weights and cache
  // of an 8B model at 128k tokens (16 + 24 GiB) on an 80 GB card.
  constexpr double budget = 4.0 * 1024 * 1024 * 1024;
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(budget / per_token));
}

at::Tensor LlamaModel::attention(const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
                                 const at::Tensor& q_positions, const at::Tensor& k_positions,
                                 const at::Tensor& keep_in, int layer, const at::Tensor& query_keep_in) const {
  // q [S, H_q, D] rotated; keys/values [H_kv, Sk, D]; returns [S, H_q·D].
  const std::int64_t S = q.size(0), Sk = keys.size(1), Hkv = config_.num_kv_heads, rep = config_.n_rep(),
                     D = config_.head_dim;
  // Gemma: scaling = query_pre_attn_scalar ** -0.5 (Gemma2Attention, Gemma3Attention).
  const double scale = config_.query_pre_attn_scalar ? std::pow(*config_.query_pre_attn_scalar, -0.5)
                                                     : 1.0 / std::sqrt(static_cast<double>(D));
  const std::optional<int> window = config_.window(layer);
  at::Tensor keep = keep_in, query_keep = query_keep_in;
  if (keep.defined() && keep.size(0) != Hkv) {  // one mask per query head (KvCache::keep): a query-head filter
    query_keep = query_keep.defined() ? query_keep & keep : keep;
    keep = at::Tensor();
  }
  const at::Tensor kt = keys.transpose(1, 2);  // [H_kv, D, Sk]
  std::vector<at::Tensor> outputs;
  const std::int64_t chunk = chunk_tokens(Sk);
  for (std::int64_t s0 = 0; s0 < S; s0 += chunk) {
    const std::int64_t n = std::min(chunk, S - s0);
    // Keys are in ascending position order, so the causal mask hides every key after the
    // chunk's last query: attend to the prefix up to it (halves a prefill's attention work).
    const std::int64_t kn = n == S ? Sk
                            : at::searchsorted(k_positions, q_positions.narrow(0, s0 + n - 1, 1), false, true)
                                  .item<std::int64_t>();
    // Query head h = kv·rep + r reads KV head kv (repeat_interleave): group the rep heads per KV head.
    const at::Tensor qc = q.narrow(0, s0, n).permute({1, 0, 2}).reshape({Hkv, rep * n, D});
    // Soft-capped (Gemma-2) in the activation dtype before the mask, as eager_attention_forward does.
    at::Tensor scores = soft_cap(at::matmul(qc, kt.narrow(2, 0, kn)) * scale, config_.attn_logit_softcap)
                            .to(at::kFloat)
                            .view({Hkv, rep, n, kn});
    const at::Tensor qp = q_positions.narrow(0, s0, n).unsqueeze(1);  // [n, 1]
    const at::Tensor kp = k_positions.narrow(0, 0, kn).unsqueeze(0);  // [1, kn]
    at::Tensor allowed = kp <= qp;
    if (window) allowed = allowed & (kp > qp - *window);
    at::Tensor mask = allowed.view({1, 1, n, kn});
    if (keep.defined()) mask = mask & keep.narrow(1, 0, kn).view({Hkv, 1, 1, kn});
    if (query_keep.defined()) mask = mask & query_keep.narrow(1, 0, kn).view({Hkv, rep, 1, kn});
    scores.masked_fill_(mask.logical_not(), -std::numeric_limits<float>::infinity());
    const at::Tensor probs = at::softmax(scores, -1).to(q.scalar_type()).view({Hkv, rep * n, kn});
    const at::Tensor out = at::matmul(probs, values.narrow(1, 0, kn));  // [H_kv, rep·n, D]
    outputs.push_back(out.view({Hkv * rep, n, D}).permute({1, 0, 2}).reshape({n, Hkv * rep * D}));
  }
  return outputs.size() == 1 ? outputs[0] : at::cat(outputs, 0);
}

at::Tensor LlamaModel::mlp(const Layer& layer, const at::Tensor& h) const {
  std::vector<at::Tensor> outputs;
  const std::int64_t S = h.size(0), chunk = chunk_tokens(0);
  for (std::int64_t s0 = 0; s0 < S; s0 += chunk) {
    const at::Tensor x = norm(h.narrow(0, s0, std::min(chunk, S - s0)), layer.post_norm);
    at::Tensor out;
    if (layer.moe) {  // Mixtral / Qwen3-MoE sparse layer: routed experts instead of the dense MLP
      out = layer.moe->forward(x);
    } else if (layer.gate_up.defined()) {  // Phi3MLP: gate, up = gate_up_proj(x).chunk(2); up · act(gate)
      const at::Tensor gate_up = at::matmul(x, layer.gate_up.t());
      const std::int64_t inter = config_.intermediate_size;
      const at::Tensor act = gate_up.narrow(-1, inter, inter) * activate(gate_up.narrow(-1, 0, inter), config_.hidden_act);
      out = linear(act, layer.down, layer.down_bias);
    } else {
      const at::Tensor act =
          activate(linear(x, layer.gate, layer.gate_bias), config_.hidden_act) * linear(x, layer.up, layer.up_bias);
      out = linear(act, layer.down, layer.down_bias);
    }
    // Gemma: post_feedforward_layernorm(mlp(pre_feedforward_layernorm(h))).
    outputs.push_back(layer.mlp_out_norm.defined() ? norm(out, layer.mlp_out_norm) : out);
  }
  return outputs.size() == 1 ? outputs[0] : at::cat(outputs, 0);
}

at::Tensor LlamaModel::forward(const at::Tensor& ids_in, KvCache* cache, const LayerObserver& observer,
                               bool all_logits) const {
  const ModelConfig& c = config_;
  if (ids_in.dim() != 1 || ids_in.size(0) == 0) fail("forward: ids must be a non-empty [S] tensor");
  if (cache && cache->num_layers() != c.num_layers)
    fail("forward: the cache has {} layers, the model {}", cache->num_layers(), c.num_layers);
  const at::Tensor ids = ids_in.to(options_.device, at::kLong);
  const std::int64_t lo = ids.min().item<std::int64_t>(), hi = ids.max().item<std::int64_t>();
  if (lo < 0 || hi >= c.vocab_size) fail("forward: token id {} is outside the vocabulary of {}", lo < 0 ? lo : hi, c.vocab_size);
  const std::int64_t S = ids.size(0), start = cache ? cache->next_position() : 0;
  const at::Tensor positions = at::arange(start, start + S, at::TensorOptions().dtype(at::kLong).device(options_.device));
  const at::Tensor k_positions = cache && cache->length() ? at::cat({cache->positions(), positions}) : positions;

  at::Tensor h = embed_.index_select(0, ids);  // [S, d]
  // Gemma: × √d with the factor in the activation dtype (Gemma2Model's normalizer, Gemma-3's embed_scale).
  if (c.scale_embeddings) h = h * at::scalar_tensor(std::sqrt(static_cast<double>(c.hidden_size)), h.options());
  // Once per call, shared by every layer (Gemma-3's sliding layers: the local table).
  // LongRoPE: the table of this call's largest position + 1 (start + S), and the attention factor.
  const RopeTables global_rope =
      rope_tables(positions, h.scalar_type(), global_inv_freq(start + S), config_.rope.attention_factor());
  const RopeTables local_rope =
      local_inv_freq_.defined() ? rope_tables(positions, h.scalar_type(), local_inv_freq_) : RopeTables{};
  for (int l = 0; l < c.num_layers; ++l) {
    const Layer& layer = layers_[l];
    const RopeTables& rope = c.uses_local_rope(l) ? local_rope : global_rope;
    const at::Tensor x = norm(h, layer.input_norm);
    at::Tensor q, k, v;
    if (layer.qkv.defined()) {  // Phi3Attention: one matmul, then q, k, v by columns
      const std::int64_t nq = std::int64_t{c.num_heads} * c.head_dim, nkv = std::int64_t{c.num_kv_heads} * c.head_dim;
      const at::Tensor qkv = at::matmul(x, layer.qkv.t());
      q = qkv.narrow(1, 0, nq).contiguous().view({S, c.num_heads, c.head_dim});
      k = qkv.narrow(1, nq, nkv).contiguous().view({S, c.num_kv_heads, c.head_dim});
      v = qkv.narrow(1, nq + nkv, nkv).contiguous().view({S, c.num_kv_heads, c.head_dim});
    } else {
      q = linear(x, layer.q, layer.q_bias).view({S, c.num_heads, c.head_dim});
      k = linear(x, layer.k, layer.k_bias).view({S, c.num_kv_heads, c.head_dim});
      v = linear(x, layer.v, layer.v_bias).view({S, c.num_kv_heads, c.head_dim});
    }
    if (c.qk_norm) {  // Qwen3Attention, Gemma3Attention: q_norm/k_norm per head, after the reshape, before RoPE
      q = norm(q, layer.q_norm);
      k = norm(k, layer.k_norm);
    }
    if (observer) observer(LayerTap{l, x, q, k, v, positions});
    const at::Tensor k_rot = apply_rope(k, rope);
    at::Tensor keys, values, keep;
    if (cache) {
      if (cache->rotation_stale(l)) cache->set_rotated(l, rotate(cache->key(l).transpose(0, 1), cache->positions(), l).transpose(0, 1));
      cache->append(l, k, k_rot, v);
      keys = cache->rotated_key(l);
      values = cache->value(l);
      keep = cache->keep(l);
    } else {
      keys = k_rot.transpose(0, 1);
      values = v.transpose(0, 1);
    }
    const at::Tensor q_rot = apply_rope(q, rope);
    // A single-token step of a method that selects per decode query (Quest) attends the cells
    // its selection gives each query head; prefill and multi-token calls attend everything.
    at::Tensor query_keep;
    if (cache && S == 1 && cache->query_selection()) query_keep = cache->query_selection()->select(l, q_rot[0], keys);
    const at::Tensor attn = attention(q_rot, keys, values, positions, k_positions, keep, l, query_keep);
    const at::Tensor out = linear(attn, layer.o, layer.o_bias);
    h = h + (layer.attn_out_norm.defined() ? norm(out, layer.attn_out_norm) : out);  // Gemma: post_attention_layernorm
    h = h + mlp(layer, h);
  }
  if (cache) cache->append_positions(positions);
  const at::Tensor last = all_logits ? h : h.narrow(0, S - 1, 1);
  // Gemma-2: final soft-capping of the logits in the activation dtype (Gemma2ForCausalLM).
  return soft_cap(at::matmul(norm(last, norm_), lm_head_.t()), c.final_logit_softcap).to(at::kFloat);
}

namespace {

at::Tensor ids_tensor(std::span<const std::int32_t> ids) {
  return at::tensor(std::vector<std::int64_t>(ids.begin(), ids.end()), at::kLong);
}

// The decode after the prefill, on `cache` (the prefilled context, consumed) and `logits` (after it).
Generation decode_greedy(const LlamaModel& model, KvCache cache, at::Tensor logits, std::span<const std::int32_t> question,
                         int max_new_tokens, const GenerateOptions& o) {
  if (o.rehook_every < 0) fail("generate: rehook_every {} must be ≥ 0", o.rehook_every);
  if (o.hook) o.hook(cache, cache.length());
  if (!question.empty()) logits = model.forward(ids_tensor(question), &cache, o.decode_observer);
  Generation out;
  std::vector<at::Tensor> steps;
  const auto& eos = model.config().eos_token_ids;
  const int steps_max = o.forced.empty() ? max_new_tokens : static_cast<int>(o.forced.size());
  for (int i = 0; i < steps_max; ++i) {
    const auto next = o.forced.empty() ? static_cast<std::int32_t>(logits[0].argmax().item<std::int64_t>()) : o.forced[i];
    out.tokens.push_back(next);
    steps.push_back(logits);
    if ((o.forced.empty() && std::find(eos.begin(), eos.end(), next) != eos.end()) || i + 1 == steps_max) break;
    logits = model.forward(at::tensor({static_cast<std::int64_t>(next)}, at::kLong), &cache, o.decode_observer);
    if (o.hook && o.rehook_every > 0 && (i + 1) % o.rehook_every == 0) o.hook(cache, cache.length());
  }
  out.step_logits = steps.empty() ? at::empty({0, model.config().vocab_size}) : at::cat(steps, 0).cpu();
  return out;
}

}  // namespace

Prefill prefill(const LlamaModel& model, std::span<const std::int32_t> context, std::int64_t reserve_tokens,
                const LayerObserver& observer) {
  if (context.empty()) fail("generate: empty context");
  Prefill out{KvCache(model.config().num_layers), {}};
  out.cache.reserve(std::max<std::int64_t>(reserve_tokens, static_cast<std::int64_t>(context.size())));
  out.logits = model.forward(ids_tensor(context), &out.cache, observer);
  return out;
}

Generation generate_greedy(const LlamaModel& model, const Prefill& start, std::span<const std::int32_t> question,
                           int max_new_tokens, const GenerateOptions& options) {
  return decode_greedy(model, start.cache.clone(), start.logits, question, max_new_tokens, options);
}

Generation generate_greedy(const LlamaModel& model, std::span<const std::int32_t> context,
                           std::span<const std::int32_t> question, int max_new_tokens, const GenerateOptions& o) {
  auto start = prefill(model, context, static_cast<std::int64_t>(context.size() + question.size()) + std::max(0, max_new_tokens),
                       o.prefill_observer);
  return decode_greedy(model, std::move(start.cache), std::move(start.logits), question, max_new_tokens, o);
}

}  // namespace kvlab::harness
