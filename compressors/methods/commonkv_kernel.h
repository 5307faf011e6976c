// CommonKV (compressors/methods/commonkv.h) written once for every device: `Ops` is HostOps
// (compressors/host_ops.h) in the host stage and TorchOps (harness/torch_ops.h) on the model's
// tensors. Latents are f32 [T, r] (Ops::Tensor32), as the chain computes them, formed by the
// caller's own GEMM (c = h·Pᵀ): the one product whose last bits differ between devices. The rest
// is the same elementwise arithmetic and row selection, so equal latents give equal stored values.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "compressors/methods/commonkv.h"
#include "core/error.h"

namespace kvlab::compressors {

// How the chain stores a tensor: latents fp16, per token (their last rows a quantizer's residual
// window); factors (P, D) fp16, per token; biases fp16, never quantized; the merged index int32.
enum class CommonkvRole { latent, factor, bias, index };

template <class Ops>
struct CommonkvStored {
  std::string name;  // as commonkv.h lists them
  CommonkvRole role;
  typename Ops::Tensor32 values;    // [n, c] f32 as computed (stored at fp16); empty for the index
  std::vector<std::int32_t> index;  // group{g}/merged_index: the merged tokens, ascending
};

// The stage (its StageSpec) on the groups of g adjacent layers (0…g−1, g…2g−1, …): the stored
// form, handed to `store` in the order below. The L mod g leftover layers are the caller's (stored
// dense) with leftover=dense; with leftover=svd they are one more, shorter group, as the authors'
// weight SVD loop makes it (rommel2021/CommonKV run_longbench.py: end_idx = min(start_idx +
// layer_step, num_layers)), whose tokens are never merged (merge_all_kv takes num_layers //
// layer_step groups): its factors, every token's latent in every layer, and a merged latent and
// index of zero tokens.
// `latents(layer, p)` forms c = h·Pᵀ [T, r] from the exact P (and checks attn_in); `upload(values,
// rows, cols)` puts a host f32 [rows, cols] where the latents are. Returns the no-merge budget,
// int(keep·pairs). Fails without a checkpoint or when g > L (`where` names the cache).
template <class Ops, class Latents, class Upload, class Store>
std::int64_t commonkv_stage(const StageSpec& spec, const core::Checkpoint* ckpt, const CacheShape& shape,
                            std::string_view where, linalg::Backend& backend, const Latents& latents,
                            const Upload& upload, const Store& store) {
  using T32 = typename Ops::Tensor32;
  if (!ckpt) fail("commonkv needs the model's weights (W_k, W_v of every layer): pass the model directory (--model)");
  const std::int64_t T = shape.tokens, N = shape.width(), g = spec.get_int("g");
  const std::int64_t sinks = spec.get_int("sinks"), recent = spec.get_int("recent");
  if (g > shape.layers) fail("commonkv: key 'g' = {} exceeds the {} layers of {}", g, shape.layers, where);
  const auto merging = static_cast<std::size_t>(shape.layers / g);  // groups that merge; a leftover one follows
  std::vector<std::vector<int>> groups(merging, std::vector<int>(g));
  for (std::size_t i = 0; i < groups.size(); ++i) std::iota(groups[i].begin(), groups[i].end(), static_cast<int>(i * g));
  if (spec.get("leftover") == "svd" && shape.layers % g != 0) {
    groups.emplace_back(static_cast<std::size_t>(shape.layers % g));
    std::iota(groups.back().begin(), groups.back().end(), static_cast<int>(merging * g));
  }
  std::vector<T32> projections;  // P [r, d_model] per group
  // Pass 1: per group its factors, and (merging groups) each token's cosine of the first and last
  // layer's latents in double, Σ x·y / max(√(Σx²·Σy²), 1e-8) (torch's eps, as the authors'
  // F.cosine_similarity).
  std::vector<double> similarity(merging * static_cast<std::size_t>(T));
  for (std::size_t i = 0; i < groups.size(); ++i) {
    const auto f = commonkv_factors(*ckpt, groups[i], N, spec.get_int("rank"), backend);
    projections.push_back(upload(f.p, f.rank, f.d_model));
    store({fmt::format("group{}/P", i), CommonkvRole::factor, projections[i], {}});
    for (std::size_t j = 0; j < groups[i].size(); ++j)
      for (const bool value : {false, true}) {
        const char* part = value ? "value" : "key";
        store({fmt::format("layer{}/D_{}", groups[i][j], part), CommonkvRole::factor,
               upload((value ? f.d_value : f.d_key)[j], N, f.rank), {}});
        if (const auto& b = (value ? f.value_bias : f.key_bias)[j]; !b.empty())
          store({fmt::format("layer{}/{}_bias", groups[i][j], part), CommonkvRole::bias, upload(b, 1, N), {}});
      }
    if (i >= merging) continue;  // the leftover group: never merged
    const T32 first = latents(groups[i].front(), projections[i]);  // first: a misshapen attn_in fails in order
    const T32 last = latents(groups[i].back(), projections[i]);
    const auto dot = Ops::host(Ops::row_dot(first, last)), first_sq = Ops::host(Ops::row_dot(first, first)),
               last_sq = Ops::host(Ops::row_dot(last, last));
    for (std::int64_t t = 0; t < T; ++t)
      similarity[i * T + t] = dot[t] / std::max(std::sqrt(first_sq[t] * last_sq[t]), 1e-8);
  }
  // The global no-merge budget: the int(keep·pairs) least similar (group, token) pairs stay unmerged
  // (ties: the earlier pair first), and so do every group's first `sinks` and last `recent` tokens.
  const auto pairs = static_cast<std::int64_t>(similarity.size());
  const auto budget = std::min(pairs, static_cast<std::int64_t>(spec.get_real("keep") * static_cast<double>(pairs)));
  std::vector<std::int64_t> order(static_cast<std::size_t>(pairs));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  std::sort(order.begin(), order.end(), [&](std::int64_t x, std::int64_t y) {
    return std::pair(similarity[x], x) < std::pair(similarity[y], y);
  });
  std::vector<std::vector<std::uint8_t>> merged(groups.size(), std::vector<std::uint8_t>(T, 1));
  for (std::int64_t i = 0; i < budget; ++i) merged[order[i] / T][order[i] % T] = 0;
  for (auto& flags : merged)
    for (std::int64_t t = 0; t < T; ++t) flags[t] &= t >= sinks && t < T - recent;
  for (std::size_t i = merging; i < groups.size(); ++i) std::fill(merged[i].begin(), merged[i].end(), 0);
  // Pass 2, per group: each layer's latent (its unmerged rows), the merged latent Σ_j c_j/g
  // (weights=uniform; summed in layer order from zeros), the merged index.
  const float weight = 1.f / static_cast<float>(g);
  for (std::size_t i = 0; i < groups.size(); ++i) {
    const auto is_merged = Ops::mask(merged[i], projections[i]);
    T32 sum;
    for (const int l : groups[i]) {
      const T32 c = latents(l, projections[i]), mine = Ops::rows(c, is_merged, true);
      sum = Ops::axpy(l == groups[i].front() ? Ops::zeros_like(mine) : sum, mine, weight);
      store({fmt::format("layer{}/latent", l), CommonkvRole::latent, Ops::rows(c, is_merged, false), {}});
    }
    store({fmt::format("group{}/merged_latent", i), CommonkvRole::latent, std::move(sum), {}});
    std::vector<std::int32_t> index;
    for (std::int64_t t = 0; t < T; ++t)
      if (merged[i][t]) index.push_back(static_cast<std::int32_t>(t));
    store({fmt::format("group{}/merged_index", i), CommonkvRole::index, {}, std::move(index)});
  }
  return budget;
}

// Grouped layer `layer`'s keys (pre-RoPE; part "key") or values ("value") [T, N] rebuilt from its
// stored form: c·Dᵀ (+ b), the latents c [T, r] being the group's merged rows at the tokens of
// `merged_index` and the layer's own rows elsewhere, each in token order. get(name) gives a
// stored tensor's values, std::nullopt for a bias the checkpoint lacks.
template <class Ops, class Get>
typename Ops::Tensor32 commonkv_rebuild(int layer, int g, std::string_view part, std::int64_t T,
                                        const std::vector<std::int32_t>& merged_index, const Get& get) {
  std::vector<std::uint8_t> flags(static_cast<std::size_t>(T), 0);
  for (const std::int32_t t : merged_index) flags[t] = 1;
  const auto own = *get(fmt::format("layer{}/latent", layer));
  const auto merged = *get(fmt::format("group{}/merged_latent", layer / g));
  const auto x = Ops::matmul_t(Ops::interleave_rows(Ops::mask(flags, own), merged, own),
                               *get(fmt::format("layer{}/D_{}", layer, part)));
  const auto bias = get(fmt::format("layer{}/{}_bias", layer, part));
  return bias ? Ops::add_row(x, *bias) : x;
}

}  // namespace kvlab::compressors
