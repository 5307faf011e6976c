// qjl against oracles written here: the packed form read by the test's own decoder of the layout
// (qjl.h) and checked against signs, norms and outlier channels the test computes itself; the
// authors' estimator (qjl_score_kernel.cu) computed from those decoded bits against q·k̂ of the
// stage's rebuild; the estimator's mean over seeds against q·k (Gaussian rows: unbiased, with the
// variance in closed form; orthogonal rows: the closed-form factor c_D of a row uniform on the
// sphere of radius √D); values against a per-token min-max dequantization written here; bytes by
// hand; the scorer path through a snapkv chain against the estimator on post-RoPE queries.
#include "compressors/methods/qjl.h"

#include <gtest/gtest.h>

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <map>
#include <numeric>
#include <random>

#include "compressors/chain.h"
#include "compressors/dense.h"
#include "compressors/score.h"
#include "compressors/test_caches.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

float fp16(double x) { return static_cast<float>(Eigen::half(static_cast<float>(x))); }

float read_fp16(std::span<const std::uint8_t> b, std::int64_t at) {
  const auto bits = static_cast<std::uint16_t>(b[at] | b[at + 1] << 8);
  return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
}

std::vector<float> normal_fp16(std::int64_t count, std::uint64_t seed, double mean = 0.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(mean, 1.0);
  std::vector<float> x(static_cast<std::size_t>(count));
  for (auto& v : x) v = fp16(normal(rng));
  return x;
}

// One key row as the test reads it from a packed form, by the layout qjl.h documents.
struct DecodedRow {
  std::vector<int> bits, outlier_bits;  // 0/1
  float norm = 0, outlier_norm = 0;
  std::vector<int> outlier_channels;    // of its group
};

DecodedRow decode_row(std::span<const std::uint8_t> packed, std::int64_t n, std::int64_t row, const QjlLayer& l,
                      std::int64_t nq, std::int64_t group) {
  DecodedRow r;
  const std::int64_t inlier_bytes = nq * l.m / 8, outlier_bytes = nq * l.m_outlier / 8;
  for (std::int64_t j = 0; j < l.m; ++j) r.bits.push_back(packed[row * (l.m / 8) + j / 8] >> (j % 8) & 1);
  for (std::int64_t j = 0; j < l.m_outlier; ++j)
    r.outlier_bits.push_back(packed[inlier_bytes + row * (l.m_outlier / 8) + j / 8] >> (j % 8) & 1);
  const std::int64_t norms = inlier_bytes + outlier_bytes;
  r.norm = read_fp16(packed, norms + 2 * row);
  const std::int64_t index = norms + 2 * nq + (l.outliers > 0 ? 2 * nq : 0);
  if (l.outliers > 0) {
    r.outlier_norm = read_fp16(packed, norms + 2 * nq + 2 * row);
    for (int i = 0; i < l.outliers; ++i) r.outlier_channels.push_back(packed[index + (row / group) * l.outliers + i]);
  }
  (void)n;
  return r;
}

// The authors' score (qjl_score_kernel.cu) of query q against a decoded row, in double: the query
// sketch over inlier channels against the ±1 bits, the outlier sketch over outlier channels.
double estimator(const DecodedRow& r, std::span<const double> q, std::span<const double> s, int D, const QjlLayer& l) {
  std::vector<int> outlier(D, 0);
  for (int c : r.outlier_channels) outlier[c] = 1;
  double in = 0, out = 0;
  for (std::int64_t j = 0; j < l.m; ++j) {
    double sq = 0, sq_o = 0;
    for (int d = 0; d < D; ++d) (outlier[d] ? sq_o : sq) += s[j * D + d] * q[d];
    in += r.bits[j] ? sq : -sq;
    if (j < l.m_outlier) out += r.outlier_bits[j] ? sq_o : -sq_o;
  }
  const double n_in = std::sqrt(std::max(0.0, double{r.norm} * r.norm - double{r.outlier_norm} * r.outlier_norm));
  const double c = std::sqrt(std::numbers::pi / 2);
  return c / l.m * n_in * in + (l.m_outlier > 0 ? c / l.m_outlier * r.outlier_norm * out : 0.0);
}

