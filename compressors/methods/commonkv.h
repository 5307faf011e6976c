// commonkv: cross-layer weight sharing and cosine-based latent merging (docs/methods/commonkv.md).
//
// Per group of g adjacent layers (layers 0..g−1, g..2g−1, …; the L mod g leftover layers are
// stored dense by default, or with leftover=svd form one shortened group that is never merged, as
// the authors' run_longbench.py and merge_all_kv treat them), the stacked projection weights W = [W_k^{l1};…;W_k^{lg};W_v^{l1};…;W_v^{lg}]
// (2·g·H_kv·D × d_model, from the checkpoint) get a thin SVD W = U·S·Vᵀ; the shared projection
// is P = diag(√S_r)·V_rᵀ [r, d_model] and the per-layer reconstructions D_K,l, D_V,l [H_kv·D, r]
// are the row blocks of U_r·diag(√S_r). A token's latent in layer l is c = P·h (h: the
// normalised attention input attn_in, [d_model]); keys (pre-RoPE) are c·D_K,lᵀ (+ k bias) and
// values c·D_V,lᵀ (+ v bias). K and V share the latent, so it is stored once (the authors' code
// stores it twice).
//
// Merging: s_{g,t} = cos(c^{first}_t, c^{last}_t); over all (group, token) pairs the int(keep·N)
// least similar stay unmerged, as do the first `sinks` and last `recent` tokens; every other
// pair stores one merged latent Σ_i w_i·c^{l_i}_t for the whole group.
//
// Stored tensors (fp16 bytes; values f32): "layer{l}/latent" [U_g, r] (unmerged tokens, in
// order), "group{g}/merged_latent" [M_g, r], "group{g}/merged_index" int32 [M_g], the factors
// "group{g}/P" [r, d_model], "layer{l}/D_key" and "layer{l}/D_value" [H_kv·D, r], biases
// "layer{l}/key_bias" / "layer{l}/value_bias" [1, H_kv·D] when the checkpoint has them, and for
// leftover layers "layer{l}/key" (post-RoPE) / "layer{l}/value" [T, H_kv·D] (leftover=dense) or
// the shortened group's tensors as above, with U = T and M = 0 (leftover=svd). The stage is
// written once for every device: commonkv_kernel.h.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "compressors/compressor.h"

namespace kvlab::compressors {

MethodDef commonkv_method();
std::unique_ptr<TransformStage> make_commonkv(const StageSpec& spec);

// One group's shared factors from the checkpoint's W_k/W_v (the thin SVD of the stacked weights
// above), at f32 as computed (the chain stores them at fp16). Rank: `rank`, 0 = N = H_kv·D,
// capped at min(2·g·N, d_model). Fails naming a missing or misshapen tensor.
struct CommonKvFactors {
  std::int64_t rank = 0;                                 // r
  std::int64_t d_model = 0;
  std::vector<float> p;                                  // P [r, d_model] row-major
  std::vector<std::vector<float>> d_key, d_value;        // per layer of the group: [N, r] row-major
  std::vector<std::vector<float>> key_bias, value_bias;  // per layer: [N], empty without biases
};
CommonKvFactors commonkv_factors(const core::Checkpoint& ckpt, const std::vector<int>& layers, std::int64_t width,
                                 std::int64_t rank, linalg::Backend& backend);
}  // namespace kvlab::compressors
