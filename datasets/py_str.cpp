#include "datasets/py_str.h"

#include <cstdio>
#include <cstdlib>

namespace kvlab::datasets::py {

std::vector<CodePoint> decode(std::string_view text) {
  std::vector<CodePoint> out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const auto b0 = static_cast<unsigned char>(text[i]);
    std::size_t n = 0;
    char32_t c = 0;
    if (b0 < 0x80) {
      n = 1;
      c = b0;
    } else if ((b0 & 0xE0) == 0xC0) {
      n = 2;
      c = b0 & 0x1F;
    } else if ((b0 & 0xF0) == 0xE0) {
      n = 3;
      c = b0 & 0x0F;
    } else if ((b0 & 0xF8) == 0xF0) {
      n = 4;
      c = b0 & 0x07;
    }
    bool ok = n > 0 && i + n <= text.size();
    for (std::size_t k = 1; ok && k < n; ++k) {
      const auto b = static_cast<unsigned char>(text[i + k]);
      if ((b & 0xC0) != 0x80) ok = false;
      c = (c << 6) | (b & 0x3F);
    }
    if (!ok) {  // an invalid byte stands for itself (one unit), so offsets stay exact
      out.push_back({0xFFFD, i, 1});
      ++i;
      continue;
    }
    out.push_back({c, i, n});
    i += n;
  }
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out += static_cast<char>(c);
  } else if (c < 0x800) {
    out += static_cast<char>(0xC0 | (c >> 6));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    out += static_cast<char>(0xE0 | (c >> 12));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (c >> 18));
    out += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (c & 0x3F));
  }
}

bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool is_ascii_punctuation(char32_t c) {
  return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) || (c >= 0x7B && c <= 0x7E);
}

bool is_word_char(char32_t c) {
  if (c < 0x80) return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  if (is_space(c)) return false;
  if (c >= 0x80 && c <= 0xBF) {
    // Latin-1 controls and symbols; ª ² ³ µ ¹ º ¼ ½ ¾ are alphanumeric in Unicode.
    return c == 0xAA || c == 0xB2 || c == 0xB3 || c == 0xB5 || c == 0xB9 || c == 0xBA || (c >= 0xBC && c <= 0xBE);
  }
  if (c == 0xD7 || c == 0xF7) return false;
  if (c >= 0x2010 && c <= 0x205E) return false;  // General Punctuation
  if (c >= 0x3000 && c <= 0x303F) return false;  // CJK Symbols and Punctuation
  if ((c >= 0xFF01 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) || (c >= 0xFF3B && c <= 0xFF40) ||
      (c >= 0xFF5B && c <= 0xFF65))
    return false;  // fullwidth ASCII punctuation
  return true;
}

bool is_decimal(char32_t c) {
  return (c >= '0' && c <= '9') || (c >= 0x0660 && c <= 0x0669) || (c >= 0x06F0 && c <= 0x06F9) ||
         (c >= 0x0966 && c <= 0x096F) || (c >= 0xFF10 && c <= 0xFF19);
}

namespace {

// Simple lowercase mapping of the blocks listed in the header (0 = unchanged).
char32_t lower_of(char32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0xC0) return 0;
  if (c <= 0xDE) return c == 0xD7 ? 0 : c + 32;
  if (c >= 0x0100 && c <= 0x017F) {
    if (c == 0x0178) return 0xFF;
    if ((c >= 0x0100 && c <= 0x012F) || (c >= 0x0132 && c <= 0x0137) || (c >= 0x014A && c <= 0x0177))
      return (c % 2 == 0) ? c + 1 : 0;
    if ((c >= 0x0139 && c <= 0x0148) || (c >= 0x0179 && c <= 0x017E)) return (c % 2 == 1) ? c + 1 : 0;
    return 0;
  }
  if (c >= 0x0391 && c <= 0x03A9) return c == 0x03A2 ? 0 : c + 32;
  if (c == 0x0386) return 0x03AC;
  if (c >= 0x0388 && c <= 0x038A) return c + 37;
  if (c == 0x038C) return 0x03CC;
  if (c == 0x038E || c == 0x038F) return c + 63;
  if (c >= 0x0410 && c <= 0x042F) return c + 32;
  if (c >= 0x0400 && c <= 0x040F) return c + 80;
  if (c >= 0xFF21 && c <= 0xFF3A) return c + 32;
  return 0;
}

}  // namespace

