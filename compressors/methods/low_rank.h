// svd (single-layer SVD) and xkv (cross-layer SVD), docs/methods/svd-xkv.md.
//
// A group of G contiguous layers is one matrix X_g = [X_l … X_{l+G−1}] ∈ R^{T×(G·H·D)} (columns
// layer-major, then head, then channel; keys pre-RoPE), K and V separately. Stored: the shared
// A = X_g·V_r [T, r] per group and part, and B_l [r, H·D] per layer (the layer's columns of
// V_rᵀ), so X̂_l = A·B_l. svd is the G = 1 case. Layers outside every group stay at fp16.
#pragma once

#include <cstdint>
#include <vector>

#include "compressors/compressor.h"
#include "compressors/methods/kivi.h"
#include "compressors/resident_cache.h"

namespace kvlab::compressors {

MethodDef svd_method();
MethodDef xkv_method();
std::unique_ptr<TransformStage> make_low_rank(const StageSpec& spec);  // "svd" or "xkv"
// Rank sweep sharing one decomposition per group (variants differ only in rk/rv).
std::vector<std::unique_ptr<Compressed>> compress_low_rank_sweep(const CompressContext& ctx,
                                                                 const std::vector<StageSpec>& variants);

// The layer groups a svd/xkv spec compresses for a cache of `layers` layers: ascending,
// contiguous layer lists, each layer in at most one. Fails naming the key (groups, start, end)
// when a layer is out of range.
std::vector<std::vector<int>> low_rank_groups(const StageSpec& spec, int layers);

// svd/xkv, alone or followed by KIVI, where the backend computes, on a ResidentCache (the
// harness's CUDA tensors, with the CUDA backend). Per group and part: X gathered there; V_r found
// there (the Gram and its top-r eigenpairs, Backend::resident_gram_top, or HMT with the host
// route's sketch, resident_randomized_top), only V_r coming to the host for its canonical signs;
// A = X·V_r; A and V_r rounded to fp16 as the chain stores them, then quantized as KIVI stores A
// and each B_l (ResidentCache::kivi_quantize); each layer's X̂_l = A·B_l written back into the
// cache. The same reconstruction as compress_chain's, without a host round trip of the cache.
// Layers or parts the spec leaves uncompressed keep the cache's own values without KIVI
// (compress_chain's fp16 store of them is not replayed), and become KIVI's rebuild of them with it
// (ResidentCache::kivi_uncompressed). Returns the bytes the chain would store. Fails unless
// resident_low_rank_applies.
std::int64_t compress_low_rank_resident(const ChainSpec& chain, ResidentCache& cache, linalg::Backend& backend);
// Whether the chain is one svd or xkv stage, alone or followed by one kivi stage, that
// compress_low_rank_resident runs as compress_chain would: the randomized solver, or the exact
// one on the Gram route (T ≥ every group's G·H·D columns; shorter caches take gesdd of X).
bool resident_low_rank_applies(const ChainSpec& chain, const CacheShape& shape);

// Byte accounting from shapes alone (no data), for planning and the authors' ratio.
struct LowRankAccounting {
  // Σ fp16 bytes stored: 2·(T·r + r·G·H·D) per group and compressed part, with the effective
  // rank r = min(rank, T, G·H·D), plus 2·T·H·D per uncompressed (layer, part).
  std::int64_t stored_bytes = 0;
  double stored_ratio = 0;   // dense_fp16_bytes(shape) / stored_bytes
  // docs/methods/svd-xkv.md §6 (scripts/calc_kv_comp_rate.py with --no-scale-rank: ranks are group ranks):
  // 2·L·H·T·D / (Σ_groups T·(r_k + r_v) + Σ_grouped layers H·D·(r_k + r_v) + T·H·D per
  // uncompressed (layer, part)), with the nominal ranks. Equals stored_ratio when G divides L
  // and the ranks fit (r ≤ min(T, G·H·D)).
  double authors_ratio = 0;
};
// With `kivi` (a kivi stage after svd/xkv) stored_bytes counts what KIVI packs instead: A and
// each B_l per token (A's rows are tokens), uncompressed keys per channel and values per token.
LowRankAccounting low_rank_accounting(const CacheShape& shape, const StageSpec& spec,
                                      const KiviParams* kivi = nullptr);

}  // namespace kvlab::compressors
