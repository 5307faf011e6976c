#include "harness/tokenizer/token_offsets.h"

#include "core/error.h"

namespace kvlab::harness {

std::string metaspace_piece_bytes(std::string_view piece, std::string_view marker, bool is_byte_piece) {
  // sentencepiece and HF's ByteFallback both spell a byte piece "<0xNN>" with two hex digits.
  if (is_byte_piece && piece.size() == 6 && piece.starts_with("<0x") && piece.ends_with(">")) {
    return std::string(1, static_cast<char>(std::stoi(std::string(piece.substr(3, 2)), nullptr, 16)));
  }
  std::string out;
  for (std::size_t i = 0; i < piece.size();) {
    if (!marker.empty() && piece.substr(i).starts_with(marker)) {
      out += ' ';
      i += marker.size();
    } else {
      out += piece[i++];
    }
  }
  return out;
}

std::vector<TokenSpan> token_offsets(const Tokenizer& tokenizer, std::span<const std::int32_t> ids,
                                     std::string_view text) {
  std::vector<TokenSpan> spans;
  spans.reserve(ids.size());
  std::size_t at = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::string bytes = tokenizer.token_bytes(ids[i]);
    const std::string_view rest = text.substr(at);
    std::size_t length = 0;
    if (rest.starts_with(bytes)) {
      length = bytes.size();
    } else if (bytes.starts_with(' ') && rest.starts_with(std::string_view(bytes).substr(1))) {
      length = bytes.size() - 1;  // the dummy-prefix space the tokenizer added
    } else if (!tokenizer.is_special(ids[i])) {
      fail("token offsets: token {} (id {}, {:?}) does not match the text at byte {} ({:?}); a normalizer changed "
           "the text (e.g. NFC) or the ids are not this text's",
           i, ids[i], bytes, at, rest.substr(0, 16));
    }
    spans.push_back({at, at + length});
    at += length;
  }
  if (at != text.size())
    fail("token offsets: the tokens cover {} of the text's {} bytes; the ids are not this text's", at, text.size());
  return spans;
}

std::size_t token_at_byte(std::span<const TokenSpan> spans, std::size_t at) {
  for (std::size_t i = 0; i < spans.size(); ++i)
    if (spans[i].end > at) return i;
  return spans.size();
}

}  // namespace kvlab::harness
