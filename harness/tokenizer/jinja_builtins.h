// The Jinja builtins chat templates use: jinja2's filters and tests, the str/dict methods the
// sandbox allows, and the globals (transformers' raise_exception and strftime_now, jinja2's
// namespace, range and dict). Each throws kvlab::Error "jinja template line N: ..." on misuse.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "harness/tokenizer/jinja.h"
#include "harness/tokenizer/jinja_value.h"

namespace kvlab::harness::jinja {

struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // The argument at position `index`, else the keyword `name`, else null.
  const Value* get(std::size_t index, std::string_view name) const;
};

Value apply_filter(std::string_view name, const Value& v, const Args& a, int line, const JinjaLimits& limits);
bool apply_test(std::string_view name, const Value& v, const Args& a, int line);
bool is_method(const Json& self, std::string_view name);
Value call_method(const Json& self, std::string_view name, const Args& a, int line, const JinjaLimits& limits);
bool is_global(std::string_view name);
Value call_global(std::string_view name, const Args& a, int line, const JinjaLimits& limits);

// What a for loop walks: a list's items, a dict's keys, a string's characters; an Undefined
// is empty. Anything else is an error.
Json iteration_items(const Value& v, int line);

}  // namespace kvlab::harness::jinja
