// qjl: 1-bit JL sketches of the keys, KIVI-packed values (qjl.h, docs/methods/qjl.md).
#include "compressors/methods/qjl.h"

#include <fmt/format.h>

#include <Eigen/Core>
#include <Eigen/QR>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <numbers>
#include <numeric>
#include <random>

#include "compressors/dense.h"
#include "compressors/methods/kivi.h"
#include "compressors/packed_bytes.h"
#include "core/error.h"
#include "core/parallel.h"

namespace kvlab::compressors {

namespace {

using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// The estimator's scale √(π/2)/m: E|g| = √(2/π) for g ~ N(0, 1) (the authors' sqrtf(M_PI_2) / sketch_dim).
double estimator_scale(std::int64_t m) { return std::sqrt(std::numbers::pi / 2) / static_cast<double>(m); }

// The authors' proj_dir [D, rows] (torch.randn) and, for rot=True, init_rot_dir: each block of D
// columns replaced by its reduced QR's Q times √D. Returned transposed: S [rows, D].
std::vector<double> sketch_matrix(std::mt19937_64& rng, std::int64_t rows, int dim, bool orthogonal) {
  const auto uniform = [&] { return static_cast<double>(rng() >> 11) * 0x1.0p-53; };
  RowMajor proj(dim, rows);  // Box–Muller: the same numbers on every standard library
  for (std::int64_t k = 0; k < proj.size(); k += 2) {
    const double r = std::sqrt(-2 * std::log(1 - uniform())), a = 2 * std::numbers::pi * uniform();
    proj.data()[k] = r * std::cos(a);
    if (k + 1 < proj.size()) proj.data()[k + 1] = r * std::sin(a);
  }
  if (orthogonal) {
    for (std::int64_t c0 = 0; c0 < rows; c0 += dim) {
      const std::int64_t cols = std::min<std::int64_t>(dim, rows - c0);
      const Eigen::MatrixXd block = proj.middleCols(c0, cols);
      const Eigen::HouseholderQR<Eigen::MatrixXd> qr(block);
      const Eigen::MatrixXd q = qr.householderQ() * Eigen::MatrixXd::Identity(dim, cols);
      proj.middleCols(c0, cols) = q * std::sqrt(static_cast<double>(dim));
    }
  }
  RowMajor s = proj.transpose();
  return {s.data(), s.data() + s.size()};
}

}  // namespace

QjlParams qjl_params(const StageSpec& spec) {
  QjlParams p;
  p.m = spec.get_int("m");
  p.m_outlier = spec.get_int("m_outlier");
  p.m_initial = spec.get_int("m_initial");
  p.m_outlier_initial = spec.get_int("m_outlier_initial");
  p.initial_layers = static_cast<int>(spec.get_int("initial_layers"));
  p.outliers = static_cast<int>(spec.get_int("outliers"));
  p.outliers_initial = static_cast<int>(spec.get_int("outliers_initial"));
  p.vbits = static_cast<int>(spec.get_int("vbits"));
  p.group = spec.get_int("group");
  p.buffer = spec.get_int("buffer");
  p.seed = static_cast<std::uint64_t>(spec.get_int("seed"));
  p.orthogonal = spec.get("matrix") == "orthogonal";
  // parse_stage checks each key's range; the constraints between keys are checked here (resolve
  // runs this at parse time).
  const auto sketch = [](std::string_view key, std::int64_t v) {
    if (v < 8 || v > 8192 || v % 8 != 0)
      fail("spec 'qjl': key '{}' = {} must be a multiple of 8 in [8, 8192] (bits are packed 8 a byte)", key, v);
  };
  sketch("m", p.m), sketch("m_outlier", p.m_outlier), sketch("m_initial", p.m_initial),
      sketch("m_outlier_initial", p.m_outlier_initial);
  if (p.m_outlier > p.m) fail("spec 'qjl': key 'm_outlier' = {} must be at most m = {} (the sketch's first rows)", p.m_outlier, p.m);
  if (p.m_outlier_initial > p.m_initial)
    fail("spec 'qjl': key 'm_outlier_initial' = {} must be at most m_initial = {}", p.m_outlier_initial, p.m_initial);
  if (p.initial_layers < 0) fail("spec 'qjl': key 'initial_layers' = {} must be at least 0", p.initial_layers);
  for (const auto& [key, v] : {std::pair{"outliers", p.outliers}, std::pair{"outliers_initial", p.outliers_initial}})
    if (v < 0 || v > 255) fail("spec 'qjl': key '{}' = {} must be in [0, 255] (uint8 channel indices)", key, v);
  if (p.vbits != 2 && p.vbits != 4 && p.vbits != 8) fail("spec 'qjl': key 'vbits' = {} is not one of: 2, 4, 8", p.vbits);
  if (p.group < 1) fail("spec 'qjl': key 'group' = {} must be at least 1", p.group);
  if (p.buffer < 0 || (p.buffer > 0 && p.buffer % p.group != 0))
    fail("spec 'qjl': key 'buffer' = {} must be 0 or a positive multiple of group = {} (the authors reshape it into groups)",
         p.buffer, p.group);
  if (const auto& m = spec.get("matrix"); m != "orthogonal" && m != "gaussian")
    fail("spec 'qjl': key 'matrix' = {} is not one of: orthogonal, gaussian", m);
  return p;
}

QjlLayer qjl_layer(const QjlParams& p, int layer) {
  const bool initial = layer < p.initial_layers;
  QjlLayer l;
  l.m = initial ? p.m_initial : p.m;
  l.outliers = initial ? p.outliers_initial : p.outliers;
  l.m_outlier = l.outliers > 0 ? (initial ? p.m_outlier_initial : p.m_outlier) : 0;
  return l;
}

QjlSketches qjl_sketches(const QjlParams& p, int head_dim) {
  if (head_dim < 1) fail("qjl: head dimension {}", head_dim);
  std::mt19937_64 rng(p.seed);
  QjlSketches s;
  s.dim = head_dim;
  s.general = sketch_matrix(rng, p.m, head_dim, p.orthogonal);  // run_longbench.py: config_qjl.qjl first
  s.initial = sketch_matrix(rng, p.m_initial, head_dim, p.orthogonal);
  return s;
}

QjlKeyLayout qjl_key_layout(std::int64_t n, int head_dim, bool token_rows, const QjlLayer& layer, const QjlParams& p) {
  QjlKeyLayout k;
  // QJLKeyQuantizer.build_sketch: the last seq_len mod buffer_size keys stay full precision.
  k.nq = token_rows && p.buffer > 0 ? n - n % p.buffer : n;
  k.groups = layer.outliers > 0 ? (k.nq + p.group - 1) / p.group : 0;
  k.outlier_bits_at = k.nq * layer.m / 8;
  k.norm_at = k.outlier_bits_at + k.nq * layer.m_outlier / 8;
  k.outlier_norm_at = k.norm_at + 2 * k.nq;
  k.index_at = k.outlier_norm_at + (layer.outliers > 0 ? 2 * k.nq : 0);
  k.residual_at = k.index_at + k.groups * layer.outliers;
  k.total = k.residual_at + 2 * (n - k.nq) * head_dim;
  return k;
}

namespace {

using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Rows per GEMM: whole groups, about 512 rows (a [512, m] float sketch stays in cache).
std::int64_t chunk_rows(std::int64_t group) { return group * std::max<std::int64_t>(1, 512 / group); }

// A group's channels by descending Σ_rows x² over rows [r0, r0 + rows) of X, ties to the lower
// channel: its first `outliers` are the outlier channels (torch.topk of key_states.norm(dim=-2)).
void channels_by_norm(const RowMajor& X, std::int64_t r0, std::int64_t rows, std::vector<int>& order) {
  const Eigen::VectorXd norm2 = X.middleRows(r0, rows).colwise().squaredNorm().transpose();
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return norm2[a] > norm2[b]; });
}

