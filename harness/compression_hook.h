// A compressors/ chain applied at the model's prefill hook: the context's KV cache and its
// last-W queries become a compressors::CacheSource, the chain compresses it exactly as
// `kvlab compress` does on a dump, and each layer's reconstruction — pre-RoPE keys, values and
// the cells eviction kept — replaces the layer in the KvCache. Decoding then reads only what the
// compressed form gives back (rounded to the model's dtype), so end-task figures and the dump
// scores measure the same thing.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "compressors/spec.h"
#include "core/safetensors.h"
#include "harness/model/llama_model.h"
#include "linalg/backend.h"

namespace kvlab::harness {

// Collects, during the context prefill, what compressors need besides the cache: each layer's
// last-W pre-RoPE queries (the observation window of SnapKV/H2O and the attention scorer) and,
// when asked, the normalized attention input (CommonKV). Host f32.
class ContextCapture {
 public:
  ContextCapture(int num_layers, int query_window, bool attn_in);
  LayerObserver observer();                   // pass as generate_greedy's prefill_observer
  const at::Tensor& queries(int layer) const;  // [W, H_q, D]
  const at::Tensor& attn_in(int layer) const;  // [T, d_model] or undefined
  int query_window() const { return window_; }

 private:
  int window_;
  bool attn_in_;
  std::vector<at::Tensor> queries_, attn_in_rows_;
};

struct CompressionResult {
  std::int64_t bytes = 0;        // what the chain stores for the context
  std::int64_t dense_bytes = 0;  // the context's cache at 16 bits
  double ratio() const { return bytes > 0 ? static_cast<double>(dense_bytes) / static_cast<double>(bytes) : 0.0; }
};

// Compresses the first `context_tokens` tokens of `cache` (all of it: the hook runs right after
// the context prefill) with `chain` and writes the reconstruction back.
CompressionResult compress_cache(KvCache& cache, const ContextCapture& capture, const ModelConfig& config,
                                 const compressors::ChainSpec& chain, const core::Checkpoint* checkpoint,
                                 linalg::Backend& backend);

}  // namespace kvlab::harness
