// Element types of KV tensors on disk. In memory kvlab computes in f32 (and f64 where
// precision demands it); f16/bf16 exist only as storage and are converted on the fly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace kvlab::core {

enum class DType { f32, f16, bf16 };

std::string_view to_string(DType dtype);               // "f32" | "f16" | "bf16"
DType parse_dtype(std::string_view name);              // accepts the above and "float32", "float16", "bfloat16"
std::size_t dtype_bytes(DType dtype);                  // 4 or 2

// Conversions between f32 and 16-bit bit patterns (IEEE half, or bfloat16 with
// round-to-nearest-even). `bits` and `values` have the same length.
void f32_to_16bit(DType dtype, std::span<const float> values, std::span<std::uint16_t> bits);
void bits16_to_f32(DType dtype, std::span<const std::uint16_t> bits, std::span<float> values);

}  // namespace kvlab::core
