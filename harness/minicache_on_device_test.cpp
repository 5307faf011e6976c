// minicache_store_pair (the host stage's kernel run through torch, on the model's tensors)
// against the compressors' host stage on the same layer pair (compress_chain of
// "minicache:start=0,…" on a two-layer in-memory cache): rows crafted to reach every branch of
// the kernel (zero rows, identical and antipodal rows, Ω ≈ 0, random rows on both sides of the
// threshold), each retain (top: KVCache-Factory's count per head) and scope. The stored forms
// must be the same bytes, tensor by tensor, and the rebuilds decoded from them the same floats.
// (torch sums a row's squares in another order than the host, so a double may differ in its last
// bit; on these rows no fp16 value, side of the threshold or place in the top-k ranking moves.)
#include "harness/minicache_on_device.h"

#include <gtest/gtest.h>

#include <map>
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

// The bytes of a tensor as stored (little-endian, like StoredTensor::packed).
std::vector<std::uint8_t> bytes_of(const at::Tensor& t) {
  const at::Tensor c = t.contiguous().cpu();
  const auto* p = static_cast<const std::uint8_t*>(c.data_ptr());
  return {p, p + c.nbytes()};
}

TEST(MinicacheOnDevice, StoresWhatTheHostStageStores) {
  const auto [a, b] = crafted_pair();
  const compressors::CacheShape shape{2, H, H, D, T, 0, 0};
  const compressors::InMemoryCache cache(shape, {a, b}, {a, b}, {core::FloatTensor({0, H, D}), core::FloatTensor({0, H, D})});
  const at::Tensor x1 = torch_layer(a), x2 = torch_layer(b);
  for (const char* keys : {"t=0.6,gamma=0.05", "t=0.5,gamma=0.3,scope=head", "t=0.5,gamma=0.2,retain=above",
                           "t=0,gamma=0", "t=1,gamma=1,scope=head", "t=0.6,gamma=0.05,retain=top",
                           "t=0.5,gamma=0.3,retain=top,scope=head", "t=0.6,gamma=1,retain=top"}) {
    const auto text = fmt::format("minicache:start=0,end=1,part=key,{}", keys);
    SCOPED_TRACE(text);
    const auto chain = compressors::parse_spec(text);
    const auto host = compressors::compress_chain({cache, linalg::cpu_backend(), nullptr}, chain);
    std::map<std::string, std::vector<std::uint8_t>> want;
    for (const auto* t : host->stored()) want[t->name] = t->packed;
    const auto got = minicache_store_pair(x1, x2, chain.stages[0]);
    ASSERT_EQ(got.size(), static_cast<std::size_t>(H));
    std::int64_t bytes = 2 * T * H * D * 2;  // the values, stored dense (part=key)
    for (std::int64_t h = 0; h < H; ++h) {
      const auto& s = got[static_cast<std::size_t>(h)];
      const std::string head = fmt::format("pair0-1/key/head{}/", h);
      for (const auto& [name, tensor] : {std::pair{"direction", &s.direction}, {"magnitudes", &s.magnitudes},
                                         {"retained0", &s.retained1}, {"retained1", &s.retained2},
                                         {"retained_index", &s.index}}) {
        SCOPED_TRACE(head + name);
        // The host stores no tensor for an empty part (no merged or no retained rows).
        EXPECT_EQ(bytes_of(*tensor), want.count(head + name) ? want[head + name] : std::vector<std::uint8_t>{});
      }
      bytes += s.bytes();
    }
    EXPECT_EQ(bytes, host->bytes());
    for (int l = 0; l < 2; ++l)
      EXPECT_TRUE(at::equal(minicache_rebuild(got, l, T), torch_layer(host->reconstruct(l).key))) << "layer " << l;
  }
}

TEST(MinicacheOnDevice, OnCudaStoresWhatTheCpuStores) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  const auto [a, b] = crafted_pair();
  const at::Tensor x1 = torch_layer(a), x2 = torch_layer(b);
  const auto spec = compressors::parse_spec("minicache:start=0,end=1,gamma=0.3").stages[0];
  const auto cpu = minicache_store_pair(x1, x2, spec);
  const auto cuda = minicache_store_pair(x1.cuda(), x2.cuda(), spec);
  for (std::size_t h = 0; h < cpu.size(); ++h) {
    EXPECT_EQ(bytes_of(cuda[h].direction), bytes_of(cpu[h].direction));
    EXPECT_EQ(bytes_of(cuda[h].magnitudes), bytes_of(cpu[h].magnitudes));
    EXPECT_EQ(bytes_of(cuda[h].index), bytes_of(cpu[h].index));
  }
  EXPECT_TRUE(at::equal(minicache_rebuild(cuda, 1, T).cpu(), minicache_rebuild(cpu, 1, T)));
}

}  // namespace
}  // namespace kvlab::harness
