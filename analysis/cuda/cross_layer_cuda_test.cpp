// The cross-layer analysis on the CUDA backend vs the CPU backend (the oracle, checked against
// independent formulas in cross_layer_test.cpp), for every Gram precision: token and head
// cosines, CKA, channel cosine and the group spectra; the spectra again with three eigensolves
// in flight. Skips without a device.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cstdio>
#include <random>

#include "analysis/cross_layer.h"
#include "linalg/cuda/cuda_backend.h"

namespace kvlab::analysis {
namespace {

using RowMatrixXf = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

double max_abs_diff(const Eigen::MatrixXd& a, const Eigen::MatrixXd& b) { return (a - b).cwiseAbs().maxCoeff(); }

// 3000 tokens: every group on the column side; 300: G = 3 (384 columns) on the token side.
class CrossLayerCuda : public ::testing::TestWithParam<std::int64_t> {};

TEST_P(CrossLayerCuda, MatchesTheCpuBackendInEveryPrecision) {
  if (!linalg::cuda_available()) GTEST_SKIP() << "no CUDA device (" << linalg::cuda_unavailable_reason() << ")";
  // 6 layers that share a drifting low-rank signal plus noise, so CKA and cosines are neither 0 nor 1.
  const LayerShape shape{6, 4, 32, GetParam()};
  const std::int64_t W = shape.width();
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal;
  RowMatrixXf base(shape.tokens, W);
  for (auto& v : base.reshaped()) v = normal(rng);
  std::vector<RowMatrixXf> layers;
  for (int l = 0; l < shape.layers; ++l) {
    RowMatrixXf x = base;
    for (auto& v : x.reshaped()) v = v * (1.f + 0.1f * float(l)) + 0.5f * normal(rng) + 0.2f;
    layers.push_back(x);
  }
  const RowReader read = [&](int l, std::int64_t t0, std::int64_t n, std::span<float> out) {
    std::copy_n(layers[std::size_t(l)].data() + t0 * W, n * W, out.data());
  };
  for (auto p : {GramPrecision::f32, GramPrecision::tf32, GramPrecision::bf16, GramPrecision::f64}) {
    SCOPED_TRACE(std::string(linalg::to_string(p)));
    AnalysisOptions options;
    options.group_sizes = {1, 2, 3};
    options.token_block = shape.tokens * 7 / 30;  // 5 blocks, the last one short: both pinned buffers reused
    options.precision = p;
    const auto cpu = analyze_cross_layer(shape, read, options, linalg::cpu_backend());
    const auto gpu = analyze_cross_layer(shape, read, options, linalg::cuda_backend());
    // Cosines and the uncentred channel cosine do not depend on the Gram's precision; CKA does
    // (tf32 and bf16 only through the f32 sums: cuBLAS rounded its TF32 inputs as the CPU's
    // emulation does on an H200, CKA 8.7e-8 apart).
    const double cka_tol = p == GramPrecision::f64 ? 1e-10 : 1e-5;
    const double cos = max_abs_diff(gpu.token_cosine, cpu.token_cosine);
    const double cka = max_abs_diff(gpu.cka, cpu.cka);
    const double channel = max_abs_diff(gpu.channel_cosine, cpu.channel_cosine);
    double spectrum = 0;
    for (std::size_t g = 0; g < cpu.eigen_rank.size(); ++g)
      for (std::size_t k = 0; k < cpu.eigen_rank[g].groups.size(); ++k) {
        const auto& a = cpu.eigen_rank[g].groups[k].spectrum;
        const auto& b = gpu.eigen_rank[g].groups[k].spectrum;
        ASSERT_EQ(a.size(), b.size());
        EXPECT_EQ(cpu.eigen_rank[g].groups[k].side, gpu.eigen_rank[g].groups[k].side);
        EXPECT_EQ(gpu.eigen_rank[g].groups[k].side,
                  shape.tokens < cpu.eigen_rank[g].group_size * W ? GramSide::token : GramSide::column);
        for (std::size_t i = 0; i < a.size(); ++i) spectrum = std::max(spectrum, std::abs(a[i] - b[i]) / a[0]);
        EXPECT_EQ(cpu.eigen_rank[g].groups[k].rank.back(), gpu.eigen_rank[g].groups[k].rank.back());
      }
    // Three eigensolves in flight (worker backends, a stream each): the same solves, so the
    // same spectra bit for bit.
    linalg::cuda_backend().set_threads(3);
    const auto fanned = analyze_cross_layer(shape, read, options, linalg::cuda_backend());
    linalg::cuda_backend().set_threads(0);
    for (std::size_t g = 0; g < gpu.eigen_rank.size(); ++g)
      for (std::size_t k = 0; k < gpu.eigen_rank[g].groups.size(); ++k)
        EXPECT_EQ(fanned.eigen_rank[g].groups[k].spectrum, gpu.eigen_rank[g].groups[k].spectrum) << g << " " << k;
    std::printf("analysis T=%-4lld %-4s: token cosine %.1e, CKA %.1e, channel cosine %.1e, spectrum %.1e\n",
                static_cast<long long>(shape.tokens), std::string(linalg::to_string(p)).c_str(), cos, cka, channel,
                spectrum);
    EXPECT_LT(cos, 1e-5);
    EXPECT_LT(cka, cka_tol);
    EXPECT_LT(channel, cka_tol);
    EXPECT_LT(spectrum, cka_tol);
  }
}

INSTANTIATE_TEST_SUITE_P(Tokens, CrossLayerCuda, ::testing::Values(std::int64_t{3000}, std::int64_t{300}));

}  // namespace
}  // namespace kvlab::analysis
