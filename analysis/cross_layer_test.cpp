// Oracles: direct per-token / per-channel loops, the n×n Gram-space HSIC formula of CKA
// (Kornblith et al. 2019), Eigen's BDCSVD of the concatenated group, and planted ranks.
#include "analysis/cross_layer.h"

#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <random>

#include "core/error.h"
#include "linalg/test_matrices.h"

namespace kvlab::analysis {
namespace {

using Eigen::MatrixXd;
using RowMatrixXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct InMemoryLayers {
  LayerShape shape;
  std::vector<RowMatrixXf> layers;  // each [T, H·D]
  RowReader reader() const {
    return [this](int l, std::int64_t t0, std::int64_t n, std::span<float> out) {
      ASSERT_EQ(std::int64_t(out.size()), n * shape.width());
      std::copy_n(layers[std::size_t(l)].data() + t0 * shape.width(), n * shape.width(), out.data());
    };
  }
  CrossLayerResult analyze(AnalysisOptions options = {}) const {
    return analyze_cross_layer(shape, reader(), options, linalg::cpu_backend());
  }
};

MatrixXd gaussian(std::int64_t rows, std::int64_t cols, std::uint64_t seed, double mean = 0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(mean, 1.0);
  MatrixXd m(rows, cols);
  for (auto& v : m.reshaped()) v = normal(rng);
  return m;
}

// Gram-space linear CKA: HSIC(K, L) = tr(K H L H) with K = XXᵀ and H the centring matrix.
double gram_space_cka(const MatrixXd& x, const MatrixXd& y) {
  const auto n = x.rows();
  MatrixXd h = MatrixXd::Identity(n, n) - MatrixXd::Constant(n, n, 1.0 / double(n));
  MatrixXd k = h * (x * x.transpose()) * h, l = h * (y * y.transpose()) * h;
  auto hsic = [](const MatrixXd& a, const MatrixXd& b) { return (a.cwiseProduct(b)).sum(); };
  return hsic(k, l) / std::sqrt(hsic(k, k) * hsic(l, l));
}

InMemoryLayers from(const std::vector<MatrixXd>& xs, int heads) {
  InMemoryLayers m;
  m.shape = {int(xs.size()), heads, int(xs[0].cols() / heads), xs[0].rows()};
  for (const auto& x : xs) m.layers.push_back(x.cast<float>());
  return m;
}

TEST(CrossLayer, CkaIsOneUnderRotationAndScalingAndNearZeroForIndependentData) {
  const int T = 3000, W = 24;
  MatrixXd x = gaussian(T, W, 1, 0.5);
  MatrixXd q = linalg::testing::random_orthonormal(W, W, 2);
  auto data = from({x, 3.0 * x * q, gaussian(T, W, 3, -1.0)}, 2);
  AnalysisOptions options;
  options.group_sizes = {1};
  options.token_block = 700;  // blocks that do not divide T
  auto r = data.analyze(options);
  EXPECT_NEAR(r.cka(0, 1), 1.0, 1e-5);
  EXPECT_NEAR(r.cka(0, 0), 1.0, 1e-6);
  // For independent Gaussians E[CKA] ≈ W/T = 0.008.
  EXPECT_LT(r.cka(0, 2), 0.05);
  EXPECT_LT(r.cka(1, 2), 0.05);
}

TEST(CrossLayer, FeatureSpaceCkaEqualsGramSpaceFormula) {
  const int T = 200, W = 16;
  MatrixXd base = gaussian(T, W, 5, 2.0);  // large means: centring matters
  MatrixXd mix = 0.7 * base + 0.3 * gaussian(T, W, 6, -3.0) + 0.2 * base.cwiseAbs2();
  std::vector<MatrixXd> xs{base, mix, gaussian(T, W, 7)};
  auto data = from(xs, 4);
  AnalysisOptions options;
  options.group_sizes = {1, 3};
  options.token_block = 64;
  // tf32 / bf16 round the centred inputs (2⁻¹¹ / 2⁻⁸ relative), which moves CKA by a few times that.
  Eigen::MatrixXd f32_cka;
  for (auto precision : {GramPrecision::f32, GramPrecision::f64, GramPrecision::tf32, GramPrecision::bf16}) {
    options.precision = precision;
    auto r = data.analyze(options);
    const double tol = precision == GramPrecision::f64    ? 1e-6
                       : precision == GramPrecision::f32  ? 1e-4
                       : precision == GramPrecision::tf32 ? 2e-3
                                                          : 1.5e-2;
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j)
        EXPECT_NEAR(r.cka(i, j), gram_space_cka(xs[std::size_t(i)].cast<float>().cast<double>(),
                                                xs[std::size_t(j)].cast<float>().cast<double>()), tol)
            << to_string(precision) << " " << i << "," << j;
    if (precision == GramPrecision::f32) f32_cka = r.cka;
    if (precision == GramPrecision::bf16) {
      EXPECT_GT((r.cka - f32_cka).cwiseAbs().maxCoeff(), 1e-5);  // really rounded
    }
  }
}

TEST(CrossLayer, CosinesMatchDirectLoops) {
  const int T = 500, H = 3, D = 8, W = H * D;
  MatrixXd a = gaussian(T, W, 11, 0.3), b = 0.5 * a + gaussian(T, W, 12), c = -a;
  b.row(17).setZero();  // a zero row is excluded from the pairs that involve it
  std::vector<MatrixXd> xs{a, b, c};
  auto data = from(xs, H);
  AnalysisOptions options;
  options.token_block = 128;
  options.group_sizes = {1, 3};
  auto r = data.analyze(options);
  EXPECT_EQ(r.zero_rows, 1);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      double whole = 0, channel = 0;
      int n = 0;
      std::vector<double> per_head(H, 0.0);
      for (int t = 0; t < T; ++t) {
        auto xi = xs[std::size_t(i)].row(t), xj = xs[std::size_t(j)].row(t);
        if (xi.norm() == 0 || xj.norm() == 0) continue;
        ++n;
        whole += xi.dot(xj) / (xi.norm() * xj.norm());
        for (int h = 0; h < H; ++h) {
          auto si = xi.segment(h * D, D), sj = xj.segment(h * D, D);
          per_head[std::size_t(h)] += si.dot(sj) / (si.norm() * sj.norm());
        }
      }
      for (int ch = 0; ch < W; ++ch) {
        auto ci = xs[std::size_t(i)].col(ch), cj = xs[std::size_t(j)].col(ch);
        channel += ci.dot(cj) / (ci.norm() * cj.norm()) / W;
      }
      EXPECT_NEAR(r.token_cosine(i, j), whole / n, 1e-5) << i << "," << j;
      for (int h = 0; h < H; ++h) EXPECT_NEAR(r.head_token_cosine[std::size_t(h)](i, j), per_head[std::size_t(h)] / n, 1e-5);
      EXPECT_NEAR(r.channel_cosine(i, j), channel, 1e-5) << i << "," << j;
    }
  EXPECT_NEAR(r.token_cosine(0, 0), 1.0, 1e-6);  // identical layers
  EXPECT_NEAR(r.token_cosine(0, 2), -1.0, 1e-6);
}

