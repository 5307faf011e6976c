// Python `str` semantics that the reference scorers (RULER, LongBench, xKV) rely on, on UTF-8 text.
//
// The scorers are Python: `s.lower()`, `s.split()`, `s.strip()`, `\b`, `\w`, `\d` and `in` decide
// scores, so a C++ scorer that used ASCII rules would disagree on ordinary text (a non-breaking
// space, "É"). What is covered, and where it stops:
//   - whitespace: exactly Python's str.isspace() set (ASCII 09–0D, 1C–1F, 20, and U+0085, U+00A0,
//     U+1680, U+2000–U+200A, U+2028, U+2029, U+202F, U+205F, U+3000);
//   - lower(): ASCII, Latin-1, Latin Extended-A, Greek, Cyrillic and fullwidth Latin letters, with
//     Python's "İ" → "i̇"; letters of other scripts are left as they are (Python would map a few more);
//   - word characters (\w): ASCII letters, digits and '_', and every non-ASCII code point that is not
//     whitespace or in the common punctuation/symbol blocks (Latin-1 symbols, General Punctuation,
//     CJK Symbols and Punctuation, fullwidth ASCII punctuation);
//   - decimal digits (\d): ASCII, Arabic-Indic (U+0660, U+06F0), Devanagari (U+0966), fullwidth (U+FF10).
// Invalid UTF-8 bytes are treated as single code points U+FFFD-like units (kept byte for byte).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace kvlab::datasets::py {

// One decoded code point and the byte range it came from.
struct CodePoint {
  char32_t value = 0;
  std::size_t begin = 0;  // byte offset in the text
  std::size_t size = 0;   // bytes (1–4)
};
std::vector<CodePoint> decode(std::string_view text);
void append_utf8(std::string& out, char32_t c);

bool is_space(char32_t c);       // str.isspace()
bool is_word_char(char32_t c);   // re's \w (see the file comment for the non-ASCII rule)
bool is_decimal(char32_t c);     // re's \d (the blocks above)
bool is_ascii_punctuation(char32_t c);  // string.punctuation: !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~

std::string lower(std::string_view text);                      // str.lower()
std::string strip(std::string_view text);                      // str.strip()
std::string lstrip_chars(std::string_view text, char c);       // str.lstrip(c) for one ASCII char
std::vector<std::string> split(std::string_view text);         // str.split() (runs of whitespace)
std::vector<std::string> split_on(std::string_view text, std::string_view sep);  // str.split(sep)
std::string replace_all(std::string_view text, std::string_view from, std::string_view to);  // str.replace
bool contains(std::string_view haystack, std::string_view needle);  // `needle in haystack`
std::vector<std::string> find_decimal_runs(std::string_view text);  // re.findall(r"\d+", text)
std::vector<std::string> find_word_runs(std::string_view text);     // re.findall(r"\b\w+\b", text)
std::string join(const std::vector<std::string>& parts, std::string_view sep);

// Python's round(x, 2): the decimal string nearest to x's exact binary value, ties to even.
double round2(double x);

}  // namespace kvlab::datasets::py
