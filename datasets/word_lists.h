// Word lists for the RULER-style generators: niah "words" keys/values ("{word}-{word}") and the
// cwe word pool. RULER draws from the wonderwords package's noun/adjective/verb lists; kvlab reads
// Debian's `wamerican` dictionary instead (issue 6), filtered to plain lowercase words, so keys are
// "{word}-{word}" pairs of dictionary words rather than adjective-noun pairs.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace kvlab::datasets {

// Debian's wamerican (`apt-get install wamerican`).
inline constexpr const char* kDefaultWordFile = "/usr/share/dict/american-english";

class WordList {
 public:
  // One word per line; keeps lines of 3–12 ASCII lowercase letters (drops proper nouns, possessives,
  // accented words), sorted and deduplicated so that the list, not the file order, defines the data.
  // kvlab::Error naming the file when it is missing, unreadable or keeps fewer than 100 words.
  static WordList load(const std::filesystem::path& path = kDefaultWordFile);
  // The given words (same filter, sorted, deduplicated); `source` names them in errors and provenance.
  static WordList from_words(std::vector<std::string> words, std::string source);

  const std::vector<std::string>& words() const { return words_; }
  std::size_t size() const { return words_.size(); }
  const std::string& source() const { return source_; }

 private:
  std::vector<std::string> words_;
  std::string source_;
};

// `count` distinct pronounceable lowercase pseudo-words (consonant-vowel syllables, 4–8 letters),
// a pure function of (count, seed). Not English: for tests and CI where no dictionary is installed.
std::vector<std::string> pseudo_words(std::size_t count, std::uint64_t seed);

}  // namespace kvlab::datasets
