#include "harness/resident_routes.h"

#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/cuda.h>

#include <algorithm>
#include <array>
#include <numeric>
#include <optional>

#include "compressors/compressed.h"
#include "compressors/compressor.h"
#include "compressors/methods/kivi.h"
#include "compressors/low_rank_resident.h"
#include "compressors/methods/low_rank.h"
#include "compressors/methods/minicache.h"
#include "compressors/resident_cache.h"
#include "compressors/chain.h"
#include "core/error.h"
#include "core/profile.h"
#include "harness/commonkv_on_device.h"
#include "harness/fp16_store.h"
#include "harness/kivi_on_device.h"
#include "harness/kv_cache_source.h"
#include "harness/minicache_on_device.h"

namespace kvlab::harness {
namespace {

// The model's cache as a compressors::ResidentCache: the data stays on the cache's device (the
// CUDA backend's memory, or the host beside the CPU backend); torch gathers, converts and writes
// it there, on torch's current stream, which the harness never changes from the default one.
// It compresses the cache's own tokens (compress_cache restores the exact ones first).
//
// After eviction it is the kept part of the cache (chain.cpp's CompactCache): the R rows of
// `kept.rows`, the tokens some layer's head keeps, with the cells a layer drops set to zero in
// what it gathers; writes put the rebuilt rows back at their tokens (the dropped cells are masked,
// KvCache::keep, so what lands there is never read).
struct KeptRows {
  at::Tensor rows;               // [R] int64 token indices, ascending, on the cache's device
  at::Tensor positions;          // [R] their positions
  std::vector<at::Tensor> held;  // per layer [R, H_kv, 1] f32: 1 where the layer keeps the cell
};

class TorchResidentCache final : public compressors::ResidentCache {
 public:
  TorchResidentCache(KvCache& cache, const ModelConfig& config, const KeptRows* kept = nullptr)
      : cache_(cache), kept_(kept), shape_(shape_of(cache, config)),
        on_device_(at::TensorOptions().dtype(at::kFloat).device(cache.key(0).device())) {
    for (int l = 0; l < config.num_layers; ++l) ropes_.push_back(config.rope_of(l));
    if (kept_) shape_.tokens = kept_->rows.size(0);
    const auto device = cache.key(0).device();
    if (device.is_cuda()) {
      const auto current = c10::impl::getDeviceGuardImpl(device.type())->getStream(device);
      if (current.id() != 0)
        fail("compress: torch's current CUDA stream is not the default one (id {}); the resident route queues on the "
             "default stream",
             current.id());
    }
  }
  const compressors::CacheShape& shape() const override { return shape_; }
  void* stream() const override { return nullptr; }  // the default stream (checked above)
  const float* gather(const std::vector<int>& layers, compressors::Part part) override {
    const core::ProfileScope scope("compress hook: gather a group on the device");
    const std::int64_t N = shape_.width(), c = N * static_cast<std::int64_t>(layers.size());
    if (!x_.defined() || x_.size(1) != c) x_ = at::empty({shape_.tokens, c}, on_device_);
    for (std::size_t i = 0; i < layers.size(); ++i)  // [H_kv, T, D] → column block i of [T, c]
      x_.narrow(1, static_cast<std::int64_t>(i) * N, N)
          .view({shape_.tokens, shape_.kv_heads, shape_.head_dim})
          .copy_(rows_of(layers[i], part));
    return x_.data_ptr<float>();
  }
  const void* gram_input(linalg::GramPrecision precision) override {
    if (precision == linalg::GramPrecision::bf16) return (converted_ = x_.to(at::kBFloat16)).data_ptr();
    if (precision == linalg::GramPrecision::f64) return (converted_ = x_.to(at::kDouble)).data_ptr();
    converted_ = at::Tensor();
    return nullptr;
  }
  float* buffer(int slot, std::int64_t count) override {
    if (buffers_.size() <= static_cast<std::size_t>(slot)) buffers_.resize(static_cast<std::size_t>(slot) + 1);
    at::Tensor& b = buffers_[static_cast<std::size_t>(slot)];
    if (!b.defined() || b.numel() < count) b = at::empty({count}, on_device_);
    return b.data_ptr<float>();
  }
  void upload(const float* host, std::int64_t count, float* resident) override {
    view(resident, {count}).copy_(at::from_blob(const_cast<float*>(host), {count}, at::kFloat));
  }
  std::int64_t store(const std::string&, float* values, std::int64_t rows, std::int64_t cols, std::int64_t ld,
                     compressors::QuantLayout layout, bool token_rows, const compressors::KiviParams* kivi) override {
    const at::Tensor x = at::from_blob(values, {rows, cols}, {ld, 1}, on_device_), stored = fp16_buffer(x);
    x.copy_(stored);  // nearest even, as core::f32_to_16bit
    return kivi ? kivi_store_on_device(x, layout, token_rows, *kivi) : stored_bytes(stored);
  }
  void write(int layer, compressors::Part part, const float* rows) override {
    const core::ProfileScope scope("compress hook: write back on the device");
    put(layer, part, view(const_cast<float*>(rows), {shape_.tokens, shape_.kv_heads, shape_.head_dim}));
  }
  std::int64_t store_uncompressed(int layer, compressors::Part part, const compressors::KiviParams* kivi) override {
    // Without KIVI the cache keeps the model's values; the fp16 buffer is what the chain stores
    // (its keys post-RoPE: a rotation, the same size).
    if (!kivi) return stored_bytes(fp16_buffer(rows_of(layer, part)));
    const core::ProfileScope scope("compress hook: kivi of an uncompressed layer");
    const auto stored = kivi_rebuild(rows_of(layer, part).transpose(0, 1), part,
                                     kept_ ? kept_->positions : cache_.positions(), ropes_.at(static_cast<std::size_t>(layer)),
                                     *kivi, DenseStore::per_layer);
    put(layer, part, stored.rows.transpose(0, 1));
    return stored.bytes;
  }

