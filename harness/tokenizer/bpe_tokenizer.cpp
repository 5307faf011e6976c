#include "harness/tokenizer/bpe_tokenizer.h"

#include <fmt/format.h>

#include "core/error.h"
#include "harness/tokenizer/byte_level.h"
#include "harness/tokenizer/nfc.h"
#include "harness/tokenizer/utf8.h"

namespace kvlab::harness {

BpeTokenizer::BpeTokenizer(BpeTokenizerParts parts) : p_(std::move(parts)), matcher_(p_.added_tokens) {
  std::int32_t max_id = p_.model->max_id();
  for (const AddedToken& t : matcher_.tokens()) max_id = std::max(max_id, t.id);
  vocab_size_ = max_id + 1;
  added_index_.assign(static_cast<std::size_t>(vocab_size_), -1);
  for (std::size_t i = 0; i < matcher_.tokens().size(); ++i) {
    const AddedToken& t = matcher_.tokens()[i];
    added_index_[t.id] = static_cast<std::int32_t>(i);
    added_ids_.emplace(t.content, t.id);
  }
}

const AddedToken* BpeTokenizer::added(std::int32_t id) const {
  if (id < 0 || id >= vocab_size_ || added_index_[id] < 0) return nullptr;
  return &matcher_.tokens()[added_index_[id]];
}

std::vector<std::string> BpeTokenizer::pre_tokenize(std::string_view text) const {
  return p_.pre_tokenizer.split(p_.nfc ? to_nfc(text) : std::string(text));
}

std::vector<std::int32_t> BpeTokenizer::encode(std::string_view text, bool add_special) const {
  if (const auto bad = first_invalid_utf8(text)) fail("tokenizer input is not valid UTF-8 (byte {})", *bad);
  std::vector<std::int32_t> ids;
  ids.reserve(text.size() / 3 + p_.prefix.size() + p_.suffix.size() + 1);
  if (add_special) ids.insert(ids.end(), p_.prefix.begin(), p_.prefix.end());
  for (const TextSegment& seg : matcher_.split(text)) {
    if (seg.token >= 0) {
      ids.push_back(seg.token);
      continue;
    }
    for (const std::string& piece : pre_tokenize(text.substr(seg.begin, seg.end - seg.begin))) {
      p_.model->encode_word(byte_level_encode(piece), ids);
    }
  }
  if (add_special) ids.insert(ids.end(), p_.suffix.begin(), p_.suffix.end());
  return ids;
}

std::string BpeTokenizer::decode(std::span<const std::int32_t> ids, bool skip_special) const {
  // Bytes of all tokens first, one lossy UTF-8 repair at the end: a character split across
  // tokens must be reassembled before it is judged (HF's ByteLevel decoder does the same).
  std::string bytes;
  for (const std::int32_t id : ids) {
    if (id < 0 || id >= vocab_size_) fail("decode: token id {} is outside the vocabulary [0, {})", id, vocab_size_);
    if (const AddedToken* t = added(id)) {
      if (!(skip_special && t->special)) bytes += t->content;
      continue;
    }
    const std::string* tok = p_.model->token(id);
    if (!tok) continue;  // an id no token uses decodes to nothing
    if (auto raw = byte_level_decode(*tok)) {
      bytes += *raw;
    } else {
      bytes += *tok;  // not in the byte-level alphabet: HF keeps the token's own UTF-8
    }
  }
  return utf8_lossy(bytes);
}

std::optional<std::int32_t> BpeTokenizer::token_id(std::string_view token) const {
  if (const auto it = added_ids_.find(token); it != added_ids_.end()) return it->second;
  return p_.model->id(token);
}

std::string BpeTokenizer::token(std::int32_t id) const {
  if (id < 0 || id >= vocab_size_) fail("token id {} is outside the vocabulary [0, {})", id, vocab_size_);
  if (const AddedToken* t = added(id)) return t->content;
  const std::string* tok = p_.model->token(id);
  return tok ? *tok : std::string();
}

bool BpeTokenizer::is_special(std::int32_t id) const {
  const AddedToken* t = added(id);
  return t && t->special;
}

std::optional<std::int32_t> BpeTokenizer::bos_id() const {
  if (p_.prefix.empty()) return std::nullopt;
  return p_.prefix.front();
}

std::string BpeTokenizer::describe() const {
  std::string out = fmt::format("{} byte-level BPE, {} tokens, pre-tokenizer {}", p_.source, vocab_size_,
                                p_.pre_tokenizer.describe());
  if (p_.nfc) out += ", NFC";
  if (p_.model->ignore_merges()) out += ", ignore_merges";
  if (const auto bos = bos_id()) out += fmt::format(", BOS {}", token(*bos));
  return out;
}

}  // namespace kvlab::harness
