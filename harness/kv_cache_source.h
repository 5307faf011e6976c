// The model's KV cache as compressors read it (compressors::CacheSource), for the compression
// hook: a layer is converted to host f32 when asked, so the context never sits on the host all
// at once (layer-local chains then hold one layer in all).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "compressors/cache_source.h"
#include "harness/compression_hook.h"

namespace kvlab::harness {

// Layer l's keys (pre-RoPE) or values as the cache holds them, [H_kv, T, D] (from `exact` when given).
const at::Tensor& tokens_of(const KvCache& cache, const ExactKv* exact, int l, compressors::Part part);
// The cache's shape as compressors see it (no queries or attn_in counted).
compressors::CacheShape shape_of(const KvCache& cache, const ModelConfig& config);
// A host f32 view of a FloatTensor's storage, its shape (valid while it lives).
at::Tensor host_view(const core::FloatTensor& t);
// Any tensor → host f32 FloatTensor, row-major, in one copy (device, dtype and layout at once).
core::FloatTensor to_float_tensor(const at::Tensor& t);
// A host view of compressors' keep cells [T, H_kv] (1 = kept) as KvCache::replace takes a keep
// mask, [H_kv, T] uint8 (valid while `cells` lives; replace() copies it).
at::Tensor keep_view(const std::vector<std::uint8_t>& cells, std::int64_t tokens, int kv_heads);

// Keys and values come from `exact` when given; queries and attn_in from the capture. With
// `scores_where_held`, eviction's window scores are computed by torch on the model's device (the
// resident route, window_scores.h), else from host layers as `kvlab compress` computes them on a
// dump. Fails when the capture holds no queries.
class KvCacheSource final : public compressors::CacheSource {
 public:
  KvCacheSource(const KvCache& cache, const ExactKv* exact, const ContextCapture& capture, const ModelConfig& config,
                bool scores_where_held = false);
  const compressors::CacheShape& shape() const override { return shape_; }
  core::FloatTensor layer(int l, compressors::Part part) const override;  // [T, H_kv, D]
  // Straight from the model's tensor into the strided rows (device, dtype and layout at once).
  void read_layer_into(int l, compressors::Part part, float* out, std::int64_t ld) const override;
  core::FloatTensor queries(int l) const override;
  core::FloatTensor attn_in(int l) const override;
  const std::vector<std::int64_t>& positions() const override { return positions_; }
  using compressors::CacheSource::rope;
  const core::Rope& rope(int l) const override { return ropes_.at(static_cast<std::size_t>(l)); }  // config.rope_of(l)
  int window(int l) const override { return windows_.at(static_cast<std::size_t>(l)); }           // config.window(l), 0: none
  std::string describe() const override { return "the model's KV cache"; }
  core::FloatTensor resident_window_attention_sums(int l, int rows) const override;

 private:
  const at::Tensor& cached(int l, compressors::Part part) const { return tokens_of(cache_, exact_, l, part); }

  const KvCache& cache_;
  const ExactKv* exact_;
  const ContextCapture& capture_;
  compressors::CacheShape shape_;
  std::vector<std::int64_t> positions_;
  std::vector<core::Rope> ropes_;  // [L]
  std::vector<int> windows_;       // [L]
  bool scores_where_held_;
};

}  // namespace kvlab::harness
