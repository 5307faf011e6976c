// The group spectra on the smaller side of the Gram (AnalysisOptions::gram_side): when a group
// has fewer tokens than columns (T < G·H·D) the T×T token Gram is eigen-solved instead of the
// (G·H·D)² column Gram. Oracles, per group and precision:
//   1. the column side itself (the existing path, forced with GramSideChoice::column);
//   2. Eigen's BDCSVD, in double, of the concatenated group [X_l … X_{l+G−1}] (a different
//      algorithm on the data itself: σ_i² are the eigenvalues both Grams must have), of the
//      data rounded as the precision rounds the token side's inputs (tf32, bf16);
// within a priori bounds from the precision's unit roundoff u (derived at `side_bound`), and
// ranks that agree unless the oracle's cumulative energy lies within the bound of the level.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <unistd.h>

#include "analysis/cross_layer.h"
#include "analysis/dump_analysis.h"
#include "analysis/energy_rank.h"

namespace kvlab::analysis {
namespace {

using Eigen::MatrixXd;
using RowMatrixXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Layers {
  LayerShape shape;
  std::vector<RowMatrixXf> x;  // each [T, H·D]
  RowReader reader() const {
    return [this](int l, std::int64_t t0, std::int64_t n, std::span<float> out) {
      std::copy_n(x[std::size_t(l)].data() + t0 * shape.width(), n * shape.width(), out.data());
    };
  }
  CrossLayerResult analyze(const AnalysisOptions& options) const {
    return analyze_cross_layer(shape, reader(), options, linalg::cpu_backend());
  }
  // [X_first … X_{first+G−1}] in double, each value rounded as `precision` rounds Gram inputs.
  MatrixXd group(int first, int size, GramPrecision precision = GramPrecision::f32) const {
    const std::int64_t T = shape.tokens, W = shape.width();
    MatrixXd z(T, size * W);
    for (int a = 0; a < size; ++a) {
      RowMatrixXf v = x[std::size_t(first + a)];
      linalg::round_gram_inputs(precision, std::span<float>(v.data(), std::size_t(v.size())));
      z.middleCols(a * W, W) = v.cast<double>();
    }
    return z;
  }
};

// L layers that share a decaying low-rank signal plus noise and per-column offsets (the
// spectrum is uncentred: a wrong or missing mean moves its top eigenvalue by T·‖μ‖²).
Layers make_layers(int L, int H, int D, std::int64_t T, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  const std::int64_t W = std::int64_t{H} * D;
  const int r = 12;
  MatrixXd base(T, r);
  for (auto& v : base.reshaped()) v = normal(rng);
  for (int k = 0; k < r; ++k) base.col(k) *= std::pow(0.7, k);
  Layers m;
  m.shape = {L, H, D, T};
  for (int l = 0; l < L; ++l) {
    MatrixXd mix(r, W), noise(T, W);
    for (auto& v : mix.reshaped()) v = normal(rng);
    for (auto& v : noise.reshaped()) v = normal(rng);
    Eigen::RowVectorXd offset(W);
    for (auto& v : offset) v = 0.3 * normal(rng);
    MatrixXd xl = base * mix + 0.05 * noise;
    xl.rowwise() += offset;
    m.x.push_back(xl.cast<float>());
  }
  return m;
}

double unit_roundoff(GramPrecision p) {
  switch (p) {
    case GramPrecision::f64: return std::ldexp(1.0, -53);
    case GramPrecision::tf32: return std::ldexp(1.0, -11);
    case GramPrecision::bf16: return std::ldexp(1.0, -8);
    case GramPrecision::f32: break;
  }
  return std::ldexp(1.0, -24);
}

// A bound on |λ̂_i − λ_i| for one side, E = ‖Z‖²_F = Σλ the group's energy, Z = T × n, from
// Weyl's inequality |λ̂_i − λ_i| ≤ ‖ΔG‖₂ ≤ ‖ΔG‖_F plus the eigensolver's backward error:
//   arithmetic precision u_a (f64 for f64, else f32): a Gram of inner length k has
//     |ΔG| ≤ γ_k·|Z|ᵀ|Z| entrywise, so ‖ΔG‖_F ≤ k·u_a·E (‖|Z|ᵀ|Z|‖_F ≤ ‖Z‖²_F = E); the column
//     side (k = T) also rounds the centred inputs and the uncentring C + T·μμᵀ, a few u_a·E
//     more (its centred energy is ≤ E); ?syevd adds ≈ order·u_a·‖G‖₂ ≤ order·u_a·E.
//     Column: (T + 4 + n)·u_a·E; token: (n + T)·u_a·E. Both: ≤ (2T + 2n + 4)·u_a·E.
//   input rounding u_p (tf32, bf16): Ẑ = Z + ΔZ, |ΔZ| ≤ u_p|Z| changes ‖ẐᵀẐ − ZᵀZ‖ by ≤
//     (2u_p + u_p²)·E; the two sides round different inputs (centred / raw), so they may be
//     twice that apart.
double side_bound(GramPrecision p, std::int64_t T, std::int64_t n, double energy) {
  const double ua = p == GramPrecision::f64 ? unit_roundoff(GramPrecision::f64) : unit_roundoff(GramPrecision::f32);
  return double(2 * T + 2 * n + 4) * ua * energy;
}
double rounding_bound(GramPrecision p, double energy) {
  if (p != GramPrecision::tf32 && p != GramPrecision::bf16) return 0;
  const double up = unit_roundoff(p);
  return 2 * (2 * up + up * up) * energy;
}

// Ranks from two spectra agree, or differ only where the oracle's cumulative energy fraction
// lies within `tol` (relative to the total) of the level: a knife edge rounding may tip.
void expect_ranks_agree(std::int64_t a, std::int64_t b, const std::vector<double>& oracle, double level, double tol,
                        const std::string& where) {
  if (a == b) return;
  const auto cumulative = cumulative_energy(oracle);
  for (std::int64_t k = std::min(a, b); k < std::max(a, b); ++k)
    EXPECT_LE(std::abs(cumulative[std::size_t(k - 1)] - level), tol)
        << where << ": ranks " << a << " vs " << b << " at energy " << level;
}

std::vector<double> squared(const Eigen::VectorXd& s, std::size_t length) {
  std::vector<double> out(length, 0.0);
  for (Eigen::Index i = 0; i < s.size() && std::size_t(i) < length; ++i) out[std::size_t(i)] = s(i) * s(i);
  return out;
}

TEST(GramSide, TokenSideEqualsColumnSideAndTheSvdWhenTokensAreFewer) {
  // W = 32 columns a layer, T = 90 tokens: G = 1, 2 (32, 64 columns) stay on the column side,
  // G = 3, 4 (96, 128) go to the token side; G = 3 leaves layer 3 out. Token blocks of 37
  // (37 + 37 + 16) so the kept copy is filled across blocks, the last one short.
  const Layers data = make_layers(4, 2, 16, 90, 7);
  const std::int64_t T = data.shape.tokens, W = data.shape.width();
  AnalysisOptions options;
  options.group_sizes = {1, 2, 3, 4};
  options.energies = {0.5, 0.9, 0.99, 0.999};
  options.token_block = 37;
  for (auto p : {GramPrecision::f32, GramPrecision::f64, GramPrecision::tf32, GramPrecision::bf16}) {
    SCOPED_TRACE(std::string(linalg::to_string(p)));
    options.precision = p;
    options.gram_side = GramSideChoice::automatic;
    const auto automatic = data.analyze(options);
    options.gram_side = GramSideChoice::column;
    const auto column = data.analyze(options);
    ASSERT_EQ(automatic.eigen_rank.size(), 4u);
    for (std::size_t s = 0; s < automatic.eigen_rank.size(); ++s) {
      const int G = automatic.eigen_rank[s].group_size;
      const std::int64_t n = G * W;
      const bool token = T < n;
      for (std::size_t k = 0; k < automatic.eigen_rank[s].groups.size(); ++k) {
        const auto& g = automatic.eigen_rank[s].groups[k];
        const auto& c = column.eigen_rank[s].groups[k];
        const std::string where = "G=" + std::to_string(G) + " first=" + std::to_string(g.first_layer);
        EXPECT_EQ(g.side, token ? GramSide::token : GramSide::column) << where;
        EXPECT_EQ(g.gram_order, token ? T : n) << where;
        EXPECT_EQ(c.side, GramSide::column) << where;
        ASSERT_EQ(g.spectrum.size(), std::size_t(n)) << where;  // padded to the column side's length
        ASSERT_EQ(c.spectrum.size(), std::size_t(n)) << where;

        const MatrixXd z = data.group(g.first_layer, G), zp = data.group(g.first_layer, G, p);
        const auto svd = squared(Eigen::BDCSVD<MatrixXd>(z).singularValues(), std::size_t(n));
        const auto svd_rounded = squared(Eigen::BDCSVD<MatrixXd>(zp).singularValues(), std::size_t(n));
        const double energy = z.squaredNorm();
        const double arith = side_bound(p, T, n, energy), tol = arith + rounding_bound(p, energy);
        // The oracle's own error (BDCSVD in f64: ≈ n·u₆₄·σ₁ on each σ) is below 1e-12·E here.
        const double oracle_tol = 1e-12 * energy;
        double worst_sides = 0, worst_svd = 0;
        for (std::int64_t i = 0; i < n; ++i) {
          const std::size_t u = std::size_t(i);
          worst_sides = std::max(worst_sides, std::abs(g.spectrum[u] - c.spectrum[u]));
          EXPECT_NEAR(g.spectrum[u], c.spectrum[u], 2 * tol) << where << " i=" << i;
          EXPECT_NEAR(c.spectrum[u], svd[u], tol + oracle_tol) << where << " i=" << i;
          if (token) {
            // The token side rounds the raw rows as the precision says: against the SVD of
            // the rounded data only the f32/f64 arithmetic remains.
            worst_svd = std::max(worst_svd, std::abs(g.spectrum[u] - svd_rounded[u]));
            EXPECT_NEAR(g.spectrum[u], svd_rounded[u], arith + oracle_tol) << where << " i=" << i;
            if (i >= T) {
              EXPECT_EQ(g.spectrum[u], 0.0) << where << " i=" << i;  // padding
            }
          }
        }
        if (token) {
          std::printf("%-4s G=%d first=%d: |token − column| ≤ %.1e·E, |token − SVD| ≤ %.1e·E (bound %.1e·E)\n",
                      std::string(linalg::to_string(p)).c_str(), G, g.first_layer, worst_sides / energy,
                      worst_svd / energy, arith / energy);
        }
        for (std::size_t e = 0; e < options.energies.size(); ++e) {
          expect_ranks_agree(g.rank[e], c.rank[e], svd, options.energies[e], 4 * tol / energy, where);
          if (token)
            expect_ranks_agree(g.rank[e], rank_for_energy(svd_rounded, options.energies[e]), svd_rounded,
                               options.energies[e], 2 * arith / energy, where);
          EXPECT_DOUBLE_EQ(g.rank_fraction[e], double(g.rank[e]) / double(n)) << where;
        }
      }
      EXPECT_EQ(automatic.eigen_rank[s].mean_rank_fraction.size(), options.energies.size());
    }
  }
}

TEST(GramSide, EnoughTokensKeepTheColumnSideAndForcingTheTokenSideAgrees) {
  // T = 128 = 4·W: a tie stays on the column side (no copy needed); forced to the token side,
  // the T×T Gram has T − G·W extra zero eigenvalues and the spectrum keeps its top G·W.
  const Layers data = make_layers(4, 2, 16, 128, 9);
  const std::int64_t T = data.shape.tokens, W = data.shape.width();
  AnalysisOptions options;
  options.group_sizes = {1, 2, 4};
  options.token_block = 50;
  options.precision = GramPrecision::f64;
  const auto automatic = data.analyze(options);
  options.gram_side = GramSideChoice::token;
  const auto token = data.analyze(options);
  for (std::size_t s = 0; s < automatic.eigen_rank.size(); ++s)
    for (std::size_t k = 0; k < automatic.eigen_rank[s].groups.size(); ++k) {
      const auto& g = automatic.eigen_rank[s].groups[k];
      const auto& t = token.eigen_rank[s].groups[k];
      const std::int64_t n = g.size * W;
      EXPECT_EQ(g.side, GramSide::column);
      EXPECT_EQ(g.gram_order, n);
      EXPECT_EQ(t.side, GramSide::token);
      EXPECT_EQ(t.gram_order, T);
      ASSERT_EQ(t.spectrum.size(), std::size_t(n));
      const double energy = data.group(g.first_layer, g.size).squaredNorm();
      for (std::int64_t i = 0; i < n; ++i)
        EXPECT_NEAR(t.spectrum[std::size_t(i)], g.spectrum[std::size_t(i)], 2 * side_bound(options.precision, T, n, energy));
      EXPECT_EQ(t.rank, g.rank);
    }
}

TEST(GramSide, TheReportSaysWhichSideAndKeepsTheSpectraLength) {
  const Layers data = make_layers(4, 2, 8, 40, 11);  // W = 16: G = 1, 2 column, G = 4 token
  AnalysisOptions options;
  options.group_sizes = {1, 2, 4};
  options.token_block = 16;
  const auto r = data.analyze(options);
  const auto j = to_json(r);
  const std::vector<std::string> expected{"column", "column", "token"};
  const std::vector<std::int64_t> order{16, 32, 40};
  for (std::size_t s = 0; s < 3; ++s)
    for (const auto& g : j["eigen_rank"][s]["groups"]) {
      EXPECT_EQ(g["gram_side"].get<std::string>(), expected[s]) << s;
      EXPECT_EQ(g["gram_order"].get<std::int64_t>(), order[s]) << s;
      EXPECT_EQ(g["spectrum"].size(), std::size_t(16 * r.eigen_rank[s].group_size)) << s;
    }

  const auto dir = std::filesystem::path(::testing::TempDir()) / ("gram-side-" + std::to_string(::getpid()));
  write_report(dir, {{"test", "gram side"}}, {{core::KvKind::key, r, 0.0}});
  std::ifstream spectra(dir / "key_spectra.csv");
  std::string line;
  std::getline(spectra, line);
  EXPECT_EQ(line, "group_size,first_layer,index,eigenvalue,cumulative_energy");
  int rows_g4 = 0;
  while (std::getline(spectra, line))
    if (line.starts_with("4,0,")) ++rows_g4;
  EXPECT_EQ(rows_g4, 64);  // G·W rows, as on the column side: 40 eigenvalues and 24 zeros
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvlab::analysis
