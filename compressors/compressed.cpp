#include "compressors/compressed.h"

#include <bit>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"

namespace kvlab::compressors {

static_assert(std::endian::native == std::endian::little, "stored forms are little-endian; pack on a little-endian host");

StoredTensor StoredTensor::fp16(std::string name, core::Shape shape, std::vector<float> values, QuantLayout layout,
                                bool token_rows) {
  if (static_cast<std::int64_t>(values.size()) != core::element_count(shape))
    fail("stored tensor {}: {} values for shape of {} elements", name, values.size(), core::element_count(shape));
  StoredTensor t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.values = std::move(values);
  t.layout = layout;
  t.token_rows = token_rows;
  t.format = "fp16";
  return t;
}

StoredTensor StoredTensor::indices(std::string name, const std::vector<std::int32_t>& index) {
  StoredTensor t;
  t.name = std::move(name);
  t.shape = {static_cast<std::int64_t>(index.size())};
  t.packed.resize(index.size() * sizeof(std::int32_t));
  if (!index.empty()) std::memcpy(t.packed.data(), index.data(), t.packed.size());
  t.format = "int32";
  return t;
}

std::int64_t StoredTensor::bytes() const {
  if (!is_packed()) fail("stored tensor {} ({}) is counted before it was packed", name, format);
  return static_cast<std::int64_t>(packed.size());
}

std::vector<std::int32_t> StoredTensor::unpack_indices() const {
  if (format != "int32" || packed.size() % sizeof(std::int32_t) != 0)
    fail("stored tensor {}: {} bytes of {} are not int32 indices", name, packed.size(), format);
  std::vector<std::int32_t> out(packed.size() / sizeof(std::int32_t));
  if (!out.empty()) std::memcpy(out.data(), packed.data(), packed.size());
  return out;
}

void pack_fp16_storage(const std::vector<StoredTensor*>& tensors) {
  std::vector<std::uint16_t> bits;
  for (auto* t : tensors) {
    if (t->format != "fp16" || t->is_packed()) continue;
    bits.resize(t->values.size());
    core::f32_to_16bit(core::DType::f16, t->values, bits);
    t->packed.resize(bits.size() * sizeof(std::uint16_t));
    std::memcpy(t->packed.data(), bits.data(), t->packed.size());
    core::bits16_to_f32(core::DType::f16, bits, t->values);  // the values are what the bytes say
  }
}

std::int64_t Compressed::bytes() {
  std::int64_t total = 0;
  for (const auto* t : stored()) total += t->bytes();
  return total;
}

std::int64_t dense_fp16_bytes(const CacheShape& shape) {
  return std::int64_t{2} * shape.layers * shape.tokens * shape.width() * 2;
}

}  // namespace kvlab::compressors