// ±1 for the 8 bits of each byte value, bit 0 first: a byte's signs are one 8-value copy.
template <class Real>
const std::array<std::array<Real, 8>, 256>& byte_signs() {
  static const auto table = [] {
    std::array<std::array<Real, 8>, 256> t{};
    for (int v = 0; v < 256; ++v)
      for (int e = 0; e < 8; ++e) t[static_cast<std::size_t>(v)][static_cast<std::size_t>(e)] = v >> e & 1 ? Real(1) : Real(-1);
    return t;
  }();
  return table;
}

// Expands `count` sign bits (count a multiple of 8) into ±1 values.
template <class Real>
void expand_signs(const std::uint8_t* bits, std::int64_t count, Real* out) {
  const auto& table = byte_signs<Real>();
  for (std::int64_t b = 0; b < count / 8; ++b) std::copy_n(table[bits[b]].data(), 8, out + 8 * b);
}

}  // namespace

std::vector<std::uint8_t> qjl_pack_keys(std::span<const float> x, std::int64_t n, int head_dim, bool token_rows,
                                        const QjlLayer& layer, const QjlParams& p, std::span<const double> s,
                                        const std::string& what) {
  const std::int64_t D = head_dim;
  if (static_cast<std::int64_t>(x.size()) != n * D) fail("{}: {} values for shape [{}, {}]", what, x.size(), n, D);
  if (static_cast<std::int64_t>(s.size()) != layer.m * D) fail("{}: a sketch of {} values for [{}, {}]", what, s.size(), layer.m, D);
  if (layer.outliers > D)
    fail("{}: {} outlier channels (key 'outliers', or 'outliers_initial' below initial_layers) exceed the head dimension {}",
         what, layer.outliers, D);
  if (layer.outliers > 0 && D > 256) fail("{}: head dimension {} > 256 does not fit QJL's uint8 outlier indices", what, D);
  for (const float v : x)
    if (!std::isfinite(v)) fail("{}: non-finite values to quantize", what);
  const auto k = qjl_key_layout(n, head_dim, token_rows, layer, p);
  std::vector<std::uint8_t> out(static_cast<std::size_t>(k.total), 0);
  const Eigen::Map<const RowMajor> S(s.data(), layer.m, D);
  const Eigen::Map<const RowMajorF> X(x.data(), n, D);
  // The inlier sketch S·k_i is one float GEMM per chunk of rows; only its signs are kept. A sign is
  // taken from the float product unless the product is within its rounding bound of 0, where the
  // double dot product decides — so every bit is the one the double product gives. Bound: x is
  // exact in float, S rounded to float (relative 2⁻²⁴), and a D-term float sum of any order errs by
  // at most D·2⁻²⁴·Σ|x_d||S_jd| (Higham, Accuracy and Stability of Numerical Algorithms, §3.1);
  // with Cauchy–Schwarz the whole error is below (D + 1)·2⁻²⁴·‖x_i‖·‖S_j‖ (+ O(2⁻⁴⁸)); twice that
  // is the margin.
  const RowMajorF Sf = S.cast<float>();
  const double margin = S.rowwise().norm().maxCoeff() * (2.0 * static_cast<double>(D + 2) * 0x1.0p-24);
  const std::int64_t G = p.group, chunk = chunk_rows(G), o = layer.outliers;
  RowMajorF inlier(std::min(chunk, std::max<std::int64_t>(k.nq, 1)), D), sketch(inlier.rows(), layer.m);
  RowMajor chunk_x(inlier.rows(), D), inlier_x(inlier.rows(), D);  // the chunk in double, and its inlier part
  Eigen::VectorXd norm2(inlier.rows()), inlier_norm(inlier.rows());
  const std::int64_t group_max = std::min(G, std::max<std::int64_t>(k.nq, 1));
  Eigen::MatrixXd s_o(layer.m_outlier, o);  // a group's outlier columns of S_o (column-major: one copy each)
  RowMajor x_o(group_max, o), sketch_o(group_max, layer.m_outlier);
  std::vector<int> order(static_cast<std::size_t>(D));
  std::vector<std::uint8_t> positive(static_cast<std::size_t>(layer.m));  // a row's sketch signs, 0/1
  // S_o's columns as rows (contiguous), for gathering a group's outlier channels.
  const RowMajor s_o_by_channel = S.topRows(layer.m_outlier).transpose();
  for (std::int64_t c0 = 0; c0 < k.nq; c0 += chunk) {
    const std::int64_t rows = std::min(chunk, k.nq - c0);
    inlier.topRows(rows) = X.middleRows(c0, rows);
    chunk_x.topRows(rows) = X.middleRows(c0, rows).cast<double>();
    inlier_x.topRows(rows) = chunk_x.topRows(rows);
    norm2.head(rows) = chunk_x.topRows(rows).rowwise().squaredNorm();
    for (std::int64_t g0 = c0; g0 < c0 + rows; g0 += G) {
      const std::int64_t group_rows = std::min(G, c0 + rows - g0);
      if (o > 0) {
        channels_by_norm(chunk_x, g0 - c0, group_rows, order);
        for (int i = 0; i < o; ++i) {
          const int c = order[static_cast<std::size_t>(i)];
          out[static_cast<std::size_t>(k.index_at + (g0 / G) * o + i)] = static_cast<std::uint8_t>(c);
          s_o.col(i) = s_o_by_channel.row(c).transpose();
          x_o.col(i).head(group_rows) = chunk_x.col(c).segment(g0 - c0, group_rows);
          inlier.col(c).segment(g0 - c0, group_rows).setZero();
          inlier_x.col(c).segment(g0 - c0, group_rows).setZero();
        }
        // The outlier sketch S_o·k_o reads only the o outlier channels: [rows, o] · [o, m_o], in double.
        sketch_o.topRows(group_rows).noalias() = x_o.topRows(group_rows) * s_o.transpose();
      }
      for (std::int64_t row = g0; row < g0 + group_rows; ++row) {
        const double outlier2 = o > 0 ? x_o.row(row - g0).squaredNorm() : 0.0;
        // Norms at fp16, as the authors keep them (key_states_norm, key_outliers_norm in the model's dtype).
        const float norm = to_fp16(std::sqrt(norm2(row - c0)));
        if (!std::isfinite(norm)) fail("{}: a key's norm exceeds fp16's ±65504", what);
        put_fp16(out, k.norm_at + 2 * row, norm);
        if (o == 0) continue;
        put_fp16(out, k.outlier_norm_at + 2 * row, to_fp16(std::sqrt(outlier2)));
        std::uint8_t* bits = out.data() + k.outlier_bits_at + row * (layer.m_outlier / 8);
        for (std::int64_t j = 0; j < layer.m_outlier; ++j)  // qjl_quant_kernel.cu: bit j set when the sketch is > 0
          bits[j / 8] |= static_cast<std::uint8_t>(unsigned{sketch_o(row - g0, j) > 0} << (j % 8));
      }
    }
    inlier_norm.head(rows) = inlier_x.topRows(rows).rowwise().norm();
    // One GEMM, in this thread (the stage runs its tensors in parallel).
    sketch.topRows(rows).noalias() = inlier.topRows(rows) * Sf.transpose();
    for (std::int64_t i = 0; i < rows; ++i) {
      const float* v = sketch.data() + i * layer.m;
      const float near = static_cast<float>(margin * inlier_norm(i));
      for (std::int64_t j = 0; j < layer.m; ++j) positive[static_cast<std::size_t>(j)] = v[j] > 0;
      if (Eigen::Map<const Eigen::ArrayXf>(v, layer.m).abs().minCoeff() <= near)  // a vectorized test for any close one
        for (std::int64_t j = 0; j < layer.m; ++j)  // within the float product's rounding of 0: the double product decides
          if (std::abs(v[j]) <= near) positive[static_cast<std::size_t>(j)] = S.row(j).dot(inlier_x.row(i)) > 0;
      std::uint8_t* bits = out.data() + (c0 + i) * (layer.m / 8);
      for (std::int64_t b = 0; b < layer.m / 8; ++b) {
        const auto* p8 = positive.data() + 8 * b;
        bits[b] = static_cast<std::uint8_t>(p8[0] | p8[1] << 1 | p8[2] << 2 | p8[3] << 3 | p8[4] << 4 | p8[5] << 5 | p8[6] << 6 | p8[7] << 7);
      }
    }
  }
  for (std::int64_t i = k.nq; i < n; ++i)
    for (std::int64_t d = 0; d < D; ++d) put_fp16(out, k.residual_at + 2 * ((i - k.nq) * D + d), x[static_cast<std::size_t>(i * D + d)]);
  return out;
}

