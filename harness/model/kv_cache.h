// The decoder's KV cache. Keys are stored pre-RoPE — the tensors the dump, the analyses and
// the compressors work on — and a rotated copy is kept beside them for attention, updated
// incrementally as tokens are appended and recomputed when a compressor replaces a layer.
// Per-head eviction is a keep mask rather than ragged tensors: evicted cells stay allocated but
// are masked out of attention, which is exact for fidelity scoring.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/rope.h"

namespace kvlab::harness {

// A selection made afresh at every single-token decode step (Quest, harness/paged_selection.h):
// for layer `layer`, the step's rotated queries q [H_q, D] and the layer's rotated keys
// [H_kv, S, D], the cells each query head attends, [H_q, S] bool on the keys' device, or an
// undefined tensor for every cell.
class QuerySelection {
 public:
  virtual ~QuerySelection() = default;
  virtual at::Tensor select(int layer, const at::Tensor& q, const at::Tensor& keys) = 0;
};

class KvCache {
 public:
  explicit KvCache(int num_layers);

  int num_layers() const { return static_cast<int>(layers_.size()); }
  std::int64_t length() const { return length_; }  // tokens stored (the same in every layer)
  // RoPE position of the next token: max stored position + 1 (0 when empty), so positions stay
  // right after a compressor drops or merges tokens.
  std::int64_t next_position() const { return next_position_; }
  // Capacity hint: buffers allocated or grown from now on hold at least `tokens` tokens, so a
  // prefill followed by decoding copies nothing (generate_greedy reserves context + question +
  // max_new_tokens). Without it, a full buffer grows by a quarter (not doubling: at 128k tokens
  // of Llama-3.1-8B the cache alone is 16 GiB).
  void reserve(std::int64_t tokens) { reserve_ = std::max(reserve_, tokens); }

  const at::Tensor& key(int layer) const;          // [H_kv, S, D] pre-RoPE, model dtype and device
  const at::Tensor& rotated_key(int layer) const;  // [H_kv, S, D] after RoPE: what attention uses
  const at::Tensor& value(int layer) const;        // [H_kv, S, D]
  // [S] int64, on the cache's device, ascending (appends only; replace() keeps them): attention
  // relies on the order to skip keys past a chunk's last query.
  const at::Tensor& positions() const { return positions_view_; }
  // [H_kv, S] bool: false cells are masked out of attention. Undefined = every cell attended.
  // [H_q, S] (a multiple of H_kv rows): one mask per query head, query head h reading KV head
  // h / (H_q/H_kv) — an eviction that selects per query head (compressors/query_head_cells.h).
  const at::Tensor& keep(int layer) const;

  // The per-query selection single-token steps attend through (null: none). Set by the
  // compression hook for a method that selects per decode query; clones share it.
  const std::shared_ptr<QuerySelection>& query_selection() const { return selection_; }
  void set_query_selection(std::shared_ptr<QuerySelection> selection) { selection_ = std::move(selection); }

  // A deep copy that decodes independently of this one: same tokens, positions, keep masks and
  // capacity (so appending the reserved tokens allocates nothing). How one prefill serves every
  // compressor of an evaluation.
  KvCache clone() const;

  // The compression hook's write path: a layer's new pre-RoPE keys and values, the shape they
  // have now ([H_kv, S, D]; converted to the cache's dtype and device), and optionally a keep mask
  // [H_kv, S] or [H_q, S] (see keep(); undefined: all kept). The rotated copy is rebuilt by the
  // model before the layer next attends. Shapes are checked; errors name the layer.
  void replace(int layer, const at::Tensor& key, const at::Tensor& value, const at::Tensor& keep = {});

  // Drops every token from index `length` on (0 ≤ length ≤ length()), as if they had never been
  // appended: the buffers keep their capacity. How a probe runs tokens after the cache without
  // keeping them (harness/live_model_probe.h; the KVzip authors' `kv.slice`).
  void truncate(std::int64_t length);

  // Used by the model during a forward call: appends S new tokens to one layer (key, rotated key
  // and value, each [S, H_kv, D]); then, after the last layer, their positions [S].
  void append(int layer, const at::Tensor& key, const at::Tensor& rotated_key, const at::Tensor& value);
  void append_positions(const at::Tensor& positions);
  // Whether replace() left a layer's rotated copy out of date, and the model's refreshed copy.
  bool rotation_stale(int layer) const { return layer_at(layer).stale; }
  void set_rotated(int layer, const at::Tensor& rotated_key);  // [H_kv, S, D]

 private:
  struct Layer {
    at::Tensor key, rotated, value;  // [H_kv, capacity, D] buffers
    at::Tensor key_view, rotated_view, value_view;  // their first `length` tokens
    at::Tensor keep;                 // [H_kv, length] or undefined
    std::int64_t length = 0;
    bool stale = false;              // rotated copy predates replace()
  };
  const Layer& layer_at(int l) const;
  Layer& layer_at(int l);
  std::vector<Layer> layers_;
  at::Tensor positions_, positions_view_;
  std::int64_t length_ = 0;
  std::int64_t next_position_ = 0;
  std::int64_t reserve_ = 0;
  std::shared_ptr<QuerySelection> selection_;
};

}  // namespace kvlab::harness
