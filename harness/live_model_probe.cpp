#include "harness/live_model_probe.h"

#include "core/error.h"
#include "harness/tokenizer/jinja_chat.h"
#include "harness/kv_cache_source.h"

namespace kvlab::harness {

ModelProbe::ModelProbe(const LlamaModel& model, KvCache& cache, std::vector<std::int32_t> cached_tokens,
                       const Tokenizer& tokenizer, const ChatFormat& chat)
    : model_(model), cache_(cache), tokens_(std::move(cached_tokens)), tokenizer_(tokenizer), chat_(chat) {}

std::vector<std::int32_t> ModelProbe::encode(std::string_view text) const { return tokenizer_.encode_continuation(text); }

std::vector<std::int32_t> ModelProbe::answer_start() const {
  // What the template puts after the user content when the question is empty: the end of the
  // user turn and the generation prompt (kvpress renders a dummy user turn and splits it so).
  const auto tail = render_chat(chat_, "context", "").question_part;
  return encode(tail.empty() ? std::string_view("\n") : std::string_view(tail));
}

void ModelProbe::probe(std::span<const std::int32_t> tokens, const ProbeObserver& observe) const {
  const std::int64_t kept = cache_.length();
  if (kept != static_cast<std::int64_t>(tokens_.size()))
    fail("probe: the cache holds {} tokens, the probe's owner gave {}", kept, tokens_.size());
  const auto ids = at::tensor(std::vector<std::int64_t>(tokens.begin(), tokens.end()), at::kLong);
  try {
    model_.forward(ids, &cache_, [&](const LayerTap& tap) {
      const auto queries = to_float_tensor(tap.query), keys = to_float_tensor(tap.key);
      const auto positions = tap.positions.to(at::kCPU).contiguous();
      observe({tap.layer, queries, keys,
               std::span<const std::int64_t>(positions.data_ptr<std::int64_t>(), static_cast<std::size_t>(positions.numel()))});
    });
  } catch (...) {
    cache_.truncate(kept);
    throw;
  }
  cache_.truncate(kept);
}

}  // namespace kvlab::harness
