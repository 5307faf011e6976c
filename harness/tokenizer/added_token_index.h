// A BPE tokenizer's added tokens looked up by id and by content (BpeTokenizer, SpmJsonTokenizer),
// and the vocabulary size they and the rest of the tokenizer span.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "harness/tokenizer/added_tokens.h"
#include "harness/tokenizer/bpe_model.h"

namespace kvlab::harness {

class AddedTokenIndex {
 public:
  AddedTokenIndex() = default;
  // `tokens` (ids ≥ 0) beside the ids up to `max_id` the rest of the tokenizer uses (its model's
  // vocabulary, its post-processor's tokens).
  AddedTokenIndex(std::vector<AddedToken> tokens, std::int32_t max_id);

  // 1 + the largest id of either.
  int vocab_size() const { return static_cast<int>(index_.size()); }
  // The added token with this id; null when `id` is no added token (or outside the vocabulary).
  const AddedToken* by_id(std::int32_t id) const;
  std::optional<std::int32_t> by_content(std::string_view content) const;

 private:
  std::vector<AddedToken> tokens_;
  Vocab ids_;                         // content → id
  std::vector<std::int32_t> index_;   // id → index into tokens_, -1 if not added
};

}  // namespace kvlab::harness
