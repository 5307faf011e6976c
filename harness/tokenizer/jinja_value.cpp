#include "harness/tokenizer/jinja_value.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include <fmt/format.h>

#include "core/error.h"

namespace kvlab::harness::jinja {

bool is_number(const Json& j) { return j.is_number() || j.is_boolean(); }

double as_double(const Json& j) {
  if (j.is_boolean()) return j.get<bool>() ? 1.0 : 0.0;
  if (j.is_number_unsigned()) return static_cast<double>(j.get<std::uint64_t>());
  if (j.is_number_integer()) return static_cast<double>(j.get<std::int64_t>());
  return j.get<double>();
}

static bool is_int_like(const Json& j) { return j.is_boolean() || j.is_number_integer(); }
static std::int64_t as_int(const Json& j) {
  if (j.is_boolean()) return j.get<bool>() ? 1 : 0;
  return j.get<std::int64_t>();
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Value::Kind::undefined: return false;
    case Value::Kind::json: break;
    default: return true;
  }
  if (v.lazy) return true;
  const Json& j = v.json;
  if (j.is_null()) return false;
  if (j.is_boolean()) return j.get<bool>();
  if (j.is_number_integer()) return j.get<std::int64_t>() != 0;
  if (j.is_number_float()) return j.get<double>() != 0.0;
  if (j.is_string()) return !j.get_ref<const std::string&>().empty();
  return !j.empty();
}

std::string type_name(const Value& v) {
  switch (v.kind) {
    case Value::Kind::undefined: return "undefined";
    case Value::Kind::ns: return "namespace";
    case Value::Kind::method: return "method";
    case Value::Kind::function: return "function";
    case Value::Kind::macro: return "macro";
    case Value::Kind::json: break;
  }
  const Json& j = v.json;
  if (j.is_null()) return "NoneType";
  if (j.is_boolean()) return "bool";
  if (j.is_number_integer()) return "int";
  if (j.is_number_float()) return "float";
  if (j.is_string()) return "str";
  if (j.is_array()) return "list";
  return "dict";
}

std::string py_float(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string s(buf, r.ptr);
  bool neg = s[0] == '-';
  if (neg) s.erase(0, 1);
  std::size_t epos = s.find('e');
  int exp = std::stoi(s.substr(epos + 1));
  std::string digits;
  for (std::size_t k = 0; k < epos; ++k) {
    if (s[k] != '.') digits += s[k];
  }
  std::string out;
  if (exp >= -4 && exp < 16) {
    if (exp >= 0) {
      std::size_t intlen = static_cast<std::size_t>(exp) + 1;
      if (digits.size() <= intlen) {
        out = digits + std::string(intlen - digits.size(), '0') + ".0";
      } else {
        out = digits.substr(0, intlen) + "." + digits.substr(intlen);
      }
    } else {
      out = "0." + std::string(static_cast<std::size_t>(-exp - 1), '0') + digits;
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    out += fmt::format("e{}{:02d}", exp < 0 ? '-' : '+', std::abs(exp));
  }
  return neg ? "-" + out : out;
}

static std::string repr_string(const std::string& s) {
  char quote = '\'';
  if (s.find('\'') != std::string::npos && s.find('"') == std::string::npos) quote = '"';
  std::string out(1, quote);
  for (unsigned char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == static_cast<unsigned char>(quote)) {
      out += '\\';
      out += quote;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  out += quote;
  return out;
}

static std::string number_str(const Json& j) {
  if (j.is_boolean()) return j.get<bool>() ? "True" : "False";
  if (j.is_number_unsigned()) return std::to_string(j.get<std::uint64_t>());
  if (j.is_number_integer()) return std::to_string(j.get<std::int64_t>());
  return py_float(j.get<double>());
}

std::string py_repr(const Json& j) {
  if (j.is_discarded()) return "Undefined";
  if (j.is_null()) return "None";
  if (j.is_string()) return repr_string(j.get_ref<const std::string&>());
  if (is_number(j)) return number_str(j);
  std::string out;
  if (j.is_array()) {
    out = "[";
    for (std::size_t k = 0; k < j.size(); ++k) out += (k ? ", " : "") + py_repr(j[k]);
    return out + "]";
  }
  out = "{";
  bool first = true;
  for (auto it = j.begin(); it != j.end(); ++it) {
    out += (first ? "" : ", ") + repr_string(it.key()) + ": " + py_repr(it.value());
    first = false;
  }
  return out + "}";
}

std::string py_str(const Json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_discarded()) return "";  // str(Undefined)
  return py_repr(j);
}

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Value::Kind::undefined: return "";
    case Value::Kind::json: return v.lazy ? "<generator object>" : py_str(v.json);
    case Value::Kind::ns: {
      std::string out = "<Namespace {";
      for (const auto& [k, x] : *v.ns) {
        out += (out.size() > 12 ? ", " : "") + py_repr(Json(k)) + ": " + (x.is_json() ? py_repr(x.json) : to_str(x));
      }
      return out + "}>";
    }
    default: return "<" + type_name(v) + " " + v.name + ">";
  }
}

