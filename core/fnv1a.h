// FNV-1a, 64-bit (Fowler, Noll, Vo; http://www.isthe.com/chongo/tech/comp/fnv/): the one
// non-cryptographic byte hash kvlab uses for stable ids (task seeds, prompt hashes, sweep cells,
// imported run ids). Offset basis 14695981039346656037 = 0xcbf29ce484222325, prime
// 1099511628211 = 0x100000001b3, as the reference defines them; core/fnv1a_test.cpp pins the
// reference's published test vectors.
#pragma once

#include <cstdint>
#include <string_view>

namespace kvlab::core {

inline constexpr std::uint64_t kFnv1a64Offset = 0xcbf29ce484222325ULL;
inline constexpr std::uint64_t kFnv1a64Prime = 0x100000001b3ULL;

// Folds `bytes` into a running hash `h` (start from kFnv1a64Offset), so callers can hash
// several pieces without concatenating them.
constexpr std::uint64_t fnv1a64_update(std::uint64_t h, std::string_view bytes) {
  for (const char c : bytes) h = (h ^ static_cast<unsigned char>(c)) * kFnv1a64Prime;
  return h;
}

constexpr std::uint64_t fnv1a64(std::string_view bytes) { return fnv1a64_update(kFnv1a64Offset, bytes); }

}  // namespace kvlab::core
