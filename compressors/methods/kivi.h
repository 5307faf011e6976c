// kivi: asymmetric min-max quantization of stored tensors (docs/methods/kivi.md).
//
// Spec keys: bits (2|4|8, default 2), group (elements per quantization group, default 32),
// residual (KIVI's full-precision window R in tokens, default 128; 0 = none). The stage quantizes
// every StoredTensor whose layout is not none:
//   per_channel [n, c] token-major: one group = `group` consecutive rows of one column (KIVI keys);
//   per_token   [n, c]:             one group = `group` consecutive columns of one row (KIVI values,
//                                   SVD factors A [T, r] and B [r, N]).
// When the grouped axis is not a multiple of `group`, the last group along it is shorter.
// Residual window, for token_rows tensors only (KIVI's prefill rules): per_channel keeps the last
// n mod R rows in fp16 (none when n mod R == 0), per_token keeps the last R rows (all when n ≤ R).
// Tensors whose rows are not tokens have no residual.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "compressors/compressor.h"

namespace kvlab::compressors {

MethodDef kivi_method();
std::unique_ptr<QuantizerStage> make_kivi(const StageSpec& spec);

// The parsed knobs of a kivi spec.
struct KiviParams {
  int bits = 2;                // b ∈ {2, 4, 8}
  std::int64_t group = 32;     // G, elements per group (≥ 1)
  std::int64_t residual = 128; // R, tokens kept in fp16 (0 = no residual window)
};
KiviParams kivi_params(const StageSpec& spec);

// One group's stored parameters, both already rounded to fp16 (what the packed form gives back).
struct KiviGroup {
  float scale = 0;  // fp16((max − min) / (2^b − 1)); 0 for a constant group
  float min = 0;    // fp16(min)
};

// Quantize∘dequantize of one group [n] in place (kivi_pack, kivi_unpack of [1, n]); returns its stored parameters.
KiviGroup kivi_fake_quantize(std::span<float> group, int bits);

// Rows of an [n, ·] tensor that are quantized; the remaining n − rows form the fp16 residual.
std::int64_t kivi_quantized_rows(QuantLayout layout, std::int64_t n, bool token_rows, const KiviParams& p);
// Where the three parts of kivi_pack's packed form of an [n, c] tensor start, from its shape alone
// (kivi_kernel.h packs at these offsets on every device).
struct KiviPackedLayout {
  std::int64_t nq = 0;           // quantized rows (kivi_quantized_rows)
  std::int64_t groups = 0;       // quantization groups
  std::int64_t group_at = 0;     // byte offset of the groups' fp16 scale/min pairs
  std::int64_t residual_at = 0;  // byte offset of the fp16 residual rows
  std::int64_t total = 0;        // bytes of the whole packed form
};
KiviPackedLayout kivi_packed_layout(QuantLayout layout, std::int64_t n, std::int64_t c, bool token_rows,
                                    const KiviParams& p);
// Bytes of the packed form (kivi_packed_layout's total); layout none: 2 per value (plain fp16).
std::int64_t kivi_bytes(QuantLayout layout, std::int64_t n, std::int64_t c, bool token_rows, const KiviParams& p);

// The packed form of an [n, c] tensor `x` (row-major, its values already at fp16), exactly
// kivi_bytes(layout, n, c, token_rows, p) bytes (docs/methods/kivi.md §5): ⌈nq·c·b/8⌉ bytes of
// codes, code k = i·c + j of quantized element (i, j) in bits [k·b, k·b + b) from bit 0 of byte 0;
// 4 bytes per group, fp16 scale then fp16 min, per_channel groups in order of (row block, column),
// per_token groups of (row, column block); the n − nq residual rows, fp16, row-major. Code of x:
// clamp((x − min) / scale, 0, 2^b − 1) rounded half to even, 0 where scale is 0 (kivi_kernel.h).
// `what` names the tensor in errors (non-finite values, a scale beyond fp16).
std::vector<std::uint8_t> kivi_pack(std::span<const float> x, QuantLayout layout, std::int64_t n, std::int64_t c,
                                    bool token_rows, const KiviParams& p, std::string_view what);
// Decodes a packed form into `out`, its n·c values, row-major: code·scale + min for quantized
// elements, the fp16 value for residual ones. Fails when `packed` is not the size kivi_bytes gives.
void kivi_unpack(std::span<const std::uint8_t> packed, QuantLayout layout, std::int64_t n, std::int64_t c,
                 bool token_rows, const KiviParams& p, std::span<float> out);

// Quantizes one tensor as the stage does: packed = kivi_pack(values), values = kivi_unpack(packed),
// layout = none, format. A tensor whose layout is already none is left untouched.
void kivi_quantize_tensor(StoredTensor& tensor, const KiviParams& p);

}  // namespace kvlab::compressors
