// Eigen-rank: how many leading components keep a given fraction of a matrix's energy
// (‖X‖²_F = Σσ² = Σλ of XᵀX), as in xKV Figure 2.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace kvlab::analysis {

// Smallest k such that the k largest eigenvalues hold at least `energy` ∈ (0, 1] of their
// sum. `eigenvalues` is descending and non-negative (clamp rounding negatives first).
// Returns 0 for an all-zero spectrum.
std::int64_t rank_for_energy(std::span<const double> eigenvalues, double energy);

// Cumulative energy fractions: out[k] = Σ_{i≤k} λ_i / Σ λ (descending input).
std::vector<double> cumulative_energy(std::span<const double> eigenvalues);

}  // namespace kvlab::analysis
