// Parity of the CUDA streamed Grams with the host ones (the base Backend versions on the CPU
// backend, themselves checked against Eigen in linalg/panel_gram_test.cpp): every precision,
// enough token blocks that both pinned buffers are reused several times, and a last short
// block. Errors are normalized (‖Δ‖_F/‖C‖_F); the tolerances are stated per precision. Skips
// without a device.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/error_of.h"
#include "linalg/backend.h"
#include "linalg/cuda/cuda_backend.h"
#include "linalg/cuda/cuda_common.h"
#include "linalg/test_matrices.h"

namespace kvlab::linalg {
namespace {

#define KVLAB_REQUIRE_CUDA() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device (" << cuda_unavailable_reason() << ")"

// tf32: cuBLAS's conversion agreed with round_gram_inputs' nearest-even emulation on an H200
// (normalized error 1.0e-7, as f32's 9.2e-8); 1e-4 still catches a truncating conversion,
// whose one-sided 2⁻¹¹ bias shows at ≈ 1e-3 normalized.
// bf16: both sides multiply the same host-rounded inputs; only the f32 summation order differs.
double tolerance(GramPrecision p) {
  switch (p) {
    case GramPrecision::f32: return 2e-5;
    case GramPrecision::tf32: return 1e-4;
    case GramPrecision::bf16: return 2e-5;
    case GramPrecision::f64: return 1e-13;
  }
  return 0;
}

std::vector<double> random_rows(std::int64_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.3, 1.0);  // a mean, as uncentred KV rows have
  std::vector<double> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = float(normal(rng));
  return v;
}

template <typename T>
std::vector<double> stream(PanelGram<T>& gram, const std::vector<double>& z, std::int64_t rows) {
  const int P = gram.panels();
  const std::int64_t W = gram.width(), cap = gram.capacity();
  for (std::int64_t t0 = 0; t0 < rows; t0 += cap) {
    const std::int64_t n = std::min(cap, rows - t0);
    T* s = gram.staging();
    for (int p = 0; p < P; ++p)
      for (std::int64_t t = 0; t < n; ++t)
        for (std::int64_t c = 0; c < W; ++c)
          s[p * gram.panel_stride() + t * W + c] = T(z[std::size_t(((t0 + t) * P + p) * W + c)]);
    gram.add(n);
  }
  gram.finish();
  std::vector<double> out;
  for (int i = 0; i < P; ++i)
    for (int j = i; j < P; ++j) out.insert(out.end(), gram.block(i, j), gram.block(i, j) + W * W);
  return out;
}

double rel(const std::vector<double>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / den);
}

TEST(CudaPanelGram, MatchesTheHostPanelGramInEveryPrecision) {
  KVLAB_REQUIRE_CUDA();
  const int P = 4;
  const std::int64_t W = 96, rows = 1000, cap = 128;  // 8 blocks, the last one 104 rows
  const auto z = random_rows(rows * P * W, 3);
  for (auto p : {GramPrecision::f32, GramPrecision::tf32, GramPrecision::bf16, GramPrecision::f64}) {
    std::vector<double> cpu, gpu;
    if (p == GramPrecision::f64) {
      cpu = stream(*cpu_backend().panel_gram_f64(P, W, cap), z, rows);
      gpu = stream(*cuda_backend().panel_gram_f64(P, W, cap), z, rows);
    } else {
      cpu = stream(*cpu_backend().panel_gram(P, W, cap, p), z, rows);
      gpu = stream(*cuda_backend().panel_gram(P, W, cap, p), z, rows);
    }
    const double err = rel(gpu, cpu);
    std::printf("panel_gram %-4s: normalized error %.2e (tol %.0e)\n", std::string(to_string(p)).c_str(), err,
                tolerance(p));
    EXPECT_LT(err, tolerance(p)) << to_string(p);
  }
}

TEST(CudaPanelGram, AlternatesItsPinnedBuffersAndRejectsMisuse) {
  KVLAB_REQUIRE_CUDA();
  auto gram = cuda_backend().panel_gram(2, 8, 16, GramPrecision::f32);
  EXPECT_THROW(gram->add(17), Error);
  EXPECT_THROW(gram->block(0, 0), Error);
  std::fill_n(gram->staging(), 2 * 16 * 8, 1.f);
  gram->add(16);
  std::fill_n(gram->staging(), 2 * 16 * 8, 2.f);  // the other pinned buffer
  gram->add(3);
  gram->finish();
  EXPECT_EQ(gram->block(0, 1)[0], 16.f * 1 + 3.f * 4);
  EXPECT_EQ(gram->block(1, 1)[8 * 8 - 1], 16.f + 12.f);
  EXPECT_THROW(gram->add(1), Error);
}

