// Scoring a compressed cache against the original (docs/design.md §5, "Scores"):
//   key/value error   ‖X − X̂‖_F / ‖X‖_F per layer, over the cells the compressed cache holds
//                     (so eviction is judged on what it kept; what it dropped shows in attention);
//   attention output  ‖O − Ô‖_F / ‖O‖_F over the dumped query window, all query heads, where
//                     O = softmax(q·Kᵀ/√D, causal; on a sliding layer also windowed, docs/dump-format.md
//                     §8.1)·V with the layer's RoPE applied at the true positions and Ô
//                     the same over the compressed cache (evicted cells excluded);
//   attention KL      mean over window queries and query heads of KL(p̂ ‖ p) (nats), p̂ the
//                     compressed attention, p the exact one: finite for eviction, where it equals
//                     −log(attention mass kept) when the kept keys are exact;
//   bytes             Σ stored bytes, and the ratio against the 16-bit dense cache;
//   loaded bytes      what one decode step reads (LayerKV::loaded_bytes, mean over the window's
//                     queries, summed over layers): the stored bytes unless a method selects per
//                     query (quest), whose window queries each attend only their own selection
//                     (LayerKV::query_kept) in the attention error and KL.
// Overall errors pool the squared errors of all layers (a Frobenius norm over the whole cache).
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "compressors/cache_source.h"
#include "compressors/compressed.h"
#include "linalg/backend.h"

namespace kvlab::compressors {

struct LayerScore {
  double key_error = 0, value_error = 0;  // relative Frobenius, kept cells
  double attn_output_error = 0;           // relative Frobenius over the window
  double attn_kl = 0;                     // mean KL(p̂ ‖ p), nats
  double kept_fraction = 1;               // cells held / T·H_kv
  // Sums the overall figures pool.
  double key_err2 = 0, key_norm2 = 0, value_err2 = 0, value_norm2 = 0, out_err2 = 0, out_norm2 = 0;
  double kl_sum = 0;            // Σ KL over window queries × query heads
  std::int64_t kl_count = 0;    // their number (0 without a query window)
  std::int64_t held_cells = 0;  // (token, KV head) cells held
  double loaded_bytes = std::numeric_limits<double>::quiet_NaN();  // per decode step; NaN: all stored
};

struct Score {
  std::vector<LayerScore> layers;
  double key_error = 0, value_error = 0, attn_output_error = 0, attn_kl = 0, kept_fraction = 1;
  std::int64_t bytes = 0, dense_bytes = 0;
  double ratio = 0;  // dense_bytes / bytes
  double loaded_bytes = 0;  // bytes read per decode step: Σ layers' loaded_bytes, or `bytes` when any layer reads all
};

// Scores `compressed` against `cache`, layer by layer (one original layer in memory at a time).
// `on_layer(done, total)` reports progress.
Score score(const CacheSource& cache, Compressed& compressed, linalg::Backend& backend,
            const std::function<void(int, int)>& on_layer = {});

// Scores one layer at a time, keeping its scratch (a layer's keys, values and attention
// probabilities, MiBs each) from layer to layer: fresh ones cost a third of the scoring time in
// page faults (docs/performance.md §10). The attention's KV heads run side by side on the
// backend's threads (each BLAS call single-threaded meanwhile: one threading layer); every sum is
// taken in head order, so the scores do not depend on the thread count.
class LayerScorer {
 public:
  explicit LayerScorer(linalg::Backend& backend);
  ~LayerScorer();
  // Layer `layer` of `cache` against `rebuilt`, its compressed cache's reconstruction (taken:
  // its keys are rotated in place).
  LayerScore score(const CacheSource& cache, int layer, LayerKV rebuilt);

 private:
  struct Worker;
  linalg::Backend& backend_;
  FloatTensor key_, value_, key_rot_;
  std::vector<std::unique_ptr<Worker>> workers_;
};

// The overall figures of a cache of `shape` from its layers' scores and the bytes stored.
Score summarize(const CacheShape& shape, std::vector<LayerScore> layers, std::int64_t bytes);


// The attention of the window queries of one layer over keys/values [T, H_kv, D] (pre-RoPE),
// with cells not held excluded: out [W, H_q, D] and, if `log_probs` is non-null, log p
// [W, H_q, T] (−inf where masked or evicted). Exposed for tests and eviction scoring.
void window_attention(const CacheSource& cache, int layer, const FloatTensor& key, const FloatTensor& value,
                      const std::vector<std::uint8_t>& kept, std::vector<double>& out, std::vector<double>* log_probs);

nlohmann::json to_json(const Score& score);

}  // namespace kvlab::compressors
