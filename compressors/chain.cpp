#include "compressors/chain.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "compressors/dense.h"
#include "compressors/query_head_cells.h"
#include "core/error.h"
#include "core/stopwatch.h"

namespace kvlab::compressors {

ChainStages stages_of(const ChainSpec& chain) {
  ChainStages by_kind;
  for (const auto& stage : chain.stages) {
    const auto kind = method(stage.method).kind;
    const StageSpec*& slot = kind == StageKind::eviction    ? by_kind.eviction
                             : kind == StageKind::transform ? by_kind.transform
                                                            : by_kind.quantizer;
    by_kind.repeats = by_kind.repeats || slot;
    slot = &stage;
  }
  return by_kind;
}

DevicePath device_of(const StageSpec* stage) { return stage ? method(stage->method).device : DevicePath::none; }

namespace {

const StageSpec* find_stage(const ChainSpec& chain, StageKind kind) {
  for (const auto& s : chain.stages)
    if (method(s.method).kind == kind) return &s;
  return nullptr;
}

// The cache restricted to `rows` (ascending token indices), with cells outside each layer's
// keep mask set to zero.
class CompactCache final : public CacheSource {
 public:
  CompactCache(const CacheSource& base, const KeepMasks& masks, std::vector<std::int64_t> rows)
      : base_(base), masks_(masks), rows_(std::move(rows)), shape_(base.shape()) {
    shape_.tokens = static_cast<std::int64_t>(rows_.size());
    for (auto r : rows_) positions_.push_back(base.positions()[static_cast<std::size_t>(r)]);
  }
  const CacheShape& shape() const override { return shape_; }
  FloatTensor layer(int layer, Part part) const override {
    const auto full = base_.layer(layer, part);
    const int H = shape_.kv_heads, D = shape_.head_dim;
    FloatTensor out({shape_.tokens, H, D});
    for (std::size_t i = 0; i < rows_.size(); ++i)
      for (int h = 0; h < H; ++h)
        if (masks_[layer][static_cast<std::size_t>(rows_[i] * H + h)])
          std::copy_n(full.data.begin() + (rows_[i] * H + h) * D, D, out.data.begin() + (static_cast<std::int64_t>(i) * H + h) * D);
    return out;
  }
  FloatTensor queries(int layer) const override { return base_.queries(layer); }
  FloatTensor attn_in(int layer) const override {
    const auto full = base_.attn_in(layer);
    const auto width = full.shape.at(1);
    FloatTensor out({shape_.tokens, width});
    for (std::size_t i = 0; i < rows_.size(); ++i)
      std::copy_n(full.data.begin() + rows_[i] * width, width, out.data.begin() + static_cast<std::int64_t>(i) * width);
    return out;
  }
  const std::vector<std::int64_t>& positions() const override { return positions_; }
  using CacheSource::rope;
  const core::Rope& rope(int layer) const override { return base_.rope(layer); }
  int window(int layer) const override { return base_.window(layer); }
  std::string describe() const override { return base_.describe() + " (kept tokens)"; }