// Small sketches (layer 0 initial: m 128, m_o 16; later layers m 64, m_o 32), 4 outlier channels
// per group of 16, a 32-token window; `extra` (",key=value,...") overrides.
QjlParams small_params(std::string_view extra = "") {
  std::map<std::string, std::string> keys = {{"m", "64"},         {"m_outlier", "32"}, {"m_initial", "128"},
                                             {"m_outlier_initial", "16"}, {"initial_layers", "1"}, {"outliers", "4"},
                                             {"outliers_initial", "4"},   {"group", "16"},     {"buffer", "32"}};
  std::string rest(extra);
  while (!rest.empty()) {
    rest.erase(0, 1);  // the ','
    const auto end = rest.find(','), eq = rest.find('=');
    keys[rest.substr(0, eq)] = rest.substr(eq + 1, end == std::string::npos ? std::string::npos : end - eq - 1);
    rest = end == std::string::npos ? "" : rest.substr(end);
  }
  std::string text;
  for (const auto& [k, v] : keys) text += (text.empty() ? "" : ",") + k + "=" + v;
  return qjl_params(parse_stage(qjl_method(), text));
}

TEST(Qjl, SpecDefaultsAndBadKeys) {
  const auto spec = parse_spec("qjl").stages.at(0);
  // run_longbench.py's defaults (setup_model_and_tokenizer and its argparse), dim_outlier from its
  // QJLSketch calls, rot=True.
  EXPECT_EQ(spec.to_string(),
            "qjl:m=256,m_outlier=256,m_initial=512,m_outlier_initial=128,initial_layers=15,outliers=8,"
            "outliers_initial=8,vbits=2,group=32,buffer=128,seed=42,matrix=orthogonal");
  const auto message = [](const std::string& text) { return testing::error_of([&] { parse_spec(text); }); };
  for (const std::string bad : {"m=12", "m=0", "m=16384", "m_outlier=512", "m_initial=100", "m_outlier_initial=1024",
                                "outliers=256", "outliers=-1", "outliers_initial=300", "vbits=3", "group=0",
                                "buffer=100", "buffer=-32", "seed=-1", "matrix=hadamard", "initial_layers=-1"}) {
    const auto key = bad.substr(0, bad.find('='));
    const auto m = message("qjl:" + bad);
    EXPECT_NE(m.find("'" + key + "'"), std::string::npos) << bad << ": " << m;
  }
  EXPECT_NE(message("qjl:m=12").find("multiple of 8 in [8, 8192]"), std::string::npos) << message("qjl:m=12");
  EXPECT_NE(message("qjl:buffer=100").find("multiple of group = 32"), std::string::npos);
  EXPECT_EQ(method("qjl").kind, StageKind::quantizer);
  EXPECT_NE(describe_methods().find("qjl (quantizer)"), std::string::npos) << "its registry line";
  const auto p = small_params(",vbits=4,seed=7,matrix=gaussian");
  EXPECT_EQ(p.m, 64);
  EXPECT_EQ(p.vbits, 4);
  EXPECT_EQ(p.seed, 7u);
  EXPECT_FALSE(p.orthogonal);
  EXPECT_EQ(qjl_layer(p, 0).m, 128) << "layer 0 < initial_layers = 1";
  EXPECT_EQ(qjl_layer(p, 0).m_outlier, 16);
  EXPECT_EQ(qjl_layer(p, 1).m, 64);
  EXPECT_EQ(qjl_layer(small_params(",outliers=0"), 3).m_outlier, 0) << "no outliers: no outlier sketch";
  // More outlier channels than a head has: an error naming the keys, at quantization (D is the cache's).
  auto t = StoredTensor::fp16("layer0/head0/key", {4, 4}, std::vector<float>(16, 1.0f), QuantLayout::per_channel, true);
  const auto m = testing::error_of([&] { make_quantizer(parse_spec("qjl:outliers_initial=5").stages.at(0))->quantize({&t}); });
  EXPECT_NE(m.find("'outliers_initial'"), std::string::npos) << m;
}

