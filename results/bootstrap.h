// Seeded percentile bootstrap of a mean: the confidence interval `kvlab check` uses for
// per-sample metrics (accuracy at n = 50 moves by ±0.1 on noise alone; a CI keeps that from
// being called a regression).
#pragma once

#include <cstdint>
#include <span>

namespace kvlab::results {

struct Interval {
  double low = 0, high = 0;
};

struct BootstrapResult {
  double mean = 0;  // of the values themselves
  Interval ci;      // percentile interval of the resampled means
  std::size_t n = 0;
};

// Resamples `values` with replacement `resamples` times and returns the (1−confidence)/2 and
// (1+confidence)/2 quantiles (linear interpolation) of the resampled means. For a paired
// comparison pass the per-sample differences candidate_i − baseline_i. Deterministic for a
// seed on every platform: the generator is std::mt19937_64 (fixed by the standard) and the
// index draw is done here, not by an implementation-defined distribution. Throws when
// `values` is empty or resamples < 1.
BootstrapResult bootstrap_mean(std::span<const double> values, std::uint64_t seed, int resamples = 2000,
                               double confidence = 0.95);

}  // namespace kvlab::results
