#include "datasets/ruler_sizing.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.h"

namespace kvlab::datasets::detail {

SizeFit fit_size(const std::function<std::int64_t(std::int64_t units)>& measure, const SizeSearch& s) {
  if (s.min_units < 0 || s.max_units < s.min_units) {
    fail("size search: bad bounds [{}, {}]", s.min_units, s.max_units);
  }
  std::map<std::int64_t, std::int64_t> seen;  // size → tokens
  SizeFit fit;
  std::int64_t best = -1;                    // largest size known to fit
  std::int64_t over = s.max_units + 1;       // smallest size known to overflow
  double slope = std::max(s.tokens_per_unit, 1e-6);
  std::int64_t n = std::clamp(s.start, s.min_units, s.max_units);
  std::int64_t prev_n = -1;
  std::int64_t prev_t = 0;
  for (int step = 0; step < 200; ++step) {
    const std::int64_t t = measure(n);
    ++fit.measurements;
    seen[n] = t;
    if (t <= s.budget) {
      if (n > best) best = n;
    } else {
      over = std::min(over, n);
    }
    if (prev_n >= 0 && prev_n != n && t != prev_t) {
      const double secant = static_cast<double>(t - prev_t) / static_cast<double>(n - prev_n);
      if (secant > 0) slope = secant;
    }
    prev_n = n;
    prev_t = t;
    const std::int64_t lo = best >= 0 ? best + 1 : s.min_units;  // sizes still undecided: [lo, hi]
    const std::int64_t hi = over - 1;
    if (lo > hi) break;  // bracket closed (or min_units overflows: lo = min_units > hi)
    std::int64_t next;
    if (step < 6) {
      const double gap = static_cast<double>(s.budget - t) / slope;  // > 0: room left, < 0: overflow
      next = n + static_cast<std::int64_t>(gap >= 0 ? std::max(1.0, std::floor(gap)) : std::min(-1.0, std::ceil(gap)));
    } else {
      next = lo + (hi - lo) / 2;  // secant stalled: bisect
    }
    n = std::clamp(next, lo, hi);
  }
  if (best < 0) {
    fit.units = s.min_units;
    fit.tokens = seen.count(s.min_units) ? seen[s.min_units] : measure(s.min_units);
    fit.fits = false;
    return fit;
  }
  fit.units = best;
  fit.tokens = seen[best];
  fit.fits = true;
  return fit;
}

}  // namespace kvlab::datasets::detail
