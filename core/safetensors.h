// safetensors checkpoints without libtorch (docs/models.md §3): a read-only, memory-mapped
// view of a model's weights, and a small writer for tests and `kvlab make-tiny-model`.
//
// Every header is validated when the checkpoint opens (8-byte little-endian size ≤ 100,000,000,
// a JSON object starting with '{', known dtype strings, non-negative integer shapes, data_offsets
// that tile the byte buffer with no holes or overlaps, END − BEGIN == numel·bytes, buffer end ==
// file length, `__metadata__` a string → string map, no duplicate names). A truncated or corrupt
// file is a kvlab::Error naming the file and, where one is at fault, the tensor — never a crash
// or silently zero weights.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace kvlab::core {

class Checkpoint {
 public:
  // `path`: a model directory (model.safetensors.index.json with its shards if present, else
  // model.safetensors), an index .json, or a single .safetensors file. Maps every file it names.
  explicit Checkpoint(const std::filesystem::path& path);
  ~Checkpoint();
  Checkpoint(Checkpoint&&) noexcept;
  Checkpoint& operator=(Checkpoint&&) noexcept;
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  const std::filesystem::path& path() const { return path_; }  // as given to the constructor

  bool has(std::string_view name) const;
  // The tensor's shape as the header states it, e.g. [H_kv·D, d_model] for k_proj.weight.
  const Shape& shape(std::string_view name) const;
  // The safetensors dtype string: "F32", "F16", "BF16", "I64", ... (docs/models.md §3.4).
  const std::string& dtype(std::string_view name) const;
  // The tensor converted to f32; F32, F16 and BF16 only (other dtypes: kvlab::Error naming it).
  FloatTensor tensor(std::string_view name) const;
  // The tensor's bytes as stored (little-endian, row-major, in dtype(name)), inside the mapping:
  // valid while the Checkpoint lives. Not necessarily aligned beyond what the file's ordering
  // gives: copy before reading as wider types where alignment matters.
  std::span<const std::byte> raw(std::string_view name) const;
  // Every tensor name, sorted.
  std::vector<std::string> names() const;
  // The union of the files' `__metadata__` maps (e.g. {"format": "pt"}).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  struct File;   // one mapped .safetensors file
  struct Entry;  // one tensor: dtype, shape, file, byte range

 private:
  const Entry& entry(std::string_view name) const;
  void open_file(const std::filesystem::path& file);

  std::filesystem::path path_;
  std::vector<std::unique_ptr<File>> files_;
  std::map<std::string, std::unique_ptr<Entry>, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// One tensor to write: `data` holds element_count(shape) values in row-major order, converted
// to `dtype` on write (round-to-nearest-even for f16/bf16).
struct TensorToWrite {
  Shape shape;
  std::vector<float> data;
  DType dtype = DType::f32;
};

// Writes a .safetensors file atomically (temp file + rename): header padded with spaces to a
// multiple of 8 bytes, tensors ordered by descending dtype width then name, `metadata` as
// `__metadata__` (omitted when empty). Fails naming the tensor whose data and shape disagree.
void write_safetensors(const std::filesystem::path& path, const std::map<std::string, TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace kvlab::core