TEST(Qjl, SketchesAreSeededAndOrthogonalBlocksAreScaledRotations) {
  const int D = 16;
  const auto p = small_params(), p7 = small_params(",seed=7");
  const auto a = qjl_sketches(p, D), b = qjl_sketches(p, D), c = qjl_sketches(p7, D);
  EXPECT_EQ(a.general, b.general);
  EXPECT_EQ(a.initial, b.initial);
  EXPECT_NE(a.general, c.general);
  EXPECT_NE(a.general, a.initial);
  // rot=True: every block of D rows is √D times an orthogonal matrix: S_b S_bᵀ = D·I.
  for (const auto* s : {&a.general, &a.initial}) {
    const auto rows = static_cast<std::int64_t>(s->size()) / D;
    for (std::int64_t r0 = 0; r0 < rows; r0 += D)
      for (int i = 0; i < D; ++i)
        for (int j = 0; j < D; ++j) {
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += (*s)[(r0 + i) * D + d] * (*s)[(r0 + j) * D + d];
          EXPECT_NEAR(dot, i == j ? D : 0.0, 1e-9) << r0 << " " << i << " " << j;
        }
  }
  // gaussian: i.i.d. N(0, 1) entries: mean within 5σ/√N of 0 and variance within 5·√(2/N) of 1.
  const auto g = qjl_sketches(small_params(",matrix=gaussian"), D).initial;
  double sum = 0, sum2 = 0;
  for (double v : g) sum += v, sum2 += v * v;
  const double N = static_cast<double>(g.size());
  EXPECT_LT(std::abs(sum / N), 5 / std::sqrt(N));
  EXPECT_LT(std::abs(sum2 / N - 1), 5 * std::sqrt(2 / N));
}

TEST(Qjl, PackedFormIsWhatTheTestDecodes) {
  const int D = 32;
  const std::int64_t n = 100;
  const auto p = small_params();
  const auto l = qjl_layer(p, 1);  // m 64, m_outlier 32, 4 outliers
  const auto s = qjl_sketches(p, D).general;
  // Channels of growing scale, so outliers are real and distinct; fp16 values.
  auto x = normal_fp16(n * D, 3);
  for (std::int64_t i = 0; i < n; ++i)
    for (int d = 0; d < D; ++d) x[i * D + d] = fp16(x[i * D + d] * (1 + 0.1 * d));
  const auto packed = qjl_pack_keys(x, n, D, true, l, p, s, "test");
  // Bytes by hand: nq = 100 − 100 mod 32 = 96 rows; 64 + 32 bits, two fp16 norms each; 6 groups of
  // 16 with 4 uint8 indices; 4 residual rows of 32 fp16.
  const std::int64_t nq = 96;
  EXPECT_EQ(static_cast<std::int64_t>(packed.size()), nq * 64 / 8 + nq * 32 / 8 + 2 * nq + 2 * nq + 6 * 4 + 4 * 32 * 2);
  EXPECT_EQ(qjl_key_layout(n, D, true, l, p).total, static_cast<std::int64_t>(packed.size()));
  EXPECT_EQ(qjl_key_layout(n, D, false, l, p).nq, n) << "rows that are not tokens have no fp16 window";
  for (std::int64_t row = 0; row < nq; ++row) {
    const auto r = decode_row(packed, n, row, l, nq, p.group);
    // The group's outlier channels: the test's own top-4 of Σ_rows x² (distinct here).
    const std::int64_t g0 = row / p.group * p.group;
    std::vector<double> norm2(D, 0.0);
    for (std::int64_t i = g0; i < g0 + p.group; ++i)
      for (int d = 0; d < D; ++d) norm2[d] += double{x[i * D + d]} * x[i * D + d];
    std::vector<int> order(D);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return norm2[a] > norm2[b]; });
    std::vector<int> want(order.begin(), order.begin() + 4), got = r.outlier_channels;
    ASSERT_EQ(got, want) << "row " << row << ": indices by descending norm";
    std::vector<int> outlier(D, 0);
    for (int c : want) outlier[c] = 1;
    double n2 = 0, no2 = 0;
    for (int d = 0; d < D; ++d) {
      const double v = x[row * D + d];
      n2 += v * v;
      if (outlier[d]) no2 += v * v;
    }
    EXPECT_EQ(r.norm, fp16(std::sqrt(n2))) << row;
    EXPECT_EQ(r.outlier_norm, fp16(std::sqrt(no2))) << row;
    for (std::int64_t j = 0; j < l.m; ++j) {
      double sk = 0, sk_o = 0;
      for (int d = 0; d < D; ++d) (outlier[d] ? sk_o : sk) += s[j * D + d] * x[row * D + d];
      if (std::abs(sk) > 1e-9) {
        EXPECT_EQ(r.bits[j], sk > 0 ? 1 : 0) << row << " bit " << j;
      }
      if (j < l.m_outlier && std::abs(sk_o) > 1e-9) {
        EXPECT_EQ(r.outlier_bits[j], sk_o > 0 ? 1 : 0) << row << " outlier bit " << j;
      }
    }
  }
  // The residual rows decode to the fp16 values exactly, and a wrong size is refused.
  std::vector<float> out(n * D);
  qjl_unpack_keys(packed, n, D, true, l, p, s, out);
  for (std::int64_t k = nq * D; k < n * D; ++k) EXPECT_EQ(out[k], x[k]) << k;
  auto short_form = packed;
  short_form.pop_back();
  EXPECT_NE(testing::error_of([&] { qjl_unpack_keys(short_form, n, D, true, l, p, s, out); }).find("bytes"), std::string::npos);
}

