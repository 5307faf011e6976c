// svd/xkv (and KIVI after them) on a ResidentCache (resident_cache.h): the device path of the
// low-rank methods (compressors/methods/low_rank.h), with every T-sized tensor left where the
// backend computes.
#pragma once

#include <cstdint>

#include "compressors/resident_cache.h"
#include "compressors/spec.h"
#include "linalg/backend.h"

namespace kvlab::compressors {

// svd/xkv, alone or followed by KIVI, where the backend computes, on a ResidentCache (the
// harness's CUDA tensors, with the CUDA backend). Per group and part: X gathered there; V_r found
// there (the Gram and its top-r eigenpairs, Backend::resident_gram_top, or HMT with the host
// route's sketch, resident_randomized_top), only V_r coming to the host for its canonical signs;
// A = X·V_r; A and V_r rounded to fp16 as the chain stores them, then quantized as KIVI stores A
// and each B_l (ResidentCache::kivi_quantize); each layer's X̂_l = A·B_l written back into the
// cache. The same reconstruction as compress_chain's, without a host round trip of the cache.
// Layers or parts the spec leaves uncompressed keep the cache's own values without KIVI
// (compress_chain's fp16 store of them is not replayed), and become KIVI's rebuild of them with it
// (ResidentCache::store_uncompressed). Returns the bytes the chain would store. Fails unless
// resident_low_rank_applies.
std::int64_t compress_low_rank_resident(const ChainSpec& chain, ResidentCache& cache, linalg::Backend& backend);
// Whether the chain is one svd or xkv stage, alone or followed by one kivi stage, that
// compress_low_rank_resident runs as compress_chain would: the randomized solver, or the exact
// one on the Gram route (T ≥ every group's G·H·D columns; shorter caches take the host route's token Gram).
bool resident_low_rank_applies(const ChainSpec& chain, const CacheShape& shape);

}  // namespace kvlab::compressors
