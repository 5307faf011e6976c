#include "harness/tokenizer/added_token_index.h"

#include <algorithm>

namespace kvlab::harness {

AddedTokenIndex::AddedTokenIndex(std::vector<AddedToken> tokens, std::int32_t max_id) : tokens_(std::move(tokens)) {
  for (const AddedToken& t : tokens_) max_id = std::max(max_id, t.id);
  index_.assign(static_cast<std::size_t>(max_id) + 1, -1);
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    index_[static_cast<std::size_t>(tokens_[i].id)] = static_cast<std::int32_t>(i);
    ids_.emplace(tokens_[i].content, tokens_[i].id);
  }
}

const AddedToken* AddedTokenIndex::by_id(std::int32_t id) const {
  if (id < 0 || id >= vocab_size() || index_[static_cast<std::size_t>(id)] < 0) return nullptr;
  return &tokens_[static_cast<std::size_t>(index_[static_cast<std::size_t>(id)])];
}

std::optional<std::int32_t> AddedTokenIndex::by_content(std::string_view content) const {
  const auto it = ids_.find(content);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

}  // namespace kvlab::harness
