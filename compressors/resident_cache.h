// A KV cache whose layers live where the backend computes ("resident", linalg/backend.h): the
// model's CUDA tensors for the CUDA backend, host memory for the CPU one. Compressors that can run
// there end to end (svd and xkv, alone or followed by KIVI: compress_low_rank_resident) read and
// rewrite the cache through it, so nothing crosses to the host but the small factors. The
// implementation owns the memory and the cache's layout and dtype; the compressor only sees f32
// rows and backend calls.
//
// Every pointer returned is resident and stays valid until the next call of the same function
// (or, for buffer(), of the same slot). All work, the implementation's and the backend's, is
// queued on stream(), so it runs in order without host synchronisation.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compressors/cache_source.h"
#include "compressors/compressed.h"
#include "compressors/methods/kivi.h"
#include "linalg/backend.h"

namespace kvlab::compressors {

class ResidentCache {
 public:
  virtual ~ResidentCache() = default;
  virtual const CacheShape& shape() const = 0;
  // The queue of every call (a cudaStream_t as void*, null for the default stream or the host).
  virtual void* stream() const = 0;
  // A group's matrix X = [X_l …] of the layers' keys (pre-RoPE) or values, [T, G·H·D] f32
  // row-major, column block i = layers[i] (low_rank.h's layout).
  virtual const float* gather(const std::vector<int>& layers, Part part) = 0;
  // The last gather()'s X as the Gram's inputs (Backend::resident_gram_top): bfloat16 bits for
  // bf16, double for f64, null for f32 and tf32. Asked for only where the backend reads it
  // (Backend::resident_gram_reads_input).
  virtual const void* gram_input(linalg::GramPrecision precision) = 0;
  // `count` f32 values of scratch for role `slot` (0, 1, 2, …), reused from call to call.
  virtual float* buffer(int slot, std::int64_t count) = 0;
  // Copies `count` host values into resident memory.
  virtual void upload(const float* host, std::int64_t count, float* resident) = 0;
  // Stores `rows` × `cols` resident f32 values (row-major, row stride `ld`) as the chain stores
  // the tensor `name` of this layout and token_rows (low_rank.h names them): at fp16, nearest
  // even (pack_fp16_storage), then, with `kivi`, packed as kivi_pack packs a StoredTensor of this
  // shape. The values become the decoding of what is stored; returns the stored buffer's bytes.
  virtual std::int64_t store(const std::string& name, float* values, std::int64_t rows, std::int64_t cols,
                             std::int64_t ld, QuantLayout layout, bool token_rows, const KiviParams* kivi) = 0;
  // Replaces a layer's keys (pre-RoPE) or values with `rows`, [T, H·D] f32 resident (converted to
  // the cache's dtype); the other part stays as it is.
  virtual void write(int layer, Part part, const float* rows) = 0;
  // Stores a layer part the chain leaves uncompressed as the chain does (compressors/dense.h
  // store_uncompressed: fp16 [T, H·D], keys post-RoPE) and returns the stored buffer's bytes.
  // Without `kivi` the cache keeps the model's values (the fp16 rounding is not replayed); with it
  // the part becomes KIVI's rebuild of its packed form (kivi_quantize_tensor, rebuild_uncompressed)
  // and the bytes are the packed form's.
  virtual std::int64_t store_uncompressed(int layer, Part part, const KiviParams* kivi) = 0;
};

}  // namespace kvlab::compressors
