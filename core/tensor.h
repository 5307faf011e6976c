// A minimal owning host tensor of f32, row-major, with an explicit shape. kvlab keeps
// large tensors in these (or in caller-owned buffers) and passes std::span views around.
#pragma once

#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

namespace kvlab::core {

using Shape = std::vector<std::int64_t>;

inline std::int64_t element_count(const Shape& shape) {
  return std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<>());
}

struct FloatTensor {
  Shape shape;              // row-major; e.g. [T, H, D] for a layer's keys
  std::vector<float> data;  // element_count(shape) values

  FloatTensor() = default;
  explicit FloatTensor(Shape s) : shape(std::move(s)), data(static_cast<std::size_t>(element_count(shape))) {}

  std::int64_t dim(std::size_t i) const { return shape.at(i); }
  std::span<float> span() { return data; }
  std::span<const float> span() const { return data; }
};

}  // namespace kvlab::core
