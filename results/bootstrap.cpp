#include "results/bootstrap.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"

namespace kvlab::results {

namespace {

// Unbiased-enough index in [0, n): the high 64 bits of a 64×64 product (Lemire). The bias is
// below n / 2⁶⁴, far under anything a bootstrap could notice.
std::size_t draw_index(std::mt19937_64& rng, std::size_t n) {
  return static_cast<std::size_t>((static_cast<unsigned __int128>(rng()) * n) >> 64);
}

// Quantile with linear interpolation between order statistics (R type 7).
double quantile(const std::vector<double>& sorted, double p) {
  const double h = p * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(h));
  const auto hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (h - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

double mean_of(std::span<const double> v) {
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

}  // namespace

BootstrapResult bootstrap_mean(std::span<const double> values, std::uint64_t seed, int resamples, double confidence) {
  if (values.empty()) fail("bootstrap: no samples to resample");
  if (resamples < 1) fail("bootstrap: {} resamples (need at least 1)", resamples);
  if (!(confidence > 0 && confidence < 1)) fail("bootstrap: confidence {} is not in (0, 1)", confidence);
  const std::size_t n = values.size();
  std::mt19937_64 rng(seed);
  std::vector<double> means(static_cast<std::size_t>(resamples));
  for (auto& m : means) {
    double s = 0;
    for (std::size_t i = 0; i < n; ++i) s += values[draw_index(rng, n)];
    m = s / static_cast<double>(n);
  }
  std::sort(means.begin(), means.end());
  const double alpha = (1 - confidence) / 2;
  return {mean_of(values), {quantile(means, alpha), quantile(means, 1 - alpha)}, n};
}

}  // namespace kvlab::results
