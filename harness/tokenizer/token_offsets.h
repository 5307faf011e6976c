// Where each token of an encoded text sits in that text, in bytes: what `kvlab tokenize` prints
// and how `--tokenize whole` finds the context/question boundary (docs/tokenizers.md §12).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {

struct TokenSpan {
  std::size_t begin = 0, end = 0;  // bytes [begin, end) of the text; empty for a token the text lacks (BOS)
};

inline constexpr std::string_view kMetaspaceMarker = "\xE2\x96\x81";  // U+2581 '▁', sentencepiece's space

// A sentencepiece-style piece as the bytes it stands for: "<0xNN>" as that byte when the piece is
// a byte-fallback piece (is_byte_piece), else the piece with every `marker` as ' '.
std::string metaspace_piece_bytes(std::string_view piece, std::string_view marker, bool is_byte_piece);

// Aligns `ids` with `text`: each token's Tokenizer::token_bytes must appear where the previous one
// ended. Two allowances: a leading ' ' the text lacks (sentencepiece's dummy prefix, Metaspace's
// prepended "▁") is left out of the span, and a special token whose content is not there (a BOS
// the post-processor added) gets an empty span. Anything else — a normalizer that changed the
// text (NFC of non-NFC input), ids that are not this text's — is a kvlab::Error naming the token's
// index and id and the byte offset. Unused bytes after the last token are an error as well.
std::vector<TokenSpan> token_offsets(const Tokenizer& tokenizer, std::span<const std::int32_t> ids,
                                     std::string_view text);

// The index of the token holding byte `at` (HF's char_to_token, in bytes): the first token whose
// span ends after `at`. A token that straddles `at` is that token; spans.size() when no token does.
std::size_t token_at_byte(std::span<const TokenSpan> spans, std::size_t at);

}  // namespace kvlab::harness
