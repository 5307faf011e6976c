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

}  // namespace kvlab::compressors
