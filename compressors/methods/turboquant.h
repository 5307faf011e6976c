// turboquant: TurboQuant's data-oblivious vector quantizer (docs/methods/turboquant.md).
// Zandieh, Daliri, Hadian, Mirrokni, "TurboQuant: Online Vector Quantization with Near-optimal
// Distortion Rate", arXiv 2504.19874: Algorithm 1 (TurboQuant_mse) and Algorithm 2
// (TurboQuant_prod). No code by the authors is published; the practical knobs (norms stored
// apart, keys prod / values mse, S square) follow tonbistudio/turboquant-pytorch
// turboquant/compressors.py.
//
// A quantizer-kind stage. Every stored tensor X [n, c] whose layout is not none is coded row by
// row: each row x ∈ R^c is one vector (d = c; for the dense cache a token's key or value of one
// head, keys post-RoPE as the cache holds them, rotated back on rebuild as for kivi).
//   mse  (Algorithm 1, b bits): ν = ‖x‖ stored fp16; y = Π·x/‖x‖; code_j = the nearest of the
//        2^b Lloyd–Max centroids of the coordinate density of a uniform unit vector in R^d;
//        rebuild x̃ = ν·Πᵀ·c[code].
//   prod (Algorithm 2, b bits): mse at b − 1 bits gives x̃_mse; r = x − x̃_mse; γ = ‖r‖ stored
//        fp16; s = sign(S·r) ∈ {±1}^d (sign(0) = +1); rebuild
//        x̂ = x̃_mse + √(π/2)/d · γ · Sᵀ·s.
//        The paper's inner-product estimator ⟨q, x̃_mse⟩ + √(π/2)/d·γ·⟨S·q, s⟩ is linear in q and
//        equals ⟨q, x̂⟩ for every q, so the dense rebuild scores exactly what the estimator does.
// Keys (layout per_channel) use `variant` at `kbits`; values (and every per_token tensor) use
// mse at `vbits` — values enter attention through a weighted sum, not an inner product.
// Π [d, d]: the Q of a Householder QR of an i.i.d. N(0, 1) matrix, columns signed so diag(R) > 0
// (Haar-distributed); S [d, d] i.i.d. N(0, 1); both from `seed` and d alone, shared by every
// tensor of that width.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include <Eigen/Core>

#include "compressors/compressor.h"

