#include "datasets/haystack.h"

#include <array>
#include <cctype>

#include "core/error.h"
#include "core/read_file.h"
#include "datasets/py_str.h"

namespace kvlab::datasets {

namespace {

bool is_closer(char c) { return c == '"' || c == '\'' || c == ')' || c == ']' || c == '}'; }

bool ends_sentence(std::string_view word) {
  // Strip closing quotes/brackets, including the UTF-8 curly ones (’ ” = E2 80 99 / E2 80 9D).
  while (!word.empty()) {
    if (is_closer(word.back())) {
      word.remove_suffix(1);
    } else if (word.size() >= 3 && word.substr(word.size() - 3) == "\xE2\x80\x99") {
      word.remove_suffix(3);
    } else if (word.size() >= 3 && word.substr(word.size() - 3) == "\xE2\x80\x9D") {
      word.remove_suffix(3);
    } else {
      break;
    }
  }
  if (word.empty()) return false;
  const char last = word.back();
  if (last == '!' || last == '?') return true;
  if (last != '.') return false;
  // Abbreviations and initials do not end sentences (opening quotes/brackets ignored).
  while (!word.empty() && (word.front() == '"' || word.front() == '(' || word.front() == '[' || word.front() == '\'')) {
    word.remove_prefix(1);
  }
  static constexpr std::array<std::string_view, 14> kAbbreviations = {
      "Mr.", "Mrs.", "Ms.", "Dr.", "St.", "vs.", "etc.", "e.g.", "i.e.", "Jr.", "Sr.", "Prof.", "Inc.", "No."};
  for (const auto a : kAbbreviations) {
    if (word == a) return false;
  }
  if (word.size() == 2 && std::isupper(static_cast<unsigned char>(word[0]))) return false;  // "J."
  return true;
}

}  // namespace

EssayHaystack EssayHaystack::load(const std::filesystem::path& path) {
  return from_text(core::read_file(path, "essay haystack"), path.string());
}

EssayHaystack EssayHaystack::from_text(std::string_view text, std::string source) {
  EssayHaystack h;
  h.words_ = py::split(text);  // RULER: re.sub(r'\s+', " ", essay).split(" ")
  if (h.words_.size() < 10) fail("essay haystack {}: only {} words; need at least 10", source, h.words_.size());
  h.ends_sentence_.reserve(h.words_.size());
  for (const auto& w : h.words_) h.ends_sentence_.push_back(ends_sentence(w));
  h.source_ = std::move(source);
  return h;
}

std::vector<std::string> EssayHaystack::sentences(std::int64_t n) const {
  std::vector<std::string> out;
  std::string current;
  const auto size = static_cast<std::int64_t>(words_.size());
  for (std::int64_t i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i % size);
    if (!current.empty()) current += ' ';
    current += words_[k];
    if (ends_sentence_[k]) {
      out.push_back(std::move(current));
      current.clear();
    }
  }
  if (!current.empty()) out.push_back(std::move(current));
  return out;
}

}  // namespace kvlab::datasets
