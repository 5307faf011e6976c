// gear: GEAR's quantization + sparse outliers + low-rank residual (docs/methods/gear.md). Kang et
// al., "GEAR: An Efficient KV Cache Compression Recipe for Near-Lossless Generative Inference of
// LLM", 2024, arXiv 2403.05527; authors' code opengear-project/GEAR,
// GenerationBench/GenerationTest/GEARLM/Simulated/compress_function.py (compress_method "GEAR":
// gearslkivi_channelQ_new for keys, gearslkivi_tokenQ_new for values).
//
// A quantizer stage: every StoredTensor whose layout is not none, an [n, c] matrix, becomes
//   1. outliers: over the quantized rows, the k smallest and k largest values, kept exact at fp16
//      with their int32 flat indices — select=tensor: k = int(s·nq·c/2) over the whole tensor (the
//      authors' fake_dense_sparse_uniformquantization, GEARLM/GEARLM/Simulated/compress_function.py);
//      select=line: per line (a row for per_token tensors, a column for per_channel ones)
//      k = int(s·len/2) (the later gears_tokenQ / gears_channelQ). Before quantizing, each outlier
//      is replaced by its line's mean (gears_tokenQ / gears_channelQ);
//   2. KIVI-style asymmetric min-max codes of the result (kivi.h's packing): per_channel groups of
//      `group` tokens of one channel, the last n mod group token rows kept at fp16 (the authors'
//      fake_groupwise_channel_asymmetric_quantization_cluster); per_token groups of `group`
//      channels of one row, every row quantized;
//   3. low rank: the residual E = X − (dequantized codes with the outliers put back) approximated
//      at rank r' = min(rank, n, c) (rankv for per_token tensors) by the authors' power iteration
//      (`loop` steps from a seeded uniform start) or an exact truncated SVD, stored as fp16 factors
//      A [n, r'], B [r', c]; the rebuild adds A·B everywhere, as the authors' output + error_lr.
// Packed form: kivi_pack bytes | m fp16 outlier values | m int32 outlier indices | A | B (fp16).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "compressors/compressor.h"
#include "compressors/methods/kivi.h"

namespace kvlab::compressors {

MethodDef gear_method();

struct GearParams {
  int bits = 2;               // b ∈ {2, 4}
  std::int64_t group = 64;    // G, elements per quantization group
  double outliers = 0.02;     // s, fraction of a tensor's quantized elements kept exact (split low/high)
  bool per_line = false;      // select=line: s of each line; select=tensor: s of the whole tensor
  std::int64_t rank = 4;      // r of per_channel tensors (keys)
  std::int64_t rankv = 4;     // r of per_token tensors (values, factors)
  int loop = 3;               // power-iteration steps
  bool svd = false;           // exact truncated SVD instead of the power iteration
  std::uint64_t seed = 0;     // power iteration's start (std::mt19937_64, uniform [0, 1)), every tensor alike
};
GearParams gear_params(const StageSpec& spec);

// The KIVI parameters of the quantized part of an [n, c] tensor of `layout` (see above), and
// whether its rows count as tokens for them.
KiviParams gear_kivi_params(const GearParams& p);
bool gear_token_rows(QuantLayout layout, bool token_rows);

// What an [n, c] tensor's packed form holds, from its shape alone.
struct GearLayout {
  std::int64_t nq = 0;        // quantized rows (the rest is the fp16 residual of the quantized part)
  std::int64_t lines = 0;     // outlier lines: 1 (select=tensor), rows (per_token) or columns (per_channel)
  std::int64_t per_line = 0;  // k: outliers at each end of each line
  std::int64_t outliers = 0;  // m = 2·k·lines
  std::int64_t rank = 0;      // r'
  std::int64_t outlier_at = 0, index_at = 0, a_at = 0, b_at = 0, total = 0;  // byte offsets, total size
};
GearLayout gear_layout(QuantLayout layout, std::int64_t n, std::int64_t c, bool token_rows, const GearParams& p);

// The outliers of x [n, c] (row-major) over its first nq rows, flat indices i·c + j: per line
// (the whole block when !by_line; else a row for per_token, a column for per_channel) its k lowest
// then its k highest values, the line's elements ordered by (value, index), lines in order.
std::vector<std::int32_t> gear_outliers(std::span<const float> x, QuantLayout layout, std::int64_t nq, std::int64_t c,
                                        bool by_line, std::int64_t per_line);

// Packs x [n, c] (values at fp16); `what` names it in errors.
std::vector<std::uint8_t> gear_pack(std::span<const float> x, QuantLayout layout, std::int64_t n, std::int64_t c,
                                    bool token_rows, const GearParams& p, const std::string& what);
// Decodes a packed form into out [n, c]: float(dequantized codes, outliers put back) + A·B (in double).
void gear_unpack(std::span<const std::uint8_t> packed, QuantLayout layout, std::int64_t n, std::int64_t c,
                 bool token_rows, const GearParams& p, std::span<float> out);

// Quantizes one tensor as the stage does (layout none: left alone).
void gear_quantize_tensor(StoredTensor& tensor, const GearParams& p);

}  // namespace kvlab::compressors