void qjl_unpack_keys(std::span<const std::uint8_t> packed, std::int64_t n, int head_dim, bool token_rows,
                     const QjlLayer& layer, const QjlParams& p, std::span<const double> s, std::span<float> out) {
  const std::int64_t D = head_dim;
  const auto k = qjl_key_layout(n, head_dim, token_rows, layer, p);
  if (static_cast<std::int64_t>(packed.size()) != k.total)
    fail("qjl: {} bytes for a [{}, {}] key tensor whose packed form takes {}", packed.size(), n, D, k.total);
  if (static_cast<std::int64_t>(out.size()) != n * D) fail("qjl_unpack_keys: {} values out for [{}, {}]", out.size(), n, D);
  if (static_cast<std::int64_t>(s.size()) != layer.m * D) fail("qjl: a sketch of {} values for [{}, {}]", s.size(), layer.m, D);
  const Eigen::Map<const RowMajor> S(s.data(), layer.m, D);
  const std::int64_t G = p.group, chunk = chunk_rows(G);
  // The inlier term Sᵀ(±b) of a chunk's rows is one float GEMM ([rows, m] signs · S [m, D]): each
  // entry errs from the double sum by at most (m + 1)·2⁻²⁴·Σ_j|S_jd| (S rounded to float, an m-term
  // float sum; Higham §3.1), relative ~1e-6 in practice; the outlier term (o channels) is in double.
  const RowMajorF Sf = S.cast<float>();
  RowMajorF signs(std::min(chunk, std::max<std::int64_t>(k.nq, 1)), layer.m), rebuilt(signs.rows(), D);
  std::vector<int> channels(static_cast<std::size_t>(layer.outliers));
  std::vector<char> is_outlier(static_cast<std::size_t>(D));
  const std::int64_t group_max = std::min(G, std::max<std::int64_t>(k.nq, 1));
  const RowMajor s_o_by_channel = S.topRows(layer.m_outlier).transpose();  // S_o's columns as contiguous rows
  Eigen::MatrixXd s_o(layer.m_outlier, layer.outliers);
  RowMajor signs_o(group_max, layer.m_outlier), rebuilt_o(group_max, layer.outliers);
  Eigen::VectorXd scales_o(group_max);
  for (std::int64_t c0 = 0; c0 < k.nq; c0 += chunk) {
    const std::int64_t rows = std::min(chunk, k.nq - c0);
    for (std::int64_t i = 0; i < rows; ++i) expand_signs(packed.data() + (c0 + i) * (layer.m / 8), layer.m, &signs(i, 0));
    rebuilt.topRows(rows).noalias() = signs.topRows(rows) * Sf;  // one GEMM, in this thread
    for (std::int64_t g0 = c0; g0 < c0 + rows; g0 += G) {
      const std::int64_t group_rows = std::min(G, c0 + rows - g0);
      std::fill(is_outlier.begin(), is_outlier.end(), 0);
      for (int i = 0; i < layer.outliers; ++i) {
        const int c = packed[static_cast<std::size_t>(k.index_at + (g0 / G) * layer.outliers + i)];
        if (c >= D) fail("qjl: outlier channel {} outside [0, {})", c, D);
        channels[static_cast<std::size_t>(i)] = c;
        is_outlier[static_cast<std::size_t>(c)] = 1;
        s_o.col(i) = s_o_by_channel.row(c).transpose();
      }
      for (std::int64_t row = g0; row < g0 + group_rows; ++row) {
        const double norm = get_fp16(packed, k.norm_at + 2 * row);
        const double norm_o = layer.outliers > 0 ? double{get_fp16(packed, k.outlier_norm_at + 2 * row)} : 0.0;
        // qjl_score_kernel.cu: the inlier norm is √(‖k‖² − ‖k_o‖²) of the stored norms; clamped at 0
        // where fp16 rounding makes the difference negative (the kernel would give NaN).
        const double scale = estimator_scale(layer.m) * std::sqrt(std::max(0.0, norm * norm - norm_o * norm_o));
        float* o = out.data() + row * D;
        // The estimator's score for q is q·k̂: its inlier term reads q's inlier coordinates only (the
        // kernel's q_sketch − q_outlier_sketch), its outlier term the outlier ones.
        for (std::int64_t d = 0; d < D; ++d)
          o[d] = is_outlier[static_cast<std::size_t>(d)] ? 0.0f : static_cast<float>(scale * double{rebuilt(row - c0, d)});
        if (layer.m_outlier == 0) continue;
        const double scale_o = estimator_scale(layer.m_outlier) * norm_o;
        expand_signs(packed.data() + k.outlier_bits_at + row * (layer.m_outlier / 8), layer.m_outlier, &signs_o(row - g0, 0));
        scales_o(row - g0) = scale_o;
      }
      if (layer.m_outlier == 0) continue;
      // The outlier term on the o outlier channels: [rows, m_o] signs · S_o's columns [m_o, o].
      rebuilt_o.topRows(group_rows).noalias() = scales_o.head(group_rows).asDiagonal() * (signs_o.topRows(group_rows) * s_o);
      for (std::int64_t row = g0; row < g0 + group_rows; ++row)
        for (int i = 0; i < layer.outliers; ++i)
          out[static_cast<std::size_t>(row * D + channels[static_cast<std::size_t>(i)])] = static_cast<float>(rebuilt_o(row - g0, i));
    }
  }
  for (std::int64_t i = k.nq; i < n; ++i)
    for (std::int64_t d = 0; d < D; ++d)
      out[static_cast<std::size_t>(i * D + d)] = get_fp16(packed, k.residual_at + 2 * ((i - k.nq) * D + d));
}

