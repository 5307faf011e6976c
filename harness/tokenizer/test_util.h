// Helpers shared by the tokenizer tests and bench/bench_tokenizer.cpp: a scratch folder, seeded
// random UTF-8 text and the training corpus of the tiny tokenizers.
#pragma once

#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "core/atomic_file.h"
#include "harness/tokenizer/utf8.h"

namespace kvlab::harness::testing {

// A fresh folder under the system temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kvlab-tokenizer-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  void write(const std::string& name, std::string_view content) const { core::write_file_atomic(path_ / name, content); }

 private:
  std::filesystem::path path_;
};

// Random valid UTF-8 of `n_chars` code points drawn from pools that stress a tokenizer: ASCII
// words, digits, punctuation and apostrophes, runs of spaces, newlines and tabs, Latin-1 and
// Cyrillic letters, combining marks, CJK, emoji (with ZWJ and skin-tone modifiers). Never
// U+2581 '▁' (sentencepiece's space stand-in) nor control characters other than \n \t \r.
inline std::string random_utf8(std::mt19937_64& rng, int n_chars) {
  static const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {U'a', U'z'}, {U'A', U'Z'}, {U'0', U'9'}, {U' ', U' '}, {U'!', U'/'}, {U'\n', U'\n'}, {U'\t', U'\t'},
      {U'\r', U'\r'}, {U'\'', U'\''}, {0xC0, 0xFF}, {0x0410, 0x044F}, {0x0300, 0x036F}, {0x4E00, 0x9FFF},
      {0x3040, 0x309F}, {0x1F600, 0x1F64F}, {0x1F3FB, 0x1F3FF}, {0x200D, 0x200D}, {0x00A0, 0x00A0},
      {0x0600, 0x06FF}, {0x2000, 0x200A}};
  std::uniform_int_distribution<std::size_t> pick(0, ranges.size() - 1);
  std::string out;
  for (int i = 0; i < n_chars; ++i) {
    const auto [lo, hi] = ranges[pick(rng)];
    std::uniform_int_distribution<std::uint32_t> cp(lo, hi);
    append_utf8(out, cp(rng));
  }
  return out;
}

// The project's own text: the tokenizer headers (sorted, so the order is fixed) plus a few
// lines of other scripts so the trained merges cover non-ASCII text as well.
inline std::string project_corpus() {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(KVLAB_SOURCE_DIR) / "harness/tokenizer")) {
    if (e.path().extension() == ".h") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  std::ostringstream out;
  for (const auto& f : files) out << std::ifstream(f).rdbuf() << '\n';
  out << "Der Schlüssel-Wert-Cache wächst mit der Kontextlänge. Café, naïve, résumé.\n"
         "Кэш ключей и значений растёт вместе с длиной контекста.\n"
         "键值缓存随上下文长度增长。注意力机制。\n"
         "Numbers: 3.14159, 2025, 1234567890; emoji 🙂 🚀.\n";
  return out.str();
}

// The first `bytes` bytes of the project corpus repeated, cut back to an ASCII byte so that no
// character is split (the result is valid UTF-8, as the trainer requires).
inline std::string project_corpus_prefix(std::size_t bytes) {
  std::string corpus = project_corpus();
  while (corpus.size() < bytes) corpus += corpus;
  corpus.resize(bytes);
  while (static_cast<unsigned char>(corpus.back()) >= 0x80) corpus.pop_back();
  return corpus;
}

}  // namespace kvlab::harness::testing