std::string lower(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const auto& cp : decode(text)) {
    if (cp.value == 0x0130) {  // İ → i + combining dot above, as Python does
      out += 'i';
      append_utf8(out, 0x0307);
      continue;
    }
    const char32_t l = lower_of(cp.value);
    if (l != 0) {
      append_utf8(out, l);
    } else {
      out.append(text.substr(cp.begin, cp.size));
    }
  }
  return out;
}

std::string strip(std::string_view text) {
  const auto cps = decode(text);
  std::size_t first = 0;
  std::size_t last = cps.size();
  while (first < last && is_space(cps[first].value)) ++first;
  while (last > first && is_space(cps[last - 1].value)) --last;
  if (first == last) return {};
  const std::size_t b = cps[first].begin;
  const std::size_t e = cps[last - 1].begin + cps[last - 1].size;
  return std::string(text.substr(b, e - b));
}

std::string lstrip_chars(std::string_view text, char c) {
  std::size_t i = 0;
  while (i < text.size() && text[i] == c) ++i;
  return std::string(text.substr(i));
}

std::vector<std::string> split(std::string_view text) {
  std::vector<std::string> out;
  std::string current;
  bool in_word = false;
  for (const auto& cp : decode(text)) {
    if (is_space(cp.value)) {
      if (in_word) out.push_back(std::move(current));
      current.clear();
      in_word = false;
    } else {
      current.append(text.substr(cp.begin, cp.size));
      in_word = true;
    }
  }
  if (in_word) out.push_back(std::move(current));
  return out;
}

std::vector<std::string> split_on(std::string_view text, std::string_view sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t at = text.find(sep, start);
    if (at == std::string_view::npos) {
      out.emplace_back(text.substr(start));
      return out;
    }
    out.emplace_back(text.substr(start, at - start));
    start = at + sep.size();
  }
}

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(text);
  std::string out;
  std::size_t start = 0;
  while (true) {
    const std::size_t at = text.find(from, start);
    if (at == std::string_view::npos) break;
    out.append(text.substr(start, at - start));
    out.append(to);
    start = at + from.size();
  }
  out.append(text.substr(start));
  return out;
}

bool contains(std::string_view haystack, std::string_view needle) {
  return haystack.find(needle) != std::string_view::npos;
}

namespace {

template <typename Pred>
std::vector<std::string> runs(std::string_view text, Pred pred) {
  std::vector<std::string> out;
  std::string current;
  for (const auto& cp : decode(text)) {
    if (pred(cp.value)) {
      current.append(text.substr(cp.begin, cp.size));
    } else if (!current.empty()) {
      out.push_back(std::move(current));
      current.clear();
    }
  }
  if (!current.empty()) out.push_back(std::move(current));
  return out;
}

}  // namespace

std::vector<std::string> find_decimal_runs(std::string_view text) { return runs(text, is_decimal); }

// \b\w+\b: a maximal run of word characters always has boundaries at both ends.
std::vector<std::string> find_word_runs(std::string_view text) { return runs(text, is_word_char); }

std::string join(const std::vector<std::string>& parts, std::string_view sep) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out.append(sep);
    out.append(parts[i]);
  }
  return out;
}

double round2(double x) {
  // glibc's printf rounds the exact binary value correctly, ties to even: Python's round(x, 2).
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.2f", x);
  return std::strtod(buffer, nullptr);
}

}  // namespace kvlab::datasets::py