TEST(Qjl, RebuildGivesTheEstimatorForEveryQuery) {
  // q·k̂ = the authors' estimator from the decoded bits and norms, for any q: k̂ is the estimator's
  // linear form. Its rounding, entry d: the f32 result, ≤ 2⁻²⁴|k̂_d|; and the inlier term's float
  // product Σ_j ±S_jd (S rounded to f32, an m-term f32 sum, Higham §3.1), ≤ (m + 1)·2⁻²⁴·Σ_j|S_jd|
  // times the inlier scale √(π/2)/m·‖k_i‖. So |q·k̂ − estimator| ≤ Σ_d |q_d|·(those), with a 1%
  // allowance for second-order terms and the double sums. (A flipped bit moves the estimate by
  // 2·scale·|(S q)_j|, ~100× this bound here.)
  const int D = 32;
  const std::int64_t n = 70;
  for (const auto& extra : {std::string(""), std::string(",outliers=0"), std::string(",matrix=gaussian")}) {
    const auto p = small_params(extra);
    for (int layer : {0, 1}) {
      const auto l = qjl_layer(p, layer);
      const auto s = qjl_sketches(p, D).of(p, layer);
      const auto x = normal_fp16(n * D, 11 + layer, 0.5);
      const auto packed = qjl_pack_keys(x, n, D, true, l, p, s, "test");
      std::vector<float> khat(n * D);
      qjl_unpack_keys(packed, n, D, true, l, p, s, khat);
      const std::int64_t nq = n - n % p.buffer;
      for (std::uint64_t qs = 0; qs < 3; ++qs) {
        const auto qf = normal_fp16(D, 100 + qs);
        std::vector<double> q(qf.begin(), qf.end());
        for (std::int64_t row = 0; row < nq; ++row) {
          const auto r = decode_row(packed, n, row, l, nq, p.group);
          std::vector<int> outlier(D, 0);
          for (int c : r.outlier_channels) outlier[c] = 1;
          const double scale = std::sqrt(std::numbers::pi / 2) / l.m *
                               std::sqrt(std::max(0.0, double{r.norm} * r.norm - double{r.outlier_norm} * r.outlier_norm));
          double dot = 0, bound = 0;
          for (int d = 0; d < D; ++d) {
            double abs_s = 0;
            for (std::int64_t j = 0; j < l.m; ++j) abs_s += std::abs(s[j * D + d]);
            dot += q[d] * khat[row * D + d];
            bound += std::abs(q[d]) * (std::abs(khat[row * D + d]) + (outlier[d] ? 0.0 : (l.m + 1) * scale * abs_s)) * 0x1.0p-24;
          }
          EXPECT_NEAR(dot, estimator(r, q, s, D, l), 1.01 * bound + 1e-12) << extra << " layer " << layer << " row " << row;
        }
      }
    }
  }
}

