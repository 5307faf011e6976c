// The compressors' LiveModel (compressors/live_model.h) over the harness's model and a cache it
// filled: what kvzip runs the model through in `eval`.
#pragma once

#include <cstdint>
#include <vector>

#include "compressors/live_model.h"
#include "harness/model/llama_model.h"
#include "harness/tokenizer/chat_template.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {

class ModelProbe final : public compressors::LiveModel {
 public:
  // `cache` holds exactly `cached_tokens` (checked on each probe); probes append to it and
  // truncate it back, so it must outlive this object and not be used by anything else meanwhile.
  ModelProbe(const LlamaModel& model, KvCache& cache, std::vector<std::int32_t> cached_tokens,
             const Tokenizer& tokenizer, const ChatFormat& chat);

  std::vector<std::int32_t> cached_tokens() const override { return tokens_; }
  std::vector<std::int32_t> encode(std::string_view text) const override;
  std::vector<std::int32_t> answer_start() const override;
  void probe(std::span<const std::int32_t> tokens, const ProbeObserver& observe) const override;

 private:
  const LlamaModel& model_;
  KvCache& cache_;
  std::vector<std::int32_t> tokens_;
  const Tokenizer& tokenizer_;
  ChatFormat chat_;
};

}  // namespace kvlab::harness
