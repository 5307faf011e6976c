#include "harness/kv_cache_source.h"

#include "core/error.h"
#include "core/profile.h"
#include "harness/window_scores.h"

namespace kvlab::harness {
core::FloatTensor to_float_tensor(const at::Tensor& t) {
  core::FloatTensor out(core::Shape(t.sizes().begin(), t.sizes().end()));
  host_view(out).copy_(t);
  return out;
}

const at::Tensor& tokens_of(const KvCache& cache, const ExactKv* exact, int l, compressors::Part part) {
  const bool key = part == compressors::Part::key;
  return exact ? (key ? exact->key(l) : exact->value(l)) : (key ? cache.key(l) : cache.value(l));
}

compressors::CacheShape shape_of(const KvCache& cache, const ModelConfig& config) {
  compressors::CacheShape shape;
  shape.layers = config.num_layers;
  shape.kv_heads = config.num_kv_heads;
  shape.q_heads = config.num_heads;
  shape.head_dim = config.head_dim;
  shape.tokens = cache.length();
  return shape;
}

at::Tensor host_view(const core::FloatTensor& t) {
  return at::from_blob(const_cast<float*>(t.data.data()), std::vector<std::int64_t>(t.shape.begin(), t.shape.end()),
                       at::kFloat);
}

at::Tensor keep_view(const std::vector<std::uint8_t>& cells, std::int64_t tokens, int kv_heads) {
  return at::from_blob(const_cast<std::uint8_t*>(cells.data()), {tokens, kv_heads}, at::kByte).t();
}

KvCacheSource::KvCacheSource(const KvCache& cache, const ExactKv* exact, const ContextCapture& capture,
                             const ModelConfig& config, bool scores_where_held)
    : cache_(cache), exact_(exact), capture_(capture), shape_(shape_of(cache, config)),
      scores_where_held_(scores_where_held) {
  for (int l = 0; l < config.num_layers; ++l) {
    ropes_.push_back(config.rope_of(l));
    windows_.push_back(config.window(l).value_or(0));
  }
  for (int l = 0; l < config.num_layers; ++l)
    if (!capture.queries(l).defined()) fail("compress: layer {} has no captured queries (run the prefill observer)", l);
  shape_.query_window = static_cast<int>(capture.queries(0).size(0));
  shape_.d_model = capture.attn_in(0).defined() ? config.hidden_size : 0;
  const auto p = cache.positions().to(at::kCPU).contiguous();
  positions_.assign(p.data_ptr<std::int64_t>(), p.data_ptr<std::int64_t>() + p.numel());
}

core::FloatTensor KvCacheSource::layer(int l, compressors::Part part) const {
  const core::ProfileScope scope("compress hook: layer to host f32");
  return to_float_tensor(cached(l, part).transpose(0, 1));
}

void KvCacheSource::read_layer_into(int l, compressors::Part part, float* out, std::int64_t ld) const {
  const core::ProfileScope scope("compress hook: layer to host f32");
  check_row_stride(ld);
  at::from_blob(out, {shape_.tokens, shape_.kv_heads, shape_.head_dim}, {ld, shape_.head_dim, 1}, at::kFloat)
      .copy_(cached(l, part).transpose(0, 1));
}

core::FloatTensor KvCacheSource::queries(int l) const { return to_float_tensor(capture_.queries(l)); }

core::FloatTensor KvCacheSource::attn_in(int l) const {
  if (!capture_.attn_in(l).defined()) return CacheSource::attn_in(l);  // the "not captured" error
  return to_float_tensor(capture_.attn_in(l));
}

core::FloatTensor KvCacheSource::resident_window_attention_sums(int l, int rows) const {
  if (!scores_where_held_) return {};
  const core::ProfileScope scope("compress hook: window scores on the device");
  return window_attention_sums_where_held(cached(l, compressors::Part::key), capture_.queries(l), cache_.positions(),
                                          rope(l), window(l), rows);
}

}  // namespace kvlab::harness