// The estimator's mean over `seeds` sketches for one fixed key and query; returns mean and
// sample variance.
std::pair<double, double> estimates_over_seeds(const std::string& extra, const std::vector<float>& k,
                                               const std::vector<double>& q, int seeds) {
  const int D = static_cast<int>(k.size());
  double sum = 0, sum2 = 0;
  for (int seed = 0; seed < seeds; ++seed) {
    const auto p = qjl_params(parse_stage(qjl_method(), fmt::format("m=64,m_outlier=64,m_initial=8,m_outlier_initial=8,"
                                                                    "initial_layers=0,buffer=0,group=1,seed={}{}",
                                                                    seed, extra)));
    const auto l = qjl_layer(p, 0);
    const auto s = qjl_sketches(p, D).general;
    const auto packed = qjl_pack_keys(k, 1, D, true, l, p, s, "test");
    std::vector<float> khat(D);
    qjl_unpack_keys(packed, 1, D, true, l, p, s, khat);
    double e = 0;
    for (int d = 0; d < D; ++d) e += q[d] * khat[d];
    sum += e, sum2 += e * e;
  }
  const double mean = sum / seeds;
  return {mean, (sum2 - seeds * mean * mean) / (seeds - 1)};
}

TEST(Qjl, EstimatorIsUnbiasedOverSeeds) {
  const int D = 32, m = 64, seeds = 3000;
  const auto k = normal_fp16(D, 21, 0.3);
  auto qf = normal_fp16(D, 22);
  for (int d = 0; d < D; ++d) qf[d] = fp16(qf[d] + k[d]);  // correlated with k: a product well away from 0
  const std::vector<double> q(qf.begin(), qf.end());
  double qk = 0, q2 = 0, k2 = 0;
  for (int d = 0; d < D; ++d) qk += q[d] * k[d], q2 += q[d] * q[d], k2 += double{k[d]} * k[d];
  // The stored norm is fp16(‖k‖): the estimator's mean is q·k scaled by fp16(‖k‖)/‖k‖.
  const double norm_ratio = fp16(std::sqrt(k2)) / std::sqrt(k2), mean_true = qk * norm_ratio;
  ASSERT_GT(std::abs(qk), 0.3 * std::sqrt(q2 * k2)) << "a pair with a clear product";
  {
    // Gaussian rows, no outliers (the paper's Lemma): each of the m terms √(π/2)‖k‖ sign(s·k) s·q has
    // mean q·k and second moment (π/2)‖q‖²‖k‖², so the estimate's variance is exactly
    // ((π/2)‖q‖²‖k‖² − (q·k)²)/m ≤ π/(2m)‖q‖²‖k‖² (the paper's bound). Mean within 4 standard errors;
    // sample variance within 5·√(2/N) relative (a near-normal sum of 64 terms).
    const auto [mean, var] = estimates_over_seeds(",outliers=0,matrix=gaussian", k, q, seeds);
    const double nk2 = k2 * norm_ratio * norm_ratio;
    const double exact_var = (std::numbers::pi / 2 * q2 * nk2 - mean_true * mean_true) / m;
    EXPECT_NEAR(mean, mean_true, 4 * std::sqrt(exact_var / seeds)) << "q·k " << qk;
    EXPECT_NEAR(var / exact_var, 1.0, 5 * std::sqrt(2.0 / seeds));
    EXPECT_LE(var, std::numbers::pi / (2 * m) * q2 * k2 * (1 + 5 * std::sqrt(2.0 / seeds)));
  }
  {
    // Orthogonal rows (the authors' rot=True): each row is √D·u, u uniform on the sphere (up to a
    // sign the estimator ignores), so each term's mean is √(π/2)·√D·E|u₁|·q·k with
    // E|u₁| = Γ(D/2)/(√π Γ((D+1)/2)): c_D = 1.0078 for D = 32, not quite 1. Standard error from
    // the sample (the rows of a block are dependent).
    const double c = std::sqrt(std::numbers::pi / 2) * std::sqrt(double{D}) *
                     std::exp(std::lgamma(D / 2.0) - std::lgamma((D + 1) / 2.0)) / std::sqrt(std::numbers::pi);
    const auto [mean, var] = estimates_over_seeds(",outliers=0", k, q, seeds);
    EXPECT_NEAR(mean, c * mean_true, 4 * std::sqrt(var / seeds));
  }
  {
    // With 4 outlier channels (per key here: group = 1) the estimate is the inlier term plus the
    // outlier term, each unbiased for its part of q·k given the stored norms:
    // mean = n_i/‖k_i‖·q_i·k_i + fp16(‖k_o‖)/‖k_o‖·q_o·k_o; each term's standard deviation at most
    // √(π/(2m)) times its ‖q‖‖k‖ (Gaussian rows), so their sum's at most the sum of the two.
    std::vector<int> order(D);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return std::abs(k[a]) > std::abs(k[b]); });
    double qk_i = 0, qk_o = 0, ki2 = 0, ko2 = 0, qi2 = 0, qo2 = 0;
    for (int d = 0; d < D; ++d) {
      const bool o = std::find(order.begin(), order.begin() + 4, d) != order.begin() + 4;
      (o ? qk_o : qk_i) += q[d] * k[d], (o ? ko2 : ki2) += double{k[d]} * k[d], (o ? qo2 : qi2) += q[d] * q[d];
    }
    const double n = fp16(std::sqrt(k2)), no = fp16(std::sqrt(ko2)), ni = std::sqrt(n * n - no * no);
    const double expected = ni / std::sqrt(ki2) * qk_i + no / std::sqrt(ko2) * qk_o;
    const double sd = std::sqrt(std::numbers::pi / (2 * m)) * (std::sqrt(qi2) * ni + std::sqrt(qo2) * no);
    const auto [mean, var] = estimates_over_seeds(",outliers=4,matrix=gaussian", k, q, seeds);
    EXPECT_NEAR(mean, expected, 4 * sd / std::sqrt(double{seeds}));
    EXPECT_LE(var, sd * sd * (1 + 5 * std::sqrt(2.0 / seeds)));
  }
}

