#include "compressors/query_head_cells.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"

namespace kvlab::compressors {

namespace {

class QueryHeadCells final : public Compressed {
 public:
  QueryHeadCells(const CacheSource& cache, const KeepMasks& selections)
      : shape_(cache.shape()), ropes_(layer_ropes(cache)), positions_(cache.positions()) {
    const int H = shape_.kv_heads, Hq = shape_.q_heads, D = shape_.head_dim, n_rep = shape_.group_size();
    const std::int64_t T = shape_.tokens;
    if (static_cast<int>(selections.size()) != shape_.layers)
      fail("query-head cells: {} selections for {} layers", selections.size(), shape_.layers);
    for (int l = 0; l < shape_.layers; ++l) {
      const auto& sel = selections[static_cast<std::size_t>(l)];
      if (static_cast<std::int64_t>(sel.size()) != T * Hq)
        fail("query-head cells: layer {} selection has {} cells, not T·H_q = {}", l, sel.size(), T * Hq);
      auto key = cache.layer(l, Part::key);
      ropes_[static_cast<std::size_t>(l)].apply(key.span(), T, H, positions_);  // stored post-RoPE, as the model's cache holds keys
      const auto value = cache.layer(l, Part::value);
      for (int h = 0; h < Hq; ++h) {
        const int g = h / n_rep;  // repeat_kv: query head h holds a copy of KV head g
        std::vector<std::int32_t> idx;
        for (std::int64_t t = 0; t < T; ++t)
          if (sel[static_cast<std::size_t>(t * Hq + h)]) idx.push_back(static_cast<std::int32_t>(t));
        const auto n = static_cast<std::int64_t>(idx.size());
        std::vector<float> k(static_cast<std::size_t>(n * D)), v(k.size());
        for (std::int64_t i = 0; i < n; ++i) {
          const auto src = (std::int64_t{idx[static_cast<std::size_t>(i)]} * H + g) * D;
          std::copy_n(key.data.begin() + src, D, k.begin() + i * D);
          std::copy_n(value.data.begin() + src, D, v.begin() + i * D);
        }
        const auto prefix = fmt::format("layer{}/qhead{}/", l, h);
        tensors_.push_back(StoredTensor::fp16(prefix + "key", {n, D}, std::move(k), QuantLayout::none, false));
        tensors_.push_back(StoredTensor::fp16(prefix + "value", {n, D}, std::move(v), QuantLayout::none, false));
        tensors_.push_back(StoredTensor::indices(prefix + "index", idx));
      }
    }
  }

  std::vector<StoredTensor*> stored() override {
    std::vector<StoredTensor*> out;
    for (auto& t : tensors_) out.push_back(&t);
    return out;
  }

  LayerKV reconstruct(int layer) const override {
    if (layer < 0 || layer >= shape_.layers) fail("query-head cells: layer {} outside [0, {})", layer, shape_.layers);
    const int H = shape_.kv_heads, Hq = shape_.q_heads, D = shape_.head_dim, n_rep = shape_.group_size();
    const std::int64_t T = shape_.tokens, W = shape_.query_window;
    LayerKV out{FloatTensor({T, H, D}), FloatTensor({T, H, D}), std::vector<std::uint8_t>(static_cast<std::size_t>(T * H), 0)};
    out.query_kept.assign(static_cast<std::size_t>(W * Hq * T), 0);
    for (int h = 0; h < Hq; ++h) {
      const int g = h / n_rep;
      const auto base = (static_cast<std::size_t>(layer) * Hq + h) * 3;
      const auto& k = tensors_[base].values;
      const auto& v = tensors_[base + 1].values;
      const auto idx = tensors_[base + 2].unpack_indices();
      for (std::size_t i = 0; i < idx.size(); ++i) {
        const std::int64_t t = idx[i];
        const auto cell = static_cast<std::size_t>(t * H + g);
        const auto dst = static_cast<std::ptrdiff_t>(cell) * D;
        const auto src = static_cast<std::ptrdiff_t>(i) * D;
        // The group's copies of one cell decode alike (the same fp16 of the same value, and no
        // quantizer may follow): the rebuild holds one, which every query head that kept it reads.
        if (out.kept[cell] && (!std::equal(k.begin() + src, k.begin() + src + D, out.key.data.begin() + dst) ||
                               !std::equal(v.begin() + src, v.begin() + src + D, out.value.data.begin() + dst)))
          fail("query-head cells: layer {} token {}: query head {}'s copy of KV head {} differs from another's", layer,
               t, h, g);
        std::copy_n(k.begin() + src, D, out.key.data.begin() + dst);
        std::copy_n(v.begin() + src, D, out.value.data.begin() + dst);
        out.kept[cell] = 1;
        for (std::int64_t w = 0; w < W; ++w) out.query_kept[static_cast<std::size_t>((w * Hq + h) * T + t)] = 1;
      }
    }
    ropes_[static_cast<std::size_t>(layer)].apply(out.key.span(), T, H, positions_, /*inverse=*/true);
    return out;
  }

  nlohmann::json notes() const override { return {{"stored_heads", shape_.q_heads}}; }

 private:
  CacheShape shape_;
  std::vector<core::Rope> ropes_;  // [L]
  std::vector<std::int64_t> positions_;
  std::vector<StoredTensor> tensors_;  // per layer, per query head: key, value, index
};

}  // namespace

std::unique_ptr<Compressed> query_head_representation(const CacheSource& cache, const KeepMasks& selections) {
  return std::make_unique<QueryHeadCells>(cache, selections);
}

}  // namespace kvlab::compressors
