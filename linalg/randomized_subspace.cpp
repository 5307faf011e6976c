// Backend::randomized_subspace (HMT subspace iteration through the backend's own ops) and the
// pieces every backend shares, so that CPU and CUDA draw the same Ω and finish the same way.
#include <random>

#include "core/error.h"
#include "linalg/backend.h"

namespace kvlab::linalg {

std::vector<float> randomized_sketch(std::int64_t c, std::int64_t ell, std::uint64_t seed, std::uint64_t stream) {
  std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                    static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)};
  std::mt19937_64 rng(seq);
  std::normal_distribution<float> normal;
  std::vector<float> omega(static_cast<std::size_t>(c * ell));
  for (auto& v : omega) v = normal(rng);
  return omega;
}

namespace {
template <typename R>
void top_vectors(Backend& be, const std::vector<float>& w, std::int64_t c, std::int64_t ell, std::int64_t r,
                 std::vector<float>& v) {
  // W = (QᵀX)ᵀ = U·S·Zᵀ: the right singular vectors of QᵀX are U's columns, already descending.
  std::vector<R> wr(w.begin(), w.end()), sigma(static_cast<std::size_t>(ell)), u(static_cast<std::size_t>(c * ell)),
      zt(static_cast<std::size_t>(ell * ell));
  be.svd_thin(wr.data(), c, ell, c, sigma.data(), u.data(), c, zt.data(), ell);
  v.assign(u.begin(), u.begin() + c * r);
}
}  // namespace

void sketch_top_vectors(Backend& backend, std::vector<float>& w, std::int64_t c, std::int64_t ell, std::int64_t r,
                        bool f64, std::vector<float>& v) {
  f64 ? top_vectors<double>(backend, w, c, ell, r, v) : top_vectors<float>(backend, w, c, ell, r, v);
}

std::vector<double> column_energies(const std::vector<float>& a, std::int64_t n, std::int64_t r) {
  std::vector<double> energy(static_cast<std::size_t>(r), 0.0);
  for (std::int64_t t = 0; t < n; ++t)
    for (std::int64_t j = 0; j < r; ++j) {
      const double v = a[static_cast<std::size_t>(t * r + j)];
      energy[static_cast<std::size_t>(j)] += v * v;
    }
  return energy;
}

SubspaceFactors Backend::randomized_subspace(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                             const RandomizedOptions& o) {
  SubspaceFactors out = Backend::resident_randomized_top(x, n, c, r, o, nullptr);
  out.a.resize(static_cast<std::size_t>(n * r));
  gemm(true, false, r, n, c, 1.f, out.v.data(), c, x, c, 0.f, out.a.data(), r);  // Aᵀ = V_rᵀ·Xᵀ
  out.energy = column_energies(out.a, n, r);
  return out;
}

SubspaceFactors Backend::resident_randomized_top(const float* x, std::int64_t n, std::int64_t c, std::int64_t r,
                                                 const RandomizedOptions& o, void*) {
  if (n < 1 || c < 1 || r < 1 || r > std::min(n, c) || o.oversample < 0 || o.iters < 0)
    fail("linalg randomized_subspace: needs 1 ≤ r ≤ min(n, c), oversample ≥ 0 and iters ≥ 0 (got n = {}, c = {}, "
         "r = {}, oversample = {}, iters = {})",
         n, c, r, o.oversample, o.iters);
  const std::int64_t ell = std::min(r + o.oversample, std::min(n, c));
  const auto omega = randomized_sketch(c, ell, o.seed, o.stream);
  std::vector<float> y(static_cast<std::size_t>(n * ell)), w(static_cast<std::size_t>(c * ell));
  // X = (Xᵀ)ᵀ with Xᵀ the column-major c×n view of the row-major data.
  gemm(true, false, n, ell, c, 1.f, x, c, omega.data(), c, 0.f, y.data(), n);  // Y = X·Ω  [n×ℓ]
  orthonormalize(y.data(), n, ell, n);
  for (std::int64_t it = 0; it < o.iters; ++it) {
    gemm(false, false, c, ell, n, 1.f, x, c, y.data(), n, 0.f, w.data(), c);  // W = Xᵀ·Q  [c×ℓ]
    orthonormalize(w.data(), c, ell, c);
    gemm(true, false, n, ell, c, 1.f, x, c, w.data(), c, 0.f, y.data(), n);  // Y = X·W
    orthonormalize(y.data(), n, ell, n);
  }
  gemm(false, false, c, ell, n, 1.f, x, c, y.data(), n, 0.f, w.data(), c);  // (QᵀX)ᵀ = XᵀQ  [c×ℓ]
  SubspaceFactors out;
  out.rank = r;
  sketch_top_vectors(*this, w, c, ell, r, o.small_svd_f64, out.v);
  return out;
}

}  // namespace kvlab::linalg
