// kivi_rebuild (torch, on the model's tensors) against the compressors' host stage run as the
// chain runs it: each head's [T, D] part stored at fp16 (StoredTensor + pack_fp16_storage),
// kivi_quantize_tensor, keys rotated with core::Rope before and after. Without RoPE both sides
// do the same f32 operations on the same fp16 values, so they agree to one f32 rounding of the
// dequantized value (1e-6 of a group's range); with RoPE the two rotations may differ by an ulp,
// which can move a value across an fp16 or a code boundary: a few elements, each by at most one
// quantization step, so the test counts them.
#include "harness/kivi_on_device.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <span>

#include <fmt/format.h>

#include "compressors/compressed.h"
#include "core/error_of.h"

namespace kvlab::harness {
namespace {

using compressors::KiviParams;
using compressors::Part;

constexpr std::int64_t H = 2, T = 70, D = 12;

// [H, T, D] f32: N(0,1) scaled per channel, one constant channel (scale 0 groups), an outlier.
at::Tensor random_layer(std::uint64_t seed) {
  at::Tensor x = at::empty({H, T, D}, at::kFloat);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  auto* v = x.data_ptr<float>();
  for (std::int64_t i = 0; i < x.numel(); ++i) v[i] = normal(rng) * static_cast<float>(1 + i % D);
  x.select(2, 3).fill_(0.75f);
  x[1][5][7] = 40.0f;
  return x;
}

// The host chain's rebuild of x [H, T, D] (see the file comment): [H, T, D] f32 and the stored
// tensors' bytes. Per head as dense_representation stores the cache, or per layer ([T, H·D]) as
// store_uncompressed does.
KiviStored host_rebuild(const at::Tensor& x, Part part, const std::vector<std::int64_t>& positions,
                        const core::Rope& rope, const KiviParams& p, DenseStore store = DenseStore::per_head) {
  const bool key = part == Part::key;
  at::Tensor rows = x.transpose(0, 1).contiguous();  // [T, H, D]
  std::span<float> all(rows.data_ptr<float>(), static_cast<std::size_t>(rows.numel()));
  if (key) rope.apply(all, T, H, positions);
  at::Tensor out = rows.clone();
  std::int64_t bytes = 0;
  const auto layout = key ? compressors::QuantLayout::per_channel : compressors::QuantLayout::per_token;
  const auto quantize = [&](const at::Tensor& block, at::Tensor dst) {  // block [T, c] contiguous
    auto t = compressors::StoredTensor::fp16("block", {T, block.size(1)},
                                             std::vector<float>(block.data_ptr<float>(), block.data_ptr<float>() + block.numel()),
                                             layout, true);
    compressors::pack_fp16_storage({&t});
    compressors::kivi_quantize_tensor(t, p);
    dst.copy_(at::from_blob(t.values.data(), {T, block.size(1)}, at::kFloat));
    bytes += t.bytes();
  };
  if (store == DenseStore::per_layer)
    quantize(rows.view({T, H * D}), out.view({T, H * D}));
  else
    for (std::int64_t h = 0; h < H; ++h) quantize(rows.select(1, h).contiguous(), out.select(1, h));
  if (key) rope.apply(std::span<float>(out.data_ptr<float>(), static_cast<std::size_t>(out.numel())), T, H, positions, true);
  return {out.transpose(0, 1), bytes};
}

std::vector<KiviParams> params() {
  // Dividing and non-dividing groups, residual windows that split the tokens or cover them all.
  return {{2, 32, 16}, {4, 5, 0}, {2, 7, 32}, {8, 32, 128}, {4, 70, 0}};
}

TEST(KiviOnDevice, RebuildsWhatTheHostChainStores) {
  const at::Tensor x = random_layer(1);
  std::vector<std::int64_t> positions(T);
  for (std::int64_t t = 0; t < T; ++t) positions[t] = 2 * t + 1;
  const at::Tensor pos = at::tensor(at::ArrayRef<std::int64_t>(positions), at::kLong);
  for (const auto& p : params())
    for (const Part part : {Part::key, Part::value})
      for (const DenseStore store : {DenseStore::per_head, DenseStore::per_layer}) {
        SCOPED_TRACE(fmt::format("bits {} group {} residual {} {} {}", p.bits, p.group, p.residual, to_string(part),
                                 store == DenseStore::per_head ? "per head" : "per layer"));
        const auto want = host_rebuild(x, part, positions, core::Rope::identity(), p, store);
        const auto got = kivi_rebuild(x, part, pos, core::Rope::identity(), p, store);
        ASSERT_EQ(got.rows.sizes(), want.rows.sizes());
        EXPECT_LE((got.rows - want.rows).abs().max().item<float>(), 1e-6f * (x.abs().max().item<float>() * 2));
        EXPECT_GT((got.rows - x).abs().max().item<float>(), p.bits == 8 ? 0.0f : 1e-2f);  // it did quantize
        EXPECT_EQ(got.bytes, want.bytes);
      }
  // Per-token groups of 5 channels cross the heads' 12-channel rows only when stored per layer.
  const KiviParams crossing{2, 5, 0};
  EXPECT_GT((kivi_rebuild(x, Part::value, pos, core::Rope::identity(), crossing, DenseStore::per_layer).rows -
             kivi_rebuild(x, Part::value, pos, core::Rope::identity(), crossing, DenseStore::per_head).rows)
                .abs()
                .max()
                .item<float>(),
            1e-2f);
}

TEST(KiviOnDevice, WithRopeAtMostAFewValuesMoveByOneStep) {
  const at::Tensor x = random_layer(2);
  std::vector<std::int64_t> positions(T);
  for (std::int64_t t = 0; t < T; ++t) positions[t] = 1000 + 3 * t;
  const at::Tensor pos = at::tensor(at::ArrayRef<std::int64_t>(positions), at::kLong);
  const auto rope = core::Rope::standard(D, 10000.0);
  for (const auto& p : params()) {
    SCOPED_TRACE(fmt::format("bits {} group {} residual {}", p.bits, p.group, p.residual));
    const auto want = host_rebuild(x, Part::key, positions, rope, p).rows;
    const auto got = kivi_rebuild(x, Part::key, pos, rope, p).rows;
    const auto diff = (got - want).abs();
    const auto moved = (diff > 1e-4f).sum().item<std::int64_t>();
    EXPECT_LE(moved, x.numel() / 200);  // none moved on this machine
    EXPECT_LT(diff.max().item<float>(), (x.max() - x.min()).item<float>());  // a step is below a group's range
    EXPECT_LT(((got - want).norm() / want.norm()).item<double>(), 0.05);
  }
}

TEST(KiviOnDevice, OnCudaRebuildsWhatTheCpuDoes) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const at::Tensor x = random_layer(3);
  const at::Tensor pos = at::arange(T, at::kLong);
  const auto rope = core::Rope::standard(D, 10000.0);
  for (const auto& p : params())
    for (const Part part : {Part::key, Part::value}) {
      const auto cpu = kivi_rebuild(x, part, pos, rope, p).rows;
      const auto cuda = kivi_rebuild(x.cuda(), part, pos.cuda(), rope, p).rows.cpu();
      EXPECT_LE((cuda - cpu).abs().gt(1e-4).sum().item<std::int64_t>(), x.numel() / 200);
    }
}

TEST(KiviOnDevice, NonFiniteValuesAndFp16OverflowAreErrors) {
  at::Tensor x = random_layer(4);
  const at::Tensor pos = at::arange(T, at::kLong);
  x[0][3][2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(core::error_of([&] { kivi_rebuild(x, Part::value, pos, core::Rope::identity(), {2, 32, 0}); }),
              ::testing::HasSubstr("non-finite"));
  x[0][3][2] = 1e6f;  // beyond fp16's 65504: infinite once stored at fp16, as on the host
  EXPECT_THAT(core::error_of([&] { kivi_rebuild(x, Part::value, pos, core::Rope::identity(), {2, 32, 0}); }),
              ::testing::HasSubstr("beyond fp16"));
  // A group of f32 values whose min is beyond fp16 (a caller that skipped the fp16 store).
  const at::Tensor wide = at::full({4, 4}, -1e6f);
  EXPECT_THAT(core::error_of([&] { kivi_pack_on_device(wide, compressors::QuantLayout::per_token, false, {2, 4, 0}); }),
              ::testing::HasSubstr("fp16 range"));
}

// The packed form, byte for byte against compressors::kivi_pack: every layout, residual rule and
// group that divides or does not, on strided views, with a constant column (scale 0), an outlier,
// and code counts that end inside a byte. The decoding against compressors::kivi_unpack of the
// same bytes: both compute code·scale + min in f32, the host's possibly fused into one rounding
// (-march=native contracts it), so they agree to one rounding of the product.
struct PackCase {
  std::int64_t n, c;
};
std::vector<PackCase> pack_cases() { return {{70, 12}, {33, 7}, {5, 3}, {1, 9}, {129, 20}}; }

// [n, c] f32 at fp16, a column view of a wider tensor (row stride c + 3).
at::Tensor random_matrix(const PackCase& k, std::uint64_t seed) {
  at::Tensor wide = at::empty({k.n, k.c + 3}, at::kFloat);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  auto* v = wide.data_ptr<float>();
  for (std::int64_t i = 0; i < wide.numel(); ++i) v[i] = normal(rng) * static_cast<float>(1 + i % 5);
  at::Tensor x = wide.narrow(1, 2, k.c);
  x.select(1, k.c / 2).fill_(-0.375f);
  x[k.n / 2][0] = 300.0f;
  x.copy_(x.to(at::kHalf).to(at::kFloat));
  return x;
}

void expect_packed_as_on_the_host(const at::Device& device) {
  using compressors::QuantLayout;
  for (const auto& k : pack_cases())
    for (const auto& p : params())
      for (const auto layout : {QuantLayout::per_channel, QuantLayout::per_token})
        for (const bool token_rows : {true, false}) {
          SCOPED_TRACE(fmt::format("[{}, {}] bits {} group {} residual {} {} token_rows {}", k.n, k.c, p.bits, p.group,
                                   p.residual, layout == QuantLayout::per_channel ? "per channel" : "per token", token_rows));
          const at::Tensor x = random_matrix(k, 7 * k.n + k.c);
          const at::Tensor host_x = x.contiguous();
          const std::span<const float> values(host_x.data_ptr<float>(), static_cast<std::size_t>(host_x.numel()));
          const auto want = compressors::kivi_pack(values, layout, k.n, k.c, token_rows, p, "test");
          const at::Tensor got = kivi_pack_on_device(x.to(device), layout, token_rows, p).cpu();
          ASSERT_EQ(got.numel(), static_cast<std::int64_t>(want.size()));
          ASSERT_EQ(got.numel(), compressors::kivi_bytes(layout, k.n, k.c, token_rows, p));
          EXPECT_TRUE(at::equal(got, at::from_blob(const_cast<std::uint8_t*>(want.data()), {got.numel()}, at::kByte)));

          std::vector<float> host_decoded(values.size());
          compressors::kivi_unpack(want, layout, k.n, k.c, token_rows, p, host_decoded);
          const at::Tensor decoded = kivi_unpack_on_device(got.to(device), layout, k.n, k.c, token_rows, p).cpu();
          const at::Tensor expected = at::from_blob(host_decoded.data(), {k.n, k.c}, at::kFloat);
          const float one_rounding = std::ldexp(1.0f, -23) * host_x.abs().max().item<float>() * 2;
          EXPECT_LE((decoded - expected).abs().max().item<float>(), one_rounding);

          at::Tensor stored = x.to(device).clone();
          EXPECT_EQ(kivi_store_on_device(stored, layout, token_rows, p), got.numel());
          EXPECT_TRUE(at::equal(stored.cpu(), decoded));
        }
}

TEST(KiviOnDevice, PackedFormIsTheHostPackedFormByteForByte) { expect_packed_as_on_the_host(at::kCPU); }

TEST(KiviOnDevice, OnCudaThePackedFormIsTheHostPackedForm) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  expect_packed_as_on_the_host(at::kCUDA);
}

TEST(KiviOnDevice, APackedFormOfAnotherSizeIsAnError) {
  const compressors::KiviParams p{2, 4, 0};
  const at::Tensor packed = kivi_pack_on_device(random_matrix({8, 4}, 1), compressors::QuantLayout::per_token, true, p);
  EXPECT_THAT(core::error_of([&] {
                kivi_unpack_on_device(packed.narrow(0, 0, packed.numel() - 1), compressors::QuantLayout::per_token, 8, 4,
                                      true, p);
              }),
              ::testing::HasSubstr("packed form takes"));
}

}  // namespace
}  // namespace kvlab::harness
