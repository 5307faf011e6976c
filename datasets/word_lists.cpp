#include "datasets/word_lists.h"

#include <algorithm>
#include <fstream>
#include <unordered_set>

#include "core/error.h"
#include "datasets/rng.h"

namespace kvlab::datasets {

namespace {

bool plain_word(const std::string& w) {
  if (w.size() < 3 || w.size() > 12) return false;
  return std::all_of(w.begin(), w.end(), [](char c) { return c >= 'a' && c <= 'z'; });
}

std::vector<std::string> filtered(std::vector<std::string> words) {
  std::erase_if(words, [](const std::string& w) { return !plain_word(w); });
  std::sort(words.begin(), words.end());
  words.erase(std::unique(words.begin(), words.end()), words.end());
  return words;
}

}  // namespace

WordList WordList::load(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) {
    fail("word list {}: cannot open it{} (give another list with one word per line)", path.string(),
         path == std::filesystem::path(kDefaultWordFile) ? "; install Debian's wamerican (apt-get install wamerican)"
                                                         : "");
  }
  std::vector<std::string> words;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    words.push_back(line);
  }
  if (in.bad()) fail("word list {}: read error", path.string());
  WordList list;
  list.words_ = filtered(std::move(words));
  list.source_ = path.string();
  if (list.words_.size() < 100) {
    fail("word list {}: only {} usable words (3–12 lowercase ASCII letters, one per line); need at least 100",
         path.string(), list.words_.size());
  }
  return list;
}

WordList WordList::from_words(std::vector<std::string> words, std::string source) {
  WordList list;
  list.words_ = filtered(std::move(words));
  list.source_ = std::move(source);
  return list;
}

std::vector<std::string> pseudo_words(std::size_t count, std::uint64_t seed) {
  static constexpr std::string_view kConsonants = "bdfgklmnprstvz";
  static constexpr std::string_view kVowels = "aeiou";
  detail::Rng rng({seed, detail::name_hash("pseudo_words")});
  std::vector<std::string> out;
  std::unordered_set<std::string> seen;
  while (out.size() < count) {
    const std::int64_t syllables = rng.between(2, 4);
    std::string w;
    for (std::int64_t s = 0; s < syllables; ++s) {
      w += kConsonants[static_cast<std::size_t>(rng.below(static_cast<std::int64_t>(kConsonants.size())))];
      w += kVowels[static_cast<std::size_t>(rng.below(static_cast<std::int64_t>(kVowels.size())))];
    }
    if (seen.insert(w).second) out.push_back(std::move(w));
  }
  return out;
}

}  // namespace kvlab::datasets
