#include "harness/commonkv_on_device.h"

#include <algorithm>
#include <map>
#include <optional>

#include "compressors/chain.h"
#include "core/error.h"
#include "core/profile.h"
#include "harness/fp16_store.h"
#include "harness/kivi_on_device.h"

namespace kvlab::harness {

CommonKvChain commonkv_chain(const compressors::ChainSpec& chain) {
  using compressors::DevicePath, compressors::device_of;
  const auto s = compressors::stages_of(chain);
  if (s.eviction || s.repeats || device_of(s.transform) != DevicePath::commonkv) return {};
  if (s.quantizer && device_of(s.quantizer) != DevicePath::kivi) return {};
  return {s.transform, s.quantizer};
}

void commonkv_store(const compressors::CacheShape& shape, const std::function<const at::Tensor&(int layer)>& attn_in,
                    const compressors::StageSpec& stage, const core::Checkpoint* checkpoint, linalg::Backend& backend,
                    const at::Device& device, const std::function<void(CommonKvStored&&)>& store) {
  const auto latents = [&](int layer, const at::Tensor& p) {  // c = h·Pᵀ, [T, r] f32
    const at::Tensor& h = attn_in(layer);
    if (!h.defined() || h.dim() != 2 || h.size(0) != shape.tokens || h.size(1) != p.size(1))
      fail("commonkv: layer {}'s attn_in is not [{}, {}] (d_model of the checkpoint's k_proj)", layer, shape.tokens,
           p.size(1));
    return TorchOps::matmul_t(h.to(device, at::kFloat), p);
  };
  const auto upload = [&](const std::vector<float>& v, std::int64_t rows, std::int64_t cols) {
    return at::tensor(v).view({rows, cols}).to(device);  // a copy (at::tensor), then on the device
  };
  compressors::commonkv_stage<TorchOps>(stage, checkpoint, shape, "the model's KV cache",
                                        backend, latents, upload, [&](CommonKvStored&& s) {
                                          if (s.values.defined()) s.values = round_to_fp16(s.values);  // as stored
                                          store(std::move(s));
                                        });
}

std::int64_t commonkv_in_place(KvCache& cache, const compressors::CacheShape& shape,
                               const std::function<const core::Rope&(int layer)>& rope_of,
                               const std::function<const at::Tensor&(int layer)>& attn_in, const CommonKvChain& chain,
                               const core::Checkpoint* checkpoint, linalg::Backend& backend) {
  using compressors::CommonkvRole, compressors::QuantLayout;
  const core::ProfileScope scope("compress hook: commonkv on the device");
  const auto kivi = chain.kivi ? std::optional(compressors::kivi_params(*chain.kivi)) : std::nullopt;
  const std::int64_t T = shape.tokens, G = chain.commonkv->get_int("g");
  std::int64_t bytes = 0;
  std::map<std::string, at::Tensor> stored;  // every factor, and the current group's latents
  int group = 0;
  commonkv_store(shape, attn_in, *chain.commonkv, checkpoint, backend, cache.key(0).device(), [&](CommonKvStored&& s) {
    // What the chain keeps of it: the int32 index; the biases at fp16; the rest at fp16, or
    // quantized in place when KIVI follows (per token; the latents' last rows are its residual window).
    if (s.role != CommonkvRole::index) {
      bytes += kivi && s.role != CommonkvRole::bias
                   ? kivi_store_on_device(s.values, QuantLayout::per_token, s.role == CommonkvRole::latent, *kivi)
                   : stored_bytes(fp16_buffer(s.values));
      stored[s.name] = s.values;
      return;
    }
    bytes += stored_bytes(at::tensor(s.index));  // int32
    // A group's last tensor: rebuild its layers from the stored tensors.
    const auto get = [&](const std::string& name) {
      const auto it = stored.find(name);
      return it == stored.end() ? std::nullopt : std::optional(it->second);
    };
    for (int l = static_cast<int>(group * G); l < std::min<std::int64_t>((group + 1) * G, shape.layers); ++l) {
      const auto rebuild = [&](const char* part) {
        return compressors::commonkv_rebuild<TorchOps>(l, static_cast<int>(G), part, T, s.index, get)
            .view({T, shape.kv_heads, shape.head_dim})
            .transpose(0, 1);
      };
      const at::Tensor key = rebuild("key");
      cache.replace(l, key, rebuild("value"));
      stored.erase(fmt::format("layer{}/latent", l));
    }
    ++group;
  });
  // Leftover layers (L mod g) with leftover=dense: at fp16 (the route keeps the model's values;
  // keys post-RoPE in the chain's store, the same size) or as KIVI stores them. With leftover=svd
  // they were the kernel's last, shortened group, rebuilt above.
  const bool leftover_dense = chain.commonkv->get("leftover") == "dense";
  for (int l = static_cast<int>(shape.layers / G * G); l < shape.layers && leftover_dense; ++l) {
    using compressors::Part;
    if (!kivi) {
      bytes += stored_bytes(fp16_buffer(cache.key(l))) + stored_bytes(fp16_buffer(cache.value(l)));
      continue;
    }
    const auto rebuild = [&](Part part) {
      auto dense = kivi_rebuild(part == Part::key ? cache.key(l) : cache.value(l), part, cache.positions(), rope_of(l),
                                *kivi, DenseStore::per_layer);
      bytes += dense.bytes;
      return dense.rows;
    };
    const at::Tensor key = rebuild(Part::key);
    cache.replace(l, key, rebuild(Part::value));
  }
  return bytes;
}

}  // namespace kvlab::harness
