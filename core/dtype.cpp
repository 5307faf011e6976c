#include "core/dtype.h"

#include <Eigen/Core>
#include <bit>

#include "core/error.h"

namespace kvlab::core {

std::string_view to_string(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
  }
  return "?";
}

DType parse_dtype(std::string_view name) {
  if (name == "f32" || name == "float32") return DType::f32;
  if (name == "f16" || name == "float16") return DType::f16;
  if (name == "bf16" || name == "bfloat16") return DType::bf16;
  fail("unknown dtype '{}' (allowed: f32, f16, bf16)", name);
}

std::size_t dtype_bytes(DType dtype) { return dtype == DType::f32 ? 4 : 2; }

// Eigen::half / Eigen::bfloat16 do the rounding (F16C instructions when compiled for them).
void f32_to_16bit(DType dtype, std::span<const float> values, std::span<std::uint16_t> bits) {
  if (values.size() != bits.size()) fail("f32_to_16bit: {} values but {} outputs", values.size(), bits.size());
  if (dtype == DType::f16) {
    for (std::size_t i = 0; i < values.size(); ++i) bits[i] = std::bit_cast<std::uint16_t>(Eigen::half(values[i]));
  } else if (dtype == DType::bf16) {
    for (std::size_t i = 0; i < values.size(); ++i) bits[i] = std::bit_cast<std::uint16_t>(Eigen::bfloat16(values[i]));
  } else {
    fail("f32_to_16bit: {} is not a 16-bit type", to_string(dtype));
  }
}

void bits16_to_f32(DType dtype, std::span<const std::uint16_t> bits, std::span<float> values) {
  if (values.size() != bits.size()) fail("bits16_to_f32: {} inputs but {} values", bits.size(), values.size());
  if (dtype == DType::f16) {
    for (std::size_t i = 0; i < bits.size(); ++i) values[i] = static_cast<float>(std::bit_cast<Eigen::half>(bits[i]));
  } else if (dtype == DType::bf16) {
    for (std::size_t i = 0; i < bits.size(); ++i) values[i] = static_cast<float>(std::bit_cast<Eigen::bfloat16>(bits[i]));
  } else {
    fail("bits16_to_f32: {} is not a 16-bit type", to_string(dtype));
  }
}

}  // namespace kvlab::core
