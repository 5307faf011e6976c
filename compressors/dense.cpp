#include "compressors/dense.h"

#include <fmt/format.h>

#include <cstdio>
#include <numeric>

#include "core/error.h"

namespace kvlab::compressors {

MethodDef full_method() {
  MethodDef m{"full", StageKind::transform,
              "the uncompressed cache at 16 bits (the baseline; with a quantizer after it, plain KV quantization)",
              {},
              {}};
  m.make_transform = make_full;
  m.layer_local = true;
  m.stores_cells = true;
  m.device = DevicePath::cells;
  return m;
}

namespace {

class Dense final : public Compressed {
 public:
  Dense(const CacheSource& cache, const KeepMasks* masks)
      : shape_(cache.shape()), ropes_(layer_ropes(cache)), positions_(cache.positions()), has_index_(masks != nullptr) {
    const int H = shape_.kv_heads, D = shape_.head_dim;
    const std::int64_t T = shape_.tokens;
    if (masks && static_cast<int>(masks->size()) != shape_.layers)
      fail("dense representation: {} keep masks for {} layers", masks->size(), shape_.layers);
    slot_.resize(static_cast<std::size_t>(shape_.layers) * H);
    for (int l = 0; l < shape_.layers; ++l) {
      auto key = cache.layer(l, Part::key);
      ropes_[static_cast<std::size_t>(l)].apply(key.span(), T, H, positions_);  // stored as the model's cache holds keys: post-RoPE
      const auto value = cache.layer(l, Part::value);
      for (int h = 0; h < H; ++h) {
        std::vector<std::int32_t> idx;
        for (std::int64_t t = 0; t < T; ++t)
          if (!masks || (*masks)[l][static_cast<std::size_t>(t * H + h)]) idx.push_back(static_cast<std::int32_t>(t));
        const auto n = static_cast<std::int64_t>(idx.size());
        std::vector<float> k(static_cast<std::size_t>(n * D)), v(k.size());
        for (std::int64_t i = 0; i < n; ++i)
          for (int d = 0; d < D; ++d) {
            const auto src = (std::int64_t{idx[i]} * H + h) * D + d;
            k[i * D + d] = key.data[src];
            v[i * D + d] = value.data[src];
          }
        slot_[static_cast<std::size_t>(l) * H + h] = tensors_.size();
        const auto prefix = fmt::format("layer{}/head{}/", l, h);
        tensors_.push_back(StoredTensor::fp16(prefix + "key", {n, D}, std::move(k), QuantLayout::per_channel, true));
        tensors_.push_back(StoredTensor::fp16(prefix + "value", {n, D}, std::move(v), QuantLayout::per_token, true));
        if (masks) tensors_.push_back(StoredTensor::indices(prefix + "index", idx));
      }
    }
  }

  std::vector<StoredTensor*> stored() override {
    std::vector<StoredTensor*> out;
    for (auto& t : tensors_) out.push_back(&t);
    return out;
  }

  LayerKV reconstruct(int layer) const override {
    if (layer < 0 || layer >= shape_.layers) fail("dense representation: layer {} outside [0, {})", layer, shape_.layers);
    const int H = shape_.kv_heads, D = shape_.head_dim;
    const std::int64_t T = shape_.tokens;
    LayerKV out{FloatTensor({T, H, D}), FloatTensor({T, H, D}), {}};
    // Each head's kept tokens, read back from its stored index (every token when none is stored).
    std::vector<std::vector<std::int32_t>> index(static_cast<std::size_t>(H));
    bool all = true;
    for (int h = 0; h < H; ++h) {
      const auto s = slot_[static_cast<std::size_t>(layer) * H + h];
      auto& idx = index[static_cast<std::size_t>(h)];
      if (has_index_) {
        idx = tensors_[s + 2].unpack_indices();
      } else {
        idx.resize(static_cast<std::size_t>(T));
        std::iota(idx.begin(), idx.end(), 0);
      }
      all = all && static_cast<std::int64_t>(idx.size()) == T;
    }
    if (!all) out.kept.assign(static_cast<std::size_t>(T * H), 0);
    for (int h = 0; h < H; ++h) {
      const auto& idx = index[static_cast<std::size_t>(h)];
      const auto s = slot_[static_cast<std::size_t>(layer) * H + h];
      const auto& k = tensors_[s].values;
      const auto& v = tensors_[s + 1].values;
      for (std::size_t i = 0; i < idx.size(); ++i) {
        const auto dst = (std::int64_t{idx[i]} * H + h) * D;
        std::copy_n(k.begin() + static_cast<std::ptrdiff_t>(i * D), D, out.key.data.begin() + dst);
        std::copy_n(v.begin() + static_cast<std::ptrdiff_t>(i * D), D, out.value.data.begin() + dst);
        if (!all) out.kept[static_cast<std::size_t>(std::int64_t{idx[i]} * H + h)] = 1;
      }
    }
    ropes_[static_cast<std::size_t>(layer)].apply(out.key.span(), T, H, positions_, /*inverse=*/true);
    return out;
  }

 private:
  CacheShape shape_;
  std::vector<core::Rope> ropes_;  // [L]
  std::vector<std::int64_t> positions_;
  bool has_index_ = false;         // each head's key and value are followed by its int32 token index
  std::vector<std::size_t> slot_;  // [L·H] index of the head's key tensor in tensors_
  std::vector<StoredTensor> tensors_;
};

class Full final : public TransformStage {
 public:
  std::unique_ptr<Compressed> compress(const CompressContext& ctx) const override {
    return dense_representation(ctx.cache, nullptr);
  }
};

}  // namespace

std::unique_ptr<Compressed> dense_representation(const CacheSource& cache, const KeepMasks* masks) {
  return std::make_unique<Dense>(cache, masks);
}

std::unique_ptr<TransformStage> make_full(const StageSpec&) { return std::make_unique<Full>(); }

StoredTensor store_uncompressed(const CacheSource& cache, int layer, Part part) {
  const auto& s = cache.shape();
  auto x = cache.layer(layer, part);
  if (part == Part::key) cache.rope(layer).apply(x.span(), s.tokens, s.kv_heads, cache.positions());
  return StoredTensor::fp16(fmt::format("layer{}/{}", layer, to_string(part)), {s.tokens, s.width()}, std::move(x.data),
                            part == Part::key ? QuantLayout::per_channel : QuantLayout::per_token, true);
}

FloatTensor rebuild_uncompressed(const StoredTensor& stored, Part part, const CacheShape& shape, const core::Rope& rope,
                                 const std::vector<std::int64_t>& positions) {
  FloatTensor x({shape.tokens, shape.kv_heads, shape.head_dim});
  if (stored.values.size() != x.data.size())
    fail("{}: {} stored values, expected T·H·D = {}", stored.name, stored.values.size(), x.data.size());
  x.data = stored.values;
  if (part == Part::key) rope.apply(x.span(), shape.tokens, shape.kv_heads, positions, /*inverse=*/true);
  return x;
}

bool parse_head_tensor(const std::string& name, int& layer, int& head, std::string& leaf) {
  int used = 0;
  if (std::sscanf(name.c_str(), "layer%d/head%d/%n", &layer, &head, &used) != 2 || used == 0) return false;
  leaf = name.substr(static_cast<std::size_t>(used));
  return true;
}

}  // namespace kvlab::compressors
