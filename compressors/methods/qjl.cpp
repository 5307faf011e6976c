// qjl: 1-bit JL sketches of the keys, KIVI-packed values (qjl.h, docs/methods/qjl.md).
#include "compressors/methods/qjl.h"

#include <fmt/format.h>

#include <Eigen/Core>
#include <Eigen/QR>

#include <algorithm>
#include <cmath>
#include <map>
#include <numbers>
#include <numeric>
#include <random>

#include "compressors/dense.h"
#include "compressors/methods/kivi.h"
#include "compressors/packed_bytes.h"
#include "core/error.h"

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
  const auto X = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(x.data(), n, D).cast<double>();
  const std::int64_t G = p.group;  // outlier groups; without outliers, just blocks of rows
  std::vector<int> order(static_cast<std::size_t>(D));
  for (std::int64_t r0 = 0; r0 < k.nq; r0 += G) {
    const std::int64_t rows = std::min(G, k.nq - r0);
    const RowMajor block = X.middleRows(r0, rows);
    // The group's outlier channels: the `outliers` largest norms over its rows (torch.topk of
    // key_states.norm(dim=-2)); ties to the lower channel.
    Eigen::VectorXd is_outlier = Eigen::VectorXd::Zero(D);
    if (layer.outliers > 0) {
      const Eigen::VectorXd norm2 = block.colwise().squaredNorm().transpose();
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return norm2[a] > norm2[b]; });
      for (int i = 0; i < layer.outliers; ++i) {
        is_outlier[order[static_cast<std::size_t>(i)]] = 1;
        out[static_cast<std::size_t>(k.index_at + (r0 / G) * layer.outliers + i)] = static_cast<std::uint8_t>(order[static_cast<std::size_t>(i)]);
      }
    }
    const RowMajor inlier = block * (1 - is_outlier.array()).matrix().asDiagonal();
    const RowMajor outlier = block * is_outlier.asDiagonal();
    const RowMajor sketch = inlier * S.transpose();                                 // [rows, m]
    const RowMajor sketch_o = outlier * S.topRows(layer.m_outlier).transpose();    // [rows, m_o]
    for (std::int64_t i = 0; i < rows; ++i) {
      const std::int64_t row = r0 + i;
      for (std::int64_t j = 0; j < layer.m; ++j)  // qjl_quant_kernel.cu: bit j set when the sketch is > 0
        if (sketch(i, j) > 0) out[static_cast<std::size_t>(row * layer.m / 8 + j / 8)] |= static_cast<std::uint8_t>(1u << (j % 8));
      for (std::int64_t j = 0; j < layer.m_outlier; ++j)
        if (sketch_o(i, j) > 0)
          out[static_cast<std::size_t>(k.outlier_bits_at + row * layer.m_outlier / 8 + j / 8)] |= static_cast<std::uint8_t>(1u << (j % 8));
      // Norms at fp16, as the authors keep them (key_states_norm, key_outliers_norm in the model's dtype).
      const float norm = to_fp16(block.row(i).norm()), norm_o = to_fp16(outlier.row(i).norm());
      if (!std::isfinite(norm)) fail("{}: a key's norm exceeds fp16's ±65504", what);
      put_fp16(out, k.norm_at + 2 * row, norm);
      if (layer.outliers > 0) put_fp16(out, k.outlier_norm_at + 2 * row, norm_o);
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
  const std::int64_t G = p.group;
  const auto sign = [&](std::int64_t at, std::int64_t j) {
    return packed[static_cast<std::size_t>(at + j / 8)] >> (j % 8) & 1 ? 1.0 : -1.0;
  };
  for (std::int64_t r0 = 0; r0 < k.nq; r0 += G) {
    const std::int64_t rows = std::min(G, k.nq - r0);
    Eigen::VectorXd is_outlier = Eigen::VectorXd::Zero(D);
    for (int i = 0; i < layer.outliers; ++i) {
      const int c = packed[static_cast<std::size_t>(k.index_at + (r0 / G) * layer.outliers + i)];
      if (c >= D) fail("qjl: outlier channel {} outside [0, {})", c, D);
      is_outlier[c] = 1;
    }
    RowMajor b(rows, layer.m), c(rows, layer.m_outlier);
    Eigen::VectorXd scale(rows), scale_o(rows);
    for (std::int64_t i = 0; i < rows; ++i) {
      const std::int64_t row = r0 + i;
      for (std::int64_t j = 0; j < layer.m; ++j) b(i, j) = sign(row * layer.m / 8, j);
      for (std::int64_t j = 0; j < layer.m_outlier; ++j) c(i, j) = sign(k.outlier_bits_at + row * layer.m_outlier / 8, j);
      const double norm = get_fp16(packed, k.norm_at + 2 * row);
      const double norm_o = layer.outliers > 0 ? double{get_fp16(packed, k.outlier_norm_at + 2 * row)} : 0.0;
      // qjl_score_kernel.cu: the inlier norm is √(‖k‖² − ‖k_o‖²) of the stored norms; clamped at 0
      // where fp16 rounding makes the difference negative (the kernel would give NaN).
      scale[i] = estimator_scale(layer.m) * std::sqrt(std::max(0.0, norm * norm - norm_o * norm_o));
      scale_o[i] = layer.m_outlier > 0 ? estimator_scale(layer.m_outlier) * norm_o : 0.0;
    }
    // The estimator's score for q is q·k̂ with k̂ below: its inlier term reads q's inlier
    // coordinates only (the kernel's q_sketch − q_outlier_sketch), its outlier term the outlier ones.
    RowMajor rebuilt = scale.asDiagonal() * (b * S) * (1 - is_outlier.array()).matrix().asDiagonal();
    if (layer.m_outlier > 0) rebuilt += scale_o.asDiagonal() * (c * S.topRows(layer.m_outlier)) * is_outlier.asDiagonal();
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t d = 0; d < D; ++d) out[static_cast<std::size_t>((r0 + i) * D + d)] = static_cast<float>(rebuilt(i, d));
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
        // llama3_qjl.py: values per token, KIVI-style (triton_quantize_and_pack_along_last_dim),
        // all but the last buffer_size tokens.
        kivi_quantize_tensor(*t, values);
        t->format = fmt::format("qjl values {}", t->format);
        continue;
      }
      if (t->layout != QuantLayout::per_channel)
        fail("qjl: stored tensor {} is not a dense key tensor (layout per_channel)", t->name);
      const int D = static_cast<int>(c);
      auto it = sketches.find(D);
      if (it == sketches.end()) it = sketches.emplace(D, qjl_sketches(p_, D)).first;
      const int at = model_layer(l);
      const auto layer = qjl_layer(p_, at);
      const auto& s = it->second.of(p_, at);
      t->packed = qjl_pack_keys(t->values, n, D, t->token_rows, layer, p_, s, fmt::format("qjl: stored tensor {}", t->name));
      qjl_unpack_keys(t->packed, n, D, t->token_rows, layer, p_, s, t->values);  // what the bytes give back
      t->format = fmt::format("qjl m{} mo{} o{} g{} r{} {}", layer.m, layer.m_outlier, layer.outliers, p_.group,
                              t->token_rows ? p_.buffer : 0, p_.orthogonal ? "orthogonal" : "gaussian");
      t->layout = QuantLayout::none;  // quantized data is not quantized again by a later stage
    }
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
