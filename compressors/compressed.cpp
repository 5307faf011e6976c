#include "compressors/compressed.h"

#include "core/dtype.h"
#include "core/error.h"

namespace kvlab::compressors {

StoredTensor StoredTensor::fp16(std::string name, core::Shape shape, std::vector<float> values, QuantLayout layout,
                                bool token_rows) {
  if (static_cast<std::int64_t>(values.size()) != core::element_count(shape))
    fail("stored tensor {}: {} values for shape of {} elements", name, values.size(), core::element_count(shape));
  StoredTensor t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.bytes = static_cast<std::int64_t>(values.size()) * 2;
  t.values = std::move(values);
  t.layout = layout;
  t.token_rows = token_rows;
  t.format = "fp16";
  return t;
}

StoredTensor StoredTensor::metadata(std::string name, core::Shape shape, std::int64_t bytes, std::string format) {
  StoredTensor t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.bytes = bytes;
  t.format = std::move(format);
  return t;
}

void round_fp16_storage(const std::vector<StoredTensor*>& tensors) {
  std::vector<std::uint16_t> bits;
  for (auto* t : tensors) {
    if (t->format != "fp16") continue;
    bits.resize(t->values.size());
    core::f32_to_16bit(core::DType::f16, t->values, bits);
    core::bits16_to_f32(core::DType::f16, bits, t->values);
  }
}

std::int64_t Compressed::bytes() {
  std::int64_t total = 0;
  for (const auto* t : stored()) total += t->bytes;
  return total;
}

std::int64_t dense_fp16_bytes(const CacheShape& shape) {
  return std::int64_t{2} * shape.layers * shape.tokens * shape.width() * 2;
}

}  // namespace kvlab::compressors