bool py_equal(const Json& a, const Json& b) {
  if (is_number(a) && is_number(b)) {
    if (is_int_like(a) && is_int_like(b)) {
      if (a.is_number_unsigned() || b.is_number_unsigned()) return as_double(a) == as_double(b) && a == b;
      return as_int(a) == as_int(b);
    }
    return as_double(a) == as_double(b);
  }
  if (a.type() != b.type()) return false;
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (std::size_t k = 0; k < a.size(); ++k) {
      if (!py_equal(a[k], b[k])) return false;
    }
    return true;
  }
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (auto it = a.begin(); it != a.end(); ++it) {
      auto f = b.find(it.key());
      if (f == b.end() || !py_equal(it.value(), *f)) return false;
    }
    return true;
  }
  return a == b;
}

bool values_equal(const Value& a, const Value& b) {
  if (a.is_json() && b.is_json()) return py_equal(a.json, b.json);
  if (a.is_undefined() || b.is_undefined()) return a.is_undefined() && b.is_undefined();
  if (a.kind == Value::Kind::ns && b.kind == Value::Kind::ns) return a.ns == b.ns;
  return false;
}

bool py_less(const Json& a, const Json& b) {
  if (is_number(a) && is_number(b)) {
    if (is_int_like(a) && is_int_like(b) && !a.is_number_unsigned() && !b.is_number_unsigned()) return as_int(a) < as_int(b);
    return as_double(a) < as_double(b);
  }
  if (a.is_string() && b.is_string()) return a.get_ref<const std::string&>() < b.get_ref<const std::string&>();
  if (a.is_array() && b.is_array()) {
    for (std::size_t k = 0; k < std::min(a.size(), b.size()); ++k) {
      if (py_less(a[k], b[k])) return true;
      if (py_less(b[k], a[k])) return false;
    }
    return a.size() < b.size();
  }
  throw std::invalid_argument("'<' not supported between these types");
}