 private:
  const CacheSource& base_;
  const KeepMasks& masks_;
  std::vector<std::int64_t> rows_;
  std::vector<std::int64_t> positions_;
  CacheShape shape_;
};

// A transform run on the kept tokens, plus the eviction's index bookkeeping.
class EvictedTransform final : public Compressed {
 public:
  EvictedTransform(const CacheShape& shape, const KeepMasks& masks, std::vector<std::int64_t> rows,
                   std::unique_ptr<Compressed> inner, nlohmann::json eviction_notes)
      : shape_(shape), rows_(std::move(rows)), inner_(std::move(inner)), eviction_notes_(std::move(eviction_notes)) {
    // Each layer's kept cells as int32 cell indices t·H_kv + h, ascending: what tells a rebuild
    // which rows of the transform's factors belong to which head.
    for (int l = 0; l < shape_.layers; ++l) {
      std::vector<std::int32_t> cells;
      for (std::size_t i = 0; i < masks[l].size(); ++i)
        if (masks[l][i]) cells.push_back(static_cast<std::int32_t>(i));
      index_.push_back(StoredTensor::indices(fmt::format("layer{}/kept_index", l), cells));
    }
  }
  std::vector<StoredTensor*> stored() override {
    auto out = inner_->stored();
    for (auto& t : index_) out.push_back(&t);
    return out;
  }
  LayerKV reconstruct(int layer) const override {
    const auto compact = inner_->reconstruct(layer);
    const int H = shape_.kv_heads, D = shape_.head_dim;
    std::vector<std::uint8_t> kept(static_cast<std::size_t>(shape_.tokens * H), 0);
    for (const std::int32_t cell : index_.at(static_cast<std::size_t>(layer)).unpack_indices())
      kept.at(static_cast<std::size_t>(cell)) = 1;
    LayerKV out{FloatTensor({shape_.tokens, H, D}), FloatTensor({shape_.tokens, H, D}), std::move(kept)};
    for (std::size_t i = 0; i < rows_.size(); ++i)
      for (int h = 0; h < H; ++h) {
        if (!out.kept[static_cast<std::size_t>(rows_[i] * H + h)]) continue;
        const auto src = (static_cast<std::int64_t>(i) * H + h) * D, dst = (rows_[i] * H + h) * D;
        std::copy_n(compact.key.data.begin() + src, D, out.key.data.begin() + dst);
        std::copy_n(compact.value.data.begin() + src, D, out.value.data.begin() + dst);
      }
    return out;
  }
  nlohmann::json notes() const override {
    auto n = inner_->notes();
    n["eviction"] = eviction_notes_;
    n["transform_rows"] = rows_.size();
    return n;
  }

 private:
  CacheShape shape_;
  std::vector<std::int64_t> rows_;  // the tokens any layer kept: row i of the transform is token rows_[i]
  std::unique_ptr<Compressed> inner_;
  nlohmann::json eviction_notes_;
  std::vector<StoredTensor> index_;
};

// A compressed cache with extra notes (the eviction's, for dense storage of the kept cells).
class WithNotes final : public Compressed {
 public:
  WithNotes(std::unique_ptr<Compressed> inner, nlohmann::json notes) : inner_(std::move(inner)), notes_(std::move(notes)) {}
  std::vector<StoredTensor*> stored() override { return inner_->stored(); }
  LayerKV reconstruct(int layer) const override { return inner_->reconstruct(layer); }
  nlohmann::json notes() const override {
    auto n = inner_->notes();
    n.update(notes_);
    return n;
  }