TEST(Qjl, ValuesArePerTokenMinMaxWithAnFp16Window) {
  // An independent per-token dequantization: per row and group of G channels, min and
  // (max − min)/(2^b − 1) at fp16, code = round-half-even((x − min)/scale) clamped to [0, 2^b − 1],
  // value code·scale + min; the last `buffer` rows at fp16. Within 1e-6 of the group's range (the
  // library may fuse code·scale + min into one FMA).
  const int D = 40;
  const std::int64_t n = 90;
  const auto x = normal_fp16(n * D, 31);
  for (int bits : {2, 4}) {
    const auto spec = parse_stage(qjl_method(), fmt::format("vbits={},group=16,buffer=32", bits));
    auto t = StoredTensor::fp16("layer2/head1/value", {n, D}, x, QuantLayout::per_token, true);
    pack_fp16_storage({&t});
    make_quantizer(spec)->quantize({&t});
    EXPECT_EQ(t.layout, QuantLayout::none);
    EXPECT_TRUE(t.format.starts_with("qjl values kivi")) << t.format;
    const std::int64_t nq = n - 32, groups_per_row = (D + 15) / 16;  // 3 groups: 16, 16, 8 channels
    EXPECT_EQ(t.bytes(), (nq * D * bits + 7) / 8 + 4 * nq * groups_per_row + 2 * 32 * D);
    const int top = (1 << bits) - 1;
    for (std::int64_t i = 0; i < n; ++i)
      for (int g0 = 0; g0 < D; g0 += 16) {
        const int g1 = std::min(D, g0 + 16);
        float lo = x[i * D + g0], hi = lo;
        for (int d = g0; d < g1; ++d) lo = std::min(lo, x[i * D + d]), hi = std::max(hi, x[i * D + d]);
        const float mn = fp16(lo), scale = fp16((double{hi} - lo) / top);
        for (int d = g0; d < g1; ++d) {
          const float v = x[i * D + d];
          float want = v;
          if (i < nq) {
            const float code = scale > 0 ? std::clamp(std::nearbyint((v - mn) / scale), 0.0f, float(top)) : 0.0f;
            want = code * scale + mn;
          }
          EXPECT_NEAR(t.values[i * D + d], want, i < nq ? 1e-6 * (std::abs(mn) + scale * top) : 0.0) << bits << " " << i << " " << d;
        }
      }
  }
}

