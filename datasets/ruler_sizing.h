// Sizing a generated input to a token budget (internal to the RULER-style generators).
//
// RULER binary-searches the haystack size once per task on a probe sample and then backs each
// sample off by a fixed step (25 noise units, 500 essay words) while it overflows, so a sample may
// land a whole step short of the budget. kvlab searches per sample instead, for the largest size n
// in [min_units, max_units] with measure(n) ≤ budget and measure(n + 1) > budget (or n = max_units):
// secant steps from `start` (token counts are nearly linear in n), bisection once they stall, every
// step kept inside the bracket (largest size known to fit, smallest known to overflow). A few token
// counts per sample; deterministic, so the same inputs give the same size.
#pragma once

#include <cstdint>
#include <functional>

namespace kvlab::datasets::detail {

struct SizeSearch {
  std::int64_t budget = 0;     // tokens the measured text may use
  std::int64_t start = 1;      // first size tried
  std::int64_t min_units = 1;
  std::int64_t max_units = 1;  // ≥ min_units
  double tokens_per_unit = 1;  // initial slope estimate, > 0
};

struct SizeFit {
  std::int64_t units = 0;   // the size found (min_units when nothing fits)
  std::int64_t tokens = 0;  // measure(units)
  bool fits = false;        // false: even min_units exceeds the budget
  int measurements = 0;     // calls to measure (for tests and logs)
};

// measure(n): token count of the text built with size n (a pure function of n).
SizeFit fit_size(const std::function<std::int64_t(std::int64_t units)>& measure, const SizeSearch& search);

}  // namespace kvlab::datasets::detail
