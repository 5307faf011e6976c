#include "harness/tokenizer/pre_tokenizer.h"

#include <utility>

namespace kvlab::harness {
namespace {

struct Part {
  ByteSpan span;
  bool delimiter;
};

// `piece` cut into consecutive parts covering it, each marked delimiter or not.
std::vector<Part> cut(const RegexSplitter& regex, std::string_view piece, bool invert) {
  std::vector<Part> parts;
  std::size_t at = 0;
  for (const ByteSpan m : regex.matches(piece)) {
    if (m.begin > at) parts.push_back({{at, m.begin}, invert});
    parts.push_back({m, !invert});
    at = m.end;
  }
  if (at < piece.size()) parts.push_back({{at, piece.size()}, invert});
  return parts;
}

// HF's SplitDelimiterBehavior applied to the parts of `piece`.
void split_piece(const RegexSplitter& regex, SplitBehavior behavior, bool invert, std::string_view piece,
                 std::vector<std::string>& out) {
  const auto text = [&](ByteSpan s) { return std::string(piece.substr(s.begin, s.end - s.begin)); };
  const std::vector<Part> parts = cut(regex, piece, invert);
  switch (behavior) {
    case SplitBehavior::isolated:
      for (const Part& p : parts) out.push_back(text(p.span));
      return;
    case SplitBehavior::removed:
      for (const Part& p : parts) {
        if (!p.delimiter) out.push_back(text(p.span));
      }
      return;
    case SplitBehavior::merged_with_previous: {
      // A delimiter closes the current piece.
      std::size_t begin = 0;
      for (const Part& p : parts) {
        if (p.delimiter) {
          out.push_back(text({begin, p.span.end}));
          begin = p.span.end;
        }
      }
      if (begin < piece.size()) out.push_back(text({begin, piece.size()}));
      return;
    }
    case SplitBehavior::merged_with_next: {
      // A delimiter opens a new piece.
      std::size_t begin = 0;
      for (const Part& p : parts) {
        if (p.delimiter && p.span.begin > begin) {
          out.push_back(text({begin, p.span.begin}));
          begin = p.span.begin;
        }
      }
      if (begin < piece.size()) out.push_back(text({begin, piece.size()}));
      return;
    }
    case SplitBehavior::contiguous: {
      // Adjacent delimiters form one piece.
      for (std::size_t i = 0; i < parts.size();) {
        std::size_t j = i + 1;
        while (parts[i].delimiter && j < parts.size() && parts[j].delimiter) ++j;
        out.push_back(text({parts[i].span.begin, parts[j - 1].span.end}));
        i = j;
      }
      return;
    }
  }
}

}  // namespace

void PreTokenizer::add_split(RegexSplitter regex, SplitBehavior behavior, bool invert) {
  Step step{Kind::split, {}, behavior, invert, false};
  step.regex.push_back(std::move(regex));
  steps_.push_back(std::move(step));
}

void PreTokenizer::add_byte_level(bool add_prefix_space, bool use_regex) {
  Step step{Kind::byte_level, {}, SplitBehavior::isolated, false, add_prefix_space};
  if (use_regex) step.regex.emplace_back(kGpt2Regex, "built-in GPT-2 regex");
  steps_.push_back(std::move(step));
}

std::vector<std::string> PreTokenizer::split(std::string_view text) const {
  if (text.empty()) return {};
  std::vector<std::string> pieces{std::string(text)};
  for (const Step& step : steps_) {
    std::vector<std::string> next;
    next.reserve(pieces.size());
    for (std::string& piece : pieces) {
      if (piece.empty()) continue;
      if (step.kind == Kind::byte_level && step.add_prefix_space && piece.front() != ' ') piece.insert(0, 1, ' ');
      if (step.regex.empty()) {
        next.push_back(std::move(piece));
      } else {
        split_piece(step.regex.front(), step.behavior, step.invert, piece, next);
      }
    }
    pieces = std::move(next);
  }
  std::erase_if(pieces, [](const std::string& p) { return p.empty(); });
  return pieces;
}

bool PreTokenizer::has_byte_level() const {
  for (const Step& s : steps_) {
    if (s.kind == Kind::byte_level) return true;
  }
  return false;
}

std::string PreTokenizer::describe() const {
  std::string out;
  for (const Step& s : steps_) {
    if (s.regex.empty()) continue;
    const std::string& p = s.regex.front().pattern();
    const std::string name = p == kLlama3Regex ? "llama3" : p == kQwen2Regex ? "qwen2" : p == kGpt2Regex ? "gpt2" : "custom regex";
    out += out.empty() ? name : "+" + name;
  }
  return out.empty() ? "none" : out;
}

}  // namespace kvlab::harness
