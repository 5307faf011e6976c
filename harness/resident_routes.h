// The compression hook's resident routes (compression_hook.h CompressRoute): chains run on the
// model's own tensors where they lie, writing the result into the cache, with nothing T-sized
// crossing to the host.
#pragma once

#include <optional>

#include "compressors/spec.h"
#include "core/safetensors.h"
#include "harness/compression_hook.h"
#include "linalg/backend.h"

namespace kvlab::harness {

enum class ResidentRoute {
  none,       // the chain goes the host way
  low_rank,   // svd/xkv, alone or followed by kivi: compressors::compress_low_rank_resident
  kivi,       // kivi on the dense cache (kivi_on_device.h)
  minicache,  // minicache alone (minicache_on_device.h)
  commonkv,   // commonkv, alone or followed by kivi (commonkv_on_device.h)
  eviction,   // one eviction method, alone or followed by kivi (window_scores.h, kivi_on_device.h)
  eviction_low_rank,  // one eviction method, then svd/xkv (and kivi) on the kept rows
};

// The route compress_cache takes for `chain` on `cache` under `route` (see CompressRoute).
ResidentRoute resident_route(const KvCache& cache, const ModelConfig& config, const compressors::ChainSpec& chain,
                             const linalg::Backend& backend, CompressRoute route);

// Runs `route` (not none) on the cache's own tokens and writes the result into it; on a CUDA
// cache it returns once the device has finished. The capture gives eviction its queries and
// commonkv its attention inputs. Empty, with the cache untouched, when the route turns out not to
// apply (eviction_low_rank: too few kept rows for the exact solver's Gram route).
std::optional<CompressionResult> compress_in_place(ResidentRoute route, KvCache& cache, const ContextCapture& capture,
                                                   const ModelConfig& config, const compressors::ChainSpec& chain,
                                                   const core::Checkpoint* checkpoint, linalg::Backend& backend);

}  // namespace kvlab::harness
