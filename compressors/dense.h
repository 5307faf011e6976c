// full: the uncompressed cache stored at 16 bits (the baseline, and the base a quantizer
// works on when a chain has no transform). Also the kept cells after eviction.
#pragma once

#include "compressors/compressor.h"

namespace kvlab::compressors {

MethodDef full_method();
std::unique_ptr<TransformStage> make_full(const StageSpec& spec);

// The dense representation of a cache, optionally restricted to kept cells: per layer and KV
// head, the kept keys (post-RoPE, as the model's cache holds them) and values as fp16 [n, D]
// tensors ("layer3/head1/key" per_channel, ".../value" per_token), plus int32 token indices of
// the kept cells when `masks` is given. Reconstruction un-rotates the keys.
std::unique_ptr<Compressed> dense_representation(const CacheSource& cache, const KeepMasks* masks);

// The parts of a per-head tensor's name "layer{l}/head{h}/{leaf}" (the names above): l, h and the
// leaf ("key", "value", "index", …); false for any other name.
bool parse_head_tensor(const std::string& name, int& layer, int& head, std::string& leaf);

// One layer part that a method leaves uncompressed (layers outside xkv's range, minicache's pairs,
// commonkv's groups), stored as the model's cache holds it: fp16 [T, H·D] named
// "layer{l}/{key|value}", keys post-RoPE with per_channel layout, values per_token.
StoredTensor store_uncompressed(const CacheSource& cache, int layer, Part part);
// Its rebuild from the stored values: [T, H_kv, D], keys rotated back to pre-RoPE.
FloatTensor rebuild_uncompressed(const StoredTensor& stored, Part part, const CacheShape& shape, const core::Rope& rope,
                                 const std::vector<std::int64_t>& positions);

}  // namespace kvlab::compressors
