// gear: quantization + outliers + low-rank residual (gear.h, docs/methods/gear.md).
#include "compressors/methods/gear.h"

#include <fmt/format.h>

#include <Eigen/Core>
#include <Eigen/QR>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "compressors/packed_bytes.h"
#include "core/error.h"

namespace kvlab::compressors {

namespace {

using Matrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Thin Q of a Householder QR of m [rows, r] (rows ≥ r), as torch.linalg.qr(·).Q (signs may differ,
// which leaves Q·Qᵀ and so the approximation alone).
Matrix thin_q(const Matrix& m) {
  Eigen::HouseholderQR<Matrix> qr(m);
  return qr.householderQ() * Matrix::Identity(m.rows(), m.cols());
}

// The authors' fake_poweriteration_group on one [n, c] matrix: P₀ uniform [0, 1) [c, r]; `loop`
// steps of Q = E·P, P = Eᵀ·Q, orthonormalising P before and Q after the product in the last step
// only. E ≈ Q·Pᵀ: returns A = Q [n, r], B = Pᵀ [r, c].
std::pair<Matrix, Matrix> power_iteration(const Matrix& e, std::int64_t r, int loop, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  Matrix p(e.cols(), r), q;
  for (Eigen::Index i = 0; i < p.size(); ++i) p.data()[i] = uniform(rng);
  for (int step = 0; step < loop; ++step) {
    const bool last = step == loop - 1;
    if (last) p = thin_q(p);
    q = e * p;
    if (last) q = thin_q(q);
    p = e.transpose() * q;
  }
  return {q, p.transpose()};
}

// The best rank-r approximation (Eckart–Young): A = U_r·Σ_r, B = V_rᵀ.
std::pair<Matrix, Matrix> truncated_svd(const Matrix& e, std::int64_t r) {
  Eigen::BDCSVD<Matrix> svd(e, Eigen::ComputeThinU | Eigen::ComputeThinV);
  return {svd.matrixU().leftCols(r) * svd.singularValues().head(r).asDiagonal(), svd.matrixV().leftCols(r).transpose()};
}

}  // namespace

GearParams gear_params(const StageSpec& spec) {
  GearParams p;
  p.bits = static_cast<int>(spec.get_int("bits"));
  p.group = spec.get_int("group");
  p.outliers = spec.get_real("outliers");
  p.rank = spec.get_int("rank");
  p.rankv = spec.get_int("rankv");
  p.loop = static_cast<int>(spec.get_int("loop"));
  p.svd = spec.get("lowrank") == "svd";
  p.per_line = spec.get("select") == "line";
  p.seed = static_cast<std::uint64_t>(spec.get_int("seed"));
  // parse_stage checks these already; a hand-built StageSpec could still carry anything.
  if (p.bits != 2 && p.bits != 4) fail("spec 'gear': key 'bits' = {} is not one of: 2, 4", p.bits);
  if (p.group < 1) fail("spec 'gear': key 'group' = {} must be at least 1", p.group);
  if (!(p.outliers >= 0 && p.outliers <= 0.5)) fail("spec 'gear': key 'outliers' = {} must be in [0, 0.5]", p.outliers);
  if (p.rank < 0 || p.rankv < 0) fail("spec 'gear': keys 'rank' = {} and 'rankv' = {} must be at least 0", p.rank, p.rankv);
  if (p.loop < 1) fail("spec 'gear': key 'loop' = {} must be at least 1", p.loop);
  return p;
}

KiviParams gear_kivi_params(const GearParams& p) { return {p.bits, p.group, p.group}; }

bool gear_token_rows(QuantLayout layout, bool token_rows) { return layout == QuantLayout::per_channel && token_rows; }

GearLayout gear_layout(QuantLayout layout, std::int64_t n, std::int64_t c, bool token_rows, const GearParams& p) {
  if (layout == QuantLayout::none) fail("gear: layout none is not quantized");
  GearLayout g;
  const auto kp = gear_kivi_params(p);
  const bool rows = gear_token_rows(layout, token_rows);
  g.nq = kivi_quantized_rows(layout, n, rows, kp);
  const bool by_row = layout == QuantLayout::per_token;
  const std::int64_t len = !p.per_line ? g.nq * c : by_row ? c : g.nq;
  g.lines = !p.per_line ? 1 : by_row ? g.nq : c;
  g.per_line = static_cast<std::int64_t>(std::floor(p.outliers * static_cast<double>(len) / 2));
  g.outliers = 2 * g.per_line * g.lines;
  g.rank = std::min({by_row ? p.rankv : p.rank, n, c});
  g.outlier_at = kivi_bytes(layout, n, c, rows, kp);
  g.index_at = g.outlier_at + 2 * g.outliers;
  g.a_at = g.index_at + 4 * g.outliers;
  g.b_at = g.a_at + 2 * n * g.rank;
  g.total = g.b_at + 2 * g.rank * c;
  return g;
}

std::vector<std::int32_t> gear_outliers(std::span<const float> x, QuantLayout layout, std::int64_t nq, std::int64_t c,
                                        bool by_line, std::int64_t per_line) {
  std::vector<std::int32_t> out;
  if (per_line == 0) return out;
  const bool by_row = layout == QuantLayout::per_token;
  const std::int64_t len = !by_line ? nq * c : by_row ? c : nq, lines = !by_line ? 1 : by_row ? nq : c;
  std::vector<std::int32_t> line(static_cast<std::size_t>(len));
  for (std::int64_t l = 0; l < lines; ++l) {
    for (std::int64_t i = 0; i < len; ++i)
      line[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(!by_line ? i : by_row ? l * c + i : i * c + l);
    // (value, index) order, a strict total order, so each end is one set: ties go to the lower
    // index at the low end, the higher at the high end. nth_element keeps it O(len).
    const auto before = [&](std::int32_t a, std::int32_t b) { return x[a] < x[b] || (x[a] == x[b] && a < b); };
    std::nth_element(line.begin(), line.begin() + per_line, line.end(), before);
    std::sort(line.begin(), line.begin() + per_line, before);
    std::nth_element(line.begin() + per_line, line.end() - per_line, line.end(), before);
    std::sort(line.end() - per_line, line.end(), before);
    out.insert(out.end(), line.begin(), line.begin() + per_line);
    out.insert(out.end(), line.end() - per_line, line.end());
  }
  return out;
}

std::vector<std::uint8_t> gear_pack(std::span<const float> x, QuantLayout layout, std::int64_t n, std::int64_t c,
                                    bool token_rows, const GearParams& p, const std::string& what) {
  if (static_cast<std::int64_t>(x.size()) != n * c) fail("{}: {} values for shape [{}, {}]", what, x.size(), n, c);
  const auto g = gear_layout(layout, n, c, token_rows, p);
  const auto kp = gear_kivi_params(p);
  const bool rows = gear_token_rows(layout, token_rows);
  // 1. Outliers, and the line means that stand in for them while quantizing (computed over the
  //    whole line, outliers included, as the authors' input.mean(dim=-1)).
  const auto outliers = gear_outliers(x, layout, g.nq, c, p.per_line, g.per_line);
  std::vector<float> inlier(x.begin(), x.end());
  const bool by_row = layout == QuantLayout::per_token;
  const std::int64_t len = by_row ? c : g.nq;  // of the line whose mean stands in for an outlier
  if (!outliers.empty()) {
    std::vector<double> mean(static_cast<std::size_t>(by_row ? g.nq : c), 0.0);
    for (std::int64_t i = 0; i < g.nq; ++i)
      for (std::int64_t j = 0; j < c; ++j) mean[static_cast<std::size_t>(by_row ? i : j)] += x[static_cast<std::size_t>(i * c + j)];
    for (const std::int32_t at : outliers)
      inlier[static_cast<std::size_t>(at)] = to_fp16(mean[static_cast<std::size_t>(by_row ? at / c : at % c)] / static_cast<double>(len));
  }
  // 2. The codes.
  auto out = kivi_pack(inlier, layout, n, c, rows, kp, what);
  out.resize(static_cast<std::size_t>(g.total));
  std::vector<float> rebuilt(static_cast<std::size_t>(n * c));
  kivi_unpack(std::span<const std::uint8_t>(out.data(), static_cast<std::size_t>(g.outlier_at)), layout, n, c, rows, kp, rebuilt);
  for (std::size_t k = 0; k < outliers.size(); ++k) {
    const float v = x[static_cast<std::size_t>(outliers[k])];  // fp16 already: stored exactly
    put_fp16(out, g.outlier_at + 2 * static_cast<std::int64_t>(k), v);
    std::memcpy(out.data() + g.index_at + 4 * static_cast<std::int64_t>(k), &outliers[k], 4);
    rebuilt[static_cast<std::size_t>(outliers[k])] = to_fp16(v);
  }
  // 3. The residual's low-rank factors.
  if (g.rank > 0) {
    Matrix e(n, c);
    for (std::int64_t i = 0; i < n * c; ++i) e.data()[i] = double{x[static_cast<std::size_t>(i)]} - rebuilt[static_cast<std::size_t>(i)];
    const auto [a, b] = p.svd ? truncated_svd(e, g.rank) : power_iteration(e, g.rank, p.loop, p.seed);
    for (std::int64_t i = 0; i < n * g.rank; ++i) {
      const float v = to_fp16(a.data()[i]);
      if (!std::isfinite(v)) fail("{}: a low-rank factor exceeds fp16's range", what);
      put_fp16(out, g.a_at + 2 * i, v);
    }
    for (std::int64_t i = 0; i < g.rank * c; ++i) {
      const float v = to_fp16(b.data()[i]);
      if (!std::isfinite(v)) fail("{}: a low-rank factor exceeds fp16's range", what);
      put_fp16(out, g.b_at + 2 * i, v);
    }
  }
  return out;
}

void gear_unpack(std::span<const std::uint8_t> packed, QuantLayout layout, std::int64_t n, std::int64_t c,
                 bool token_rows, const GearParams& p, std::span<float> out) {
  const auto g = gear_layout(layout, n, c, token_rows, p);
  if (static_cast<std::int64_t>(packed.size()) != g.total)
    fail("gear: {} bytes for a [{}, {}] tensor whose packed form takes {}", packed.size(), n, c, g.total);
  if (static_cast<std::int64_t>(out.size()) != n * c) fail("gear_unpack: {} values out for [{}, {}]", out.size(), n, c);
  kivi_unpack(packed.first(static_cast<std::size_t>(g.outlier_at)), layout, n, c, gear_token_rows(layout, token_rows),
              gear_kivi_params(p), out);
  for (std::int64_t k = 0; k < g.outliers; ++k) {
    std::int32_t at = 0;
    std::memcpy(&at, packed.data() + g.index_at + 4 * k, 4);
    if (at < 0 || at >= n * c) fail("gear: outlier index {} outside [0, {})", at, n * c);
    out[static_cast<std::size_t>(at)] = get_fp16(packed, g.outlier_at + 2 * k);
  }
  if (g.rank == 0) return;
  Matrix a(n, g.rank), b(g.rank, c);
  for (std::int64_t i = 0; i < n * g.rank; ++i) a.data()[i] = get_fp16(packed, g.a_at + 2 * i);
  for (std::int64_t i = 0; i < g.rank * c; ++i) b.data()[i] = get_fp16(packed, g.b_at + 2 * i);
  const Matrix lr = a * b;
  for (std::int64_t i = 0; i < n * c; ++i)
    out[static_cast<std::size_t>(i)] = static_cast<float>(double{out[static_cast<std::size_t>(i)]} + lr.data()[i]);
}

void gear_quantize_tensor(StoredTensor& t, const GearParams& p) {
  if (t.layout == QuantLayout::none) return;
  if (t.shape.size() != 2)
    fail("gear: stored tensor {} has {} dimensions; quantizable tensors are [n, c]", t.name, t.shape.size());
  const std::int64_t n = t.shape[0], c = t.shape[1];
  if (static_cast<std::int64_t>(t.values.size()) != n * c)
    fail("gear: stored tensor {} holds {} values for shape [{}, {}]", t.name, t.values.size(), n, c);
  t.packed = gear_pack(t.values, t.layout, n, c, t.token_rows, p, fmt::format("gear: stored tensor {}", t.name));
  gear_unpack(t.packed, t.layout, n, c, t.token_rows, p, t.values);  // the values are what the bytes give back
  const auto g = gear_layout(t.layout, n, c, t.token_rows, p);
  t.format = fmt::format("gear{} g{} s{} r{}", p.bits, p.group, format_real(p.outliers), g.rank);
  t.layout = QuantLayout::none;  // quantized data is not quantized again by a later stage
}

namespace {

class Gear final : public QuantizerStage {
 public:
  explicit Gear(GearParams p) : p_(p) {}
  void quantize(const std::vector<StoredTensor*>& tensors) const override {
    for (StoredTensor* t : tensors)
      if (t) gear_quantize_tensor(*t, p_);
  }

 private:
  GearParams p_;
};

}  // namespace

MethodDef gear_method() {
  MethodDef m;
  m.name = "gear";
  m.kind = StageKind::quantizer;
  m.help =
      "GEAR (docs/methods/gear.md; arXiv 2403.05527, opengear-project/GEAR compress_method GEAR): KIVI-style "
      "quantization of what is stored (keys per channel in groups of `group` tokens, the last T mod group tokens at "
      "fp16; values per token), a fraction `outliers` of each tensor's entries (its lowest and highest values, "
      "or each channel's / token's) kept exact at fp16 with int32 indices, and the quantization residual's rank-`rank` "
      "approximation (power iteration, `loop` steps, or an exact SVD) as fp16 factors";
  m.params = {
      {"bits", ParamType::choice, "2", "bits per code (the authors' GEAR runs 2; 4 for GEAR-KCVT)", {"2", "4"}},
      {"group", ParamType::integer, "64", "elements per quantization group (authors' group_size 64)", {}, 1, 1 << 20},
      {"outliers", ParamType::real, "0.02", "fraction s kept exact, half the lowest values, half the highest (authors' left 0.02)", {}, 0, 0.5},
      {"select", ParamType::choice, "tensor",
       "outliers per tensor: tensor (s of the whole, the authors' dense-sparse rule) or line (s of each token / channel, "
       "their later per-line rule)",
       {"tensor", "line"}},
      {"rank", ParamType::integer, "4", "rank of the keys' (per-channel tensors') residual (authors' prefill rank 4)", {}, 0, 1 << 20},
      {"rankv", ParamType::integer, "4", "rank of the values' (per-token tensors') residual (authors' prefill rankv 4)", {}, 0, 1 << 20},
      {"loop", ParamType::integer, "3", "power-iteration steps (authors' loop 3)", {}, 1, 1000},
      {"lowrank", ParamType::choice, "power", "power: the authors' power iteration; svd: the exact best rank-r factors", {"power", "svd"}},
      {"seed", ParamType::integer, "0", "seed of the power iteration's uniform start (the same for every tensor, so a layer compresses alike alone or in its cache)", {}, 0, 1e15},
  };
  m.make_quantizer = [](const StageSpec& spec) -> std::unique_ptr<QuantizerStage> {
    return std::make_unique<Gear>(gear_params(spec));
  };
  m.layer_local = true;
  return m;
}

}  // namespace kvlab::compressors
