// The pre-tokenizer of a byte-level BPE tokenizer.json (docs/tokenizers.md §1–2): Split
// steps (a regex with one of HF's five delimiter behaviours) followed by ByteLevel (optionally
// with the GPT-2 regex and a prefix space). It works on raw UTF-8; the byte → unicode mapping
// itself happens afterwards, per piece (byte_level.h), so ByteLevel must be the last step.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "harness/tokenizer/regex_splitter.h"

namespace kvlab::harness {

// Verbatim from the checkpoints' tokenizer.json (docs/tokenizers.md §2).
inline constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// What ByteLevel{use_regex: true} splits with.
inline constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// HF SplitDelimiterBehavior; the "delimiters" are the regex matches, or the text between them
// when invert is set.
enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

class PreTokenizer {
 public:
  void add_split(RegexSplitter regex, SplitBehavior behavior, bool invert);
  // add_prefix_space: prepend ' ' to every piece that does not start with one (HF applies it
  // per piece at this step). use_regex: split each piece further with kGpt2Regex.
  void add_byte_level(bool add_prefix_space, bool use_regex);

  // The pieces of `text` (valid UTF-8), in order, none empty.
  std::vector<std::string> split(std::string_view text) const;

  bool ends_with_byte_level() const { return !steps_.empty() && steps_.back().kind == Kind::byte_level; }
  bool has_byte_level() const;
  // "llama3", "qwen2", "gpt2" when the regex is one of the known ones, else "custom regex".
  std::string describe() const;

 private:
  enum class Kind { split, byte_level };
  struct Step {
    Kind kind;
    std::vector<RegexSplitter> regex;  // empty or one (a vector keeps Step movable without optional)
    SplitBehavior behavior = SplitBehavior::isolated;
    bool invert = false;
    bool add_prefix_space = false;
  };
  std::vector<Step> steps_;
};

}  // namespace kvlab::harness
