// minicache_merge_pair (torch, on the model's tensors) against the compressors' host stage on the
// same layer pair (compress_chain of "minicache:start=0,…" on a two-layer in-memory cache, then
// reconstruct): rows crafted to reach every branch of the host code (zero rows, identical and
// antipodal rows, Ω ≈ 0, random rows on both sides of the threshold), each retain and scope.
// Both compute the angles and directions in double and round the stored values to fp16, so the
// rebuilds agree to an f32 rounding of e·‖x‖ (1e-6 relative); a row whose Ω sits within double
// rounding of the threshold could flip sides, so the retained counts must match exactly and any
// element differing is counted.
#include "harness/minicache_on_device.h"

#include <gtest/gtest.h>

#include <random>

#include <fmt/format.h>

#include "compressors/chain.h"
#include "compressors/methods/minicache.h"
#include "linalg/backend.h"

namespace kvlab::harness {
namespace {

constexpr std::int64_t H = 3, T = 40, D = 8;

// Two layers [T, H, D] (host layout) with every kind of row pair.
std::pair<core::FloatTensor, core::FloatTensor> crafted_pair() {
  core::FloatTensor a({T, H, D}), b({T, H, D});
  std::mt19937_64 rng(9);
  std::normal_distribution<float> normal;
  for (std::size_t i = 0; i < a.data.size(); ++i) a.data[i] = normal(rng), b.data[i] = normal(rng);
  const auto row = [&](core::FloatTensor& x, std::int64_t t, std::int64_t h) { return x.data.data() + (t * H + h) * D; };
  for (std::int64_t h = 0; h < H; ++h) {
    std::fill_n(row(a, 0, h), D, 0.0f);                                            // a zero row
    std::fill_n(row(a, 1, h), D, 0.0f), std::fill_n(row(b, 1, h), D, 0.0f);        // two zero rows
    for (int d = 0; d < D; ++d) row(b, 2, h)[d] = 3 * row(a, 2, h)[d];             // parallel: Ω = 0
    for (int d = 0; d < D; ++d) row(b, 3, h)[d] = -row(a, 3, h)[d];                // antipodal: Ω = π
    for (int d = 0; d < D; ++d) row(b, 4, h)[d] = row(a, 4, h)[d] * (d == 0 ? 1.0000003f : 1.0f);  // Ω ≈ 1e-7
    for (std::int64_t t = 5; t < 15; ++t)  // close pairs: small angles, retained below a threshold
      for (int d = 0; d < D; ++d) row(b, t, h)[d] = row(a, t, h)[d] + 0.05f * row(b, t, h)[d];
  }
  return {a, b};
}

// [T, H, D] host layout → torch's [H, T, D].
at::Tensor torch_layer(const core::FloatTensor& x) {
  return at::from_blob(const_cast<float*>(x.data.data()), {T, H, D}, at::kFloat).transpose(0, 1).contiguous();
}

TEST(MinicacheOnDevice, RebuildsWhatTheHostStageDoes) {
  const auto [a, b] = crafted_pair();
  const compressors::CacheShape shape{2, H, H, D, T, 0, 0};
  const compressors::InMemoryCache cache(shape, {a, b}, {a, b}, {core::FloatTensor({0, H, D}), core::FloatTensor({0, H, D})});
  const at::Tensor x1 = torch_layer(a), x2 = torch_layer(b);
  for (const char* keys : {"t=0.6,gamma=0.05", "t=0.5,gamma=0.3,scope=head", "t=0.5,gamma=0.2,retain=above",
                           "t=0,gamma=0", "t=1,gamma=1,scope=head"}) {
    const auto text = fmt::format("minicache:start=0,end=1,part=key,{}", keys);
    SCOPED_TRACE(text);
    const auto chain = compressors::parse_spec(text);
    const auto host = compressors::compress_chain({cache, linalg::cpu_backend(), nullptr}, chain);
    const auto got = minicache_merge_pair(x1, x2, chain.stages[0]);
    EXPECT_EQ(got.merged + got.retained, H * T);
    const double merged_fraction = host->notes()["merged_fraction"].get<double>();
    EXPECT_EQ(got.merged, static_cast<std::int64_t>(std::llround(merged_fraction * H * T)));
    // The values are stored dense (part=key): the pair's bytes are the total less them.
    EXPECT_EQ(compressors::minicache_pair_bytes(got.merged, got.retained, D), host->bytes() - 2 * T * H * D * 2);
    for (int l = 0; l < 2; ++l) {
      const auto want = torch_layer(host->reconstruct(l).key);
      const auto& mine = l == 0 ? got.first : got.second;
      const auto diff = (mine - want).abs();
      EXPECT_EQ((diff > 1e-6 * (want.abs() + 1)).sum().item<std::int64_t>(), 0) << "max " << diff.max().item<float>();
    }
  }
}

TEST(MinicacheOnDevice, OnCudaRebuildsWhatTheCpuDoes) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const auto [a, b] = crafted_pair();
  const at::Tensor x1 = torch_layer(a), x2 = torch_layer(b);
  const auto spec = compressors::parse_spec("minicache:start=0,end=1,gamma=0.3").stages[0];
  const auto cpu = minicache_merge_pair(x1, x2, spec);
  const auto cuda = minicache_merge_pair(x1.cuda(), x2.cuda(), spec);
  EXPECT_EQ(cuda.retained, cpu.retained);
  EXPECT_LT((cuda.first.cpu() - cpu.first).abs().max().item<float>(), 1e-5);
  EXPECT_LT((cuda.second.cpu() - cpu.second).abs().max().item<float>(), 1e-5);
}

}  // namespace
}  // namespace kvlab::harness
