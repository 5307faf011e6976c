// The k_proj / v_proj weights (and biases) that weight-based methods (commonkv, palu) read from a
// Hugging Face checkpoint, checked against the shape the dumped cache implies. One definition so
// every such method names a missing or misshapen tensor the same way.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/safetensors.h"

namespace kvlab::compressors {

// The tensor `name` at f32, which must have shape `expected` (`meaning` says what it is, e.g.
// "[H_kv·D, d_model] of the dumped cache"); `method` prefixes the error.
inline FloatTensor load_weight(const core::Checkpoint& ckpt, std::string_view method, const std::string& name,
                               const core::Shape& expected, const std::string& meaning) {
  if (!ckpt.has(name)) fail("{}: {} has no tensor '{}'", method, ckpt.path().string(), name);
  if (ckpt.shape(name) != expected)
    fail("{}: {}: tensor '{}' has shape [{}], expected [{}] ({})", method, ckpt.path().string(), name,
         fmt::join(ckpt.shape(name), ", "), fmt::join(expected, ", "), meaning);
  return ckpt.tensor(name);
}

// "model.layers.{layer}.self_attn.{proj}.{leaf}" (proj: k_proj or v_proj; leaf: weight or bias).
inline std::string projection_name(int layer, std::string_view proj, std::string_view leaf) {
  return fmt::format("model.layers.{}.self_attn.{}.{}", layer, proj, leaf);
}

// d_model as the checkpoint's `proj` weight of `layer` states it (its columns); 0 when the tensor is
// missing or not a matrix (load_weight then fails naming it).
inline std::int64_t projection_d_model(const core::Checkpoint& ckpt, int layer, std::string_view proj) {
  const auto name = projection_name(layer, proj, "weight");
  return ckpt.has(name) && ckpt.shape(name).size() == 2 ? ckpt.shape(name)[1] : 0;
}

// The bias of `proj` in `layer` [width] when the checkpoint has one (Qwen2), else std::nullopt.
inline std::optional<FloatTensor> projection_bias(const core::Checkpoint& ckpt, std::string_view method, int layer,
                                                  std::string_view proj, std::int64_t width) {
  const auto name = projection_name(layer, proj, "bias");
  if (!ckpt.has(name)) return std::nullopt;
  return load_weight(ckpt, method, name, {width}, "[H_kv·D]");
}

}  // namespace kvlab::compressors
