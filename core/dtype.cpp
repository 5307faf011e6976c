#include "core/dtype.h"

#include <Eigen/Core>

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

// Eigen's vectorised casts do the rounding (F16C / AVX-512 packet conversions when compiled
// for them, round-to-nearest-even in software otherwise); element-wise Eigen::half
// construction would be several times slower on the dump's hot path.
namespace {
template <typename Half>
void to_16bit(std::span<const float> values, std::span<std::uint16_t> bits) {
  static_assert(sizeof(Half) == sizeof(std::uint16_t));
  Eigen::Map<const Eigen::ArrayXf> in(values.data(), static_cast<Eigen::Index>(values.size()));
  Eigen::Map<Eigen::Array<Half, Eigen::Dynamic, 1>> out(reinterpret_cast<Half*>(bits.data()),
                                                        static_cast<Eigen::Index>(bits.size()));
  out = in.template cast<Half>();
}
template <typename Half>
void from_16bit(std::span<const std::uint16_t> bits, std::span<float> values) {
  Eigen::Map<const Eigen::Array<Half, Eigen::Dynamic, 1>> in(reinterpret_cast<const Half*>(bits.data()),
                                                             static_cast<Eigen::Index>(bits.size()));
  Eigen::Map<Eigen::ArrayXf> out(values.data(), static_cast<Eigen::Index>(values.size()));
  out = in.template cast<float>();
}
}  // namespace

void f32_to_16bit(DType dtype, std::span<const float> values, std::span<std::uint16_t> bits) {
  if (values.size() != bits.size()) fail("f32_to_16bit: {} values but {} outputs", values.size(), bits.size());
  if (dtype == DType::f16) {
    to_16bit<Eigen::half>(values, bits);
  } else if (dtype == DType::bf16) {
    to_16bit<Eigen::bfloat16>(values, bits);
  } else {
    fail("f32_to_16bit: {} is not a 16-bit type", to_string(dtype));
  }
}

void bits16_to_f32(DType dtype, std::span<const std::uint16_t> bits, std::span<float> values) {
  if (values.size() != bits.size()) fail("bits16_to_f32: {} inputs but {} values", bits.size(), values.size());
  if (dtype == DType::f16) {
    from_16bit<Eigen::half>(bits, values);
  } else if (dtype == DType::bf16) {
    from_16bit<Eigen::bfloat16>(bits, values);
  } else {
    fail("bits16_to_f32: {} is not a 16-bit type", to_string(dtype));
  }
}

}  // namespace kvlab::core
