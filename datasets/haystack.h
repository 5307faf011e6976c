// Haystacks for the RULER-style generators.
//
// noise: RULER's fixed unit sentence, repeated; lines joined with "\n".
// essay: any text file the user gives (RULER uses Paul Graham's essays, which are copyrighted and
//   not shipped): whitespace collapsed, split into words; the first n words (the list cycled when n
//   exceeds it) are split into sentences, and needles go between sentences.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace kvlab::datasets {

// RULER's noise unit (niah_single_1, vt).
inline constexpr std::string_view kNoiseUnit =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

class EssayHaystack {
 public:
  // The file's text as UTF-8. kvlab::Error naming the file when it cannot be read or holds fewer
  // than 10 words.
  static EssayHaystack load(const std::filesystem::path& path);
  static EssayHaystack from_text(std::string_view text, std::string source);

  std::size_t word_count() const { return words_.size(); }
  const std::string& source() const { return source_; }

  // The first n words (cycled), split into sentences, joined with " " within a sentence.
  //
  // Sentence rule (RULER uses NLTK's punkt model, which kvlab does not ship): a sentence ends after
  // a word whose last character, ignoring closing quotes and brackets, is '.', '!' or '?', unless
  // the word is a single-letter initial ("J.") or a common abbreviation (Mr. Mrs. Ms. Dr. St. vs.
  // etc. e.g. i.e. Jr. Sr. Prof. Inc. No.); the last sentence ends at word n.
  std::vector<std::string> sentences(std::int64_t n) const;

 private:
  std::vector<std::string> words_;
  std::vector<bool> ends_sentence_;  // [words] whether a sentence may end after this word
  std::string source_;
};

}  // namespace kvlab::datasets
