#include "harness/kv_dumper.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "core/progress.h"

namespace kvlab::harness {
namespace {

// A tap tensor as contiguous f32 host memory (a view when it already is one).
at::Tensor host_f32(const at::Tensor& t) { return t.to(at::kCPU, at::kFloat).contiguous(); }

std::span<const float> span_of(const at::Tensor& t) {
  return {t.data_ptr<float>(), static_cast<std::size_t>(t.numel())};
}

}  // namespace

core::DumpInfo dump_info_for(const LlamaModel& model, std::string model_id, std::string tokenizer,
                             std::string chat_template, core::DType storage, bool attn_in) {
  const ModelConfig& c = model.config();
  core::DumpInfo info;
  info.num_layers = c.num_layers;
  info.num_kv_heads = c.num_kv_heads;
  info.num_q_heads = c.num_heads;
  info.head_dim = c.head_dim;
  info.d_model = attn_in ? c.hidden_size : 0;
  info.dtype = storage;
  info.model_id = std::move(model_id);
  info.model_config = c.json;
  info.tokenizer = std::move(tokenizer);
  info.chat_template = std::move(chat_template);
  if (c.qk_norm) {  // Qwen3, Gemma-3: the taps are after q_norm / k_norm (and before RoPE)
    info.key_norm = core::kKeyNormBeforeRope;
    info.query_norm = core::kQueryNormBeforeRope;
  }
  if (c.sliding_window)  // Mistral v0.1, Mixtral, Phi-3: every layer; Gemma: the sliding layers
    for (int l = 0; l < c.num_layers; ++l) info.layer_windows.push_back(c.window(l).value_or(0));
  if (c.local_rope) {
    info.layer_rope = fmt::format("sliding layers: {}; full-attention layers: {}", c.local_rope->describe(), c.rope.describe());
    for (int l = 0; l < c.num_layers; ++l)
      info.layer_rope_configs.push_back(c.uses_local_rope(l) ? c.local_rope_config : c.rope_config);
  }
  return info;
}

int dump_sample(const LlamaModel& model, const SampleToDump& sample, int query_window, bool attn_in,
                core::DumpWriter& writer) {
  const auto T = static_cast<std::int64_t>(sample.tokens.size());
  if (T == 0) fail("sample '{}': no tokens to dump", sample.id);
  const int W = static_cast<int>(std::min<std::int64_t>(query_window, T));
  core::SampleMeta meta;
  meta.id = sample.id;
  meta.tokens = sample.tokens;
  meta.num_tokens = T;
  meta.context_end = sample.context_end;
  meta.query_window = W;
  meta.has_attn_in = attn_in;
  writer.begin_sample(meta);

  const auto ids = at::tensor(std::vector<std::int64_t>(sample.tokens.begin(), sample.tokens.end()), at::kLong);
  core::Progress progress(fmt::format("dump {} ({} tokens)", sample.id, T), model.config().num_layers);
  model.forward(ids, nullptr, [&](const LayerTap& tap) {
    const auto key = host_f32(tap.key);                          // [T, H_kv, D]
    const auto value = host_f32(tap.value);                      // [T, H_kv, D]
    const auto query = host_f32(tap.query.narrow(0, T - W, W));  // [W, H_q, D]
    const auto normed = attn_in ? host_f32(tap.attn_in) : at::Tensor();
    writer.write_layer(tap.layer, span_of(key), span_of(value), span_of(query),
                       attn_in ? span_of(normed) : std::span<const float>());
    progress.advance();
  });
  writer.end_sample();
  return W;
}

}  // namespace kvlab::harness
