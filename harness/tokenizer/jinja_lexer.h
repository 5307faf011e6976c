// Jinja lexer: template text → tokens, with jinja2's whitespace rules as transformers sets them
// (trim_blocks, lstrip_blocks, "-"/"+" markers, one trailing newline dropped, newlines
// normalized to "\n").
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kvlab::harness::jinja {

enum class Tok {
  text,         // literal template text (value)
  var_begin,    // {{
  var_end,      // }}
  block_begin,  // {%
  block_end,    // %}
  name,         // identifier or keyword (value)
  string,       // string literal, escapes decoded (value)
  integer,      // value: the digits
  floating,     // value: the literal
  op,           // operator or punctuation (value)
  eof,
};

struct Token {
  Tok type;
  std::string value;
  int line;
};

// Throws kvlab::Error "jinja template line N: ..." on unterminated tags, strings or comments.
std::vector<Token> lex(std::string_view source);

}  // namespace kvlab::harness::jinja