 private:
  at::Tensor view(float* data, at::IntArrayRef sizes) const { return at::from_blob(data, sizes, on_device_); }
  // Layer l's part as the compressor sees it, [T, H_kv, D] (a view), or [R, H_kv, D] (kept rows,
  // dropped cells zero).
  at::Tensor rows_of(int l, compressors::Part part) const {
    const at::Tensor all = tokens_of(cache_, nullptr, l, part).transpose(0, 1);
    return kept_ ? all.index_select(0, kept_->rows) * kept_->held[static_cast<std::size_t>(l)] : all;
  }
  // Replaces layer l's part with `rebuilt` ([T or R, H_kv, D] f32 resident); the other part stays.
  void put(int l, compressors::Part part, const at::Tensor& rebuilt) {
    at::Tensor full = rebuilt.transpose(0, 1);  // [H_kv, T, D]
    if (kept_) {
      full = tokens_of(cache_, nullptr, l, part).to(at::kFloat, false, /*copy=*/true);
      full.transpose(0, 1).index_copy_(0, kept_->rows, rebuilt);
    }
    // replace() copies both parts; the untouched one is the cache's own tensor (a copy onto itself: a no-op).
    const bool key = part == compressors::Part::key;
    cache_.replace(l, key ? full : cache_.key(l), key ? cache_.value(l) : full);
  }

