// Jinja parser: tokens → syntax tree, with jinja2's operator precedence (parser.py): filters
// and tests bind tighter than every binary operator, "~" tighter than + and -.
#pragma once

#include <string_view>

#include "harness/tokenizer/jinja_ast.h"

namespace kvlab::harness::jinja {

// Throws kvlab::Error "jinja template line N: ..." for syntax errors and for the tags outside
// the supported subset (extends, include, import, call, do, raw, ...).
Body parse(std::string_view source, int max_nesting);

}  // namespace kvlab::harness::jinja
