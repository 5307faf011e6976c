// What a compressor returns: the tensors it really stores (for the byte count and for a
// chained quantizer) and the rebuild of any layer from them.
//
// Byte accounting is from the stored objects: every StoredTensor states the bytes its packed
// form takes (fp16 values 2 bytes each, int32 indices 4, b-bit codes ⌈n·b/8⌉ plus their scales
// and zero-points). A method fills the values at f32; the chain (compressors/chain.h) then rounds
// every fp16 tensor to fp16 before any quantizer runs, so the scores include the rounding of the
// 16-bit store and the in-memory values are exactly what the packed form gives back.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compressors/cache_source.h"

namespace kvlab::compressors {

// How a chained quantizer (kivi) may group a stored tensor's values.
enum class QuantLayout {
  none,         // not quantizable: indices, norms, scales, already-quantized data
  per_channel,  // [n, c] token-major; quantization groups run along the n tokens of one channel (KIVI keys)
  per_token,    // [n, c]; groups run along the c channels of one row (KIVI values, factors A and B)
};

struct StoredTensor {
  std::string name;          // unique within a compressed cache, e.g. "group0/key/A", "layer3/value"
  core::Shape shape;         // logical shape, row-major: [n, c] for quantizable tensors
  std::vector<float> values; // what reconstruction reads (empty for index/metadata tensors)
  std::int64_t bytes = 0;    // size of the stored (packed) form, including any scales/zero-points
  QuantLayout layout = QuantLayout::none;
  bool token_rows = false;   // rows are tokens in order (a quantizer's full-precision residual window applies)
  std::string format = "fp16";  // "fp16", "int32", "kivi2 g32 r128", ...

  // A float tensor stored in fp16: bytes = 2 per value. Values stay as computed until
  // round_fp16_storage() (which every chain runs) rounds them.
  static StoredTensor fp16(std::string name, core::Shape shape, std::vector<float> values, QuantLayout layout,
                           bool token_rows);
  // Metadata counted by bytes only (e.g. int32 kept-token indices: 4 bytes each).
  static StoredTensor metadata(std::string name, core::Shape shape, std::int64_t bytes, std::string format);
};

// One rebuilt layer. Keys are pre-RoPE. Cells (token, KV head) that the compressed cache no
// longer holds are zero in key/value and 0 in `kept`.
struct LayerKV {
  FloatTensor key;                 // [T, H_kv, D]
  FloatTensor value;               // [T, H_kv, D]
  std::vector<std::uint8_t> kept;  // [T, H_kv], 1 = held; empty = every cell held
  bool holds(std::int64_t t, int head, int heads) const { return kept.empty() || kept[t * heads + head]; }
};

class Compressed {
 public:
  virtual ~Compressed() = default;
  // Everything stored, mutable so a chained quantizer can quantize it in place.
  virtual std::vector<StoredTensor*> stored() = 0;
  // Layer `layer` rebuilt from the stored tensors alone.
  virtual LayerKV reconstruct(int layer) const = 0;
  // Method-specific figures for the report, e.g. {"authors_ratio": 8.03, "merged_fraction": 0.6}.
  virtual nlohmann::json notes() const { return nlohmann::json::object(); }

  std::int64_t bytes();  // Σ stored bytes
};

// Rounds the values of every tensor whose format is "fp16" to fp16 (round to nearest even;
// beyond ±65504 they become ±inf, which the scorer reports). A no-op for data from an f16 dump.
void round_fp16_storage(const std::vector<StoredTensor*>& tensors);

// Bytes of the uncompressed cache at 16 bits: 2 (K and V) · L · T · H_kv · D · 2 bytes.
std::int64_t dense_fp16_bytes(const CacheShape& shape);

}  // namespace kvlab::compressors
