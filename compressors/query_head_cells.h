// The cells an eviction keeps per *query* head, stored as the SnapKV repository's cache holds them
// (FasterDecoding/SnapKV snapkv/monkeypatch/llama_hijack_4_37.py: "[SnapKV] move to ahead" runs
// repeat_kv before SnapKVCluster.update_kv, so each of the H_q query heads keeps its own top-k
// copy of its KV head's keys and values; KVCache-Factory's --kv_cache_granularity query_head, its
// default). snapkv and pyramidkv with granularity=query_head (docs/methods/eviction.md §3).
#pragma once

#include <memory>

#include "compressors/compressor.h"

namespace kvlab::compressors {

// Per layer and query head h, the kept keys (post-RoPE, as the model's cache holds them) and
// values of KV head h / (H_q/H_kv) as fp16 [n_h, D] tensors ("layer3/qhead5/key", ".../value",
// no quantization layout: no quantizer follows such a stage) and their int32 token indices
// [n_h] (".../index"): n_rep = H_q/H_kv times the cells of a per-KV-head selection of the same
// budget. `selections` holds one [T, H_q] mask per layer of `cache` (1 = query head keeps the
// token). Reconstruction gives LayerKV::kept the union over each KV head's query heads and
// LayerKV::query_kept [W, H_q, T] each query head's own tokens (the same for every window query),
// so the scorer lets a query head attend only what it kept (compressors/score.h).
std::unique_ptr<Compressed> query_head_representation(const CacheSource& cache, const KeepMasks& selections);

}  // namespace kvlab::compressors
