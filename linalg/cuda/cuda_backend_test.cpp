// Backend parity, in the spirit of ggml's test-backend-ops: every op runs on the CPU backend
// (OpenBLAS + LAPACKE, the oracle) and on the CUDA backend with the same inputs, and the two
// are compared by a normalized error against a tolerance stated per op and precision. Where
// an output is unique only up to sign (eigen- and singular vectors, Q of a QR) it is compared
// after aligning signs, or through properties that hold whatever the sign: reconstruction,
// orthonormality, and spectra known by construction (linalg/test_matrices.h).
//
// Every GPU test skips cleanly without a device (CI has the toolkit but no GPU); the one test
// that runs there checks that asking for the backend then gives a kvlab::Error, not a crash.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "linalg/backend.h"
#include "linalg/cuda/cuda_backend.h"
#include "linalg/test_matrices.h"

namespace kvlab::linalg {
namespace {

#define KVLAB_REQUIRE_CUDA() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device (" << cuda_unavailable_reason() << ")"

template <typename T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;  // column-major, as the Backend API
template <typename T>
using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
using Eigen::MatrixXd;
using Eigen::VectorXd;

// Tolerances on normalized errors. u = unit roundoff (f32 6e-8, f64 1.1e-16); the sizes here
// (≤ 4000 rows, ≤ 256 columns) keep the backward-error bounds p(n)·u well inside them, while a
// wrong transpose, triangle, sign convention or leading dimension gives errors of order 1.
template <typename T>
struct Tol;
template <>
struct Tol<float> {
  static constexpr double product = 2e-5;     // gram, gemm: ‖C_gpu − C_cpu‖_F / ‖C_cpu‖_F
  static constexpr double values = 2e-5;      // eigen/singular values: max |Δ| / max |value|
  static constexpr double reconstruct = 5e-5; // ‖S − VΛVᵀ‖_F/‖S‖_F, ‖A − UΣVᵀ‖_F/‖A‖_F
  static constexpr double orthonormal = 5e-5; // ‖QᵀQ − I‖_F
  static constexpr double vectors = 2e-3;     // max over columns of ‖v_gpu ∓ v_cpu‖₂ (gap-limited)
};
template <>
struct Tol<double> {
  static constexpr double product = 1e-13;
  static constexpr double values = 1e-13;
  static constexpr double reconstruct = 1e-12;
  static constexpr double orthonormal = 1e-12;
  static constexpr double vectors = 1e-9;
};

template <typename T>
Mat<T> gaussian(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  Mat<T> m(rows, cols);
  for (std::int64_t j = 0; j < cols; ++j)
    for (std::int64_t i = 0; i < rows; ++i) m(i, j) = T(normal(rng));
  return m;
}

template <typename T>
double rel(const Mat<T>& got, const Mat<T>& want) {
  const double denom = want.template cast<double>().norm();
  return (got.template cast<double>() - want.template cast<double>()).norm() / std::max(denom, 1e-300);
}

template <typename T>
Mat<T> upper_of(const Mat<T>& c) {
  return c.template triangularView<Eigen::Upper>();
}

// Symmetric n×n with eigenvalues `lam` (ascending) and Haar-random eigenvectors.
template <typename T>
Mat<T> symmetric_with(const VectorXd& lam, std::uint64_t seed) {
  MatrixXd q = testing::random_orthonormal(lam.size(), lam.size(), seed);
  MatrixXd s = q * lam.asDiagonal() * q.transpose();
  return s.cast<T>();
}

// Largest column error between two bases after flipping each GPU column to the CPU one's sign.
template <typename T>
double column_error_up_to_sign(const Mat<T>& got, const Mat<T>& want) {
  double worst = 0;
  for (Eigen::Index j = 0; j < want.cols(); ++j) {
    VectorXd g = got.col(j).template cast<double>(), w = want.col(j).template cast<double>();
    if (g.dot(w) < 0) g = -g;
    worst = std::max(worst, (g - w).norm());
  }
  return worst;
}

template <typename T>
double orthonormality_error(const Mat<T>& q) {
  MatrixXd qd = q.template cast<double>();
  return (qd.transpose() * qd - MatrixXd::Identity(q.cols(), q.cols())).norm();
}

template <typename T>
const char* prec() {
  return sizeof(T) == 4 ? "f32" : "f64";
}

// EXPECT_LT that also prints the measured error, so a run records the parity figures.
void expect_below(const std::string& what, double err, double tol) {
  std::printf("[ parity   ] %-58s %9.2e  (tol %.0e)\n", what.c_str(), err, tol);
  EXPECT_LT(err, tol) << what;
}

template <typename T>
class CudaParity : public ::testing::Test {};
using Precisions = ::testing::Types<float, double>;
TYPED_TEST_SUITE(CudaParity, Precisions);

TYPED_TEST(CudaParity, GramMatchesCpuWithStrideAndAccumulation) {
  KVLAB_REQUIRE_CUDA();
  using T = TypeParam;
  // Token-major 3000×200 block inside rows of 256 (ldx > c), in two token blocks, the second
  // accumulating (β = 1); the lower triangle holds a sentinel that must survive.
  const std::int64_t n = 3000, c = 200, ldx = 256;
  Mat<T> rows = gaussian<T>(ldx, n, 1);  // column-major ldx×n = row-major n×ldx
  Mat<T> cpu = Mat<T>::Constant(c, c, T(7)), gpu = cpu;
  for (Backend* be : {static_cast<Backend*>(&cpu_backend()), static_cast<Backend*>(&cuda_backend())}) {
    Mat<T>& out = be == &cpu_backend() ? cpu : gpu;
    be->gram(rows.data(), 1800, c, ldx, T(1), T(0), out.data(), c);
    be->gram(rows.data() + 1800 * ldx, n - 1800, c, ldx, T(0.5), T(1), out.data(), c);
  }
  expect_below(std::string("gram ") + prec<T>() + " 3000x200, ldx 256, beta 0 then 1", rel<T>(upper_of<T>(gpu), upper_of<T>(cpu)),
               Tol<T>::product);
  for (std::int64_t j = 0; j < c; ++j)
    for (std::int64_t i = j + 1; i < c; ++i) ASSERT_EQ(gpu(i, j), T(7)) << "lower triangle written at " << i << "," << j;
}

TYPED_TEST(CudaParity, GemmMatchesCpuForEveryTransposeAndLeadingDimension) {
  KVLAB_REQUIRE_CUDA();
  using T = TypeParam;
  const std::int64_t m = 150, n = 90, k = 230;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const std::int64_t lda = (ta ? k : m) + 3, ldb = (tb ? n : k) + 5, ldc = m + 2;
      Mat<T> a = gaussian<T>(lda, ta ? m : k, 10 + 2 * ta + tb), b = gaussian<T>(ldb, tb ? k : n, 20 + 2 * ta + tb);
      Mat<T> c0 = gaussian<T>(ldc, n, 30), cpu = c0, gpu = c0;
      cpu_backend().gemm(ta, tb, m, n, k, T(1.5), a.data(), lda, b.data(), ldb, T(-0.5), cpu.data(), ldc);
      cuda_backend().gemm(ta, tb, m, n, k, T(1.5), a.data(), lda, b.data(), ldb, T(-0.5), gpu.data(), ldc);
      expect_below(std::string("gemm ") + prec<T>() + " 150x90x230 ta=" + std::to_string(ta) + " tb=" + std::to_string(tb),
                   rel<T>(gpu.topRows(m), cpu.topRows(m)), Tol<T>::product);
      EXPECT_TRUE(gpu.bottomRows(2) == c0.bottomRows(2)) << "padding rows below m must be untouched";
    }
}

// Random symmetric (indefinite, eigenvalues of both signs) and an ill-conditioned SPD Gram.
TYPED_TEST(CudaParity, EigvalshMatchesCpu) {
  KVLAB_REQUIRE_CUDA();
  using T = TypeParam;
  const std::int64_t n = 256;
  Mat<T> g = gaussian<T>(n, n, 40);
  Mat<T> sym = (g + g.transpose()) / T(2);
  VectorXd decaying = testing::geometric_spectrum(n, 100.0, 1e-6);
  const std::initializer_list<Mat<T>> inputs = {sym, symmetric_with<T>(decaying, 41)};
  for (const Mat<T>& s0 : inputs) {
    Mat<T> a = s0, b = s0;
    Vec<T> wc(n), wg(n);
    cpu_backend().eigvalsh(a.data(), n, n, wc.data());
    cuda_backend().eigvalsh(b.data(), n, n, wg.data());
    const double scale = wc.cwiseAbs().maxCoeff();
    expect_below(std::string("eigvalsh ") + prec<T>() + (&s0 == &*inputs.begin() ? " 256 random symmetric" : " 256 SPD, 1e8 decay"),
                 (wg - wc).template cast<double>().cwiseAbs().maxCoeff() / scale, Tol<T>::values);
    EXPECT_TRUE(std::is_sorted(wg.data(), wg.data() + n));
  }
}

TYPED_TEST(CudaParity, EighMatchesCpuUpToSignAndReconstructs) {
  KVLAB_REQUIRE_CUDA();
  using T = TypeParam;
  const std::int64_t n = 200, lds = 203;
  VectorXd lam = VectorXd::LinSpaced(n, -50.0, 149.0);  // gaps of 1 against ‖S‖ = 149
  Mat<T> s0 = Mat<T>::Zero(lds, n);
  s0.topRows(n) = symmetric_with<T>(lam, 50);
  Mat<T> vc = s0, vg = s0;
  Vec<T> wc(n), wg(n);
  cpu_backend().eigh(vc.data(), n, lds, wc.data());
  cuda_backend().eigh(vg.data(), n, lds, wg.data());
  expect_below(std::string("eigh ") + prec<T>() + " 200 values", (wg - wc).template cast<double>().cwiseAbs().maxCoeff() / 149.0,
               Tol<T>::values);
  Mat<T> v = vg.topRows(n);
  Mat<T> s = s0.topRows(n);
  expect_below(std::string("eigh ") + prec<T>() + " 200 reconstruction", rel<T>(Mat<T>(v * wg.asDiagonal() * v.transpose()), s),
               Tol<T>::reconstruct);
  expect_below(std::string("eigh ") + prec<T>() + " 200 orthonormality", orthonormality_error<T>(v), Tol<T>::orthonormal);
  expect_below(std::string("eigh ") + prec<T>() + " 200 vectors vs CPU (up to sign)", column_error_up_to_sign<T>(v, Mat<T>(vc.topRows(n))),
               Tol<T>::vectors);
  EXPECT_TRUE(vg.bottomRows(3) == s0.bottomRows(3)) << "rows past n (lds > n) must be untouched";
}

TYPED_TEST(CudaParity, EighTopMatchesCpuAndFullEigh) {
  KVLAB_REQUIRE_CUDA();
  using T = TypeParam;
  const std::int64_t n = 240, r = 60, ldv = 250;  // the top 25 %, as in a rank sweep
  VectorXd lam = testing::geometric_spectrum(n, 1000.0, 1e-3).reverse();  // ascending, distinct
  Mat<T> s0 = symmetric_with<T>(lam, 60);
  Mat<T> a = s0, b = s0, vc(ldv, r), vg = Mat<T>::Constant(ldv, r, T(3));
  Vec<T> wc(r), wg(r);
  cpu_backend().eigh_top(a.data(), n, n, r, wc.data(), vc.data(), ldv);
  cuda_backend().eigh_top(b.data(), n, n, r, wg.data(), vg.data(), ldv);
  expect_below(std::string("eigh_top ") + prec<T>() + " 240, r 60 values", (wg - wc).template cast<double>().cwiseAbs().maxCoeff() / 1000.0,
               Tol<T>::values);
  EXPECT_TRUE(std::is_sorted(wg.data(), wg.data() + r));
  // Relative gaps near the top are ≥ 2.9 % of λ there; the vectors are well determined.
  expect_below(std::string("eigh_top ") + prec<T>() + " 240, r 60 vectors vs CPU",
               column_error_up_to_sign<T>(Mat<T>(vg.topRows(n)), Mat<T>(vc.topRows(n))), Tol<T>::vectors);
  EXPECT_TRUE(vg.bottomRows(ldv - n) == Mat<T>::Constant(ldv - n, r, T(3)));
  EXPECT_THROW(cuda_backend().eigh_top(b.data(), n, n, n + 1, wg.data(), vg.data(), ldv), Error);
}

// Both drivers, tall and wide, with and without vectors, on a spectrum σ₁/σ_k = 1e3.
TYPED_TEST(CudaParity, SvdThinMatchesCpuForBothDriversAndShapes) {
  KVLAB_REQUIRE_CUDA();
  using T = TypeParam;
  CudaBackend& gpu = cuda_backend();
  using Shape = std::pair<std::int64_t, std::int64_t>;
  for (auto driver : {CudaBackend::SvdDriver::polar, CudaBackend::SvdDriver::qr})
    for (const Shape& shape : {Shape{400, 120}, Shape{120, 400}}) {
      const std::int64_t m = shape.first, n = shape.second;
      gpu.set_svd_driver(driver);
      const std::int64_t k = std::min(m, n), lda = m + 1;
      VectorXd sigma = testing::geometric_spectrum(k, 10.0, 1e-3);
      Mat<T> a0 = Mat<T>::Zero(lda, n);
      a0.topRows(m) = testing::matrix_with_spectrum(m, n, sigma, 70 + m).cast<T>();
      const std::string what = std::string("svd ") + prec<T>() +
                               (driver == CudaBackend::SvdDriver::polar ? " gesvdp " : " gesvd ") + std::to_string(m) +
                               "x" + std::to_string(n);

      Mat<T> ac = a0, ag = a0, uc(m, k), ug(m + 2, k), vtc(k, n), vtg(k + 1, n);
      Vec<T> sc(k), sg(k), sv(k);
      cpu_backend().svd_thin(ac.data(), m, n, lda, sc.data(), uc.data(), m, vtc.data(), k);
      gpu.svd_thin(ag.data(), m, n, lda, sg.data(), ug.data(), m + 2, vtg.data(), k + 1);
      expect_below(what + " sigma", (sg - sc).template cast<double>().cwiseAbs().maxCoeff() / 10.0, Tol<T>::values);
      Mat<T> u = ug.topRows(m), vt = vtg.topRows(k);
      Mat<T> a = a0.topRows(m);
      expect_below(what + " reconstruction", rel<T>(Mat<T>(u * sg.asDiagonal() * vt), a), Tol<T>::reconstruct);
      expect_below(what + " U orthonormality", orthonormality_error<T>(u), Tol<T>::orthonormal);
      expect_below(what + " V orthonormality", orthonormality_error<T>(Mat<T>(vt.transpose())), Tol<T>::orthonormal);
      // σ's are 0.3 %–3 % apart in relative terms: the leading vectors are well determined.
      const Eigen::Index lead = 20;
      expect_below(what + " leading U vs CPU", column_error_up_to_sign<T>(Mat<T>(u.leftCols(lead)), Mat<T>(uc.leftCols(lead))),
                   Tol<T>::vectors);

      Mat<T> av = a0;  // values only
      gpu.svd_thin(av.data(), m, n, lda, sv.data(), nullptr, 0, nullptr, 0);
      expect_below(what + " values only", (sv - sc).template cast<double>().cwiseAbs().maxCoeff() / 10.0, Tol<T>::values);
      EXPECT_FALSE(gpu.last_svd_fell_back()) << what << ": gesvdp perturbed a well-conditioned matrix";
    }
  gpu.set_svd_driver(CudaBackend::SvdDriver::polar);
}

// A rank-deficient input (10 of 60 σ are 0): whatever the driver does internally (gesvdp
// perturbs and, past rounding, kvlab falls back to gesvd), the result must be the SVD of A.
TYPED_TEST(CudaParity, SvdThinOfRankDeficientMatrixIsExact) {
  KVLAB_REQUIRE_CUDA();
  using T = TypeParam;
  const std::int64_t m = 300, n = 60, k = 60;
  VectorXd sigma = VectorXd::Zero(k);
  sigma.head(50) = testing::geometric_spectrum(50, 4.0, 1e-2);
  Mat<T> a0 = testing::matrix_with_spectrum(m, n, sigma, 80).cast<T>();
  Mat<T> a = a0, u(m, k), vt(k, n);
  Vec<T> s(k);
  cuda_backend().svd_thin(a.data(), m, n, m, s.data(), u.data(), m, vt.data(), k);
  std::printf("[ parity   ] svd rank-deficient %s: gesvdp fell back to gesvd: %s\n", prec<T>(),
              cuda_backend().last_svd_fell_back() ? "yes" : "no");
  expect_below(std::string("svd ") + prec<T>() + " 300x60 rank 50 sigma vs planted",
               (s.template cast<double>() - sigma).cwiseAbs().maxCoeff() / 4.0, 10 * Tol<T>::values);
  expect_below(std::string("svd ") + prec<T>() + " 300x60 rank 50 reconstruction", rel<T>(Mat<T>(u * s.asDiagonal() * vt), a0),
               Tol<T>::reconstruct);
}

TYPED_TEST(CudaParity, OrthonormalizeMatchesCpuAndStaysOrthonormalWhenIllConditioned) {
  KVLAB_REQUIRE_CUDA();
  using T = TypeParam;
  const std::int64_t m = 500, n = 40, lda = 504;
  // Well conditioned: Householder Q is unique up to column signs, so compare with LAPACK's.
  Mat<T> g = Mat<T>::Constant(lda, n, T(9));
  g.topRows(m) = gaussian<T>(m, n, 90);
  Mat<T> qc = g, qg = g;
  cpu_backend().orthonormalize(qc.data(), m, n, lda);
  cuda_backend().orthonormalize(qg.data(), m, n, lda);
  expect_below(std::string("orthonormalize ") + prec<T>() + " 500x40 Q vs CPU (up to sign)",
               column_error_up_to_sign<T>(Mat<T>(qg.topRows(m)), Mat<T>(qc.topRows(m))), Tol<T>::vectors);
  EXPECT_TRUE(qg.bottomRows(4) == g.bottomRows(4));
  // κ = 1e6: the trailing columns of Q are ill-determined (error ≈ u·κ), so check the
  // properties instead: orthonormal to rounding (unlike CholQR) and spanning A's range.
  VectorXd sigma = testing::geometric_spectrum(n, 1.0, 1e-6);
  Mat<T> a0 = testing::matrix_with_spectrum(m, n, sigma, 91).cast<T>();
  Mat<T> q = a0;
  cuda_backend().orthonormalize(q.data(), m, n, m);
  expect_below(std::string("orthonormalize ") + prec<T>() + " kappa 1e6 orthonormality", orthonormality_error<T>(q),
               Tol<T>::orthonormal);
  expect_below(std::string("orthonormalize ") + prec<T>() + " kappa 1e6 range (QQ^T A = A)", rel<T>(Mat<T>(q * (q.transpose() * a0)), a0),
               Tol<T>::reconstruct);
  EXPECT_THROW(cuda_backend().orthonormalize(q.data(), n - 1, n, m), Error);  // m < n
}

// The f64 Gram resolves σ down to 1e-6·σ₁ (docs/performance.md §4) on the GPU as on the CPU;
// the oracle is the planted spectrum, not the CPU.
TEST(CudaGram, IllConditionedDoubleGramRecoversPlantedSpectrum) {
  KVLAB_REQUIRE_CUDA();
  const int n = 2000, c = 64;
  VectorXd sigma = testing::geometric_spectrum(c, 1.0, 1e-8);
  Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> x =
      testing::matrix_with_spectrum(n, c, sigma, 21);
  MatrixXd g(c, c);
  cuda_backend().gram(x.data(), n, c, c, 1.0, 0.0, g.data(), c);
  VectorXd w(c);
  cuda_backend().eigvalsh(g.data(), c, c, w.data());
  for (int i = 0; i < c && sigma(i) >= 1e-6; ++i)
    EXPECT_NEAR(std::sqrt(std::max(w(c - 1 - i), 0.0)) / sigma(i), 1.0, 1e-3) << "sigma index " << i;
}

// Buffers are reused (a second call of the same size allocates nothing) and a smaller call
// after a larger one reads only what it uploaded.
TEST(CudaBackendMemory, BuffersGrowOnlyAndSmallerCallsStayCorrect) {
  KVLAB_REQUIRE_CUDA();
  CudaBackend& gpu = cuda_backend();
  gpu.release_memory();
  EXPECT_EQ(gpu.device_bytes_held(), 0u);
  Mat<double> big = gaussian<double>(64, 2000, 5), cbig(64, 64);
  gpu.gram(big.data(), 2000, 64, 64, 1.0, 0.0, cbig.data(), 64);
  const std::size_t held = gpu.device_bytes_held();
  EXPECT_GT(held, 0u);
  gpu.gram(big.data(), 2000, 64, 64, 1.0, 0.0, cbig.data(), 64);
  EXPECT_EQ(gpu.device_bytes_held(), held);
  Mat<double> small = gaussian<double>(8, 30, 6), cs(8, 8), want(8, 8);
  gpu.gram(small.data(), 30, 8, 8, 1.0, 0.0, cs.data(), 8);
  cpu_backend().gram(small.data(), 30, 8, 8, 1.0, 0.0, want.data(), 8);
  EXPECT_LT(rel<double>(upper_of<double>(cs), upper_of<double>(want)), 1e-14);
  EXPECT_EQ(gpu.device_bytes_held(), held);
  const auto t = gpu.last_timing();
  EXPECT_GE(t.compute_ms, 0.0);
}

// A CUDA failure becomes a kvlab::Error naming the call: a 2^20-column f64 Gram needs 8 TiB.
TEST(CudaBackendErrors, AllocationFailureNamesTheCall) {
  KVLAB_REQUIRE_CUDA();
  const std::int64_t c = std::int64_t{1} << 20;
  std::vector<double> x(static_cast<std::size_t>(c), 1.0), out(1);
  try {
    cuda_backend().gram(x.data(), 1, c, c, 1.0, 0.0, out.data(), c);
    FAIL() << "expected kvlab::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cudaMalloc"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("gram"), std::string::npos) << e.what();
  }
  // The backend stays usable after the failure.
  Mat<double> a = gaussian<double>(5, 7, 1), c2(5, 5), c3(5, 5);
  cuda_backend().gram(a.data(), 7, 5, 5, 1.0, 0.0, c2.data(), 5);
  cpu_backend().gram(a.data(), 7, 5, 5, 1.0, 0.0, c3.data(), 5);
  EXPECT_LT(rel<double>(upper_of<double>(c2), upper_of<double>(c3)), 1e-14);
}

// Runs everywhere: without a device, asking for the backend is one clear error, twice.
TEST(CudaBackendErrors, NoDeviceGivesOneClearError) {
  if (cuda_available()) {
    EXPECT_EQ(cuda_backend().name(), "cuda");
    EXPECT_TRUE(cuda_unavailable_reason().empty());
    GTEST_SKIP() << "a device is present: " << cuda_backend().device_description();
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      cuda_backend();
      FAIL() << "expected kvlab::Error";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).rfind("no CUDA device", 0), 0u) << e.what();
    }
  }
}

}  // namespace
}  // namespace kvlab::linalg
