// kvquant: KVQuant's non-uniform quantization with dense-and-sparse outliers and attention-sink
// rows (docs/methods/kvquant.md). Hooper et al., "KVQuant: Towards 10 Million Context Length LLM
// Inference with KV Cache Quantization", NeurIPS 2024, arXiv 2401.18079; authors' code
// SqueezeAILab/KVQuant quant/kvquant/simquant_module_quantizer.py (SimQuant.quantize: the
// calibration; get_outliers, get_outliers_dynamic, quant_fn_nuq_recon: the quantization) and
// quant/llama_simquant.py (keys per channel with static thresholds, values per token dynamic).
//
// A quantizer-kind stage. Per stored tensor X [n, c] whose layout is not none:
//   - sink rows: the first rows that are tokens < `sinks` (the authors' first_few_fp16) are kept
//     at fp16 and take no part in the statistics below;
//   - per_channel (keys): per column j, lower/upper = the (1 − t)·100 and t·100 percentiles of the
//     other rows (numpy's linear interpolation), t = 1 − s/2; outliers are x < lower or x > upper
//     (get_outliers); the column's range is [lower, upper];
//   - per_token (values): per row, lower/upper = the quantiles 1 − t and t of the row; outliers are
//     x ≤ lower or x ≥ upper (get_outliers_dynamic); the row's range is [min, max] of the row with
//     its outliers replaced by the row's (lower) median (quant_fn_nuq_recon, dynamic);
//     s = 0: no outliers, the range is the row's min and max;
//   - every non-sink element is normalized to (x − zp)/r, zp = (hi + lo)/2, r = (hi − lo)/2 with
//     lo, hi the range at fp16, and coded as the nearest of 2^b codebook entries (ties to the lower);
//     outliers are stored exactly (fp16) with int32 flat indices, their codes 0.
// The codebook: one per (first name component, layout) — per layer and part for the dense cache,
// as the authors fit one per k_proj / v_proj — the 2^b centroids of a 1-D k-means over the
// normalized inliers of all its tensors (Lloyd from weighted-quantile starts, ≤ `iterations`
// steps, sklearn's stopping rule), stored fp16 as its own tensor "{prefix}/kvquant_codebook_{per_channel|per_token}".
// Pre-RoPE keys: in a chain, the dense per-head keys ("layer{l}/head{h}/key", post-RoPE at
// 16 bits, compressors/dense.h) are quantized from the cache's pre-RoPE keys instead, as the
// authors quantize k_proj's output, and the rebuild reads them back without rotating.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "compressors/compressor.h"

namespace kvlab::compressors {

MethodDef kvquant_method();

struct KvquantParams {
  int bits = 4;               // b ∈ {2, 3, 4}: 2^b codebook entries
  double outliers = 0.01;     // s, fraction kept exact (1 − the authors' sparsity-threshold 0.99)
  std::int64_t sinks = 1;     // tokens < sinks kept at fp16 (the authors' first_few_fp16)
  int iterations = 50;        // k-means steps at most (sklearn max_iter=50 in SimQuant.quantize)
};
KvquantParams kvquant_params(const StageSpec& spec);

// The 1-D weighted k-means: `k` sorted centroids of `points` (weights: empty = all 1). Start: the
// point at cumulative weight (i + ½)/k of the total, points sorted; then Lloyd steps (each point to
// its nearest centroid, ties to the lower; each centroid the weighted mean of its points, an empty
// one unchanged; the centroids re-sorted ascending) until the assignment repeats, the squared
// centroid shift is at most 1e-4 × the points' variance (sklearn's tol), or `iterations` steps.
// Fails on an empty point set.
std::vector<double> kvquant_kmeans(std::span<const float> points, std::span<const float> weights, int k, int iterations);


// numpy.percentile(x, 100·q) with linear interpolation (q ∈ [0, 1]); x is reordered.
double kvquant_quantile(std::span<float> x, double q);

// One tensor's statistics before the codebook exists: what kvquant_pack needs besides it.
struct KvquantPlan {
  std::int64_t n = 0, c = 0, sink_rows = 0;
  QuantLayout layout = QuantLayout::per_channel;
  std::vector<float> lo, hi;               // the range per column (per_channel) or coded row (per_token), fp16
  std::vector<std::uint8_t> outlier;       // [n, c], 1 = kept exact (sink rows 0)
  std::vector<float> normalized;           // [n − sink_rows, c], (x − zp)/r (0 where r = 0)
};
// The plan of x [n, c] (row-major, values at fp16); `what` names it in errors.
KvquantPlan kvquant_plan(std::span<const float> x, QuantLayout layout, std::int64_t n, std::int64_t c,
                         std::int64_t sink_rows, double outliers, const std::string& what);
// The normalized inliers of a plan: what the codebook is fitted on.
void kvquant_inliers(const KvquantPlan& plan, std::vector<float>& out);

// The packed form of x under `plan` and `codebook` (2^bits fp16 values, ascending), little-endian:
//   int32 sink_rows, int32 m (outliers);
//   sink rows, fp16 [sink_rows, c];
//   the ranges, fp16 (lo, hi) pairs: one per column (per_channel) or per coded row (per_token);
//   codes, ⌈(n − sink_rows)·c·b/8⌉ bytes: code k = i·c + j of coded element (i, j) in bits
//     [k·b, k·b + b) counted from bit 0 of byte 0;
//   m outlier values fp16, then their m int32 flat indices into [n, c], ascending.
std::vector<std::uint8_t> kvquant_pack(std::span<const float> x, const KvquantPlan& plan, std::span<const float> codebook,
                                       int bits);
// Decodes into out [n, c]: sink rows and outliers their fp16 values, every other element
// float(codebook[code]·r + zp) in double, r = (hi − lo)/2, zp = (hi + lo)/2.
void kvquant_unpack(std::span<const std::uint8_t> packed, QuantLayout layout, std::int64_t n, std::int64_t c,
                    std::span<const float> codebook, int bits, std::span<float> out);

}  // namespace kvlab::compressors
