#include "harness/commonkv_on_device.h"

#include <fmt/format.h>

#include "compressors/commonkv.h"
#include "core/error.h"
#include "core/profile.h"

namespace kvlab::harness {
namespace {

at::Tensor round_to_fp16(const at::Tensor& x) { return x.to(at::kHalf).to(at::kFloat); }

// A host f32 vector as a [rows, cols] f32 tensor on `options`' device.
at::Tensor on_device(const std::vector<float>& v, std::int64_t rows, std::int64_t cols, const at::TensorOptions& options) {
  return at::from_blob(const_cast<float*>(v.data()), {rows, cols}, at::kFloat).to(options.device(), at::kFloat, false, true);
}

}  // namespace

const compressors::StageSpec* commonkv_alone(const compressors::ChainSpec& chain) {
  return chain.stages.size() == 1 && chain.stages[0].method == "commonkv" ? &chain.stages[0] : nullptr;
}

std::int64_t commonkv_in_place(KvCache& cache, const compressors::CacheShape& shape,
                               const std::function<const at::Tensor&(int layer)>& attn_in,
                               const compressors::StageSpec& stage, const core::Checkpoint* checkpoint,
                               linalg::Backend& backend) {
  if (!checkpoint)
    fail("commonkv needs the model's weights (W_k, W_v of every layer): pass the model directory");
  const std::int64_t T = shape.tokens, N = shape.width();
  const std::int64_t G = stage.get_int("g");
  const auto groups = compressors::commonkv_groups(G, shape.layers, "the model's KV cache");
  const auto options = at::TensorOptions().dtype(at::kFloat).device(cache.key(0).device());

  // Pass 1, per group: the weight SVD (host) and the cosine of each token's first/last latents.
  std::vector<compressors::CommonKvFactors> factors;
  std::vector<at::Tensor> projections;  // P [r, d_model] per group, on the device
  std::vector<double> similarity(static_cast<std::size_t>(static_cast<std::int64_t>(groups.size()) * T));
  const auto latents = [&](int layer, const at::Tensor& p) {  // c = h·Pᵀ, [T, r] f32
    const at::Tensor& h = attn_in(layer);
    if (!h.defined() || h.dim() != 2 || h.size(0) != T || h.size(1) != p.size(1))
      fail("commonkv: layer {}'s attn_in is not [{}, {}] (d_model of the checkpoint's k_proj)", layer, T, p.size(1));
    return at::matmul(h.to(options), p.t());
  };
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const core::ProfileScope scope("compress hook: commonkv factors and similarity");
    factors.push_back(compressors::commonkv_factors(*checkpoint, groups[g], N, stage.get_int("rank"), backend));
    const auto& f = factors.back();
    projections.push_back(on_device(f.p, f.rank, f.d_model, options));
    const at::Tensor first = latents(groups[g].front(), projections.back()).to(at::kDouble);
    const at::Tensor last = latents(groups[g].back(), projections.back()).to(at::kDouble);
    const at::Tensor norms = (first.square().sum(1) * last.square().sum(1)).sqrt().clamp_min(1e-8);  // torch's eps
    const at::Tensor cosine = ((first * last).sum(1) / norms).cpu().contiguous();
    std::copy_n(cosine.data_ptr<double>(), T, similarity.begin() + static_cast<std::int64_t>(g) * T);
  }
  const auto merged = compressors::commonkv_merged(similarity, static_cast<int>(groups.size()), T,
                                                   stage.get_real("keep"), stage.get_int("sinks"),
                                                   stage.get_int("recent"));

  // Pass 2, per group: every layer's latents, the merged ones averaged over the group (uniform
  // weights, summed in layer order as the chain), each layer rebuilt from its stored latents.
  const std::int64_t leftover_layers = shape.layers - static_cast<std::int64_t>(groups.size()) * G;
  std::int64_t bytes = leftover_layers * 2 * (T * N * 2);  // stored dense at fp16
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const core::ProfileScope scope("compress hook: commonkv latents and rebuild");
    const auto& f = factors[g];
    const at::Tensor is_merged =
        at::from_blob(const_cast<std::uint8_t*>(merged[g].data()), {T, 1}, at::kByte).to(options.device(), at::kBool);
    std::vector<at::Tensor> own;
    at::Tensor average = at::zeros({T, f.rank}, options);
    const float weight = 1.f / static_cast<float>(G);
    for (int l : groups[g]) {
      own.push_back(latents(l, projections[g]));
      average.add_(own.back() * weight);
    }
    const at::Tensor average16 = round_to_fp16(average);
    for (std::size_t i = 0; i < groups[g].size(); ++i) {
      const at::Tensor c = at::where(is_merged, average16, round_to_fp16(own[i]));
      const auto rebuild = [&](const std::vector<float>& d, const std::vector<float>& bias) {
        at::Tensor x = at::matmul(c, round_to_fp16(on_device(d, N, f.rank, options)).t());  // [T, N]
        if (!bias.empty()) x.add_(round_to_fp16(on_device(bias, 1, N, options)));
        return x.view({T, shape.kv_heads, shape.head_dim}).transpose(0, 1);
      };
      cache.replace(groups[g][i], rebuild(f.d_key[i], f.key_bias[i]), rebuild(f.d_value[i], f.value_bias[i]));
    }
    const std::int64_t m = std::count(merged[g].begin(), merged[g].end(), std::uint8_t{1});
    bytes += compressors::commonkv_group_bytes(G, T, m, f.rank, f.d_model, N, !f.key_bias.front().empty());
  }
  return bytes;
}

}  // namespace kvlab::harness
