// svd (single-layer SVD) and xkv (cross-layer SVD), docs/methods/svd-xkv.md.
//
// A group of G contiguous layers is one matrix X_g = [X_l … X_{l+G−1}] ∈ R^{T×(G·H·D)} (columns
// layer-major, then head, then channel; keys pre-RoPE), K and V separately. Stored: the shared
// A = X_g·V_r [T, r] per group and part, and B_l [r, H·D] per layer (the layer's columns of
// V_rᵀ), so X̂_l = A·B_l. svd is the G = 1 case. Layers outside every group stay at fp16.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compressors/compressor.h"

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

// The names of the stored factors, the same on every device (the resident route's too,
// compressors/low_rank_resident.h): group g's shared A [T, r] and layer l's B_l [r, H·D] of a part.
std::string low_rank_a_name(std::size_t group, Part part);
std::string low_rank_b_name(int layer, Part part);

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
LowRankAccounting low_rank_accounting(const CacheShape& shape, const StageSpec& spec);

}  // namespace kvlab::compressors