TEST(Qjl, ChainsAfterSnapkvAndScoresTheEstimator) {
  // snapkv then qjl: the kept cells' keys QJL-packed (post-RoPE, as the chain stores them), values
  // per token. The scorer's post-RoPE scores from the rebuild equal the estimator the test computes
  // from each head's packed bytes (float rounding of k̂ and the RoPE round trip: 1e-5 ‖q‖‖k̂‖).
  const int L = 3, H = 2, Hq = 4, D = 32, T = 200, W = 16;
  const auto cache = testing::random_cache({L, H, Hq, D, T, W, 0}, 9);
  const CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
  const std::string qjl_spec = "qjl:m=64,m_outlier=32,m_initial=128,m_outlier_initial=16,initial_layers=1,outliers=4,outliers_initial=4,group=16,buffer=32";
  const auto chain = parse_spec("snapkv:keep=0.5,window=16+" + qjl_spec);
  const auto p = qjl_params(chain.stages.at(1));
  auto whole = compress_chain(ctx, chain);
  const auto expected = score(cache, *whole, linalg::cpu_backend());
  const auto by_layer = compress_and_score_by_layer(ctx, chain);
  EXPECT_EQ(by_layer.bytes, expected.bytes);
  EXPECT_EQ(by_layer.key_error, expected.key_error);
  EXPECT_EQ(by_layer.attn_kl, expected.attn_kl);
  EXPECT_TRUE(std::isfinite(expected.attn_kl));
  const auto sk = qjl_sketches(p, D);
  std::int64_t bytes = 0, key_heads = 0;
  for (auto* t : whole->stored()) {
    bytes += t->bytes();
    int l = 0, h = 0;
    std::string leaf;
    ASSERT_TRUE(parse_head_tensor(t->name, l, h, leaf)) << t->name;
    const std::int64_t n = t->shape.at(0);
    const auto ql = qjl_layer(p, l);
    if (leaf == "index") {
      EXPECT_EQ(t->bytes(), 4 * n);
    } else if (leaf == "value") {
      const std::int64_t nq = std::max<std::int64_t>(0, n - 32);
      EXPECT_EQ(t->bytes(), nq * D * 2 / 8 + 4 * nq * 2 + 2 * (n - nq) * D) << t->name;
    } else {
      ASSERT_EQ(leaf, "key");
      ++key_heads;
      const std::int64_t nq = n - n % 32, groups = (nq + 15) / 16;
      EXPECT_EQ(t->bytes(), nq * (ql.m + ql.m_outlier) / 8 + 4 * nq + groups * 4 + 2 * (n - nq) * D) << t->name;
      EXPECT_EQ(t->format, fmt::format("qjl m{} mo{} o4 g16 r32 orthogonal", l < 1 ? 128 : 64, l < 1 ? 16 : 32));
    }
  }
  EXPECT_EQ(key_heads, L * H);
  EXPECT_EQ(whole->bytes(), bytes);
  EXPECT_EQ(expected.bytes, bytes);
  EXPECT_LT(bytes, dense_fp16_bytes(cache.shape()) / 2) << "half the cells kept, then compressed";

  // The estimator against the rebuild, on the window's post-RoPE queries.
  std::map<std::pair<int, int>, StoredTensor*> keys, index;
  for (auto* t : whole->stored()) {
    int l = 0, h = 0;
    std::string leaf;
    parse_head_tensor(t->name, l, h, leaf);
    if (leaf == "key") keys[{l, h}] = t;
    if (leaf == "index") index[{l, h}] = t;
  }
  const auto& pos = cache.positions();
  for (int l = 0; l < L; ++l) {
    const auto rebuilt = whole->reconstruct(l);
    auto k_post = rebuilt.key.data;
    cache.rope().apply(k_post, T, H, pos);
    auto q = cache.queries(l);
    cache.rope().apply(q.span(), W, Hq, std::span<const std::int64_t>(pos.data() + (T - W), W));
    const auto ql = qjl_layer(p, l);
    const auto& s = sk.of(p, l);
    for (int h = 0; h < H; ++h) {
      const auto* kt = keys.at({l, h});
      const auto tokens = index.at({l, h})->unpack_indices();
      const std::int64_t n = kt->shape.at(0), nq = n - n % 32;
      for (std::int64_t row = 0; row < nq; row += 7) {
        const auto r = decode_row(kt->packed, n, row, ql, nq, p.group);
        const std::int64_t t = tokens.at(row);
        for (int w = 0; w < W; w += 5) {
          const int qh = h * (Hq / H);
          std::vector<double> qv(D);
          double dot = 0, qn = 0, kn = 0;
          for (int d = 0; d < D; ++d) {
            qv[d] = q.data[(w * Hq + qh) * D + d];
            const double kv = k_post[(t * H + h) * D + d];
            dot += qv[d] * kv, qn += qv[d] * qv[d], kn += kv * kv;
          }
          EXPECT_NEAR(dot, estimator(r, qv, s, D, ql), 1e-5 * std::sqrt(qn * kn)) << l << " " << h << " " << row;
        }
      }
    }
  }
}

