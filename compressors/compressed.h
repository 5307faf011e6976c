// What a compressor returns: the tensors it really stores (for the byte count and for a
// chained quantizer) and the rebuild of any layer from them.
//
// Stored forms are real: every StoredTensor ends up holding `packed`, the bytes it would be kept
// as (fp16 bit patterns, int32 indices, KIVI's bit-packed codes with their fp16 scales and mins),
// and its byte count is that buffer's size. A method fills float tensors at f32; the chain
// (compressors/chain.h) then packs every fp16 tensor (pack_fp16_storage) before any quantizer
// runs, and a quantizer packs what it quantizes. Each packing step replaces `values` with the
// decoding of `packed`, so reconstruction — and every score — reads what the stored bytes give
// back, not what the method computed.
#pragma once

#include <cstdint>
#include <limits>
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
  std::vector<float> values; // what reconstruction reads: decode(packed) once packed (empty for indices)
  std::vector<std::uint8_t> packed;  // the stored form, little-endian; empty until packed
  QuantLayout layout = QuantLayout::none;
  bool token_rows = false;   // rows are tokens in order (a quantizer's full-precision residual window applies)
  std::string format = "fp16";  // "fp16", "int32", "kivi2 g32 r128", ...

  // A float tensor to be stored in fp16, values as computed: pack_fp16_storage() (which every
  // chain runs) packs it to 2 bytes a value and reads the values back from those bytes.
  static StoredTensor fp16(std::string name, core::Shape shape, std::vector<float> values, QuantLayout layout,
                           bool token_rows);
  // Token (or row) indices stored as int32, packed at once: 4 bytes each.
  static StoredTensor indices(std::string name, const std::vector<std::int32_t>& index);

  bool is_packed() const { return !packed.empty() || (values.empty() && core::element_count(shape) == 0); }
  // Bytes of the stored form: the size of `packed`. Fails for a tensor not packed yet, so no
  // count can come from a form that was never built.
  std::int64_t bytes() const;
  // The indices of an int32 tensor, decoded from `packed`.
  std::vector<std::int32_t> unpack_indices() const;
};

// One rebuilt layer. Keys are pre-RoPE. Cells (token, KV head) that the compressed cache no
// longer holds are zero in key/value and 0 in `kept`.
struct LayerKV {
  FloatTensor key;                 // [T, H_kv, D]
  FloatTensor value;               // [T, H_kv, D]
  std::vector<std::uint8_t> kept;  // [T, H_kv], 1 = held; empty = every cell held
  // Query-dependent selection (quest, docs/design.md §5): [W, H_q, T], 1 = the dumped window's
  // query w, head h, attends token t (besides `kept` and the causal mask). Empty: every window
  // query attends all that `kept` holds (the shared-mask path every other method takes).
  std::vector<std::uint8_t> query_kept{};
  // Bytes one decode step reads from this layer's stored form, mean over the window queries;
  // NaN: all it stores (a method without query-dependent selection reads everything).
  double loaded_bytes = std::numeric_limits<double>::quiet_NaN();
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

  std::int64_t bytes();  // Σ stored bytes: the sizes of the packed buffers
};

// Packs every unpacked tensor whose format is "fp16" into fp16 bit patterns (round to nearest
// even; beyond ±65504 they become ±inf, which the scorer reports) and sets its values to their
// decoding. Tensors already packed are left alone, so it may run twice. Values from an f16 dump
// come back unchanged.
void pack_fp16_storage(const std::vector<StoredTensor*>& tensors);

// Bytes of the uncompressed cache at 16 bits: 2 (K and V) · L · T · H_kv · D · 2 bytes.
std::int64_t dense_fp16_bytes(const CacheShape& shape);

}  // namespace kvlab::compressors
