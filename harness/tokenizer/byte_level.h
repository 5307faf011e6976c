// GPT-2's bytes_to_unicode (docs/tokenizers.md §3): every byte gets a printable code point so
// that vocab strings and merges never contain raw spaces or control bytes. Bytes '!'–'~',
// '¡'–'¬', '®'–'ÿ' map to themselves; the other 68, in increasing order, to U+0100 + n
// (space → U+0120 'Ġ', '\n' → U+010A 'Ċ').
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace kvlab::harness {

// The mapped code point of byte `b`.
char32_t byte_to_unicode(unsigned char b);
// The byte whose mapped code point is `cp`, or nullopt when `cp` is not in the map's image.
std::optional<unsigned char> unicode_to_byte(char32_t cp);

// `bytes` in the mapped alphabet (each byte becomes one code point, as UTF-8).
std::string byte_level_encode(std::string_view bytes);
// The inverse for a string in the mapped alphabet; nullopt when some code point is not in the
// map's image (the HF ByteLevel decoder then keeps that token's UTF-8 bytes as they are).
std::optional<std::string> byte_level_decode(std::string_view mapped);

}  // namespace kvlab::harness
