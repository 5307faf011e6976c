#include "analysis/energy_rank.h"

#include <numeric>

#include "core/error.h"

namespace kvlab::analysis {

std::vector<double> cumulative_energy(std::span<const double> eigenvalues) {
  std::vector<double> cumulative(eigenvalues.size());
  std::partial_sum(eigenvalues.begin(), eigenvalues.end(), cumulative.begin());
  const double total = cumulative.empty() ? 0.0 : cumulative.back();
  for (double& c : cumulative) c = total > 0 ? c / total : 0.0;
  return cumulative;
}

std::int64_t rank_for_energy(std::span<const double> eigenvalues, double energy) {
  if (!(energy > 0.0 && energy <= 1.0)) fail("energy level {} is outside (0, 1]", energy);
  const double total = std::accumulate(eigenvalues.begin(), eigenvalues.end(), 0.0);
  if (total <= 0) return 0;
  // Compare sums, not ratios, so energy = 1 means "every non-zero eigenvalue".
  const double target = energy * total;
  double kept = 0;
  for (std::size_t k = 0; k < eigenvalues.size(); ++k) {
    kept += eigenvalues[k];
    if (kept >= target * (1 - 1e-12)) return static_cast<std::int64_t>(k + 1);
  }
  return static_cast<std::int64_t>(eigenvalues.size());
}

}  // namespace kvlab::analysis
