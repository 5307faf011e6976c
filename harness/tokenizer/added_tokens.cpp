#include "harness/tokenizer/added_tokens.h"

#include <unicode/uchar.h>

#include <algorithm>

#include "harness/tokenizer/utf8.h"

namespace kvlab::harness {
namespace {

bool is_continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// Start of the code point that ends just before byte `at`.
std::size_t previous_start(std::string_view text, std::size_t at) {
  std::size_t i = at - 1;
  while (i > 0 && is_continuation(text[i])) --i;
  return i;
}

char32_t code_point_at(std::string_view text, std::size_t at) { return next_code_point(text, at); }

bool is_word_char(char32_t c) { return c == U'_' || u_isalnum(static_cast<UChar32>(c)); }
bool is_space(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : tokens_(std::move(tokens)) {
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    if (tokens_[i].content.empty()) continue;  // an empty token can never be matched
    by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(i);
  }
  for (auto& bucket : by_first_byte_) {
    std::stable_sort(bucket.begin(), bucket.end(), [&](std::size_t a, std::size_t b) {
      return tokens_[a].content.size() > tokens_[b].content.size();
    });
  }
}

bool AddedTokenMatcher::matches_at(const AddedToken& t, std::string_view text, std::size_t at) const {
  if (text.compare(at, t.content.size(), t.content) != 0) return false;
  if (!t.single_word) return true;
  const std::size_t end = at + t.content.size();
  if (at > 0 && is_word_char(code_point_at(text, previous_start(text, at)))) return false;
  if (end < text.size() && is_word_char(code_point_at(text, end))) return false;
  return true;
}

std::vector<TextSegment> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<TextSegment> out;
  std::size_t plain_begin = 0;  // start of the pending plain-text segment
  std::size_t i = 0;
  while (i < text.size()) {
    const auto& bucket = by_first_byte_[static_cast<unsigned char>(text[i])];
    const AddedToken* hit = nullptr;
    for (const std::size_t k : bucket) {
      if (matches_at(tokens_[k], text, i)) {
        hit = &tokens_[k];
        break;
      }
    }
    if (!hit) {
      ++i;
      continue;
    }
    std::size_t begin = i, end = i + hit->content.size();
    if (hit->lstrip) {
      while (begin > plain_begin) {
        const std::size_t p = previous_start(text, begin);
        if (!is_space(code_point_at(text, p))) break;
        begin = p;
      }
    }
    if (hit->rstrip) {
      while (end < text.size()) {
        std::size_t n = end;
        if (!is_space(next_code_point(text, n))) break;
        end = n;
      }
    }
    if (begin > plain_begin) out.push_back({plain_begin, begin, -1});
    out.push_back({begin, end, hit->id});
    plain_begin = i = end;
  }
  if (plain_begin < text.size()) out.push_back({plain_begin, text.size(), -1});
  return out;
}

}  // namespace kvlab::harness
