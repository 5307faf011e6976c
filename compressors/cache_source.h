// The uncompressed KV cache of one sample, as compressors and the scorer see it: read layer by
// layer on demand, so a compressor holds one layer group, never the whole long-context cache.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/kv_dump.h"
#include "core/rope.h"
#include "core/tensor.h"

namespace kvlab::compressors {

using core::FloatTensor;

// Keys or values.
enum class Part { key, value };
std::string_view to_string(Part part);  // "key" | "value"

struct CacheShape {
  int layers = 0;        // L
  int kv_heads = 0;      // H_kv
  int q_heads = 0;       // H_q, a multiple of H_kv (query head h reads KV head h / (H_q/H_kv))
  int head_dim = 0;      // D
  std::int64_t tokens = 0;  // T
  int query_window = 0;  // W: queries exist for tokens [T−W, T)
  int d_model = 0;       // width of attn_in rows (0: none)
  std::int64_t width() const { return std::int64_t{kv_heads} * head_dim; }  // N = H_kv·D
  int group_size() const { return q_heads / kv_heads; }                        // GQA n_rep
};

class CacheSource {
 public:
  virtual ~CacheSource() = default;
  virtual const CacheShape& shape() const = 0;
  // One layer's keys (pre-RoPE) or values, [T, H_kv, D] row-major (= X ∈ R^{T×N}). Called from
  // several threads at once (svd/xkv read a group's layers in parallel): keep it thread-safe.
  virtual FloatTensor layer(int layer, Part part) const = 0;
  // The same values written into T rows of `out` with row stride ld ≥ N (a column block of a
  // wider matrix, such as an xkv group's X); the elements between the rows are left alone.
  // The default goes through layer(); sources that can skip that whole-layer copy override it
  // (a dump streams token blocks, the harness copies from the model's tensor). Thread-safe too.
  virtual void read_layer_into(int layer, Part part, float* out, std::int64_t ld) const;
  // The pre-RoPE queries of the last W tokens, [W, H_q, D].
  virtual FloatTensor queries(int layer) const = 0;
  // The normalized attention input [T, d_model] (weight-based methods); fails when absent.
  virtual FloatTensor attn_in(int layer) const;
  // RoPE positions of the T tokens.
  virtual const std::vector<std::int64_t>& positions() const = 0;
  // The RoPE layer `layer`'s keys and queries rotate with (identity for synthetic dumps that have
  // none). Gemma-3's sliding layers rotate with another base than its full-attention layers
  // (docs/models.md §9.5), so every rotation asks for its layer's.
  virtual const core::Rope& rope(int layer) const = 0;
  // The RoPE every layer shares; fails, naming two layers that differ, when they do not share one
  // (then only rope(layer) is meaningful). For callers that are not about one layer.
  const core::Rope& rope() const;
  // Layer `layer`'s sliding window w: its query at position i saw only the keys at positions j with
  // i − w < j ≤ i (docs/dump-format.md §2, transformers' sliding-window mask); 0 = every earlier key.
  virtual int window(int layer) const {
    (void)layer;
    return 0;
  }
  // For error messages: "x.h5 sample s0".
  virtual std::string describe() const = 0;
  // The model's index of layer `layer` of this source: itself, except in a one-layer slice of a
  // cache (compressors/chain.cpp compresses layer-local chains so), where it is the base's index.
  // For methods whose rule depends on the layer's depth (quest's skip_layers).
  virtual int model_layer(int layer) const { return layer; }
  // Eviction's window scores (eviction.h window_attention_sums: [H_q, T], rows already checked
  // against W) computed where the layer lies, for a source that can do so without reading the
  // layer to the host (the harness on the model's tensors). Empty by default: the host computes
  // them from layer().
  virtual FloatTensor resident_window_attention_sums(int /*layer*/, int /*rows*/) const { return {}; }

 protected:
  // Fails unless a read_layer_into row stride holds a layer's row (ld ≥ H·D).
  void check_row_stride(std::int64_t ld) const;
};

// A cache held in memory (tests, the harness). Keys are pre-RoPE.
class InMemoryCache final : public CacheSource {
 public:
  // keys/values: L tensors [T, H_kv, D]; queries: L tensors [W, H_q, D] (may be [0, H_q, D]);
  // positions empty → 0..T−1.
  InMemoryCache(CacheShape shape, std::vector<FloatTensor> keys, std::vector<FloatTensor> values,
                std::vector<FloatTensor> queries, std::vector<std::int64_t> positions = {},
                core::Rope rope = core::Rope::identity(), std::vector<FloatTensor> attn_in = {});
  const CacheShape& shape() const override { return shape_; }
  FloatTensor layer(int layer, Part part) const override;
  void read_layer_into(int layer, Part part, float* out, std::int64_t ld) const override;
  FloatTensor queries(int layer) const override;
  FloatTensor attn_in(int layer) const override;
  const std::vector<std::int64_t>& positions() const override { return positions_; }
  using CacheSource::rope;
  const core::Rope& rope(int layer) const override;
  int window(int layer) const override;
  std::string describe() const override { return "in-memory cache"; }
  // One RoPE per layer ([L]) in place of the constructor's shared one (a Gemma-3-like cache).
  InMemoryCache& with_layer_ropes(std::vector<core::Rope> ropes);
  // One sliding window per layer ([L], 0 = full attention), as DumpInfo::layer_windows.
  InMemoryCache& with_windows(std::vector<int> windows);

 private:
  CacheShape shape_;
  std::vector<FloatTensor> keys_, values_, queries_, attn_in_;
  std::vector<std::int64_t> positions_;
  core::Rope rope_;
  std::vector<core::Rope> layer_ropes_;  // [L] or empty: rope_ on every layer
  std::vector<int> windows_;             // [L] or empty: no window
};

// One sample of a KV dump (core/kv_dump.h); each layer's RoPE from the dump's layer_rope_config when
// present, else model_config's; windows from layer_windows.
class DumpCache final : public CacheSource {
 public:
  DumpCache(const core::DumpReader& dump, const std::string& sample_id);
  const CacheShape& shape() const override { return shape_; }
  FloatTensor layer(int layer, Part part) const override;
  void read_layer_into(int layer, Part part, float* out, std::int64_t ld) const override;  // by token blocks
  FloatTensor queries(int layer) const override;
  FloatTensor attn_in(int layer) const override;
  const std::vector<std::int64_t>& positions() const override { return meta_.positions; }
  using CacheSource::rope;
  const core::Rope& rope(int layer) const override;
  int window(int layer) const override;
  std::string describe() const override;

 private:
  const core::DumpReader& dump_;
  core::SampleMeta meta_;
  CacheShape shape_;
  std::vector<core::Rope> ropes_;  // [L]
  std::vector<int> windows_;       // [L] or empty
};

// Every layer's RoPE, [L] (copies, a few hundred bytes each): for stored forms that rotate or
// un-rotate keys when they rebuild a layer later.
std::vector<core::Rope> layer_ropes(const CacheSource& cache);
// The RoPE in words: the shared one's description, or each distinct one with its layers
// ("default θ=10000 (layers 0-4, 6-10); linear θ=1000000 factor=8 (layers 5, 11)").
std::string describe_ropes(const CacheSource& cache);

}  // namespace kvlab::compressors
