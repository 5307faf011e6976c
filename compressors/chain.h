// Runs a compressor chain (compressors/spec.h): eviction picks the cells each layer keeps; a
// transform (or plain fp16 storage when the chain has none) stores the kept cache; quantizers
// then quantize what is stored in place. Before the quantizers, every fp16 tensor is rounded to
// fp16, so scores include the 16-bit store. The chain's bytes are the sum of what it stores.
//
// Eviction then transform: the transform sees the cache restricted to the union of the tokens
// any layer or head kept (cells a head evicted are zero there), so its token-major factors have
// one row per such token; the rebuilt layers are masked back to each head's kept cells.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "compressors/compressor.h"
#include "compressors/score.h"

namespace kvlab::compressors {

// A chain's stages by kind, in parse_spec's order (eviction, transform, quantizer); null where it
// has none. `repeats`: a kind occurs twice (two evictions, or two quantizers).
struct ChainStages {
  const StageSpec* eviction = nullptr;
  const StageSpec* transform = nullptr;
  const StageSpec* quantizer = nullptr;
  bool repeats = false;
};
ChainStages stages_of(const ChainSpec& chain);
// The device path of a chain's stage (MethodDef::device); none for a stage the chain lacks (null).
DevicePath device_of(const StageSpec* stage);

std::unique_ptr<Compressed> compress_chain(const CompressContext& ctx, const ChainSpec& chain);

// The chains of one expanded sweep, in order. Where they are one transform stage that differs
// only in ranks, the method's sweep shares one decomposition per group; otherwise each runs alone.
std::vector<std::unique_ptr<Compressed>> compress_sweep(const CompressContext& ctx, const std::vector<ChainSpec>& chains);

// Whether a chain compresses each layer on its own: eviction (each layer's cells are chosen
// from that layer's window; budgets depend at most on its index), `full`, `quest` (its
// skip_layers reads the slice's CacheSource::model_layer) and quantizers (kivi), with no other
// transform. Such chains can be compressed and scored one layer at a time (below)
// instead of holding the whole compressed cache.
bool layer_local(const ChainSpec& chain);

// Compresses a layer_local chain one layer at a time: `use(layer, slice, compressed)` gets each
// layer's compressed form (as a one-layer cache: reconstruct(0)), which is freed afterwards.
// Returns the notes compress_chain would report; `compress_seconds` the time compressing.
nlohmann::json compress_by_layer(const CompressContext& ctx, const ChainSpec& chain,
                                 const std::function<void(int layer, const CacheSource& slice, Compressed& compressed)>& use,
                                 double* compress_seconds = nullptr);

// compress_chain + score for a layer_local chain, one layer at a time: memory is one layer's
// compressed form, not the whole cache's. The Score and `notes` equal score(cache, *c) and
// c->notes() for c = compress_chain(…). `compress_seconds` (if given) receives the time spent
// compressing, the rest being scoring.
Score compress_and_score_by_layer(const CompressContext& ctx, const ChainSpec& chain,
                                  const std::function<void(int, int)>& on_layer = {}, double* compress_seconds = nullptr,
                                  nlohmann::json* notes = nullptr);

}  // namespace kvlab::compressors
