// commonkv_store (the host stage's kernel, compressors/methods/commonkv_kernel.h, run through
// torch) against the compressors' host stage (compress_chain) on a tiny model written here:
// random W_k/W_v with biases and random attn_in. Every tensor the host stores for the grouped
// layers is compared element by element with the device's tensor of that name.
// - P, D_key, D_value and the biases come from the same host SVD (commonkv_factors): equal.
// - merged_index: equal (the cosines differ in the last bits of a double at most; no pair of
//   these sits that close to the budget's edge).
// - The latents: c = h·Pᵀ is an f32 GEMM that torch sums in another order than the host's BLAS,
//   so the two c differ by a few f32 rounding steps (about d_model·2⁻²⁴ relative at worst), far
//   below one fp16 step (2⁻¹¹ relative); the split and the merged sum are the same kernel on
//   both. Rounded to fp16, a latent is the host's value or, where the two f32 values straddle a
//   rounding midpoint, its neighbour: the fp16 bit patterns differ by at most 1, on a small
//   fraction of the values.
#include "harness/commonkv_on_device.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <map>
#include <random>

#include <fmt/format.h>

#include "compressors/chain.h"
#include "compressors/methods/commonkv.h"
#include "core/safetensors.h"

namespace kvlab::harness {
namespace {

namespace fs = std::filesystem;
constexpr int L = 5, H = 2, D = 8, N = H * D, d_model = 48;
constexpr std::int64_t T = 96;

// A checkpoint of random k/v projections and biases in `dir`, and a cache whose attn_in is random
// (the grouped layers read nothing else; keys and values are random too, for the leftover ones).
struct Tiny {
  fs::path dir = fs::temp_directory_path() / fmt::format("kvlab_commonkv_on_device_{}", ::getpid());
  std::vector<core::FloatTensor> keys, values, queries, h;
  std::vector<at::Tensor> attn_in;  // h as torch tensors

  Tiny() {
    std::mt19937_64 rng(5);
    std::normal_distribution<float> normal;
    const auto random = [&](std::size_t n, float scale) {
      std::vector<float> v(n);
      for (auto& x : v) x = scale * normal(rng);
      return v;
    };
    std::map<std::string, core::TensorToWrite> weights;
    for (int l = 0; l < L; ++l) {
      for (const char* proj : {"k_proj", "v_proj"}) {
        const auto name = fmt::format("model.layers.{}.self_attn.{}.", l, proj);
        weights[name + "weight"] = {{N, d_model}, random(N * d_model, 1 / std::sqrt(float{d_model}))};
        weights[name + "bias"] = {{N}, random(N, 1)};
      }
      for (auto* x : {&keys, &values}) x->emplace_back(core::FloatTensor({T, H, D})).data = random(T * N, 1);
      queries.emplace_back(core::FloatTensor({0, 2 * H, D}));
      h.emplace_back(core::FloatTensor({T, d_model})).data = random(T * d_model, 1);
      attn_in.push_back(at::from_blob(h.back().data.data(), {T, d_model}, at::kFloat));
    }
    fs::create_directories(dir);
    core::write_safetensors(dir / "model.safetensors", weights);
  }
  ~Tiny() { fs::remove_all(dir); }
};

// How many values of `got` differ from the host's stored values, failing where the two fp16 bit
// patterns are more than `steps` apart or the shapes differ.
std::int64_t fp16_differences(const compressors::StoredTensor& want, const at::Tensor& got, int steps) {
  EXPECT_EQ(std::vector<std::int64_t>(got.sizes().begin(), got.sizes().end()), want.shape) << want.name;
  if (got.numel() != static_cast<std::int64_t>(want.values.size())) return got.numel();
  const auto bits = [](const at::Tensor& x) { return x.cpu().reshape({-1}).to(at::kHalf).view(at::kShort).to(at::kInt); };
  const at::Tensor w = bits(at::from_blob(const_cast<float*>(want.values.data()), {got.numel()}, at::kFloat));
  const at::Tensor apart = (w - bits(got)).abs();
  if (apart.numel() > 0) {
    EXPECT_LE(apart.max().item<int>(), steps) << want.name;
  }
  return apart.ne(0).sum().item<std::int64_t>();
}

void expect_host_form(const at::Device& device) {
  const Tiny tiny;
  const core::Checkpoint checkpoint(tiny.dir);
  const compressors::CacheShape shape{L, H, 2 * H, D, T, 0, d_model};
  const compressors::InMemoryCache cache(shape, tiny.keys, tiny.values, tiny.queries, {},
                                         core::Rope::standard(D, 10000.0), tiny.h);
  for (const char* text : {"commonkv:g=2,rank=12,keep=0.4,sinks=2,recent=8", "commonkv:g=5,keep=0.3,sinks=0,recent=0",
                           "commonkv:g=2,rank=40,keep=0.6", "commonkv:g=2,rank=12,keep=0.4,sinks=2,recent=8,leftover=svd"}) {
    SCOPED_TRACE(text);
    const auto chain = compressors::parse_spec(text);
    const auto host = compressors::compress_chain({cache, linalg::cpu_backend(), &checkpoint}, chain);
    std::map<std::string, const compressors::StoredTensor*> want;
    std::vector<std::string> host_order, order;
    for (const auto* t : host->stored()) want[t->name] = t, host_order.push_back(t->name);
    std::int64_t latent_values = 0, latent_differences = 0;
    const auto attn_in = [&](int l) -> const at::Tensor& { return tiny.attn_in[l]; };
    commonkv_store(shape, attn_in, chain.stages[0], &checkpoint, linalg::cpu_backend(), device, [&](CommonKvStored&& s) {
      SCOPED_TRACE(s.name);
      order.push_back(s.name);
      ASSERT_TRUE(want.count(s.name));
      const auto& w = *want[s.name];
      if (s.role == compressors::CommonkvRole::index) {
        EXPECT_EQ(s.index, w.unpack_indices());
      } else if (s.role == compressors::CommonkvRole::latent) {
        latent_values += s.values.numel();
        latent_differences += fp16_differences(w, s.values, 1);
      } else {  // P, D, biases
        EXPECT_EQ(fp16_differences(w, s.values, 0), 0);
      }
    });
    // Every tensor of the grouped layers, in the host's order; the host adds the leftover layers'
    // keys and values (leftover=dense; with svd they are the kernel's last group).
    const auto g = chain.stages[0].get_int("g");
    const bool leftover_dense = chain.stages[0].get("leftover") == "dense";
    ASSERT_EQ(host_order.size(), order.size() + (leftover_dense ? 2 * (L % g) : 0));
    EXPECT_EQ(order, std::vector<std::string>(host_order.begin(), host_order.begin() + order.size()));
    EXPECT_GT(latent_values, 0);
    EXPECT_LE(latent_differences, latent_values / 100) << latent_differences << " of " << latent_values;
    std::cout << text << ": " << latent_differences << " of " << latent_values << " latents one fp16 step apart\n";
  }
}

TEST(CommonkvOnDevice, StoresWhatTheHostStageStores) { expect_host_form(at::kCPU); }

TEST(CommonkvOnDevice, OnCudaStoresWhatTheHostStageStores) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  expect_host_form(at::kCUDA);
}

}  // namespace
}  // namespace kvlab::harness
