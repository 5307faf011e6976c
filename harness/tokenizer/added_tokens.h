// Added / special tokens (docs/tokenizers.md §6): split out of the raw text before any
// normalization or pre-tokenization, matched literally, leftmost first and at one position the
// longest (HF's aho-corasick LeftmostLongest). Behaviour of the flags:
//  - lstrip / rstrip: the match also swallows the whitespace on its left / right (that
//    whitespace is then not encoded), as HF does.
//  - single_word: matches only when neither neighbouring character is alphanumeric or '_'.
//  - normalized: ignored — every token is matched on the raw text. For the target models this
//    is exact (their added tokens are normalized: false, or ASCII that NFC leaves unchanged).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvlab::harness {

struct AddedToken {
  std::int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;  // skipped by decode(skip_special = true)
};

struct TextSegment {
  std::size_t begin = 0;  // byte range in the text (for a token: including stripped whitespace)
  std::size_t end = 0;
  std::int32_t token = -1;  // the added token's id, or -1 for plain text to encode
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(std::vector<AddedToken> tokens);

  // `text` cut into plain-text and token segments covering it in order; no empty plain segment.
  std::vector<TextSegment> split(std::string_view text) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  bool matches_at(const AddedToken& t, std::string_view text, std::size_t at) const;
  std::vector<AddedToken> tokens_;
  std::array<std::vector<std::size_t>, 256> by_first_byte_;  // indices into tokens_, longest first
};

}  // namespace kvlab::harness
