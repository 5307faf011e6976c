#include "core/dtype.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/error.h"

namespace kvlab::core {
namespace {

std::uint16_t to_bits(DType dtype, float value) {
  std::uint16_t bits = 0;
  f32_to_16bit(dtype, std::span(&value, 1), std::span(&bits, 1));
  return bits;
}

float from_bits(DType dtype, std::uint16_t bits) {
  float value = 0;
  bits16_to_f32(dtype, std::span(&bits, 1), std::span(&value, 1));
  return value;
}

constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(DTypeTest, NamesParseAndSizes) {
  EXPECT_EQ(to_string(DType::f32), "f32");
  EXPECT_EQ(to_string(DType::f16), "f16");
  EXPECT_EQ(to_string(DType::bf16), "bf16");
  EXPECT_EQ(parse_dtype("float16"), DType::f16);
  EXPECT_EQ(parse_dtype("bfloat16"), DType::bf16);
  EXPECT_EQ(parse_dtype("f32"), DType::f32);
  EXPECT_EQ(dtype_bytes(DType::f32), 4u);
  EXPECT_EQ(dtype_bytes(DType::bf16), 2u);
  try {
    parse_dtype("int8");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("int8"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("bf16"), std::string::npos);  // lists the allowed names
  }
}

TEST(DTypeTest, KnownHalfPatterns) {
  EXPECT_EQ(to_bits(DType::f16, 1.0f), 0x3C00);
  EXPECT_EQ(to_bits(DType::f16, -2.0f), 0xC000);
  EXPECT_EQ(to_bits(DType::f16, 0.5f), 0x3800);
  EXPECT_EQ(to_bits(DType::f16, 0.0f), 0x0000);
  EXPECT_EQ(to_bits(DType::f16, -0.0f), 0x8000);
  EXPECT_EQ(to_bits(DType::f16, 65504.0f), 0x7BFF);         // largest finite half
  EXPECT_EQ(to_bits(DType::f16, std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(to_bits(DType::f16, kInf), 0x7C00);
  EXPECT_EQ(to_bits(DType::f16, -kInf), 0xFC00);
  const std::uint16_t nan = to_bits(DType::f16, std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7C00, 0x7C00);
  EXPECT_NE(nan & 0x03FF, 0);
}

TEST(DTypeTest, KnownBfloatPatterns) {
  EXPECT_EQ(to_bits(DType::bf16, 1.0f), 0x3F80);
  EXPECT_EQ(to_bits(DType::bf16, -2.0f), 0xC000);
  EXPECT_EQ(to_bits(DType::bf16, 0.5f), 0x3F00);
  EXPECT_EQ(to_bits(DType::bf16, kInf), 0x7F80);
  EXPECT_EQ(to_bits(DType::bf16, -kInf), 0xFF80);
  const std::uint16_t nan = to_bits(DType::bf16, std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7F80, 0x7F80);
  EXPECT_NE(nan & 0x007F, 0);
}

// Halfway cases go to the even mantissa; just above halfway goes up.
TEST(DTypeTest, RoundToNearestEven) {
  const float half_ulp16 = std::ldexp(1.0f, -11);  // half an f16 ulp at 1.0
  EXPECT_EQ(to_bits(DType::f16, 1.0f + half_ulp16), 0x3C00);          // tie, 0x3C00 is even
  EXPECT_EQ(to_bits(DType::f16, 1.0f + 3 * half_ulp16), 0x3C02);      // tie, 0x3C01 is odd
  EXPECT_EQ(to_bits(DType::f16, 1.0f + half_ulp16 * 1.01f), 0x3C01);  // above the tie
  EXPECT_EQ(to_bits(DType::f16, 65519.0f), 0x7BFF);                   // below the tie with infinity
  EXPECT_EQ(to_bits(DType::f16, 65520.0f), 0x7C00);                   // the tie rounds to infinity

  const float half_ulp_bf = std::ldexp(1.0f, -8);  // half a bf16 ulp at 1.0
  EXPECT_EQ(to_bits(DType::bf16, 1.0f + half_ulp_bf), 0x3F80);
  EXPECT_EQ(to_bits(DType::bf16, 1.0f + 3 * half_ulp_bf), 0x3F82);
  EXPECT_EQ(to_bits(DType::bf16, 1.0f + half_ulp_bf * 1.01f), 0x3F81);
}

TEST(DTypeTest, KnownValuesBack) {
  EXPECT_EQ(from_bits(DType::f16, 0x3C00), 1.0f);
  EXPECT_EQ(from_bits(DType::f16, 0x7BFF), 65504.0f);
  EXPECT_EQ(from_bits(DType::f16, 0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(from_bits(DType::f16, 0xFC00), -kInf);
  EXPECT_TRUE(std::isnan(from_bits(DType::f16, 0x7E00)));
  EXPECT_EQ(from_bits(DType::bf16, 0x3F80), 1.0f);
  EXPECT_EQ(from_bits(DType::bf16, 0x7F80), kInf);
  EXPECT_TRUE(std::isnan(from_bits(DType::bf16, 0x7FC0)));
}

// Every 16-bit pattern survives bits → f32 → bits (NaNs only need to stay NaN).
TEST(DTypeTest, EveryPatternRoundTrips) {
  std::vector<std::uint16_t> bits(65536), back(65536);
  std::vector<float> values(65536);
  for (std::size_t i = 0; i < bits.size(); ++i) bits[i] = static_cast<std::uint16_t>(i);
  for (const DType dtype : {DType::f16, DType::bf16}) {
    bits16_to_f32(dtype, bits, values);
    f32_to_16bit(dtype, values, back);
    for (std::size_t i = 0; i < bits.size(); ++i) {
      if (std::isnan(values[i])) continue;
      ASSERT_EQ(back[i], bits[i]) << to_string(dtype) << " pattern " << i;
    }
  }
}

TEST(DTypeTest, RejectsBadArguments) {
  std::vector<float> values(3);
  std::vector<std::uint16_t> bits(2);
  EXPECT_THROW(f32_to_16bit(DType::f16, values, bits), Error);
  EXPECT_THROW(bits16_to_f32(DType::bf16, bits, values), Error);
  std::vector<std::uint16_t> three(3);
  EXPECT_THROW(f32_to_16bit(DType::f32, values, three), Error);
  EXPECT_THROW(bits16_to_f32(DType::f32, three, values), Error);
}

}  // namespace
}  // namespace kvlab::core