// A host array copied into device memory (the caller's resident buffer).
template <typename T>
std::unique_ptr<cuda::DeviceMemory> on_device(const T* host, std::size_t count) {
  auto d = std::make_unique<cuda::DeviceMemory>(sizeof(T) * count, "test upload");
  KVLAB_CUDA_CHECK(cudaMemcpy(d->as<void>(), host, sizeof(T) * count, cudaMemcpyHostToDevice), "test upload");
  return d;
}

// How far a device result is from the host's: the largest eigenvalue (energy) difference
// relative to λ₁, and ‖V·Vᵀ − V_ref·V_refᵀ‖_F (a distance between the subspaces, blind to signs
// and to rotations within them).
struct Agreement {
  double energy = 0, subspace = 0;
};
Agreement agreement(const SubspaceFactors& got, const SubspaceFactors& want, std::int64_t c, std::int64_t r) {
  Agreement out;
  if (!got.energy.empty())
    for (std::int64_t i = 0; i < r; ++i)
      out.energy = std::max(out.energy, std::abs(got.energy[std::size_t(i)] - want.energy[std::size_t(i)]) / want.energy[0]);
  const Eigen::MatrixXd vg = Eigen::Map<const Eigen::MatrixXf>(got.v.data(), c, r).cast<double>();
  const Eigen::MatrixXd vw = Eigen::Map<const Eigen::MatrixXf>(want.v.data(), c, r).cast<double>();
  out.subspace = (vg * vg.transpose() - vw * vw.transpose()).norm();
  return out;
}

// gram_subspace with X resident on the device vs the host route, over several upload chunks
// (n·c > 8 Mi values): energies, the subspace, and A = X·V_r for the device's own V_r. Then
// resident_gram_top on the caller's device X (and its bf16 / f64 Gram inputs): one product
// instead of chunks, the same tolerances against the host.
TEST(CudaGramSubspace, MatchesTheHostRouteInEveryPrecision) {
  KVLAB_REQUIRE_CUDA();
  const std::int64_t n = 150000, c = 64, r = 16;
  // A wide gap after σ_r (50 → 5), so the subspace is well defined even at TF32's accuracy.
  Eigen::VectorXd sigma(c);
  sigma << testing::geometric_spectrum(r, 100.0, 0.5), testing::geometric_spectrum(c - r, 5.0, 0.1);
  const Eigen::MatrixXd left = testing::random_orthonormal(n, c, 8);
  const Eigen::MatrixXd right = testing::random_orthonormal(c, c, 9);
  using RowF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const RowF x = (left * sigma.asDiagonal() * right.transpose()).cast<float>();
  const Eigen::MatrixXd xd = x.cast<double>();
  const auto count = static_cast<std::size_t>(n * c);
  const auto dx = on_device(x.data(), count);
  std::vector<std::uint16_t> bits(count);
  core::f32_to_16bit(core::DType::bf16, std::span<const float>(x.data(), count), bits);
  const auto dbf16 = on_device(bits.data(), count);
  const std::vector<double> wide(x.data(), x.data() + count);
  const auto df64 = on_device(wide.data(), count);
  for (auto p : {GramPrecision::f32, GramPrecision::tf32, GramPrecision::bf16, GramPrecision::f64}) {
    SCOPED_TRACE(std::string(to_string(p)));
    const SubspaceFactors cpu = cpu_backend().gram_subspace(x.data(), n, c, r, p);
    const SubspaceFactors gpu = cuda_backend().gram_subspace(x.data(), n, c, r, p);
    const void* input = p == GramPrecision::bf16 ? dbf16->as<void>() : p == GramPrecision::f64 ? df64->as<void>() : nullptr;
    const SubspaceFactors resident = cuda_backend().resident_gram_top(dx->as<float>(), input, n, c, r, p, nullptr);
    EXPECT_TRUE(resident.a.empty());
    const auto [resident_energy, resident_subspace] = agreement(resident, cpu, c, r);
    std::printf("resident_gram_top %-4s: energy %.2e, subspace %.2e\n", std::string(to_string(p)).c_str(),
                resident_energy, resident_subspace);
    EXPECT_LT(resident_energy, tolerance(p) * 5);
    EXPECT_LT(resident_subspace, p == GramPrecision::f64 ? 1e-9 : 1e-3);
    ASSERT_EQ(gpu.rank, r);
    const auto [energy, subspace] = agreement(gpu, cpu, c, r);
    const Eigen::MatrixXd vg = Eigen::Map<const Eigen::MatrixXf>(gpu.v.data(), c, r).cast<double>();
    const Eigen::MatrixXd a = Eigen::Map<const RowF>(gpu.a.data(), n, r).cast<double>();
    const double projection = (a - xd * vg).norm() / (xd * vg).norm();
    std::printf("gram_subspace %-4s: energy %.2e, subspace %.2e, A %.2e\n", std::string(to_string(p)).c_str(), energy,
                subspace, projection);
    EXPECT_LT(energy, tolerance(p) * 5);  // eigenvalues relative to λ₁: the Gram's error, a few times over
    EXPECT_LT(subspace, p == GramPrecision::f64 ? 1e-9 : 1e-3);
    EXPECT_LT(projection, 1e-5);  // A is always an f32 product
  }
}