 private:
  std::unique_ptr<Compressed> inner_;
  nlohmann::json notes_;
};

// Whether the eviction stage `ev` keeps one selection per query head (MethodDef::per_query_head);
// such a stage stores its cells alone (query_head_cells.h), so a chain that continues after it fails.
bool alone_per_query_head(const ChainSpec& chain, const StageSpec& ev) {
  if (!selects_per_query_head(ev)) return false;
  if (chain.stages.size() > 1)
    fail("{}: {} keeps one selection per query head (H_q heads of cells stored, the SnapKV repository's repeat_kv "
         "layout); no transform or quantizer can follow it yet (store it alone, or select per KV head)",
         chain.to_string(), ev.to_string());
  return true;
}

// The 16-bit store, then the quantizers in spec order (each sees what the one before it stored).
std::unique_ptr<Compressed> finish(const CompressContext& ctx, std::unique_ptr<Compressed> rep, const ChainSpec& chain) {
  pack_fp16_storage(rep->stored());
  for (const auto& s : chain.stages)
    if (method(s.method).kind == StageKind::quantizer) rep = make_quantizer(s)->apply(ctx, std::move(rep));
  return rep;
}

}  // namespace

std::unique_ptr<Compressed> compress_chain(const CompressContext& ctx, const ChainSpec& chain) {
  if (chain.stages.empty()) fail("empty compressor chain");
  const auto* ev = find_stage(chain, StageKind::eviction);
  const auto* tr = find_stage(chain, StageKind::transform);
  std::unique_ptr<Compressed> rep;
  if (!ev) {
    rep = tr ? make_transform(*tr)->compress(ctx) : dense_representation(ctx.cache, nullptr);
    return finish(ctx, std::move(rep), chain);
  }
  const auto& shape = ctx.cache.shape();
  const auto eviction = make_eviction(*ev);
  if (alone_per_query_head(chain, *ev)) {
    KeepMasks selections;
    for (int l = 0; l < shape.layers; ++l) selections.push_back(eviction->select_query_heads(ctx, l));
    rep = std::make_unique<WithNotes>(query_head_representation(ctx.cache, selections),
                                      nlohmann::json{{"eviction", eviction->notes(shape)}});
    return finish(ctx, std::move(rep), chain);
  }
  auto masks = eviction->select(ctx);
  if (static_cast<int>(masks.size()) != shape.layers) fail("{}: eviction returned {} layer masks", ev->method, masks.size());
  for (const auto& m : masks)
    if (static_cast<std::int64_t>(m.size()) != shape.tokens * shape.kv_heads)
      fail("{}: eviction returned a mask of {} cells, not T·H = {}", ev->method, m.size(), shape.tokens * shape.kv_heads);
  nlohmann::json ev_notes = eviction->notes(shape);
  if (!tr || method(tr->method).stores_cells) {
    rep = std::make_unique<WithNotes>(dense_representation(ctx.cache, &masks), nlohmann::json{{"eviction", ev_notes}});
    return finish(ctx, std::move(rep), chain);
  }
  std::vector<std::int64_t> rows;
  for (std::int64_t t = 0; t < shape.tokens; ++t) {
    bool any = false;
    for (int l = 0; l < shape.layers && !any; ++l)
      for (int h = 0; h < shape.kv_heads && !any; ++h) any = masks[l][static_cast<std::size_t>(t * shape.kv_heads + h)];
    if (any) rows.push_back(t);
  }
  CompactCache compact(ctx.cache, masks, rows);
  const CompressContext inner_ctx{compact, ctx.backend, ctx.checkpoint};
  auto inner = make_transform(*tr)->compress(inner_ctx);
  rep = std::make_unique<EvictedTransform>(shape, masks, std::move(rows), std::move(inner), std::move(ev_notes));
  return finish(ctx, std::move(rep), chain);
}

std::vector<std::unique_ptr<Compressed>> compress_sweep(const CompressContext& ctx, const std::vector<ChainSpec>& chains) {
  std::vector<std::unique_ptr<Compressed>> out;
  if (chains.empty()) return out;
  // One transform stage and nothing else, the same method in every variant: the method's sweep.
  const bool single = std::all_of(chains.begin(), chains.end(), [&](const ChainSpec& c) {
    return c.stages.size() == 1 && c.stages[0].method == chains[0].stages[0].method &&
           method(c.stages[0].method).kind == StageKind::transform;
  });
  if (single && chains.size() > 1) {
    if (const auto& sweep = method(chains[0].stages[0].method).sweep) {
      std::vector<StageSpec> variants;
      for (const auto& c : chains) variants.push_back(c.stages[0]);
      out = sweep(ctx, variants);
      for (std::size_t i = 0; i < out.size(); ++i) out[i] = finish(ctx, std::move(out[i]), chains[i]);
      return out;
    }
  }
  for (const auto& c : chains) out.push_back(compress_chain(ctx, c));
  return out;
}

namespace {

// One layer of a cache, seen as a one-layer cache (layer 0 = the base's layer `layer`).
class LayerSlice final : public CacheSource {
 public:
  LayerSlice(const CacheSource& base, int layer) : base_(base), layer_(layer), shape_(base.shape()) { shape_.layers = 1; }
  const CacheShape& shape() const override { return shape_; }
  FloatTensor layer(int, Part part) const override { return base_.layer(layer_, part); }
  void read_layer_into(int, Part part, float* out, std::int64_t ld) const override {
    base_.read_layer_into(layer_, part, out, ld);
  }
  FloatTensor queries(int) const override { return base_.queries(layer_); }
  FloatTensor attn_in(int) const override { return base_.attn_in(layer_); }
  const std::vector<std::int64_t>& positions() const override { return base_.positions(); }
  using CacheSource::rope;
  const core::Rope& rope(int) const override { return base_.rope(layer_); }
  int window(int) const override { return base_.window(layer_); }
  std::string describe() const override { return fmt::format("{} layer {}", base_.describe(), layer_); }
  int model_layer(int) const override { return base_.model_layer(layer_); }