namespace {

class Qjl final : public QuantizerStage {
 public:
  explicit Qjl(QjlParams p) : p_(p) {}

  void quantize(const std::vector<StoredTensor*>& tensors) const override {
    quantize(tensors, [](int layer) { return layer; });
  }

  // In a chain: the sketch settings follow the model's layer index, which a one-layer slice of the
  // cache (compress_by_layer) names layer 0 (CacheSource::model_layer gives it back).
  std::unique_ptr<Compressed> apply(const CompressContext& ctx, std::unique_ptr<Compressed> rep) const override {
    quantize(rep->stored(), [&](int layer) { return ctx.cache.model_layer(layer); });
    return rep;
  }

 private:
  template <class ModelLayer>
  void quantize(const std::vector<StoredTensor*>& tensors, const ModelLayer& model_layer) const {
    std::map<int, QjlSketches> sketches;  // by head dimension: the same seeded matrices for every layer and head
    const KiviParams values{p_.vbits, p_.group, p_.buffer};
    struct Job {
      StoredTensor* tensor = nullptr;
      const std::vector<double>* sketch = nullptr;  // keys; null for values
      QjlLayer layer;
    };
    std::vector<Job> jobs;
    for (StoredTensor* t : tensors) {
      if (!t || t->layout == QuantLayout::none) continue;
      int l = 0, h = 0;
      std::string leaf;
      const bool head = parse_head_tensor(t->name, l, h, leaf);
      if (!head || (leaf != "key" && leaf != "value") || t->shape.size() != 2)
        fail("qjl quantizes the per-head keys and values a chain stores densely (full, or the cells an eviction "
             "keeps); stored tensor {} is not one (a transform's factors or whole-layer tensors): put qjl alone or "
             "after an eviction stage",
             t->name);
      const std::int64_t n = t->shape[0], c = t->shape[1];
      if (static_cast<std::int64_t>(t->values.size()) != n * c)
        fail("qjl: stored tensor {} holds {} values for shape [{}, {}]", t->name, t->values.size(), n, c);
      if (leaf == "value") {
        jobs.push_back({t, nullptr, {}});
        continue;
      }
      if (t->layout != QuantLayout::per_channel)
        fail("qjl: stored tensor {} is not a dense key tensor (layout per_channel)", t->name);
      const int D = static_cast<int>(c);
      auto it = sketches.find(D);
      if (it == sketches.end()) it = sketches.emplace(D, qjl_sketches(p_, D)).first;
      const int at = model_layer(l);
      jobs.push_back({t, &it->second.of(p_, at), qjl_layer(p_, at)});
    }
    // The tensors are independent: one thread each (each product runs in its own thread).
    core::parallel_for(static_cast<std::int64_t>(jobs.size()), [&](std::int64_t i) {
      const Job& job = jobs[static_cast<std::size_t>(i)];
      StoredTensor& t = *job.tensor;
      if (!job.sketch) {
        // llama3_qjl.py: values per token, KIVI-style (triton_quantize_and_pack_along_last_dim),
        // all but the last buffer_size tokens.
        kivi_quantize_tensor(t, values);
        t.format = fmt::format("qjl values {}", t.format);
        return;
      }
      const std::int64_t n = t.shape[0];
      const int D = static_cast<int>(t.shape[1]);
      t.packed = qjl_pack_keys(t.values, n, D, t.token_rows, job.layer, p_, *job.sketch, fmt::format("qjl: stored tensor {}", t.name));
      qjl_unpack_keys(t.packed, n, D, t.token_rows, job.layer, p_, *job.sketch, t.values);  // what the bytes give back
      t.format = fmt::format("qjl m{} mo{} o{} g{} r{} {}", job.layer.m, job.layer.m_outlier, job.layer.outliers, p_.group,
                             t.token_rows ? p_.buffer : 0, p_.orthogonal ? "orthogonal" : "gaussian");
      t.layout = QuantLayout::none;  // quantized data is not quantized again by a later stage
    });
  }