static void dump_string(std::string& out, const std::string& s, bool ensure_ascii) {
  out += '"';
  for (std::size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (c < 0x20 || (ensure_ascii && c == 0x7f)) {
      out += fmt::format("\\u{:04x}", c);
    } else if (c >= 0x80 && ensure_ascii) {
      int len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
      std::uint32_t cp = c & (len == 4 ? 0x07 : len == 3 ? 0x0F : 0x1F);
      for (int k = 1; k < len && i + 1 < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[++i]) & 0x3F);
      if (cp >= 0x10000) {
        cp -= 0x10000;
        out += fmt::format("\\u{:04x}\\u{:04x}", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
      } else {
        out += fmt::format("\\u{:04x}", cp);
      }
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
}

static void dump(std::string& out, const Json& j, const std::optional<std::string>& indent, bool sort_keys,
                 bool ensure_ascii, int level) {
  if (j.is_discarded()) throw Error("Object of type Undefined is not JSON serializable");
  if (j.is_null()) {
    out += "null";
  } else if (j.is_boolean()) {
    out += j.get<bool>() ? "true" : "false";
  } else if (j.is_number_float()) {
    double d = j.get<double>();
    out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : py_float(d);
  } else if (j.is_number()) {
    out += number_str(j);
  } else if (j.is_string()) {
    dump_string(out, j.get_ref<const std::string&>(), ensure_ascii);
  } else {
    bool arr = j.is_array();
    if (j.empty()) {
      out += arr ? "[]" : "{}";
      return;
    }
    out += arr ? '[' : '{';
    std::string nl;
    if (indent) {
      nl = "\n";
      for (int k = 0; k <= level; ++k) nl += *indent;
    }
    const char* sep = indent ? "," : ", ";
    if (arr) {
      for (std::size_t k = 0; k < j.size(); ++k) {
        if (k) out += sep;
        out += nl;
        dump(out, j[k], indent, sort_keys, ensure_ascii, level + 1);
      }
    } else {
      std::vector<std::pair<const std::string*, const Json*>> items;
      for (auto it = j.begin(); it != j.end(); ++it) items.emplace_back(&it.key(), &it.value());
      if (sort_keys) {
        std::stable_sort(items.begin(), items.end(), [](const auto& x, const auto& y) { return *x.first < *y.first; });
      }
      for (std::size_t k = 0; k < items.size(); ++k) {
        if (k) out += sep;
        out += nl;
        dump_string(out, *items[k].first, ensure_ascii);
        out += ": ";
        dump(out, *items[k].second, indent, sort_keys, ensure_ascii, level + 1);
      }
    }
    if (indent) {
      out += "\n";
      for (int k = 0; k < level; ++k) out += *indent;
    }
    out += arr ? ']' : '}';
  }
}

std::string dumps(const Json& j, const std::optional<std::string>& indent, bool sort_keys, bool ensure_ascii) {
  std::string out;
  dump(out, j, indent, sort_keys, ensure_ascii, 0);
  return out;
}

std::vector<std::string_view> code_points(std::string_view s) {
  std::vector<std::string_view> out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    std::size_t len = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    len = std::min(len, s.size() - i);
    out.push_back(s.substr(i, len));
    i += len;
  }
  return out;
}

bool is_py_space(std::string_view cp) {
  if (cp.size() == 1) {
    unsigned char c = static_cast<unsigned char>(cp[0]);
    return c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
  }
  static constexpr std::string_view spaces[] = {
      "\u0085", "\u00a0", "\u1680", "\u2000", "\u2001", "\u2002", "\u2003", "\u2004", "\u2005", "\u2006",
      "\u2007", "\u2008", "\u2009", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000"};
  return std::find(std::begin(spaces), std::end(spaces), cp) != std::end(spaces);
}

std::string py_strip(std::string_view s, bool left, bool right, const std::optional<std::string>& chars) {
  auto cps = code_points(s);
  std::vector<std::string_view> set;
  if (chars) {
    for (auto cp : code_points(*chars)) set.push_back(cp);
  }
  auto strip_it = [&](std::string_view cp) {
    return chars ? std::find(set.begin(), set.end(), cp) != set.end() : is_py_space(cp);
  };
  std::size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip_it(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip_it(cps[e - 1])) --e;
  }
  if (b == e) return {};
  std::size_t from = static_cast<std::size_t>(cps[b].data() - s.data());
  std::size_t to = static_cast<std::size_t>(cps[e - 1].data() - s.data()) + cps[e - 1].size();
  return std::string(s.substr(from, to - from));
}

}  // namespace kvlab::harness::jinja
