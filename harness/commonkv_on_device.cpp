#include "harness/commonkv_on_device.h"

#include <fmt/format.h>

#include <optional>

#include "compressors/methods/commonkv.h"
#include "compressors/chain.h"
#include "core/error.h"
#include "core/profile.h"
#include "harness/fp16_store.h"
#include "harness/kivi_on_device.h"

namespace kvlab::harness {
namespace {

// A host f32 vector as a [rows, cols] f32 tensor on `options`' device.
at::Tensor on_device(const std::vector<float>& v, std::int64_t rows, std::int64_t cols, const at::TensorOptions& options) {
  return at::from_blob(const_cast<float*>(v.data()), {rows, cols}, at::kFloat).to(options.device(), at::kFloat, false, true);
}

}  // namespace

CommonKvChain commonkv_chain(const compressors::ChainSpec& chain) {
  using compressors::DevicePath, compressors::device_of;
  const auto s = compressors::stages_of(chain);
  if (s.eviction || s.repeats || device_of(s.transform) != DevicePath::commonkv) return {};
  if (s.quantizer && device_of(s.quantizer) != DevicePath::kivi) return {};
  return {s.transform, s.quantizer};
}

std::int64_t commonkv_in_place(KvCache& cache, const compressors::CacheShape& shape, const core::Rope& rope,
                               const std::function<const at::Tensor&(int layer)>& attn_in, const CommonKvChain& chain,
                               const core::Checkpoint* checkpoint, linalg::Backend& backend) {
  const compressors::StageSpec& stage = *chain.commonkv;
  std::optional<compressors::KiviParams> kivi;
  if (chain.kivi) kivi = compressors::kivi_params(*chain.kivi);
  // A stored [n, c] tensor as the chain keeps it: fp16, then quantized when KIVI follows (per
  // token; `token_rows` for latents, whose last rows form KIVI's residual window). `bytes` adds
  // what it takes: its packed form, or 2 per fp16 value.
  std::int64_t bytes = 0;
  const auto store = [&](at::Tensor x, bool token_rows) {
    x = round_to_fp16(x);
    bytes += kivi ? kivi_store_on_device(x, compressors::QuantLayout::per_token, token_rows, *kivi) : 2 * x.numel();
    return x;
  };
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
  for (int l = static_cast<int>(groups.size() * G); l < shape.layers; ++l) {  // leftover layers, stored dense
    if (!kivi) {
      bytes += 2 * (T * N * 2);  // at fp16; the resident route keeps the model's values
      continue;
    }
    using compressors::Part;
    const auto rebuild = [&](Part part) {
      auto stored = kivi_rebuild(part == Part::key ? cache.key(l) : cache.value(l), part, cache.positions(), rope,
                                 *kivi, DenseStore::per_layer);
      bytes += stored.bytes;
      return stored.rows;
    };
    const at::Tensor key = rebuild(Part::key);
    cache.replace(l, key, rebuild(Part::value));
  }
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const core::ProfileScope scope("compress hook: commonkv latents and rebuild");
    const auto& f = factors[g];
    const at::Tensor is_merged =
        at::from_blob(const_cast<std::uint8_t*>(merged[g].data()), {T, 1}, at::kByte).to(options.device(), at::kBool);
    // The rows each stored latent tensor holds: the merged tokens once for the group, the others per layer.
    const at::Tensor merged_rows = is_merged.squeeze(1).nonzero().squeeze(1);
    const at::Tensor own_rows = is_merged.squeeze(1).logical_not().nonzero().squeeze(1);
    bytes += 4 * merged_rows.numel();  // the merged tokens' int32 index
    // P as the chain stores it, for the decode's new tokens; the prefill's latents use the exact
    // P, as the chain's do.
    store(projections[g].clone(), /*token_rows=*/false);
    const auto stored_rows = [&](const at::Tensor& latent, const at::Tensor& rows) {  // [T, r] → stored at `rows`
      return latent.index_copy(0, rows, store(latent.index_select(0, rows), /*token_rows=*/true));
    };
    std::vector<at::Tensor> own;
    at::Tensor average = at::zeros({T, f.rank}, options);
    const float weight = 1.f / static_cast<float>(G);
    for (int l : groups[g]) {
      own.push_back(latents(l, projections[g]));
      average.add_(own.back() * weight);
    }
    const at::Tensor average_stored = stored_rows(average, merged_rows);
    for (std::size_t i = 0; i < groups[g].size(); ++i) {
      const at::Tensor c = at::where(is_merged, average_stored, stored_rows(own[i], own_rows));
      const auto rebuild = [&](const std::vector<float>& d, const std::vector<float>& bias) {
        at::Tensor x = at::matmul(c, store(on_device(d, N, f.rank, options), /*token_rows=*/false).t());  // [T, N]
        if (!bias.empty()) {
          x.add_(round_to_fp16(on_device(bias, 1, N, options)));
          bytes += 2 * N;  // fp16, never KIVI
        }
        return x.view({T, shape.kv_heads, shape.head_dim}).transpose(0, 1);
      };
      cache.replace(groups[g][i], rebuild(f.d_key[i], f.key_bias[i]), rebuild(f.d_value[i], f.value_bias[i]));
    }
  }
  return bytes;
}

}  // namespace kvlab::harness
