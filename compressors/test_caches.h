// Test fixtures shared by the compressor tests: small caches with known structure.
#pragma once

#include <functional>
#include <string>

#include "compressors/cache_source.h"
#include "core/error_of.h"
#include "datasets/synth_kv.h"

namespace kvlab::compressors::testing {

// 4 layers, 2 KV heads, 4 query heads, head_dim 16, 512 tokens, query window 16, f32, noise 0.02.
datasets::SynthConfig small_synth_config();
// The synthetic generator's cache, held in memory (RoPE: identity, as its dumps declare).
InMemoryCache synthetic_cache(const datasets::SynthConfig& config, int sample = 0);
// A cache of i.i.d. N(0,1) keys, values and queries (no structure), with a real RoPE
// (θ = 10000) and positions 0..T−1: a worst case for every method.
InMemoryCache random_cache(const CacheShape& shape, std::uint64_t seed, bool with_rope = true);

// Brute-force attention of window row w, query head h over keys/values [T, H_kv, D] (pre-RoPE),
// rotating each row on its own, causal by position, cells outside `kept` (empty: all) excluded;
// softmax in double. p [T] the probabilities, o [D] the output.
void brute_attention(const CacheSource& c, int layer, const FloatTensor& key, const FloatTensor& value,
                     const std::vector<std::uint8_t>& kept, int w, int h, std::vector<double>& p,
                     std::vector<double>& o);

using core::error_of;  // the message of the kvlab::Error `f` throws, or "(no error)"

}  // namespace kvlab::compressors::testing
