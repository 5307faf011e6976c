// The generators' random numbers (internal header). Part of the data's definition: changing any of
// this changes every generated sample.
//
// A stream is std::mt19937_64 seeded by a splitmix64 hash of its parts (seed, task, purpose, sample
// index, ...), so each sample has its own stream and sample i does not depend on how many samples
// were asked for. Integers come from Lemire's multiply-shift and floats from the top 53 bits: both
// portable, unlike std::uniform_int_distribution and std::shuffle, whose algorithms the standard
// leaves to the library.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <random>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/fnv1a.h"

namespace kvlab::datasets::detail {

inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// FNV-1a: a stable 64-bit id for a name (task names seed their streams).
constexpr std::uint64_t name_hash(std::string_view name) { return core::fnv1a64(name); }

class Rng {
 public:
  explicit Rng(std::initializer_list<std::uint64_t> parts) {
    std::uint64_t h = 0x6B766C6162ULL;  // "kvlab"
    for (const auto p : parts) h = splitmix64(h ^ p);
    engine_.seed(h);
  }

  std::uint64_t bits() { return engine_(); }

  // Uniform integer in [0, n), n ≥ 1.
  std::int64_t below(std::int64_t n) {
    const auto un = static_cast<std::uint64_t>(n);
    std::uint64_t x = engine_();
    __uint128_t m = static_cast<__uint128_t>(x) * un;
    auto low = static_cast<std::uint64_t>(m);
    if (low < un) {
      const std::uint64_t threshold = (0 - un) % un;
      while (low < threshold) {
        x = engine_();
        m = static_cast<__uint128_t>(x) * un;
        low = static_cast<std::uint64_t>(m);
      }
    }
    return static_cast<std::int64_t>(m >> 64);
  }

  // Uniform integer in [lo, hi] (inclusive).
  std::int64_t between(std::int64_t lo, std::int64_t hi) { return lo + below(hi - lo + 1); }

  double uniform() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }  // [0, 1)

  template <typename T>
  void shuffle(std::vector<T>& v) {  // Fisher–Yates, from the back
    for (std::int64_t i = static_cast<std::int64_t>(v.size()) - 1; i > 0; --i) {
      std::swap(v[static_cast<std::size_t>(i)], v[static_cast<std::size_t>(below(i + 1))]);
    }
  }

  // k distinct integers of [0, n), in random order (like Python's random.sample(range(n), k)).
  std::vector<std::int64_t> sample(std::int64_t n, std::int64_t k) {
    std::vector<std::int64_t> out;
    out.reserve(static_cast<std::size_t>(k));
    if (k * 4 < n) {  // sparse: rejection keeps it O(k) for large n
      std::unordered_set<std::int64_t> seen;
      while (static_cast<std::int64_t>(out.size()) < k) {
        const std::int64_t x = below(n);
        if (seen.insert(x).second) out.push_back(x);
      }
      return out;
    }
    std::vector<std::int64_t> all(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) all[static_cast<std::size_t>(i)] = i;
    for (std::int64_t i = 0; i < k; ++i) {  // partial Fisher–Yates from the front
      std::swap(all[static_cast<std::size_t>(i)], all[static_cast<std::size_t>(i + below(n - i))]);
      out.push_back(all[static_cast<std::size_t>(i)]);
    }
    return out;
  }

 private:
  std::mt19937_64 engine_;
};

}  // namespace kvlab::datasets::detail
