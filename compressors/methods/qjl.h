// qjl: keys as the sign bits of a seeded JL projection plus their norms, values per token
// (docs/methods/qjl.md). Zandieh, Daliri, Han, "QJL: 1-Bit Quantized JL Transform for KV Cache
// Quantization with Zero Overhead", arXiv 2406.03482; authors' code amirzandieh/QJL
// models/llama3_utils_qjl.py (QJLSketch, QJLKeyQuantizer), qjl_kernel/csrc/qjl_quant_kernel.cu
// (the sign bits and outlier norms), qjl_kernel/csrc/qjl_score_kernel.cu (the estimator),
// models/llama3_qjl.py (post-RoPE keys, values per token) and run_longbench.py (the defaults).
//
// A quantizer-kind stage on the per-head tensors a chain stores densely (`full`, or the cells an
// eviction keeps: compressors/dense.h's "layer{l}/head{h}/key" post-RoPE [n, D] and ".../value").
// Keys, per head: the first nq = n − n mod B rows (B = `buffer`; all rows when B = 0) in groups of
// G = `group` rows; per group the `outliers` channels of largest norm over its rows; per row k,
// with k_o its outlier channels and k_i the rest,
//   inlier bits  b = [S k_i > 0] (m bits),  outlier bits c = [S_o k_o > 0] (m_o bits; S_o = S's first m_o rows),
//   fp16 ‖k‖ and fp16 ‖k_o‖;
// the last n − nq rows stay fp16. The score of a query q is the authors' estimator
//   √(π/2)/m · ‖k_i‖ · ⟨S q_i, ±b⟩ + √(π/2)/m_o · ‖k_o‖ · ⟨S_o q_o, ±c⟩,   ‖k_i‖ = √(‖k‖² − ‖k_o‖²),
// which is linear in q: the rebuild k̂ = √(π/2)/m · ‖k_i‖ · P_i Sᵀ(±b) + √(π/2)/m_o · ‖k_o‖ · P_o S_oᵀ(±c)
// (P_i, P_o: the inlier / outlier coordinates) gives q·k̂ = the estimator for every q, so the
// scorer's dense attention over k̂ is the authors' attention. Values: KIVI's per-token packing
// (kivi.h) with `vbits`, groups of G channels and the last B tokens at fp16.
// S [m, D]: one per (layers below `initial_layers`: m_initial rows) and (the rest: m rows), from
// one seeded stream, general first as the authors build them; rows N(0, 1) or, `matrix=orthogonal`
// (the authors' rot=True), each block of D Gaussian columns replaced by its QR's Q times √D.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "compressors/compressor.h"

namespace kvlab::compressors {

MethodDef qjl_method();

struct QjlParams {
  std::int64_t m = 256;                  // sketch rows (bits) per key, layers ≥ initial_layers (key_quantization_bits)
  std::int64_t m_outlier = 256;          // outlier sketch rows, ≤ m (QJLSketch dim_outlier)
  std::int64_t m_initial = 512;          // sketch rows in layers < initial_layers (key_quantization_bits_initial_layers)
  std::int64_t m_outlier_initial = 128;  // their outlier sketch rows, ≤ m_initial
  int initial_layers = 15;               // initial_layers_count
  int outliers = 8;                      // outlier channels per group (outlier_count_general)
  int outliers_initial = 8;              // in layers < initial_layers (outlier_count_initial_layers)
  int vbits = 2;                         // value bits (value_quantization_bits): 2, 4 or 8
  std::int64_t group = 32;               // G: key rows per outlier group, value channels per group (group_size)
  std::int64_t buffer = 128;             // B: fp16 window (buffer_size); 0 = none
  std::uint64_t seed = 42;               // the projections' seed
  bool orthogonal = true;                // matrix=orthogonal (rot=True) or gaussian
};
QjlParams qjl_params(const StageSpec& spec);

// One layer's sketch settings.
struct QjlLayer {
  std::int64_t m = 0, m_outlier = 0;  // m_outlier = 0 when outliers = 0 (nothing is stored for them)
  int outliers = 0;
};
QjlLayer qjl_layer(const QjlParams& p, int layer);

// The projections for head dimension D: general [m, D] and initial [m_initial, D], row-major, from
// one std::mt19937_64(seed) stream of Box–Muller normals (general first, each drawn as the
// authors' [D, rows] proj_dir, row-major), orthogonalized per D-column block when p.orthogonal.
struct QjlSketches {
  int dim = 0;
  std::vector<double> general, initial;
  const std::vector<double>& of(const QjlParams& p, int layer) const { return layer < p.initial_layers ? initial : general; }
};
QjlSketches qjl_sketches(const QjlParams& p, int head_dim);

// Byte offsets of the packed key form of an [n, D] tensor (docs/methods/qjl.md §4):
//   inlier bits   nq · m/8     row i's bit j at byte i·m/8 + j/8, bit j mod 8 (1: S k_i > 0);
//   outlier bits  nq · m_o/8   the same with m_o;
//   norms         nq fp16 ‖k‖, then nq fp16 ‖k_o‖ (the latter only when outliers > 0);
//   indices       ⌈nq/G⌉ · outliers uint8 channel indices, per group by descending norm (ties: lower channel);
//   residual      (n − nq) · D fp16, row-major.
struct QjlKeyLayout {
  std::int64_t nq = 0, groups = 0;
  std::int64_t outlier_bits_at = 0, norm_at = 0, outlier_norm_at = 0, index_at = 0, residual_at = 0, total = 0;
};
QjlKeyLayout qjl_key_layout(std::int64_t n, int head_dim, bool token_rows, const QjlLayer& layer, const QjlParams& p);

// The packed form of keys x [n, D] (row-major, values at fp16) under sketch `s` [layer.m, D].
std::vector<std::uint8_t> qjl_pack_keys(std::span<const float> x, std::int64_t n, int head_dim, bool token_rows,
                                        const QjlLayer& layer, const QjlParams& p, std::span<const double> s,
                                        const std::string& what);
// The rebuild k̂ [n, D] from a packed form (qjl_key_layout's total bytes, else fails): the
// estimator's linear form for the quantized rows, the fp16 values for the residual rows.
void qjl_unpack_keys(std::span<const std::uint8_t> packed, std::int64_t n, int head_dim, bool token_rows,
                     const QjlLayer& layer, const QjlParams& p, std::span<const double> s, std::span<float> out);

}  // namespace kvlab::compressors