  QjlParams p_;
};

}  // namespace

MethodDef qjl_method() {
  MethodDef m;
  m.name = "qjl";
  m.kind = StageKind::quantizer;
  m.help =
      "QJL (docs/methods/qjl.md; arXiv 2406.03482, amirzandieh/QJL): keys (post-RoPE) as the m sign bits of a seeded JL "
      "projection of their inlier channels plus fp16 norms, the `outliers` largest-norm channels of each group of G "
      "keys sketched apart (m_outlier bits, fp16 norm, uint8 indices); attention reads the authors' unbiased estimator "
      "(the rebuild is its linear form); values KIVI-packed per token; the last T mod buffer keys and last buffer values "
      "at fp16. Runs on the dense per-head cells (alone or after an eviction: snapkv:…+qjl)";
  m.params = {
      {"m", ParamType::integer, "256", "sketch bits per key, layers ≥ initial_layers (authors' key_quantization_bits 256)", {}, 8, 8192},
      {"m_outlier", ParamType::integer, "256", "outlier sketch bits, ≤ m (authors' dim_outlier 256)", {}, 8, 8192},
      {"m_initial", ParamType::integer, "512", "sketch bits in layers < initial_layers (authors 512)", {}, 8, 8192},
      {"m_outlier_initial", ParamType::integer, "128", "outlier sketch bits there, ≤ m_initial (authors 128)", {}, 8, 8192},
      {"initial_layers", ParamType::integer, "15", "layers below this use m_initial (authors' initial_layers_count 15)", {}, 0, 1 << 20},
      {"outliers", ParamType::integer, "8", "outlier channels per group of G keys (authors' outlier_count_general 8)", {}, 0, 255},
      {"outliers_initial", ParamType::integer, "8", "outlier channels in initial layers (authors 8)", {}, 0, 255},
      {"vbits", ParamType::choice, "2", "value bits, KIVI per token (authors' value_quantization_bits 2)", {"2", "4", "8"}},
      {"group", ParamType::integer, "32", "G: keys per outlier group, value channels per group (authors' group_size 32)", {}, 1, 1 << 20},
      {"buffer", ParamType::integer, "128",
       "fp16 window: the last T mod buffer keys and last buffer values (authors' buffer_size 128; 0 = none; a multiple of group)",
       {}, 0, 1 << 30},
      {"seed", ParamType::integer, "42", "the projections' seed (authors' --seed 42)", {}, 0, 9007199254740991.0},
      {"matrix", ParamType::choice, "orthogonal",
       "projection: orthogonal (authors' rot=True: QR of each D-column Gaussian block, times √D) or gaussian (i.i.d. N(0,1), the paper's analysis)",
       {"orthogonal", "gaussian"}},
  };
  m.resolve = [](StageSpec& spec, const std::vector<std::string>&) { qjl_params(spec); };
  m.make_quantizer = [](const StageSpec& spec) -> std::unique_ptr<QuantizerStage> {
    return std::make_unique<Qjl>(qjl_params(spec));
  };
  m.layer_local = true;  // a layer's stored form depends on its own tensors, its index and the seed
  return m;
}

}  // namespace kvlab::compressors