// [X_l … X_{l+G−1}] = A·[B_1 … B_G] with A's columns orthogonal of equal norm and B_l with
// orthonormal rows: the group has rank r and a flat spectrum, so rank(e) = ⌈e·r⌉ for any G.
TEST(CrossLayer, EigenRankRecoversPlantedRankAcrossGroupSizes) {
  const int T = 1200, H = 2, D = 16, W = H * D, r = 10, L = 4;
  MatrixXd a = linalg::testing::random_orthonormal(T, r, 30) * 5.0;
  std::vector<MatrixXd> xs;
  for (int l = 0; l < L; ++l) xs.push_back(a * linalg::testing::random_orthonormal(W, r, 40 + l).transpose());
  auto data = from(xs, H);
  AnalysisOptions options;
  options.group_sizes = {1, 2, 4, 3};
  options.energies = {0.45, 0.95, 0.9999};  // away from the knife edges k/r of a flat spectrum
  options.token_block = 500;
  auto res = data.analyze(options);
  ASSERT_EQ(res.eigen_rank.size(), 4u);
  for (const auto& entry : res.eigen_rank) {
    EXPECT_EQ(entry.groups.size(), std::size_t(L / entry.group_size));  // G=3: layer 3 is left out
    for (const auto& g : entry.groups) {
      EXPECT_EQ(g.rank[0], 5);
      EXPECT_EQ(g.rank[1], 10);
      EXPECT_EQ(g.rank[2], r) << "G=" << entry.group_size;  // ⌈0.9999·r⌉ = r: exactly the planted rank
      EXPECT_DOUBLE_EQ(g.rank_fraction[1], 10.0 / (entry.group_size * W));
      // Scale: each column of A has norm 5 and [B_1..B_G] has G·I as BBᵀ → σ² = 25·G.
      EXPECT_NEAR(g.spectrum[0], 25.0 * entry.group_size, 1e-3 * 25 * entry.group_size);
      EXPECT_LT(g.spectrum[std::size_t(r)], 1e-4 * g.spectrum[0]);
    }
  }
}

TEST(CrossLayer, GroupSpectrumEqualsSquaredSingularValuesOfConcatenation) {
  const int T = 400, W = 12, L = 4;
  std::vector<MatrixXd> xs;
  for (int l = 0; l < L; ++l) xs.push_back(gaussian(T, W, 50 + l, l * 0.7) * (1.0 + l));
  auto data = from(xs, 1);
  AnalysisOptions options;
  options.group_sizes = {2};
  options.precision = GramPrecision::f64;
  auto res = data.analyze(options);
  for (const auto& g : res.eigen_rank[0].groups) {
    MatrixXd z(T, 2 * W);
    z << xs[std::size_t(g.first_layer)].cast<float>().cast<double>(),
        xs[std::size_t(g.first_layer + 1)].cast<float>().cast<double>();
    Eigen::VectorXd s = Eigen::BDCSVD<MatrixXd>(z).singularValues();
    for (int i = 0; i < 2 * W; ++i) EXPECT_NEAR(g.spectrum[std::size_t(i)], s(i) * s(i), 1e-9 * s(0) * s(0)) << i;
  }
}

TEST(CrossLayer, RejectsBadOptions) {
  auto data = from({gaussian(10, 4, 1), gaussian(10, 4, 2)}, 1);
  AnalysisOptions options;
  options.group_sizes = {3};
  EXPECT_THROW(data.analyze(options), Error);
  options.group_sizes = {1};
  options.energies = {1.2};
  EXPECT_THROW(data.analyze(options), Error);
}

}  // namespace
}  // namespace kvlab::analysis
