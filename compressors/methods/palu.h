// palu: low-rank projection of the key/value projection weights, latents cached (docs/methods/palu.md).
//
// Palu (Chang et al., arXiv 2407.21118; shadowpa0327/Palu) splits each layer's k_proj and v_proj
// weight W [N, d_model] (N = H_kv·D) into the row blocks of `group` KV heads (G-LRD: group-wise
// low-rank decomposition), W_j [g·D, d_model], and takes the thin SVD W_j = U·S·Vᵀ per block:
// the down projection R_j = √S_r·V_rᵀ [r, d_model] forms a token's latent c = R_j·h from its
// normalised attention input h (attn_in), the up projection L_j = U_r·√S_r [g·D, r] rebuilds the
// block's keys (pre-RoPE, as Palu rebuilds before RoPE) or values as c·L_jᵀ (+ the bias). The
// cache holds the latents only.
//
// Rank per block (alloc=uniform, palu/rank_search.py): `rank` when > 0, else
// max(1, round(g·D·ratio / block))·block (Python's round: half to even), capped at
// min(g·D, d_model).
//
// Latent quantization (bits < 16, the authors' Quantizer in palu/model/modules/quant.py): per
// token, groups of `qgroup` latent channels (0: the block's whole latent row), asymmetric or
// symmetric round-to-nearest; with hadamard=on the latents are rotated by the orthonormal
// Sylvester Hadamard matrix H_r first, fused into the factors (R_j ← H·R_j, L_j ← L_j·H) as
// fused_hadamard_matrix in palu/model/modules/svd_linear.py does, so c·H is what is quantized.
//
// Stored tensors: "layer{l}/{key|value}/group{j}/latent" [T, r] (fp16, per_token token rows, so a
// chained kivi may quantize it; with bits < 16 the packed codes below, quantized once), the up
// projections "layer{l}/{key|value}/group{j}/up" [g·D, r] fp16, and "layer{l}/{key|value}_bias"
// [1, N] fp16 when the checkpoint has k/v biases. R_j is the model's weight (it replaces k_proj /
// v_proj), not read back by the cache, so it is not stored.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "compressors/compressor.h"

namespace kvlab::compressors {

MethodDef palu_method();
std::unique_ptr<TransformStage> make_palu(const StageSpec& spec);

// The authors' uniform rank of one block of `group_dims` = g·D rows at `ratio`, rounded to a
// multiple of `block` (rank_search.py, search_method uniform, then rounding_search_result):
// max(1, round_half_even(group_dims·ratio / block))·block. Not capped.
std::int64_t palu_uniform_rank(std::int64_t group_dims, double ratio, std::int64_t block);

// The orthonormal Hadamard matrix of order n (a power of two), Sylvester's ordering scaled by
// 1/√n: what fast_hadamard_transform.hadamard_transform(x, 1/√n) applies to each row. Fails for
// any other n, naming it.
Eigen::MatrixXf palu_hadamard(std::int64_t n);

// The latent quantizer's knobs.
struct PaluQuant {
  int bits = 16;            // b ∈ {2, 3, 4, 8}; 16 = no quantization
  std::int64_t group = 0;   // latent channels per quantization group; 0 = the whole row
  bool symmetric = false;   // sym: codes in [−2^{b−1}, 2^{b−1} − 1], scale only
};

// Bytes of the packed form of an [n, c] latent: ⌈n·c·b/8⌉ bytes of codes, then per group (row i,
// group k, row-major) its fp16 scale and, asymmetric, its fp16 zero point.
std::int64_t palu_quant_bytes(std::int64_t n, std::int64_t c, const PaluQuant& q);
// The packed form of x [n, c] row-major (f32 holding fp16 values). Per group, asymmetric:
// scale = fp16(max(max − min, 1e-5) / (2^b − 1)), zero = clamp(rint(−min/scale), 0, 2^b − 1),
// code = clamp(rint(x/scale) + zero, 0, 2^b − 1); symmetric: scale = fp16(max(max|x|, 1e-5) /
// (2^{b−1} − 1)), code = clamp(rint(x/scale), −2^{b−1}, 2^{b−1} − 1) + 2^{b−1}. Code e = i·c + j in
// bits [e·b, e·b + b) from bit 0 of byte 0. Fails when c is not a multiple of the group or a scale
// leaves fp16's range (`what` names the tensor).
std::vector<std::uint8_t> palu_quant_pack(std::span<const float> x, std::int64_t n, std::int64_t c, const PaluQuant& q,
                                          std::string_view what);
// Decodes it into out [n, c]: (code − zero)·scale (symmetric: (code − 2^{b−1})·scale). Fails when
// `packed` is not palu_quant_bytes long.
void palu_quant_unpack(std::span<const std::uint8_t> packed, std::int64_t n, std::int64_t c, const PaluQuant& q,
                       std::span<float> out);

}  // namespace kvlab::compressors
