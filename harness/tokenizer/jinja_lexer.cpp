// The lexer mirrors jinja2 3.1's (lexer.py): tags are found left to right, "{%-"/"{{-"/"{#-"
// strip all whitespace before them, "-%}"/"-}}"/"-#}" all after; lstrip_blocks removes the
// spaces and tabs before a block or comment tag that starts its line ("{%+" keeps them);
// trim_blocks removes the one newline after a block or comment tag ("+%}" keeps it).
#include "harness/tokenizer/jinja_lexer.h"

#include <cstdint>

#include "core/error.h"
#include "harness/tokenizer/utf8.h"

namespace kvlab::harness::jinja {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || is_digit(c); }

std::string normalize_newlines(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\r') {
      out += '\n';
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else {
      out += s[i];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();  // keep_trailing_newline = False
  return out;
}

int hex_value(char c) {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Python's unicode-escape decoding of a literal's body, as jinja2 applies it.
std::string unescape(std::string_view s, int line) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    char c = s[++i];
    switch (c) {
      case '\n': break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'a': out += '\a'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'v': out += '\v'; break;
      case 'x':
      case 'u':
      case 'U': {
        std::size_t n = c == 'x' ? 2 : c == 'u' ? 4 : 8;
        std::uint32_t cp = 0;
        for (std::size_t k = 0; k < n; ++k) {
          int h = i + 1 + k < s.size() ? hex_value(s[i + 1 + k]) : -1;
          if (h < 0) fail("jinja template line {}: truncated \\{} escape in a string literal", line, c);
          cp = cp * 16 + static_cast<std::uint32_t>(h);
        }
        if (cp > 0x10FFFF) fail("jinja template line {}: escape beyond U+10FFFF in a string literal", line);
        i += n;
        append_utf8(out, cp);
        break;
      }
      default:
        if (c >= '0' && c <= '7') {
          std::uint32_t cp = 0;
          std::size_t k = 0;
          for (; k < 3 && i + k < s.size() && s[i + k] >= '0' && s[i + k] <= '7'; ++k) cp = cp * 8 + (s[i + k] - '0');
          i += k - 1;
          append_utf8(out, cp);
        } else {
          out += '\\';
          out += c;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string_view source) : src_(normalize_newlines(source)) {}

  std::vector<Token> run() {
    while (pos_ < src_.size()) {
      std::size_t tag = find_tag(pos_);
      std::string text = src_.substr(pos_, tag - pos_);
      bool line_starting = pos_ == 0 || src_[pos_ - 1] == '\n';
      int text_line = line_;
      if (tag == src_.size()) {
        emit_text(text, text_line);
        advance_to(tag);
        break;
      }
      char kind = src_[tag + 1];
      char sign = tag + 2 < src_.size() ? src_[tag + 2] : '\0';
      if (sign == '-') {
        std::size_t end = text.size();
        while (end > 0 && is_space(text[end - 1])) --end;
        text.resize(end);
      } else if (sign != '+' && kind != '{') {
        std::size_t l_pos = text.rfind('\n');
        l_pos = l_pos == std::string::npos ? 0 : l_pos + 1;
        if (l_pos > 0 || line_starting) {
          bool blank = l_pos < text.size();
          for (std::size_t k = l_pos; k < text.size(); ++k) blank = blank && is_space(text[k]);
          if (blank) text.resize(l_pos);
        }
      }
      emit_text(text, text_line);
      advance_to(tag + 2 + ((sign == '-' || sign == '+') ? 1 : 0));
      if (kind == '#') {
        comment();
      } else {
        tag_body(kind == '%');
      }
    }
    tokens_.push_back({Tok::eof, "", line_});
    return std::move(tokens_);
  }

 private:
  std::size_t find_tag(std::size_t from) const {
    for (std::size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return src_.size();
  }

  void advance_to(std::size_t p) {
    for (; pos_ < p; ++pos_) line_ += src_[pos_] == '\n';
  }

  void emit_text(const std::string& text, int line) {
    if (!text.empty()) tokens_.push_back({Tok::text, text, line});
  }

  // After a block or comment end: "-" strips all following whitespace, "+" none, else one "\n".
  void after_end(char sign) {
    if (sign == '-') {
      std::size_t p = pos_;
      while (p < src_.size() && is_space(src_[p])) ++p;
      advance_to(p);
    } else if (sign != '+' && pos_ < src_.size() && src_[pos_] == '\n') {
      advance_to(pos_ + 1);
    }
  }

  void comment() {
    int line = line_;
    std::size_t body = pos_;
    std::size_t end = src_.find("#}", body);
    if (end == std::string::npos) fail("jinja template line {}: unterminated comment", line);
    char sign = end > body ? src_[end - 1] : '\0';
    advance_to(end + 2);
    after_end(sign == '-' || sign == '+' ? sign : '\0');
  }

  void tag_body(bool block) {
    int open_line = line_;
    tokens_.push_back({block ? Tok::block_begin : Tok::var_begin, "", line_});
    const char close = block ? '%' : '}';
    int depth = 0;  // open brackets
    while (true) {
      std::size_t p = pos_;
      while (p < src_.size() && is_space(src_[p])) ++p;
      advance_to(p);
      if (pos_ >= src_.size()) fail("jinja template line {}: unterminated {} tag", open_line, block ? "{%" : "{{");
      char c = src_[pos_];
      auto at = [&](std::string_view s) { return src_.compare(pos_, s.size(), s) == 0; };
      // End of tag first, as jinja2's rules try it before the operators, but only outside
      // brackets ("{{ {'a': {}} }}" is one dict).
      if (depth == 0 && (c == '-' || (block && c == '+')) && pos_ + 2 < src_.size() && src_[pos_ + 1] == close &&
          src_[pos_ + 2] == '}') {
        tokens_.push_back({block ? Tok::block_end : Tok::var_end, "", line_});
        advance_to(pos_ + 3);
        if (block || c == '-') after_end(c);
        return;
      }
      if (depth == 0 && c == close && pos_ + 1 < src_.size() && src_[pos_ + 1] == '}') {
        tokens_.push_back({block ? Tok::block_end : Tok::var_end, "", line_});
        advance_to(pos_ + 2);
        if (block) after_end('\0');
        return;
      }
      if (is_name_start(c)) {
        std::size_t e = pos_;
        while (e < src_.size() && is_name_char(src_[e])) ++e;
        tokens_.push_back({Tok::name, src_.substr(pos_, e - pos_), line_});
        advance_to(e);
      } else if (is_digit(c)) {
        number();
      } else if (c == '\'' || c == '"') {
        string_literal(c);
      } else {
        static constexpr std::string_view two[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (auto t : two) {
          if (at(t)) op = t;
        }
        if (op.empty()) {
          static constexpr std::string_view one = "+-*/%~<>=()[]{},.:|";
          if (one.find(c) == std::string_view::npos) fail("jinja template line {}: unexpected character '{}'", line_, c);
          op = std::string(1, c);
        }
        if (op == "(" || op == "[" || op == "{") {
          ++depth;
        } else if ((op == ")" || op == "]" || op == "}") && depth > 0) {
          --depth;
        }
        tokens_.push_back({Tok::op, op, line_});
        advance_to(pos_ + op.size());
      }
    }
  }

  void number() {
    std::size_t e = pos_;
    auto digits = [&] {
      while (e < src_.size() && (is_digit(src_[e]) || (src_[e] == '_' && e + 1 < src_.size() && is_digit(src_[e + 1])))) ++e;
    };
    digits();
    bool after_dot = pos_ > 0 && src_[pos_ - 1] == '.';
    bool is_float = false;
    if (!after_dot) {
      if (e + 1 < src_.size() && src_[e] == '.' && is_digit(src_[e + 1])) {
        ++e;
        digits();
        is_float = true;
      }
      if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
        std::size_t x = e + 1;
        if (x < src_.size() && (src_[x] == '+' || src_[x] == '-')) ++x;
        if (x < src_.size() && is_digit(src_[x])) {
          e = x;
          digits();
          is_float = true;
        }
      }
    }
    std::string text;
    for (std::size_t k = pos_; k < e; ++k) {
      if (src_[k] != '_') text += src_[k];
    }
    tokens_.push_back({is_float ? Tok::floating : Tok::integer, text, line_});
    advance_to(e);
  }

  void string_literal(char quote) {
    int line = line_;
    std::size_t e = pos_ + 1;
    while (e < src_.size() && src_[e] != quote) e += src_[e] == '\\' ? 2 : 1;
    if (e >= src_.size()) fail("jinja template line {}: unterminated string literal", line);
    tokens_.push_back({Tok::string, unescape(std::string_view(src_).substr(pos_ + 1, e - pos_ - 1), line), line});
    advance_to(e + 1);
  }

  std::string src_;
  std::size_t pos_ = 0;
  int line_ = 1;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> lex(std::string_view source) { return Lexer(source).run(); }

}  // namespace kvlab::harness::jinja