  KvCache& cache_;
  const KeptRows* kept_;
  compressors::CacheShape shape_;
  std::vector<core::Rope> ropes_;  // [L]: config.rope_of(l)
  at::TensorOptions on_device_;
  at::Tensor x_, converted_;
  std::vector<at::Tensor> buffers_;
};

// Whether the backend computes where the cache lies: the CPU one beside host tensors, the CUDA
// one (device 0) beside tensors on device 0.
bool backend_beside(const linalg::Backend& backend, const at::Device& device) {
  if (!device.is_cuda()) return backend.name() == "cpu";
  return backend.name() == "cuda" && (!device.has_index() || device.index() == 0);
}

// A chain's one eviction stage, when it is scored where the cache lies, and the stages after
// it; null eviction otherwise.
struct EvictionSplit {
  const compressors::StageSpec* eviction = nullptr;
  compressors::ChainSpec rest;  // in order: parse_spec puts the transform before quantizers
};
EvictionSplit split_eviction(const compressors::ChainSpec& chain) {
  using compressors::DevicePath, compressors::device_of;
  const auto s = compressors::stages_of(chain);
  if (s.repeats || device_of(s.eviction) != DevicePath::scores) return {};
  // A selection per query head stores H_q heads of cells (query_head_cells.h): the host route's.
  if (compressors::selects_per_query_head(*s.eviction)) return {};
  EvictionSplit e{s.eviction, {}};
  for (const auto* stage : {s.transform, s.quantizer})
    if (stage) e.rest.stages.push_back(*stage);
  return e;
}

// Whether the stages after eviction store the kept cells dense: none, the cells as they are, or
// KIVI on them.
bool dense_after_eviction(const compressors::ChainSpec& rest) {
  const auto s = compressors::stages_of(rest);
  if (!s.quantizer) return !s.transform || compressors::device_of(s.transform) == compressors::DevicePath::cells;
  return kivi_on_dense(rest);
}

// Every layer's keep mask [T, H_kv], scored on the model's device.
compressors::KeepMasks masks_on_device(const KvCache& cache, const ContextCapture& capture, const ModelConfig& config,
                                       const compressors::StageSpec& eviction, linalg::Backend& backend,
                                       const core::Checkpoint* checkpoint) {
  const KvCacheSource source(cache, nullptr, capture, config, /*scores_where_held=*/true);
  return compressors::make_eviction(eviction)->select({source, backend, checkpoint});
}

// The int32 token of every cell `held` [H_kv, T] (bool) keeps, head by head: the eviction's
// stored index (kept_index), where the cache lies.
at::Tensor kept_tokens(const at::Tensor& held) { return held.nonzero().select(1, 1).to(at::kInt); }

// Eviction on the resident route: the keep masks written where the cache lies; the kept cells
// stay as the model computed them, or, with `kivi`, become what the chain stores of them (each
// KV head's kept rows quantized as one [n, D] tensor, kivi_on_device.h). Returns the bytes.
std::int64_t evict_in_place(KvCache& cache, const compressors::KeepMasks& masks, const ModelConfig& config,
                            const compressors::StageSpec* kivi_stage) {
  const auto shape = shape_of(cache, config);
  const std::int64_t T = shape.tokens;
  const int H = shape.kv_heads;
  std::optional<compressors::KiviParams> kivi;
  if (kivi_stage) kivi = compressors::kivi_params(*kivi_stage);
  std::int64_t bytes = 0;
  for (int l = 0; l < shape.layers; ++l) {
    const auto& mask = masks[static_cast<std::size_t>(l)];
    const auto cells = std::accumulate(mask.begin(), mask.end(), std::int64_t{0});
    at::Tensor keep;  // undefined when every cell is held, as the host route's rebuild says
    if (cells < T * H) keep = keep_view(mask, T, H);
    if (!kivi) {
      // What the chain stores (compressors/dense.h dense_representation): the kept cells' keys
      // (post-RoPE there: a rotation, the same size) and values at fp16, and their int32 tokens.
      const at::Tensor held = keep_view(mask, T, H).to(cache.key(l).device(), at::kBool);  // [H_kv, T]
      bytes += stored_bytes(fp16_buffer(cache.key(l).index({held}))) +
               stored_bytes(fp16_buffer(cache.value(l).index({held}))) + stored_bytes(kept_tokens(held));
      cache.replace(l, cache.key(l), cache.value(l), keep);  // the tokens: copies onto themselves (no-ops)
      continue;
    }
    const core::ProfileScope scope("compress hook: kivi of the kept cells on the device");
    at::Tensor key = cache.key(l).to(at::kFloat, false, true), value = cache.value(l).to(at::kFloat, false, true);
    const at::Tensor held = keep_view(mask, T, H).to(cache.key(l).device(), at::kBool);
    for (int h = 0; h < H; ++h) {
      const at::Tensor rows = held[h].nonzero().squeeze(1);  // the head's kept tokens, ascending
      const at::Tensor positions = cache.positions().index_select(0, rows);
      for (auto [part, x] : {std::pair{compressors::Part::key, &key}, std::pair{compressors::Part::value, &value}}) {
        const at::Tensor own = (*x)[h].index_select(0, rows).unsqueeze(0);  // [1, n, D]
        const auto stored = kivi_rebuild(own, part, positions, config.rope_of(l), *kivi);
        (*x)[h].index_copy_(0, rows, stored.rows.squeeze(0));
        bytes += stored.bytes;
      }
      bytes += stored_bytes(rows.to(at::kInt));  // the int32 token index
    }
    cache.replace(l, key, value, keep);
  }
  return bytes;
}

// Eviction then svd/xkv (and kivi) on the resident route (compress_chain's EvictedTransform where
// the cache lies): the low-rank stage on the kept rows (KeptRows), then the masks written.
// Returns the bytes, or nothing when the kept rows are too few for the resident low-rank route
// (the exact solver needs R ≥ G·H·D): the host route then runs the chain.
std::optional<std::int64_t> evict_then_low_rank(KvCache& cache, const compressors::KeepMasks& masks,
                                                const ModelConfig& config, const compressors::ChainSpec& low_rank,
                                                linalg::Backend& backend) {
  const auto shape = shape_of(cache, config);
  const std::int64_t T = shape.tokens;
  const int H = shape.kv_heads;
  std::vector<std::int64_t> rows;  // the tokens some layer's head keeps
  for (std::int64_t t = 0; t < T; ++t)
    if (std::any_of(masks.begin(), masks.end(), [&](const auto& m) {
          return std::any_of(m.begin() + t * H, m.begin() + (t + 1) * H, [](std::uint8_t k) { return k != 0; });
        }))
      rows.push_back(t);
  auto kept_shape = shape;
  kept_shape.tokens = static_cast<std::int64_t>(rows.size());
  if (!compressors::resident_low_rank_applies(low_rank, kept_shape)) return std::nullopt;
  const auto device = cache.key(0).device();
  KeptRows kept;
  kept.rows = at::tensor(at::ArrayRef<std::int64_t>(rows), at::kLong).to(device);
  kept.positions = cache.positions().index_select(0, kept.rows);
  for (const auto& mask : masks)  // [T, H_kv] → the kept rows' [R, H_kv, 1]
    kept.held.push_back(keep_view(mask, T, H).t().to(device, at::kFloat).index_select(0, kept.rows).unsqueeze(-1));
  TorchResidentCache on_device(cache, config, &kept);
  std::int64_t bytes = compressors::compress_low_rank_resident(low_rank, on_device, backend);
  for (int l = 0; l < shape.layers; ++l) {
    const auto& mask = masks[static_cast<std::size_t>(l)];
    bytes += stored_bytes(kept_tokens(keep_view(mask, T, H).to(device, at::kBool)));  // the int32 kept_index
    // Every layer's mask, as the chain's rebuild gives it (all ones included); the tokens: copies onto themselves.
    cache.replace(l, cache.key(l), cache.value(l), keep_view(mask, T, H));
  }
  return bytes;
}

// KIVI on the dense cache, quantized where the cache lies (kivi_on_device.h).
std::int64_t quantize_in_place(KvCache& cache, const ModelConfig& config, const compressors::KiviParams& params) {
  std::int64_t bytes = 0;
  for (int l = 0; l < shape_of(cache, config).layers; ++l) {
    const core::ProfileScope scope("compress hook: kivi on the device");
    const auto rebuild = [&](compressors::Part part) {
      auto stored = kivi_rebuild(tokens_of(cache, nullptr, l, part), part, cache.positions(), config.rope_of(l), params);
      bytes += stored.bytes;
      return stored.rows;
    };
    const at::Tensor key = rebuild(compressors::Part::key);
    cache.replace(l, key, rebuild(compressors::Part::value));
  }
  return bytes;
}

// MiniCache alone, merged where the cache lies (minicache_on_device.h), a pair at a time (its
// double temporaries are the largest). Layers and parts it leaves unmerged keep the model's
// values, at fp16 in the count (as the host stage stores them).
std::int64_t merge_in_place(KvCache& cache, const ModelConfig& config, const compressors::StageSpec& stage) {
  using compressors::Part;
  const auto shape = shape_of(cache, config);
  const auto pairs = compressors::minicache_pairs(stage.get_int("start"), stage.get_int("end"), shape.layers,
                                                  "minicache on the model's KV cache");
  const std::string& part = stage.get("part");
  std::vector<std::array<bool, 2>> merged(static_cast<std::size_t>(shape.layers), {false, false});  // [layer][key, value]
  std::int64_t bytes = 0;
  for (const int a : pairs) {
    at::Tensor rebuilt[2][2];  // [layer a, a + 1][key, value]: undefined = unmerged
    for (const Part p : {Part::key, Part::value}) {
      if (part != "both" && part != compressors::to_string(p)) continue;
      const core::ProfileScope scope("compress hook: minicache on the device");
      const auto stored = minicache_store_pair(tokens_of(cache, nullptr, a, p), tokens_of(cache, nullptr, a + 1, p), stage);
      for (const auto& head : stored) bytes += head.bytes();
      for (int i = 0; i < 2; ++i) {
        rebuilt[i][p == Part::key ? 0 : 1] = minicache_rebuild(stored, i, shape.tokens);
        merged[static_cast<std::size_t>(a + i)][p == Part::key ? 0 : 1] = true;
      }
    }
    for (int i = 0; i < 2; ++i) {
      const int l = a + i;
      cache.replace(l, rebuilt[i][0].defined() ? rebuilt[i][0] : cache.key(l),
                    rebuilt[i][1].defined() ? rebuilt[i][1] : cache.value(l));
    }
  }
  // The rest as the chain stores it (store_uncompressed): at fp16 (keys post-RoPE there, the same size).
  for (int l = 0; l < shape.layers; ++l)
    for (const Part p : {Part::key, Part::value})
      if (!merged[static_cast<std::size_t>(l)][p == Part::key ? 0 : 1])
        bytes += stored_bytes(fp16_buffer(tokens_of(cache, nullptr, l, p)));
  return bytes;
}

}  // namespace

ResidentRoute resident_route(const KvCache& cache, const ModelConfig& config, const compressors::ChainSpec& chain,
                             const linalg::Backend& backend, CompressRoute route) {
  if (route == CompressRoute::host || cache.length() == 0) return ResidentRoute::none;
  const auto shape = shape_of(cache, config);
  const bool beside = backend_beside(backend, cache.key(0).device());
  if (beside && compressors::resident_low_rank_applies(chain, shape)) return ResidentRoute::low_rank;
  // KIVI, MiniCache and CommonKV in torch lose to the host stages' loops and BLAS on the CPU
  // (bench/README.md); on a GPU they save the round trip over PCIe.
  const bool elementwise = route == CompressRoute::resident || cache.key(0).is_cuda();
  if (elementwise && kivi_on_dense(chain)) return ResidentRoute::kivi;
  if (elementwise && minicache_alone(chain)) return ResidentRoute::minicache;
  if (elementwise && commonkv_chain(chain).commonkv) return ResidentRoute::commonkv;
  if (const auto e = split_eviction(chain); e.eviction) {
    // With KIVI too, on the CPU as well: the scoring saves most. After eviction the low-rank
    // stage sees at most T rows, so what fails here fails on the kept rows too.
    if (dense_after_eviction(e.rest)) return ResidentRoute::eviction;
    if (beside && compressors::resident_low_rank_applies(e.rest, shape)) return ResidentRoute::eviction_low_rank;
  }
  return ResidentRoute::none;
}

std::optional<CompressionResult> compress_in_place(ResidentRoute route, KvCache& cache, const ContextCapture& capture,
                                                   const ModelConfig& config, const compressors::ChainSpec& chain,
                                                   const core::Checkpoint* checkpoint, linalg::Backend& backend) {
  const auto shape = shape_of(cache, config);
  std::optional<std::int64_t> bytes;
  switch (route) {
    case ResidentRoute::low_rank: {
      TorchResidentCache on_device(cache, config);
      bytes = compressors::compress_low_rank_resident(chain, on_device, backend);
      break;
    }
    case ResidentRoute::kivi: bytes = quantize_in_place(cache, config, compressors::kivi_params(*kivi_on_dense(chain))); break;
    case ResidentRoute::minicache: bytes = merge_in_place(cache, config, *minicache_alone(chain)); break;
    case ResidentRoute::commonkv: {
      const auto attn_in = [&](int l) -> const at::Tensor& { return capture.attn_in(l); };
      const auto rope_of = [&](int l) -> const core::Rope& { return config.rope_of(l); };
      bytes = commonkv_in_place(cache, shape, rope_of, attn_in, commonkv_chain(chain), checkpoint, backend);
      break;
    }
    case ResidentRoute::eviction:
    case ResidentRoute::eviction_low_rank: {
      const auto e = split_eviction(chain);
      const auto masks = masks_on_device(cache, capture, config, *e.eviction, backend, checkpoint);
      bytes = route == ResidentRoute::eviction ? evict_in_place(cache, masks, config, kivi_on_dense(e.rest))
                                               : evict_then_low_rank(cache, masks, config, e.rest, backend);
      break;
    }
    case ResidentRoute::none: fail("compress: no resident route for {}", chain.to_string());
  }
  // The last products and write-backs may still be queued: wait, so the hook's time (eval's
  // compress_seconds) covers them and nothing runs behind the decode's back.
  if (const auto device = cache.key(0).device(); device.is_cuda()) torch::cuda::synchronize(device.index());
  if (!bytes) return std::nullopt;
  return CompressionResult{*bytes, compressors::dense_fp16_bytes(shape), "resident", nullptr};
}

}  // namespace kvlab::harness
