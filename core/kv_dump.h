// The KV dump: one HDF5 file per (model, dataset) holding per-layer KV tensors.
//
// Layout (docs/dump-format.md §1–§5):
//   /                                  attributes: format_version, model_id, model_config (JSON text),
//                                      tokenizer, chat_template, kvlab_version, git_revision, created_utc,
//                                      num_layers, num_kv_heads, num_q_heads, head_dim, d_model,
//                                      dtype ("float32" | "float16" | "bfloat16"),
//                                      key_norm, query_norm (only when set: Qwen3's k_norm/q_norm),
//                                      layer_windows, layer_rope, layer_rope_config (only when set:
//                                      sliding windows, Gemma-3's two RoPEs)
//   /samples/<id>/                     attributes: num_tokens, context_end, query_window, has_attn_in (0/1)
//   /samples/<id>/tokens               int32 [T], or [0] when the sample has no token ids
//   /samples/<id>/positions            int64 [T]
//   /samples/<id>/layers/<l>/key       [T, H_kv, D]  pre-RoPE keys
//   /samples/<id>/layers/<l>/value     [T, H_kv, D]
//   /samples/<id>/layers/<l>/query     [W, H_q, D]   the last W tokens' queries (pre-RoPE)
//   /samples/<id>/layers/<l>/attn_in   [T, d_model]  optional: normalized attention input
// Token-major rows, so a layer is directly X ∈ R^{T×(H·D)}. Datasets are chunked by token
// blocks (about 2 MiB a chunk, uncompressed) so a token range of a layer reads without the rest.
// f32 and f16 are plain HDF5 IEEE floats (h5py opens them as float32/float16); bf16 is
// stored as uint16 with the attribute dtype="bfloat16". Integer attributes are int64 scalars,
// strings variable-length UTF-8 (the reader also takes fixed-length ones).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace kvlab::core {

inline constexpr int kDumpFormatVersion = 2;  // the reader also reads version 1

// DumpInfo::key_norm / query_norm of a model with Qwen3's q_norm/k_norm (docs/dump-format.md §2).
inline constexpr const char* kKeyNormBeforeRope = "k_norm before RoPE";
inline constexpr const char* kQueryNormBeforeRope = "q_norm before RoPE";

// Which per-layer tensor.
enum class KvKind { key, value, query, attn_in };
std::string_view to_string(KvKind kind);  // "key" | "value" | "query" | "attn_in"

// File-level description and provenance (root attributes).
struct DumpInfo {
  int num_layers = 0;
  int num_kv_heads = 0;
  int num_q_heads = 0;
  int head_dim = 0;
  int d_model = 0;            // width of attn_in rows; 0 when the dump has no attn_in
  DType dtype = DType::f16;   // storage type of key/value/query/attn_in
  std::string model_id;       // e.g. "meta-llama/Llama-3.1-8B" or "synthetic"
  std::string model_hash;     // core::checkpoint_hash of the checkpoint ("" synthetic or unknown)
  std::string model_config;   // the model's full config.json (or the generator's settings) as JSON text
  std::string tokenizer;      // tokenizer identity ("" when none)
  std::string chat_template;  // template used ("none" when none)
  std::string kvlab_version;  // filled by the writer when empty
  std::string git_revision;   // filled by the writer when empty
  std::string created_utc;    // filled by the writer when empty (ISO 8601)
  // What the stored keys / queries are beyond the projection, when more than that: Qwen3 dumps
  // hold k_norm(k_proj(x)) and q_norm(q_proj(x)), per-head RMSNorms applied before RoPE
  // (kKeyNormBeforeRope, kQueryNormBeforeRope). "" = the plain projection (+ bias); the root
  // attribute is written only when set, and a file without it reads as "".
  std::string key_norm;
  std::string query_norm;
  // Sliding-window attention (docs/dump-format.md §2): layer l's query at position i sees keys j
  // with i − layer_windows[l] < j ≤ i; 0 = every earlier key (a full-attention layer). Empty: no
  // layer slides. Root attribute `layer_windows` ("4096,0,4096,…"), written only when non-empty.
  std::vector<int> layer_windows;
  // Set when the layers do not all rotate with the one RoPE model_config describes (Gemma-3's
  // sliding layers use rope_local_base_freq): the per-layer-type rules in words. "" = one RoPE.
  std::string layer_rope;
  // The same, machine-readable (docs/dump-format.md §2): layer l rotates with
  // Rope::from_config(layer_rope_configs[l], head_dim), each entry a JSON object in config.json's
  // terms (rope_theta, rope_scaling, partial_rotary_factor). [L], or empty: model_config's RoPE on
  // every layer. Root attribute `layer_rope_config`, written only when non-empty (the writer then
  // also writes `layer_rope`, filled in when empty, which kvlab before issue 22 refuses).
  std::vector<std::string> layer_rope_configs;

