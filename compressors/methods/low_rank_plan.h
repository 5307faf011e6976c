// Internal to svd/xkv (low_rank.cpp and low_rank_resident.cpp): a spec resolved against the
// cache's layer count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compressors/cache_source.h"
#include "compressors/spec.h"
#include "linalg/backend.h"

namespace kvlab::compressors {

struct LowRankPlan {
  std::string method;
  std::vector<std::vector<int>> groups;
  std::vector<int> group_of;  // per layer: its group, −1 = uncompressed
  bool compress_key = true, compress_value = true;
  std::int64_t rk = 0, rv = 0;
  bool randomized = false;
  std::int64_t oversample = 10, iters = 2;
  linalg::GramPrecision gram_precision = linalg::GramPrecision::f64;
  std::uint64_t seed = 0;

  bool f64() const { return gram_precision == linalg::GramPrecision::f64; }  // solves in f64 (else f32)
  bool compresses(Part p) const { return p == Part::key ? compress_key : compress_value; }
  std::int64_t rank(Part p) const { return p == Part::key ? rk : rv; }
};

// The plan of `spec` on a cache of this shape. Fails naming the key when a rank exceeds the
// columns of the largest group (G·H·D: no X_g has a higher rank); a shorter last group, and a
// cache with fewer tokens than the rank (short prompts, few kept rows after eviction), clamp it
// where the factors are made (notes: effective_rank).
LowRankPlan make_low_rank_plan(const StageSpec& spec, const CacheShape& shape);

// The randomized sketch's stream for group g's keys or values: both routes (low_rank.cpp and
// low_rank_resident.cpp) draw Ω from (seed, this), so they compress alike.
inline std::uint64_t sketch_stream(std::size_t group, Part part) { return group * 2 + (part == Part::key ? 0 : 1); }

}  // namespace kvlab::compressors
