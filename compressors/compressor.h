// The stage interfaces every method implements, and the context they run in.
//
// A compressor is a chain of stages (compressors/spec.h): an optional eviction stage picks the
// (token, KV head) cells each layer keeps; an optional transform (svd, xkv, minicache,
// commonkv) builds a compact representation of the kept cache; optional quantizer stages
// quantize what is stored. compressors/chain.h composes them; a method only implements its
// own stage.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "compressors/cache_source.h"
#include "compressors/compressed.h"
#include "compressors/spec.h"
#include "linalg/backend.h"

namespace kvlab::core {
class Checkpoint;  // core/safetensors.h: a model's weights, for weight-based methods
}
namespace kvlab::compressors {
class LiveModel;  // compressors/live_model.h: the model itself, for methods that run it (kvzip)
}

namespace kvlab::compressors {

struct CompressContext {
  const CacheSource& cache;
  linalg::Backend& backend;
  const core::Checkpoint* checkpoint = nullptr;  // model weights; null when none was given
  const LiveModel* live_model = nullptr;          // the model that made the cache; null when none runs
};

// Per layer, the cells kept: L masks of [T, H_kv] (1 = kept).
using KeepMasks = std::vector<std::vector<std::uint8_t>>;

// One layer's token scores per KV head (EvictionStage::score_layer).
struct HeadScores {
  std::vector<double> primary;    // [H_kv, T]: higher is kept first; +inf: kept whatever the budget (a window)
  std::vector<double> secondary;  // [H_kv, T]: breaks ties of primary (then the earlier token); empty: primary's
};

class EvictionStage {
 public:
  virtual ~EvictionStage() = default;
  // The cells layer `layer` keeps, [T, H_kv] (1 = kept). Scores come from the dumped query window
  // with RoPE applied at the true positions; budgets may depend on the layer's index (PyramidKV)
  // but nothing else depends on other layers, so a layer can be selected on its own.
  virtual std::vector<std::uint8_t> select_layer(const CompressContext& ctx, int layer) const = 0;
  // For a spec whose MethodDef::per_query_head holds: the cells layer `layer` keeps in the cache
  // repeated to the H_q query heads (repeat_kv: query head h reads KV head h / (H_q/H_kv)),
  // [T, H_q] (1 = kept); select_layer then gives their union per KV head. Empty (the default):
  // the stage selects per KV head.
  virtual std::vector<std::uint8_t> select_query_heads(const CompressContext&, int /*layer*/) const { return {}; }
  // Every layer's cells.
  KeepMasks select(const CompressContext& ctx) const {
    KeepMasks masks;
    for (int l = 0; l < ctx.cache.shape().layers; ++l) masks.push_back(select_layer(ctx, l));
    return masks;
  }
  // The scores a method that ranks each KV head's tokens by one score (knorm, keydiff, tova,
  // random, snapkv) gives layer `layer` when `budget` (< T) tokens per KV head are kept: its
  // select_layer keeps each head's top `budget` of them. Stages that share a layer's budget
  // across its heads themselves (adakv) allocate on them. Empty for methods that select
  // otherwise (streamingllm, h2o, pyramidkv).
  virtual HeadScores score_layer(const CompressContext&, int /*layer*/, std::int64_t /*budget*/) const { return {}; }
  // Method-specific figures for the report (budget per layer, ...).
  virtual nlohmann::json notes(const CacheShape&) const { return nlohmann::json::object(); }
};

class TransformStage {
 public:
  virtual ~TransformStage() = default;
  virtual std::unique_ptr<Compressed> compress(const CompressContext& ctx) const = 0;
};

class QuantizerStage {
 public:
  virtual ~QuantizerStage() = default;
  // Quantizes, in place, every tensor whose layout is not QuantLayout::none: values become
  // quantize∘dequantize of themselves, bytes the packed size, layout none (so a second
  // quantizer leaves them alone).
  virtual void quantize(const std::vector<StoredTensor*>& tensors) const = 0;
  // Runs the stage on a chain's stored form (compressors/chain.h calls this): by default
  // quantize(rep->stored()) in place. A stage that needs more than the stored tensors overrides it
  // — think reads the layer's query window from `ctx` and replaces the per-head key tensors with
  // its own — and may return a wrapper of `rep` whose stored() and reconstruct() are its own.
  virtual std::unique_ptr<Compressed> apply(const CompressContext& /*ctx*/, std::unique_ptr<Compressed> rep) const {
    quantize(rep->stored());
    return rep;
  }
};

// The stage of `spec`, from its method's factory in the registry; fails when the method is not
// of that kind.
std::unique_ptr<EvictionStage> make_eviction(const StageSpec& spec);
std::unique_ptr<TransformStage> make_transform(const StageSpec& spec);
std::unique_ptr<QuantizerStage> make_quantizer(const StageSpec& spec);

}  // namespace kvlab::compressors
