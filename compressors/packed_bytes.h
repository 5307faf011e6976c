// The little-endian fields methods pack their stored forms from (StoredTensor::packed,
// compressors/compressed.h): fp16 values and int32 counts or indices at a byte offset. One
// definition for every method's packer and the decoder that reads the bytes back; and streams of
// b-bit codes.
#pragma once

#include <Eigen/Core>

#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace kvlab::compressors {

// v rounded to fp16 (nearest even), as a float.
inline float to_fp16(double v) { return static_cast<float>(Eigen::half(static_cast<float>(v))); }

// Writes v as fp16 into bytes [at, at + 2).
inline void put_fp16(std::vector<std::uint8_t>& out, std::int64_t at, float v) {
  const auto bits = Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(v));
  out[static_cast<std::size_t>(at)] = static_cast<std::uint8_t>(bits & 0xff);
  out[static_cast<std::size_t>(at + 1)] = static_cast<std::uint8_t>(bits >> 8);
}

// The fp16 value in bytes [at, at + 2).
inline float get_fp16(std::span<const std::uint8_t> b, std::int64_t at) {
  const auto bits = static_cast<std::uint16_t>(b[static_cast<std::size_t>(at)] | b[static_cast<std::size_t>(at + 1)] << 8);
  return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(bits));
}

// int32 in bytes [at, at + 4), little-endian as the host (x86) lays it out.
inline void put_i32(std::vector<std::uint8_t>& out, std::int64_t at, std::int32_t v) { std::memcpy(out.data() + at, &v, 4); }
inline std::int32_t get_i32(std::span<const std::uint8_t> b, std::int64_t at) {
  std::int32_t v = 0;
  std::memcpy(&v, b.data() + at, 4);
  return v;
}

// A stream of b-bit codes (1 ≤ b ≤ 8) from byte `at`: code k at bits [k·b, k·b + b), least
// significant first, so a code may straddle two bytes. put_code ORs into bytes that start zeroed.
inline void put_code(std::vector<std::uint8_t>& out, std::int64_t at, std::int64_t k, int bits, std::uint32_t code) {
  const std::int64_t bit = k * bits;
  const auto byte = static_cast<std::size_t>(at + bit / 8);
  const std::uint32_t word = code << (bit % 8);
  out[byte] |= static_cast<std::uint8_t>(word & 0xff);
  if (bit % 8 + bits > 8) out[byte + 1] |= static_cast<std::uint8_t>(word >> 8);
}
inline std::uint32_t get_code(std::span<const std::uint8_t> b, std::int64_t at, std::int64_t k, int bits) {
  const std::int64_t bit = k * bits;
  const auto byte = static_cast<std::size_t>(at + bit / 8);
  std::uint32_t word = b[byte];
  if (bit % 8 + bits > 8) word |= std::uint32_t{b[byte + 1]} << 8;
  return word >> (bit % 8) & ((1u << bits) - 1);
}

}  // namespace kvlab::compressors
