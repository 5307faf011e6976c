#include "harness/tokenizer/bpe_tokenizer.h"

#include <fmt/format.h>

#include "core/error.h"
#include "harness/tokenizer/byte_level.h"
#include "harness/tokenizer/nfc.h"
#include "harness/tokenizer/utf8.h"

namespace kvlab::harness {

BpeTokenizer::BpeTokenizer(BpeTokenizerParts parts)
    : p_(std::move(parts)), matcher_(p_.added_tokens), added_(p_.added_tokens, p_.model->max_id()) {}

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
    if (id < 0 || id >= vocab_size()) fail("decode: token id {} is outside the vocabulary [0, {})", id, vocab_size());
    if (const AddedToken* t = added_.by_id(id)) {
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
  if (const auto id = added_.by_content(token)) return id;
  return p_.model->id(token);
}

std::string BpeTokenizer::token(std::int32_t id) const {
  if (id < 0 || id >= vocab_size()) fail("token id {} is outside the vocabulary [0, {})", id, vocab_size());
  if (const AddedToken* t = added_.by_id(id)) return t->content;
  const std::string* tok = p_.model->token(id);
  return tok ? *tok : std::string();
}

std::string BpeTokenizer::token_bytes(std::int32_t id) const {
  const std::string tok = token(id);  // checks the range; an added token's content
  if (added_.by_id(id)) return tok;
  auto raw = byte_level_decode(tok);
  return raw ? *raw : tok;  // as decode: a token outside the byte-level alphabet is its own UTF-8
}

bool BpeTokenizer::is_special(std::int32_t id) const {
  const AddedToken* t = added_.by_id(id);
  return t && t->special;
}

std::optional<std::int32_t> BpeTokenizer::bos_id() const {
  if (p_.prefix.empty()) return std::nullopt;
  return p_.prefix.front();
}

std::string BpeTokenizer::describe() const {
  std::string out = fmt::format("{} byte-level BPE, {} tokens, pre-tokenizer {}", p_.source, vocab_size(),
                                p_.pre_tokenizer.describe());
  if (p_.nfc) out += ", NFC";
  if (p_.model->ignore_merges()) out += ", ignore_merges";
  if (const auto bos = bos_id()) out += fmt::format(", BOS {}", token(*bos));
  return out;
}

}  // namespace kvlab::harness