TEST(Qjl, RunsAloneIsSeededAndRefusesTransforms) {
  const auto cache = testing::random_cache({2, 2, 4, 16, 96, 8, 0}, 4);
  const CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
  const std::string base =
      "qjl:m=32,m_outlier=16,m_initial=32,m_outlier_initial=16,outliers=2,outliers_initial=2,group=16,buffer=32";
  auto a = compress_chain(ctx, parse_spec(base)), b = compress_chain(ctx, parse_spec(base)),
       c = compress_chain(ctx, parse_spec(base + ",seed=5"));
  const auto sa = a->stored(), sb = b->stored(), sc = c->stored();
  ASSERT_EQ(sa.size(), sb.size());
  bool differs = false;
  for (std::size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i]->packed, sb[i]->packed) << sa[i]->name << ": the same seed, the same bytes";
    if (sa[i]->name.ends_with("/key")) differs |= sa[i]->packed != sc[i]->packed;
  }
  EXPECT_TRUE(differs) << "another seed, other sketches";
  const auto s = score(cache, *a, linalg::cpu_backend());
  EXPECT_TRUE(std::isfinite(s.attn_kl));
  EXPECT_LT(s.bytes, dense_fp16_bytes(cache.shape()));
  const auto m = testing::error_of([&] { compress_chain(ctx, parse_spec("svd:rk=8,rv=8+" + base)); });
  EXPECT_NE(m.find("per-head keys"), std::string::npos) << m;
}

}  // namespace
}  // namespace kvlab::compressors
