// UTF-8 helpers for the tokenizers: validation (every tokenizer input must be valid UTF-8,
// as a Python str always is) and the lossy repair the byte-level decoders apply.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace kvlab::harness {

// Byte offset of the first invalid UTF-8 sequence in `s` (overlong, surrogate, > U+10FFFF and
// truncated forms are invalid), or nullopt when the whole string is valid.
std::optional<std::size_t> first_invalid_utf8(std::string_view s);

// `s` with every maximal invalid subsequence replaced by U+FFFD (the WHATWG / Rust
// String::from_utf8_lossy rule, which the HF ByteLevel decoder uses).
std::string utf8_lossy(std::string_view s);

// Appends code point `cp` (≤ U+10FFFF) as UTF-8.
void append_utf8(std::string& out, char32_t cp);

// Decodes the code point starting at s[i] of a string known to be valid UTF-8 and advances i.
char32_t next_code_point(std::string_view s, std::size_t& i);

}  // namespace kvlab::harness
