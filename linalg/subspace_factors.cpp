// SubspaceFactors::canonicalize_signs (backend.h).
#include <cmath>

#include "core/error.h"
#include "linalg/backend.h"

namespace kvlab::linalg {

void SubspaceFactors::canonicalize_signs() {
  if (rank <= 0) return;
  const auto r = static_cast<std::size_t>(rank);
  if (v.size() % r || a.size() % r)
    fail("canonicalize_signs: v ({} values) and a ({} values) are not multiples of rank {}", v.size(), a.size(), rank);
  const std::size_t c = v.size() / r, n = a.size() / r;
  if (c == 0) return;
  for (std::size_t j = 0; j < r; ++j) {
    float* column = v.data() + j * c;
    std::size_t largest = 0;
    for (std::size_t i = 1; i < c; ++i)
      if (std::abs(column[i]) > std::abs(column[largest])) largest = i;
    if (!(column[largest] < 0)) continue;
    for (std::size_t i = 0; i < c; ++i) column[i] = -column[i];
    for (std::size_t t = 0; t < n; ++t) a[t * r + j] = -a[t * r + j];
  }
}

}  // namespace kvlab::linalg