 private:
  const CacheSource& base_;
  int layer_;
  CacheShape shape_;
};

}  // namespace

bool layer_local(const ChainSpec& chain) {
  return !chain.stages.empty() &&
         std::all_of(chain.stages.begin(), chain.stages.end(), [](const StageSpec& s) { return method(s.method).layer_local; });
}

nlohmann::json compress_by_layer(const CompressContext& ctx, const ChainSpec& chain,
                                 const std::function<void(int layer, const CacheSource& slice, Compressed& compressed)>& use,
                                 double* compress_seconds) {
  if (!layer_local(chain))
    fail("{}: not a per-layer chain (only eviction, full, quest and quantizers are)", chain.to_string());
  const auto& s = ctx.cache.shape();
  const auto* ev = find_stage(chain, StageKind::eviction);
  const auto eviction = ev ? make_eviction(*ev) : nullptr;
  const bool per_query_head = ev && alone_per_query_head(chain, *ev);
  double compressing = 0;
  nlohmann::json notes = nlohmann::json::object();
  for (int l = 0; l < s.layers; ++l) {
    const LayerSlice slice(ctx.cache, l);
    const auto t0 = std::chrono::steady_clock::now();
    std::unique_ptr<Compressed> compressed;
    if (eviction) {  // selected against the whole cache (budgets may depend on the layer index)
      const KeepMasks mask{per_query_head ? eviction->select_query_heads(ctx, l) : eviction->select_layer(ctx, l)};
      compressed = finish({slice, ctx.backend, ctx.checkpoint},
                          per_query_head ? query_head_representation(slice, mask) : dense_representation(slice, &mask),
                          chain);
    } else {
      compressed = compress_chain({slice, ctx.backend, ctx.checkpoint}, chain);
    }
    compressing += core::seconds_since(t0);
    if (l == 0) notes = compressed->notes();
    use(l, slice, *compressed);
  }
  if (compress_seconds) *compress_seconds = compressing;
  // As compress_chain reports them: the storage's, plus the eviction's for the whole cache.
  if (eviction) notes["eviction"] = eviction->notes(s);
  return notes;
}

Score compress_and_score_by_layer(const CompressContext& ctx, const ChainSpec& chain,
                                  const std::function<void(int, int)>& on_layer, double* compress_seconds,
                                  nlohmann::json* notes) {
  const auto& s = ctx.cache.shape();
  std::vector<LayerScore> layers;
  std::int64_t bytes = 0;
  LayerScorer scorer(ctx.backend);  // its scratch serves every layer
  auto n = compress_by_layer(
      ctx, chain,
      [&](int l, const CacheSource& slice, Compressed& compressed) {
        layers.push_back(scorer.score(slice, 0, compressed.reconstruct(0)));
        bytes += compressed.bytes();
        if (on_layer) on_layer(l + 1, s.layers);
      },
      compress_seconds);
  if (notes) *notes = std::move(n);
  return summarize(s, std::move(layers), bytes);
}

}  // namespace kvlab::compressors
