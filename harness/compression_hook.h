// A compressors/ chain applied at the model's prefill hook: the context's KV cache and its
// last-W queries become a compressors::CacheSource, the chain compresses it exactly as
// `kvlab compress` does on a dump, and each layer's reconstruction — pre-RoPE keys, values and
// the cells eviction kept — replaces the layer in the KvCache. Decoding then reads only what the
// compressed form gives back (rounded to the model's dtype), so end-task figures and the dump
// scores measure the same thing.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compressors/live_model.h"
#include "compressors/spec.h"
#include "core/safetensors.h"
#include "harness/model/llama_model.h"
#include "harness/paged_selection.h"
#include "linalg/backend.h"

namespace kvlab::harness {

// Collects what compressors need besides the cache: each layer's last-W pre-RoPE queries (the
// observation window of SnapKV/H2O and the attention scorer) and, when asked, the normalized
// attention input of every token (CommonKV). Host f32. The window rolls: observing decode steps
// too (GenerateOptions::decode_observer) keeps it the last W tokens the cache holds.
class ContextCapture {
 public:
  ContextCapture(int num_layers, int query_window, bool attn_in);
  LayerObserver observer();                   // pass as generate_greedy's prefill (and decode) observer
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
  std::string route;             // "resident" (on the cache's device) or "host" (CompressRoute)
  // A method that selects per decode query (quest): the selection the cache decodes through
  // (KvCache::query_selection), which counts what each step reads. Null otherwise.
  std::shared_ptr<PagedQuerySelection> paged;
  double ratio() const { return bytes > 0 ? static_cast<double>(dense_bytes) / static_cast<double>(bytes) : 0.0; }
  // Bytes a decode step reads: the paged selection's mean over the steps since this compression,
  // else every stored byte.
  double loaded_bytes_per_step() const { return paged ? paged->loaded_bytes_per_step() : static_cast<double>(bytes); }
};

// The exact K/V of every token a cache has held, for compressing again during decoding: the
// chain then always sees exact tokens, never its own earlier reconstruction, so a streaming
// method's state is a function of the exact prefix (KIVI's blocks quantize as they would have
// when they filled; eviction re-scores every token it has seen).
class ExactKv {
 public:
  // Copies the cache's tokens this copy does not hold yet — all of them the first time. Call it
  // right before compressing: tokens appended since the last compression are still exact.
  void catch_up(const KvCache& cache);
  std::int64_t length() const { return length_; }
  const at::Tensor& key(int layer) const { return keys_.at(layer); }      // [H_kv, S, D] pre-RoPE
  const at::Tensor& value(int layer) const { return values_.at(layer); }  // [H_kv, S, D]

 private:
  std::vector<at::Tensor> keys_, values_;
  std::int64_t length_ = 0;
};

// Where compress_cache runs a chain (`kvlab eval --compress-route auto|resident|host`). The
// resident routes work on the model's own tensors where they lie, and nothing T-sized crosses
// to the host:
//   svd or xkv, alone or followed by kivi, randomized or on the exact solver's Gram route
//     (compressors::resident_low_rank_applies), when the backend computes beside the cache (the
//     CUDA backend beside a CUDA model on device 0, the CPU one beside a CPU model):
//     compress_low_rank_resident;
//   one eviction stage, alone or followed by kivi: torch scores the window (window_scores.h),
//     the keep masks are written, and KIVI quantizes each head's kept rows (kivi_on_device.h);
//   one eviction stage then svd/xkv (and kivi): the low-rank stage on the kept rows, where the
//     backend computes beside the cache and the kept rows fit its Gram route;
//   KIVI on the dense cache ("kivi", "full+kivi"): torch quantizes each layer (kivi_on_device.h);
//   MiniCache alone: torch merges each layer pair (minicache_on_device.h);
//   CommonKV, alone or followed by kivi: torch forms the latents, merges and rebuilds
//     (commonkv_on_device.h).
// Everything else (other chains) goes the host way.
enum class CompressRoute {
  // The resident routes where they are faster: all of them on a CUDA model; on a CPU model
  // svd/xkv's and eviction's (with KIVI or a low-rank stage after it), not KIVI's alone,
  // MiniCache's or CommonKV's, whose host loops and BLAS beat torch's passes there
  // (bench/README.md).
  automatic,
  // Every resident route that applies, on any device (to check and time them against host).
  resident,
  // Each layer converted to host f32 for compressors::compress_chain, the rebuild copied back.
  host,
};

// Compresses every token of `cache` with `chain` and writes the reconstruction back. The tokens
// compressed are the cache's own, or `exact`'s when given (same length: catch_up first). Both
// routes rebuild the compressed layers alike (to f32 rounding); layers a spec leaves
// uncompressed, and the cells eviction keeps, keep the model's own 16-bit values on the resident
// route, and go through the chain's fp16 store (keys post-RoPE) on the host one. `live`: the model
// over this cache, for chains whose methods run it (kvzip); null otherwise.
CompressionResult compress_cache(KvCache& cache, const ContextCapture& capture, const ModelConfig& config,
                                 const compressors::ChainSpec& chain, const core::Checkpoint* checkpoint,
                                 linalg::Backend& backend, const ExactKv* exact = nullptr,
                                 CompressRoute route = CompressRoute::automatic,
                                 const compressors::LiveModel* live = nullptr);
// "auto" → automatic, "resident", "host"; fails naming the choices on anything else.
CompressRoute parse_compress_route(std::string_view name);

}  // namespace kvlab::harness
