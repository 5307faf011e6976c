// The model that produced a cache, for methods that run it while compressing
// (MethodNeeds::live_model: kvzip). The compressors library has no libtorch: the harness provides
// the implementation (harness/live_model_probe.h) over its own model and cache, as it provides the
// device side of linalg.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace kvlab::compressors {

class LiveModel {
 public:
  virtual ~LiveModel() = default;
  // The ids of the T cached tokens, in cache order.
  virtual std::vector<std::int32_t> cached_tokens() const = 0;
  // The ids of `text` as a continuation of a prompt: no BOS, no added prefix space.
  virtual std::vector<std::int32_t> encode(std::string_view text) const = 0;
  // The chat template's tokens that close a user turn and open the assistant's answer (what
  // follows the user content when the prompt is rendered with the generation prompt); "\n" for
  // a model without a template, as kvpress's KVzipPress uses.
  virtual std::vector<std::int32_t> answer_start() const = 0;

  // One layer of a probe: host f32 copies, valid during the call. Queries [n, H_q, D] and keys
  // [n, H_kv, D] are pre-RoPE (as the cache source gives keys); positions [n] are the probe
  // tokens' RoPE positions, right after the cache's.
  struct ProbeLayer {
    int layer;
    const core::FloatTensor& queries;
    const core::FloatTensor& keys;
    std::span<const std::int64_t> positions;
  };
  using ProbeObserver = std::function<void(const ProbeLayer&)>;
  // Runs `tokens` after the whole cache, attending to every cached token as a forward call
  // would, and calls `observe` once per layer in order; the cache is left as it was (the probe's
  // tokens are not kept).
  virtual void probe(std::span<const std::int32_t> tokens, const ProbeObserver& observe) const = 0;
};

}  // namespace kvlab::compressors
