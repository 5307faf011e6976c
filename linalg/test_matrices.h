// Test fixtures with known spectra: A = Q₁·diag(σ)·Q₂ᵀ with Haar-random orthogonal factors
// (Householder QR of a Gaussian matrix), so the singular values are exact by construction.
#pragma once

#include <Eigen/Dense>
#include <cstdint>
#include <random>

namespace kvlab::linalg::testing {

inline Eigen::MatrixXd random_orthonormal(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  Eigen::MatrixXd g(rows, cols);
  for (std::int64_t j = 0; j < cols; ++j)
    for (std::int64_t i = 0; i < rows; ++i) g(i, j) = normal(rng);
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  return qr.householderQ() * Eigen::MatrixXd::Identity(rows, cols);
}

// m×n matrix whose singular values are exactly `sigma` (length ≤ min(m, n), the rest 0).
inline Eigen::MatrixXd matrix_with_spectrum(std::int64_t m, std::int64_t n, const Eigen::VectorXd& sigma,
                                            std::uint64_t seed) {
  const auto k = sigma.size();
  return random_orthonormal(m, k, seed) * sigma.asDiagonal() * random_orthonormal(n, k, seed + 1).transpose();
}

// σ_i = first · ratio^(i/(k-1)): a geometric spectrum from `first` down to first·ratio.
inline Eigen::VectorXd geometric_spectrum(std::int64_t k, double first, double ratio) {
  Eigen::VectorXd s(k);
  for (std::int64_t i = 0; i < k; ++i) s(i) = first * std::pow(ratio, k > 1 ? double(i) / double(k - 1) : 0.0);
  return s;
}

}  // namespace kvlab::linalg::testing