  std::int64_t kv_row_width() const { return std::int64_t{num_kv_heads} * head_dim; }  // H_kv·D
  std::int64_t q_row_width() const { return std::int64_t{num_q_heads} * head_dim; }    // H_q·D
};

// One sample (prompt): its tokens and boundaries.
struct SampleMeta {
  std::string id;                      // HDF5 group name: letters, digits, '_', '-', '.'
  std::vector<std::int32_t> tokens;    // [T] token ids (may be empty for synthetic data: then T = num_tokens)
  std::vector<std::int64_t> positions; // [T] RoPE positions (empty: 0..T-1, which is what gets stored,
                                       // so a reader always returns T positions)
  std::int64_t num_tokens = 0;         // T
  std::int64_t context_end = 0;        // tokens [0, context_end) are context, the rest the question
  int query_window = 0;                // W: queries are stored for tokens [T-W, T)
  bool has_attn_in = false;
};

// Writes a dump atomically: everything goes to "<path>.tmp-<pid>" and commit() renames it
// onto `path`. Destroying a writer that was not committed removes the temporary file, so
// a failed run never leaves a half-written dump behind.
class DumpWriter {
 public:
  DumpWriter(const std::filesystem::path& path, DumpInfo info);
  ~DumpWriter();
  DumpWriter(const DumpWriter&) = delete;
  DumpWriter& operator=(const DumpWriter&) = delete;

  // Starts a sample; its layers are then written in any order, each exactly once.
  void begin_sample(const SampleMeta& meta);
  // Writes one layer of the current sample. Shapes: key/value [T, H_kv, D], query
  // [W, H_q, D], attn_in [T, d_model] (required iff meta.has_attn_in, else empty).
  // Values are f32 and are rounded to the dump's dtype. Non-finite values are an error.
  void write_layer(int layer, std::span<const float> key, std::span<const float> value,
                   std::span<const float> query, std::span<const float> attn_in = {});
  // Checks every layer of the current sample was written.
  void end_sample();
  // Closes the file and renames it into place. After this the writer is finished.
  void commit();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads a dump. Opening checks the format version and the root attributes; every read
// checks the dataset's shape and dtype and that the values are finite, and an error names the
// file, the dataset and (for non-finite values) the token and head.
// Datasets stay open between reads (those of the sample read last), so streaming a layer block
// by block costs no re-opening. Safe to share between threads: HDF5 calls are serialised,
// the 16-bit conversion runs in the calling thread.
class DumpReader {
 public:
  explicit DumpReader(const std::filesystem::path& path);
  ~DumpReader();
  DumpReader(const DumpReader&) = delete;
  DumpReader& operator=(const DumpReader&) = delete;

  const std::filesystem::path& path() const;
  const DumpInfo& info() const;
  std::vector<std::string> sample_ids() const;  // sorted
  SampleMeta sample(const std::string& id) const;

  // Rows [t0, t0 + n) of one layer's tensor, converted to f32, written row-major into
  // `out` (n · row width values, row width = H·D or d_model). For the query, rows index
  // the window 0..W-1. Streams: only the chunks holding those rows are read.
  void read_rows(const std::string& sample_id, int layer, KvKind kind, std::int64_t t0, std::int64_t n,
                 std::span<float> out) const;
  // A whole layer tensor ([T, H, D], [W, H_q, D] or [T, d_model]).
  FloatTensor read_layer(const std::string& sample_id, int layer, KvKind kind) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvlab::core
