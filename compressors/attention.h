// Attention of the dumped query window over one layer, one KV head at a time: the core of the
// scorer's attention metrics and of the eviction methods' scores. Queries and keys are rotated
// at their true positions (the layer's RoPE); a query at position p sees the keys at positions j
// with p − w < j ≤ p that the cache still holds, w the layer's sliding window (0: every j ≤ p;
// docs/dump-format.md §2). Softmax in double.
#pragma once

#include <cstdint>
#include <vector>

#include "compressors/cache_source.h"
#include "linalg/backend.h"

namespace kvlab::compressors {

class WindowAttention {
 public:
  // The last `rows` (1 ≤ rows ≤ W) window queries of `layer`, rotated with its RoPE; its window.
  WindowAttention(const CacheSource& cache, int layer, std::int64_t rows);
  // The same for another layer, of this or another cache (a layer slice), keeping the scratch
  // buffers, which are MiBs at long contexts.
  void load(const CacheSource& cache, int layer, std::int64_t rows);

  // Attention of KV head g's query heads over `key_rot` [T, H_kv, D] (already rotated, e.g. by
  // rotate_keys) with the cells of `kept` [T, H_kv] (empty: all) held. Afterwards probs() and
  // log_probs() are [M, T] with row m = w·n_rep + r for window row w and query head g·n_rep + r,
  // and, when `value` [T, H_kv, D] is given, output() is [M, D]. `query_kept` (optional,
  // [rows, H_q, T], LayerKV::query_kept) further restricts each row to the tokens its own query
  // selected; null costs the shared-mask path nothing but one test per head.
  void head(int g, const FloatTensor& key_rot, const std::vector<std::uint8_t>& kept, linalg::Backend& backend,
            const FloatTensor* value = nullptr, const std::uint8_t* query_kept = nullptr);

  std::int64_t rows() const { return rows_; }
  std::int64_t row_count() const { return rows_ * shape_.group_size(); }  // M
  const std::vector<float>& probs() const { return probs_; }       // 0 where not visible; a row of a query
  const std::vector<double>& log_probs() const { return logp_; }   // that sees nothing is all 0 / −inf
  const std::vector<float>& output() const { return out_; }

 private:
  const CacheSource* cache_ = nullptr;
  CacheShape shape_;
  std::int64_t rows_;
  FloatTensor queries_;                 // [rows, H_q, D] rotated
  std::vector<std::int64_t> query_pos_;  // [rows]
  int window_ = 0;                       // the layer's sliding window (0: none)
  std::vector<float> k_, v_, q_, probs_, out_;
  std::vector<double> logp_, shifted_exp_;
};

// Layer `layer`'s keys [T, H_kv, D] rotated with its RoPE at the cache's positions (a copy).
FloatTensor rotate_keys(const CacheSource& cache, int layer, FloatTensor key);

// Whether a query at position `query` sees the key at position `key` through a sliding window of
// `window` tokens (0: none): key ≤ query and query − window < key (transformers' sliding-window
// mask, docs/dump-format.md §2).
inline bool sees(std::int64_t query, std::int64_t key, int window) {
  return key <= query && (window == 0 || query - key < window);
}

}  // namespace kvlab::compressors
