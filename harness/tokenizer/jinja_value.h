// The Jinja renderer's runtime value: a JSON value (ordered_json keeps jinja's insertion-order
// dict iteration), or one of the things JSON cannot hold: jinja2's Undefined, a namespace(), a
// bound method ("abc".upper), a global function, a macro. Python's str(), repr(), ==, < and
// truthiness over them, and transformers' tojson (json.dumps).
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvlab::harness::jinja {

using Json = nlohmann::ordered_json;
struct Node;

struct Value {
  enum class Kind { undefined, json, ns, method, function, macro };
  Kind kind = Kind::undefined;
  Json json;                 // json: the value; method: the receiver
  std::shared_ptr<std::map<std::string, Value>> ns;  // ns: its attributes, shared by every copy
  std::string name;          // undefined: the missing name; method, function: its name
  const Node* macro = nullptr;
  // json: a list that jinja2 would hold as a generator (map, select, unique, reverse, items):
  // always truthy and printed as "<generator object>"; iterating, list and join see the list.
  bool lazy = false;

  static Value undefined(std::string missing = {}) {
    Value v;
    v.name = std::move(missing);
    return v;
  }
  // A discarded JSON value stands for an Undefined kept in a list or dict (map(attribute=) of a
  // missing attribute, [undefined_name]); it comes back out as Undefined.
  static Value of(Json j) {
    Value v;
    if (j.is_discarded()) return v;
    v.kind = Kind::json;
    v.json = std::move(j);
    return v;
  }
  static Json undefined_in_container() { return Json(Json::value_t::discarded); }
  bool is_undefined() const { return kind == Kind::undefined; }
  bool is_json() const { return kind == Kind::json; }
};

bool truthy(const Value& v);
std::string type_name(const Value& v);  // for error messages: "str", "int", "list", ...

std::string py_float(double d);       // Python repr(float)
std::string py_str(const Json& j);    // Python str(): strings as-is, None, True, [..] with repr items
std::string py_repr(const Json& j);   // Python repr()
std::string to_str(const Value& v);   // str(value) as jinja2 prints it; Undefined → ""

bool py_equal(const Json& a, const Json& b);
bool values_equal(const Value& a, const Value& b);
// Python's a < b for numbers, strings and lists; other pairs throw std::invalid_argument.
bool py_less(const Json& a, const Json& b);

bool is_number(const Json& j);  // int, float or bool (a Python int)
double as_double(const Json& j);

// json.dumps(j, ensure_ascii, indent, separators = None, sort_keys) as transformers' tojson.
std::string dumps(const Json& j, const std::optional<std::string>& indent, bool sort_keys, bool ensure_ascii);

// UTF-8 code points of s as byte ranges (Python indexes and measures strings by code point).
std::vector<std::string_view> code_points(std::string_view s);
bool is_py_space(std::string_view cp);  // str.isspace() for one code point
std::string py_strip(std::string_view s, bool left, bool right, const std::optional<std::string>& chars);

}  // namespace kvlab::harness::jinja
