// A pre-tokenizer regex as HF tokenizer.json stores it, run through PCRE2 (docs/tokenizers.md
// §2): compiled with PCRE2_UTF | PCRE2_UCP so \p{L}, \p{N}, \s and (?i:...) are Unicode-aware,
// and lookahead (?!\S) works — neither std::regex nor RE2 can run these patterns. JIT-compiled
// when the library supports it. Known difference from HF's Oniguruma: PCRE2's \s (UCP) is the
// Unicode Z category plus \t\n\v\f\r, HF's is White_Space (they differ on U+0085, U+180E).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvlab::harness {

struct ByteSpan {
  std::size_t begin = 0;  // byte offsets into the searched text
  std::size_t end = 0;
};

class RegexSplitter {
 public:
  // `source` names the file (and field) in errors; a pattern PCRE2 rejects is a kvlab::Error
  // quoting PCRE2's message and the offset. `literal`: match `pattern` as a plain string (the
  // {"String": ...} form of a Split pattern).
  RegexSplitter(std::string_view pattern, std::string_view source, bool literal = false);
  ~RegexSplitter();
  RegexSplitter(RegexSplitter&&) noexcept;
  RegexSplitter& operator=(RegexSplitter&&) noexcept;

  // Leftmost non-overlapping matches in `text`, which must be valid UTF-8 (not re-checked:
  // PCRE2 would otherwise re-validate the whole subject on every call). Empty matches are skipped.
  std::vector<ByteSpan> matches(std::string_view text) const;

  const std::string& pattern() const { return pattern_; }
  bool jit() const { return jit_; }

 private:
  struct Code;
  std::string pattern_;
  std::unique_ptr<Code> code_;
  bool jit_ = false;
};

}  // namespace kvlab::harness