// resident_gemm on device pointers against the CPU's gemm, both transposes, with β ≠ 0; a
// bf16 or f64 resident Gram without its converted input is an error naming it.
TEST(CudaResident, GemmMatchesTheHostOnDevicePointers) {
  KVLAB_REQUIRE_CUDA();
  const std::int64_t n = 100, c = 8, r = 2;
  const std::vector<float> x(static_cast<std::size_t>(n * c), 1.f);
  const auto dx = on_device(x.data(), x.size());
  EXPECT_NE(core::error_of([&] {
              cuda_backend().resident_gram_top(dx->as<float>(), nullptr, n, c, r, GramPrecision::f64, nullptr);
            }).find("gram_input"),
            std::string::npos);

  const std::int64_t m = 70, k = 50, cols = 90;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const auto a = random_rows(m * k, 21), b = random_rows(k * cols, 22), c0 = random_rows(m * cols, 23);
      const std::vector<float> af(a.begin(), a.end()), bf(b.begin(), b.end());
      std::vector<float> want(c0.begin(), c0.end()), got(want.size());
      const std::int64_t lda = ta ? k : m, ldb = tb ? cols : k;
      cpu_backend().gemm(ta, tb, m, cols, k, 0.5f, af.data(), lda, bf.data(), ldb, 2.f, want.data(), m);
      const auto da = on_device(af.data(), af.size()), db = on_device(bf.data(), bf.size());
      const std::vector<float> cf(c0.begin(), c0.end());
      const auto dc = on_device(cf.data(), cf.size());
      cuda_backend().resident_gemm(ta, tb, m, cols, k, 0.5f, da->as<float>(), lda, db->as<float>(), ldb, 2.f,
                                   dc->as<float>(), m, nullptr);
      KVLAB_CUDA_CHECK(cudaMemcpy(got.data(), dc->as<void>(), sizeof(float) * got.size(), cudaMemcpyDeviceToHost),
                       "test download");
      EXPECT_LT(rel(std::vector<double>(got.begin(), got.end()), std::vector<double>(want.begin(), want.end())), 1e-6)
          << "trans_a " << ta << ", trans_b " << tb;
    }
}

// randomized_subspace with X, Y, W resident vs the host route: the same Ω, so the same subspace
// up to f32 rounding (a planted gap after σ_r keeps it well defined), the same energies, and
// A = X·V_r for the device's own V_r. n·c spans several MiB, ℓ = r + 10. resident_randomized_top
// on a device copy of X runs the same device code: bit-identical V_r.
TEST(CudaRandomizedSubspace, MatchesTheHostRoute) {
  KVLAB_REQUIRE_CUDA();
  const std::int64_t n = 20000, c = 128, r = 12;
  Eigen::VectorXd sigma(c);
  sigma << testing::geometric_spectrum(r, 100.0, 0.5), testing::geometric_spectrum(c - r, 5.0, 1e-3);
  using RowF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const RowF x = testing::matrix_with_spectrum(n, c, sigma, 12).cast<float>();
  const Eigen::MatrixXd xd = x.cast<double>();
  const auto dx = on_device(x.data(), static_cast<std::size_t>(n * c));
  for (bool f64 : {true, false}) {
    SCOPED_TRACE(f64 ? "f64 small SVD" : "f32 small SVD");
    const Backend::RandomizedOptions o{10, 2, 3, 5, f64};
    const SubspaceFactors cpu = cpu_backend().randomized_subspace(x.data(), n, c, r, o);
    const SubspaceFactors gpu = cuda_backend().randomized_subspace(x.data(), n, c, r, o);
    const SubspaceFactors resident = cuda_backend().resident_randomized_top(dx->as<float>(), n, c, r, o, nullptr);
    EXPECT_EQ(resident.v, gpu.v);
    EXPECT_TRUE(resident.a.empty());
    const auto [energy, subspace] = agreement(gpu, cpu, c, r);
    const Eigen::MatrixXd vg = Eigen::Map<const Eigen::MatrixXf>(gpu.v.data(), c, r).cast<double>();
    const Eigen::MatrixXd a = Eigen::Map<const RowF>(gpu.a.data(), n, r).cast<double>();
    const double projection = (a - xd * vg).norm() / (xd * vg).norm();
    std::printf("randomized_subspace (%s): subspace %.2e, energy %.2e, A %.2e\n", f64 ? "f64" : "f32", subspace,
                energy, projection);
    EXPECT_LT(subspace, 1e-4);
    EXPECT_LT(energy, 1e-5);
    EXPECT_LT(projection, 1e-5);
  }
}

}  // namespace
}  // namespace kvlab::linalg