namespace kvlab::compressors {

MethodDef turboquant_method();

enum class TurboquantVariant { mse, prod };

// Bits b may be fractional (the paper's 2.5/3.5-bit KV configurations, §4.3): b = ⌊b⌋ + f codes
// round(f·c) outlier channels of a c-wide row at ⌊b⌋ + 1 bits and the rest at ⌊b⌋, two
// independent instances (turboquant_split_pack); integer b is the single instance.
struct TurboquantParams {
  double key_bits = 3;                                // b for keys (prod: b − 1 MSE bits + 1 QJL bit)
  double value_bits = 3;                              // b for values (mse)
  TurboquantVariant key_variant = TurboquantVariant::prod;
  std::uint64_t seed = 0;                             // Π and S
};
TurboquantParams turboquant_params(const StageSpec& spec);

// How one tensor is coded: the variant, its total bits per coordinate b and the seed.
struct TurboquantCoding {
  TurboquantVariant variant = TurboquantVariant::mse;
  int bits = 3;
  std::uint64_t seed = 0;
  int mse_bits() const { return variant == TurboquantVariant::prod ? bits - 1 : bits; }
};

// The 2^bits Lloyd–Max centroids (ascending) of the density f(x) ∝ (1 − x²)^((d−3)/2) on
// [−1, 1] — one coordinate of a uniformly random unit vector in R^d — for d ≥ 2, bits 1..8.
// Computed once per (d, bits) and cached (thread-safe): Lloyd iteration (thresholds the midpoints
// of adjacent centroids, each centroid its cell's conditional mean) until no centroid moves by
// more than 1e-13/√d (at most 100000 steps, else an error), from the midpoints of 2^b equal
// cells of [−s, s], s = min(3/√d, 1). No quadrature: in θ = asin x the density is cos^(d−2)θ, whose
// integral from 0 follows the reduction formula ∫cos^n = cos^(n−1)θ·sin θ/n + (n−1)/n·∫cos^(n−2)
// (exact up to rounding), and a cell's first moment is closed-form,
// [(1 − a²)^((d−1)/2) − (1 − b²)^((d−1)/2)] / (d − 1).
const std::vector<double>& turboquant_codebook(int d, int bits);

// Π [d, d] and S [d, d] of `seed` (the last 16 (d, seed) cached; Gaussians by Box–Muller from the
// 53-bit uniforms of std::mt19937_64, the same on every platform).
std::shared_ptr<const Eigen::MatrixXd> turboquant_rotation(int d, std::uint64_t seed);
std::shared_ptr<const Eigen::MatrixXd> turboquant_sketch(int d, std::uint64_t seed);

// Bytes of the packed form of an [n, c] tensor:
//   mse:  2n (fp16 ν per row) + ⌈n·c·b/8⌉ (codes);
//   prod: 2n (ν) + 2n (fp16 γ per row) + ⌈n·c·(b−1)/8⌉ (codes) + ⌈n·c/8⌉ (signs).
std::int64_t turboquant_bytes(std::int64_t n, std::int64_t c, const TurboquantCoding& coding);

// The packed form of x [n, c] (row-major), little-endian, parts in the order of turboquant_bytes:
// ν row by row; γ row by row (prod); codes, code k = i·c + j of element (i, j) in bits
// [k·m, k·m + m) (m = mse_bits) counted from bit 0 of byte 0; signs, bit k = i·c + j set when
// (S·r_i)_j ≥ 0. A code is the number of thresholds (midpoints of adjacent centroids) strictly
// below y_j. A zero row codes as ν = 0 (and γ = 0). `what` names the tensor in errors
// (non-finite values, a norm beyond fp16).
std::vector<std::uint8_t> turboquant_pack(std::span<const float> x, std::int64_t n, std::int64_t c,
                                          const TurboquantCoding& coding, std::string_view what);
// Decodes a packed form into out [n, c]: ν·Πᵀ·c[code] (+ √(π/2)/c·γ·Sᵀ·s for prod), in double,
// then rounded to f32. Fails when `packed` is not turboquant_bytes long.
void turboquant_unpack(std::span<const std::uint8_t> packed, std::int64_t n, std::int64_t c,
                       const TurboquantCoding& coding, std::span<float> out);

// ---- fractional widths: the outlier split (arXiv 2504.19874 §4.3) -------------------------------
// The rows are taken in groups of kTurboquantOutlierGroup (the last one shorter); per group the o
// channels of largest Σ_rows x² over its rows (ties to the lower channel) are its outlier channels,
// as QJL picks them (amirzandieh/QJL QJLKeyQuantizer.build_sketch, group_size 32). Each row's
// outlier sub-vector [o] (channels ascending) is coded by one TurboQuant instance at b + 1 bits,
// seed ⊕ kTurboquantOutlierSeedMix (its own Π and S), the rest [c − o] by another at b bits, `seed`.
constexpr std::int64_t kTurboquantOutlierGroup = 32;
constexpr std::uint64_t kTurboquantOutlierSeedMix = 0x9e3779b97f4a7c15ull;

// The outlier channels of a c-wide row at fractional bits: round((bits − ⌊bits⌋)·c).
std::int64_t turboquant_outliers(double bits, std::int64_t c);
// The outlier instance's coding for the regular one's: bits + 1, the mixed seed.
TurboquantCoding turboquant_outlier_coding(const TurboquantCoding& regular);

// Bytes of the split form of x [n, c] with o outlier channels (2 ≤ o ≤ c − 2), in this order:
//   indices: ⌈n/32⌉·o channel numbers, per group ascending, uint8 (c ≤ 256) or uint16 LE;
//   the outlier part: turboquant_pack of the [n, o] sub-vectors at the outlier coding;
//   the regular part: turboquant_pack of the [n, c − o] rest at `regular`.
std::int64_t turboquant_split_bytes(std::int64_t n, std::int64_t c, std::int64_t o, const TurboquantCoding& regular);
std::vector<std::uint8_t> turboquant_split_pack(std::span<const float> x, std::int64_t n, std::int64_t c, std::int64_t o,
                                                const TurboquantCoding& regular, std::string_view what);
void turboquant_split_unpack(std::span<const std::uint8_t> packed, std::int64_t n, std::int64_t c, std::int64_t o,
                             const TurboquantCoding& regular, std::span<float> out);

// The coding a tensor of this layout gets: keys (per_channel) the key variant and ⌊bits⌋, the
// rest mse at ⌊value bits⌋ (the regular instance when the bits are fractional).
TurboquantCoding turboquant_coding(QuantLayout layout, const TurboquantParams& p);
// Quantizes one tensor as the stage does: packed = turboquant_pack(values), values =
// turboquant_unpack(packed), layout none, format "turboquant-{mse|prod}{b}"; at fractional bits
// the split form, format "turboquant-{mse|prod}{b}+{o}x{b+1}". Layout none: untouched.
void turboquant_quantize_tensor(StoredTensor& tensor, const TurboquantParams& p);

}  // namespace kvlab::compressors
