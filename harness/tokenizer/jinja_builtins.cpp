// jinja2 3.1's filters.py and tests.py, for the subset docs/tokenizers.md §10 lists, plus the
// methods of str and dict that ImmutableSandboxedEnvironment lets a template call (list and
// dict methods that modify are refused, as the sandbox refuses them).
#include "harness/tokenizer/jinja_builtins.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>

#include <unicode/locid.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

#include "core/error.h"

namespace kvlab::harness::jinja {
namespace {

constexpr std::int64_t kMaxRange = 100000;  // jinja2.sandbox.MAX_RANGE

[[noreturn]] void error(int line, const std::string& what) { fail("jinja template line {}: {}", line, what); }

// Python's str.upper()/lower() use Unicode's full case mappings, as ICU's root locale does.
std::string icu_case(const std::string& s, bool upper) {
  bool ascii = std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (ascii) {
    std::string out = s;
    for (char& c : out) {
      if (upper && c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
      if (!upper && c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    }
    return out;
  }
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(icu::StringPiece(s.data(), static_cast<std::int32_t>(s.size())));
  if (upper) {
    u.toUpper(icu::Locale::getRoot());
  } else {
    u.toLower(icu::Locale::getRoot());
  }
  std::string out;
  u.toUTF8String(out);
  return out;
}
std::string ascii_upper(const std::string& s) { return icu_case(s, true); }
std::string ascii_lower(const std::string& s) { return icu_case(s, false); }
bool is_cased_letter(std::string_view cp) {
  UChar32 c = 0;
  std::int32_t i = 0;
  U8_NEXT(cp.data(), i, static_cast<std::int32_t>(cp.size()), c);
  return c >= 0 && (u_isUUppercase(c) || u_isULowercase(c) || u_istitle(c));
}
std::string title_case(std::string_view cp) {
  UChar32 c = 0;
  std::int32_t i = 0;
  U8_NEXT(cp.data(), i, static_cast<std::int32_t>(cp.size()), c);
  if (c < 0) return std::string(cp);
  icu::UnicodeString u(u_totitle(c));
  std::string out;
  u.toUTF8String(out);
  return out;
}
// str.capitalize(): the first character in title case, the rest lower case.
std::string capitalize(const std::string& s) {
  auto cps = code_points(s);
  if (cps.empty()) return s;
  return title_case(cps[0]) + ascii_lower(s.substr(cps[0].size()));
}
// str.title(): title case after every character that is not a cased letter.
std::string py_title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (auto cp : code_points(s)) {
    bool cased = is_cased_letter(cp);
    out += cased ? (prev_cased ? ascii_lower(std::string(cp)) : title_case(cp)) : std::string(cp);
    prev_cased = cased;
  }
  return out;
}

const Json& need_json(const Value& v, int line, std::string_view what) {
  if (!v.is_json()) error(line, fmt::format("{} expects a value, got {}", what, type_name(v)));
  return v.json;
}
std::string need_string(const Value* v, int line, std::string_view what) {
  if (!v || !v->is_json() || !v->json.is_string()) error(line, fmt::format("{} expects a string argument", what));
  return v->json.get<std::string>();
}
std::int64_t need_int(const Value* v, int line, std::string_view what) {
  if (!v || !v->is_json() || !(v->json.is_number_integer() || v->json.is_boolean())) {
    error(line, fmt::format("{} expects an integer argument", what));
  }
  return v->json.is_boolean() ? v->json.get<bool>() : v->json.get<std::int64_t>();
}
std::optional<std::string> opt_string(const Value* v, int line, std::string_view what) {
  if (!v || (v->is_json() && v->json.is_null())) return std::nullopt;
  return need_string(v, line, what);
}

std::string py_replace(const std::string& s, const std::string& old, const std::string& repl, std::int64_t count,
                       std::size_t limit, int line) {
  if (count < 0) count = INT64_MAX;
  std::string out;
  if (old.empty()) {
    auto cps = code_points(s);
    std::int64_t n = 0;
    for (auto cp : cps) {
      if (n++ < count) out += repl;
      out += cp;
      if (out.size() > limit) error(line, "replace: string too long");
    }
    if (n < count) out += repl;
    return out;
  }
  std::size_t pos = 0;
  std::int64_t n = 0;
  while (n < count) {
    std::size_t f = s.find(old, pos);
    if (f == std::string::npos) break;
    out.append(s, pos, f - pos);
    out += repl;
    if (out.size() > limit) error(line, "replace: string too long");
    pos = f + old.size();
    ++n;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

Json py_split(const std::string& s, const std::optional<std::string>& sep, std::int64_t maxsplit, int line) {
  Json out = Json::array();
  if (maxsplit < 0) maxsplit = INT64_MAX;
  if (!sep) {
    auto cps = code_points(s);
    std::size_t i = 0;
    std::int64_t n = 0;
    while (i < cps.size()) {
      while (i < cps.size() && is_py_space(cps[i])) ++i;
      if (i == cps.size()) break;
      if (n == maxsplit) {
        std::size_t from = static_cast<std::size_t>(cps[i].data() - s.data());
        std::string rest = s.substr(from);
        out.push_back(rest);
        break;
      }
      std::size_t j = i;
      while (j < cps.size() && !is_py_space(cps[j])) ++j;
      std::size_t from = static_cast<std::size_t>(cps[i].data() - s.data());
      std::size_t to = static_cast<std::size_t>(cps[j - 1].data() - s.data()) + cps[j - 1].size();
      out.push_back(s.substr(from, to - from));
      ++n;
      i = j;
    }
    return out;
  }
  if (sep->empty()) error(line, "split(): empty separator");
  std::size_t pos = 0;
  std::int64_t n = 0;
  while (n < maxsplit) {
    std::size_t f = s.find(*sep, pos);
    if (f == std::string::npos) break;
    out.push_back(s.substr(pos, f - pos));
    pos = f + sep->size();
    ++n;
  }
  out.push_back(s.substr(pos));
  return out;
}

Value attribute_of(const Json& item, const std::string& attr) {
  // jinja2's make_attrgetter: dotted paths, integer parts index lists.
  const Json* cur = &item;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = attr.find('.', start);
    std::string part = attr.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (cur->is_object()) {
      auto it = cur->find(part);
      if (it == cur->end()) return Value::undefined(part);
      cur = &*it;
    } else if (cur->is_array() && !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) {
      std::size_t k = 0;
      auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), k);
      if (ec != std::errc() || end != part.data() + part.size() || k >= cur->size()) return Value::undefined(part);
      cur = &(*cur)[k];
    } else {
      return Value::undefined(part);
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return Value::of(*cur);
}

std::string indent_text(const std::string& s0, const std::string& ind, bool first, bool blank) {
  std::string s = s0 + "\n";
  std::vector<std::string> lines;
  std::size_t pos = 0;
  while (pos < s.size()) {
    std::size_t e = s.find_first_of("\r\n", pos);
    lines.push_back(s.substr(pos, e - pos));
    pos = e + ((s[e] == '\r' && e + 1 < s.size() && s[e + 1] == '\n') ? 2 : 1);
  }
  std::string rv;
  for (std::size_t k = 0; k < lines.size(); ++k) {
    if (k > 0) {
      rv += '\n';
      if (blank || !lines[k].empty()) rv += ind;
    }
    rv += lines[k];
  }
  if (first) rv.insert(0, ind);
  return rv;
}

Json sort_items(Json items, bool reverse, bool case_sensitive, const std::optional<std::string>& attribute, int line) {
  auto key = [&](const Json& x) -> Json {
    Json k = attribute ? (attribute_of(x, *attribute).is_json() ? attribute_of(x, *attribute).json : Json()) : x;
    if (!case_sensitive && k.is_string()) k = ascii_lower(k.get<std::string>());
    return k;
  };
  std::vector<std::pair<Json, Json>> keyed;
  for (auto& x : items) keyed.emplace_back(key(x), x);
  try {
    std::stable_sort(keyed.begin(), keyed.end(), [&](const auto& a, const auto& b) {
      return reverse ? py_less(b.first, a.first) : py_less(a.first, b.first);
    });
  } catch (const std::invalid_argument&) {
    error(line, "sort: values that cannot be compared");
  }
  Json out = Json::array();
  for (auto& [k, x] : keyed) out.push_back(std::move(x));
  return out;
}

double round_half_even_digits(double v, std::int64_t precision, const std::string& method) {
  double m = std::pow(10.0, static_cast<double>(precision));
  if (method == "ceil") return std::ceil(v * m) / m;
  if (method == "floor") return std::floor(v * m) / m;
  // jinja2's "common": round(value, precision), Python's round-half-even on the decimal value.
  if (precision > 17 || !std::isfinite(v)) return v;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(std::max<std::int64_t>(precision, 0)), v);
  return std::stod(buf);
}

}  // namespace

const Value* Args::get(std::size_t index, std::string_view name) const {
  if (index < pos.size()) return &pos[index];
  for (const auto& [k, v] : kw) {
    if (k == name) return &v;
  }
  return nullptr;
}

Json iteration_items(const Value& v, int line) {
  if (v.is_undefined()) return Json::array();
  if (v.kind == Value::Kind::ns) error(line, "a namespace is not iterable");
  if (!v.is_json()) error(line, fmt::format("'{}' object is not iterable", type_name(v)));
  const Json& j = v.json;
  if (j.is_array()) return j;
  Json out = Json::array();
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) out.push_back(it.key());
  } else if (j.is_string()) {
    for (auto cp : code_points(j.get_ref<const std::string&>())) out.push_back(std::string(cp));
  } else {
    error(line, fmt::format("'{}' object is not iterable", type_name(v)));
  }
  return out;
}

Value apply_filter_eager(std::string_view name, const Value& v, const Args& a, int line, const JinjaLimits& limits);

Value apply_filter(std::string_view name, const Value& v, const Args& a, int line, const JinjaLimits& limits) {
  Value r = apply_filter_eager(name, v, a, line, limits);
  if (name == "map" || name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr" ||
      name == "unique" || name == "items" || (name == "reverse" && !(v.is_json() && v.json.is_string()))) {
    r.lazy = true;
  }
  return r;
}

Value apply_filter_eager(std::string_view name, const Value& v, const Args& a, int line, const JinjaLimits& limits) {
  auto str = [&] { return to_str(v); };
  if (name == "trim") return Value::of(py_strip(str(), true, true, opt_string(a.get(0, "chars"), line, "trim")));
  if (name == "tojson") {
    if (!v.is_json()) error(line, fmt::format("Object of type {} is not JSON serializable", type_name(v)));
    const Value* ea = a.get(0, "ensure_ascii");
    const Value* ind = a.get(1, "indent");
    const Value* sk = a.get(3, "sort_keys");
    std::optional<std::string> indent;
    if (ind && ind->is_json() && !ind->json.is_null()) {
      if (ind->json.is_string()) {
        indent = ind->json.get<std::string>();
      } else {
        std::int64_t width = need_int(ind, line, "tojson");
        if (width > 4096) error(line, "tojson: indent beyond 4096");
        indent = std::string(static_cast<std::size_t>(std::max<std::int64_t>(0, width)), ' ');
      }
    }
    if (a.get(2, "separators") && !(a.get(2, "separators")->is_json() && a.get(2, "separators")->json.is_null())) {
      error(line, "tojson: separators are not supported");
    }
    try {
      return Value::of(dumps(v.json, indent, sk && truthy(*sk), ea && truthy(*ea)));
    } catch (const Error& e) {
      error(line, e.what());
    }
  }
  if (name == "length" || name == "count") {
    if (v.is_undefined()) return Value::of(0);
    const Json& j = need_json(v, line, "length");
    if (j.is_string()) return Value::of(static_cast<std::int64_t>(code_points(j.get_ref<const std::string&>()).size()));
    if (j.is_array() || j.is_object()) return Value::of(static_cast<std::int64_t>(j.size()));
    error(line, fmt::format("object of type '{}' has no len()", type_name(v)));
  }
  if (name == "upper") return Value::of(ascii_upper(str()));
  if (name == "lower") return Value::of(ascii_lower(str()));
  if (name == "capitalize") return Value::of(capitalize(str()));
  if (name == "title") {
    std::string s = str(), out;
    bool start = true;
    for (auto cp : code_points(s)) {
      bool sep = is_py_space(cp) || cp == "-" || cp == "(" || cp == "{" || cp == "[" || cp == "<";
      std::string c(cp);
      out += sep ? c : start ? title_case(cp) : ascii_lower(c);
      start = sep;
    }
    return Value::of(out);
  }
  if (name == "replace") {
    const Value* cnt = a.get(2, "count");
    return Value::of(py_replace(str(), need_string(a.get(0, "old"), line, "replace"),
                                need_string(a.get(1, "new"), line, "replace"),
                                cnt && !(cnt->is_json() && cnt->json.is_null()) ? need_int(cnt, line, "replace") : -1,
                                limits.max_output_bytes, line));
  }
  if (name == "join") {
    std::string sep = a.get(0, "d") ? to_str(*a.get(0, "d")) : "";
    auto attr = opt_string(a.get(1, "attribute"), line, "join");
    std::string out;
    bool first = true;
    for (auto& x : iteration_items(v, line)) {
      out += first ? "" : sep;
      out += attr ? to_str(attribute_of(x, *attr)) : py_str(x);
      first = false;
      if (out.size() > limits.max_output_bytes) error(line, "join: string too long");
    }
    return Value::of(out);
  }
  if (name == "first" || name == "last") {
    Json items = iteration_items(v, line);
    if (items.empty()) return Value::undefined("first");
    return Value::of(name == "first" ? items.front() : items.back());
  }
  if (name == "default" || name == "d") {
    const Value* b = a.get(1, "boolean");
    bool use_default = v.is_undefined() || (b && truthy(*b) && !truthy(v));
    if (!use_default) return v;
    const Value* d = a.get(0, "default_value");
    return d ? *d : Value::of("");
  }
  if (name == "items") {
    if (v.is_undefined()) return Value::of(Json::array());
    const Json& j = need_json(v, line, "items");
    if (!j.is_object()) error(line, "items: expects a mapping");
    Json out = Json::array();
    for (auto it = j.begin(); it != j.end(); ++it) out.push_back(Json::array({it.key(), it.value()}));
    return Value::of(out);
  }
  if (name == "dictsort") {
    const Json& j = need_json(v, line, "dictsort");
    if (!j.is_object()) error(line, "dictsort: expects a mapping");
    const Value* cs = a.get(0, "case_sensitive");
    const Value* by = a.get(1, "by");
    const Value* rev = a.get(2, "reverse");
    bool by_value = by && by->is_json() && by->json == "value";
    Json pairs = Json::array();
    for (auto it = j.begin(); it != j.end(); ++it) pairs.push_back(Json::array({it.key(), it.value()}));
    return Value::of(sort_items(pairs, rev && truthy(*rev), cs && truthy(*cs), by_value ? "1" : "0", line));
  }
  if (name == "string" || name == "safe" || name == "e" || name == "escape") {
    if (name == "safe" || name == "string") return v.is_json() && v.json.is_string() ? v : Value::of(str());
    std::string out;
    for (char c : str()) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&#34;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
      }
    }
    return Value::of(out);
  }
  if (name == "int" || name == "float") {
    const Value* d = a.get(0, "default");
    Value def = d ? *d : (name == "int" ? Value::of(0) : Value::of(0.0));
    if (!v.is_json()) return def;
    const Json& j = v.json;
    if (name == "int") {
      if (j.is_boolean()) return Value::of(j.get<bool>() ? 1 : 0);
      if (j.is_number_integer()) return v;
      if (j.is_number_float()) return Value::of(static_cast<std::int64_t>(std::trunc(j.get<double>())));
    } else {
      if (is_number(j)) return Value::of(as_double(j));
    }
    if (!j.is_string()) return def;
    std::string s = py_strip(j.get<std::string>(), true, true, std::nullopt);
    try {
      std::size_t used = 0;
      if (name == "int") {
        std::int64_t x = std::stoll(s, &used);
        if (used == s.size()) return Value::of(x);
      }
      double x = std::stod(s, &used);
      if (used == s.size()) return name == "int" ? Value::of(static_cast<std::int64_t>(std::trunc(x))) : Value::of(x);
    } catch (const std::exception&) {
    }
    return def;
  }
  if (name == "list") return Value::of(iteration_items(v, line));
  if (name == "reverse") {
    if (v.is_json() && v.json.is_string()) {
      auto cps = code_points(v.json.get_ref<const std::string&>());
      std::string out;
      for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
      return Value::of(out);
    }
    Json items = iteration_items(v, line);
    std::reverse(items.begin(), items.end());
    return Value::of(items);
  }
  if (name == "sort") {
    const Value* rev = a.get(0, "reverse");
    const Value* cs = a.get(1, "case_sensitive");
    return Value::of(sort_items(iteration_items(v, line), rev && truthy(*rev), cs && truthy(*cs),
                                opt_string(a.get(2, "attribute"), line, "sort"), line));
  }
  if (name == "unique") {
    Json out = Json::array();
    const Value* cs = a.get(0, "case_sensitive");
    auto attr = opt_string(a.get(1, "attribute"), line, "unique");
    std::vector<Json> seen;
    for (auto& x : iteration_items(v, line)) {
      Json k = attr ? (attribute_of(x, *attr).is_json() ? attribute_of(x, *attr).json : Json()) : x;
      if (!(cs && truthy(*cs)) && k.is_string()) k = ascii_lower(k.get<std::string>());
      if (std::none_of(seen.begin(), seen.end(), [&](const Json& s) { return py_equal(s, k); })) {
        seen.push_back(k);
        out.push_back(x);
      }
    }
    return Value::of(out);
  }
  if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
    bool by_attr = name == "selectattr" || name == "rejectattr";
    bool keep_if = name == "selectattr" || name == "select";
    std::string attr = by_attr ? need_string(a.get(0, "attribute"), line, std::string(name)) : "";
    std::size_t t0 = by_attr ? 1 : 0;
    std::optional<std::string> test = a.pos.size() > t0 ? std::optional(need_string(&a.pos[t0], line, name)) : std::nullopt;
    Args targs;
    for (std::size_t k = t0 + 1; k < a.pos.size(); ++k) targs.pos.push_back(a.pos[k]);
    Json out = Json::array();
    for (auto& x : iteration_items(v, line)) {
      Value subject = by_attr ? attribute_of(x, attr) : Value::of(x);
      bool ok = test ? apply_test(*test, subject, targs, line) : truthy(subject);
      if (ok == keep_if) out.push_back(x);
    }
    return Value::of(out);
  }
  if (name == "map") {
    Json out = Json::array();
    auto attr = a.pos.empty() ? opt_string(a.get(99, "attribute"), line, "map") : std::nullopt;
    const Value* def = a.get(99, "default");
    Args fargs;
    std::string filter;
    if (!attr) {
      filter = need_string(a.get(0, "filter"), line, "map");
      for (std::size_t k = 1; k < a.pos.size(); ++k) fargs.pos.push_back(a.pos[k]);
      fargs.kw = a.kw;
    }
    for (auto& x : iteration_items(v, line)) {
      Value r = attr ? attribute_of(x, *attr) : apply_filter(filter, Value::of(x), fargs, line, limits);
      if (r.is_undefined() && def) r = *def;
      out.push_back(r.is_json() ? r.json : Value::undefined_in_container());
    }
    return Value::of(out);
  }
  if (name == "abs") {
    const Json& j = need_json(v, line, "abs");
    if (j.is_number_integer() || j.is_boolean()) return Value::of(std::abs(j.is_boolean() ? (j.get<bool>() ? 1 : 0) : j.get<std::int64_t>()));
    if (j.is_number_float()) return Value::of(std::fabs(j.get<double>()));
    error(line, "abs: expects a number");
  }
  if (name == "round") {
    const Json& j = need_json(v, line, "round");
    if (!is_number(j)) error(line, "round: expects a number");
    const Value* p = a.get(0, "precision");
    const Value* m = a.get(1, "method");
    if ((j.is_number_integer() || j.is_boolean()) && (!m || (m->is_json() && m->json == "common"))) {
      return Value::of(j.is_boolean() ? Json(j.get<bool>() ? 1 : 0) : j);  // round(int, n) is that int
    }
    return Value::of(round_half_even_digits(as_double(j), p ? need_int(p, line, "round") : 0,
                                            m ? need_string(m, line, "round") : "common"));
  }
  if (name == "indent") {
    const Value* w = a.get(0, "width");
    std::string ind;
    if (w && w->is_json() && w->json.is_string()) {
      ind = w->json.get<std::string>();
    } else {
      std::int64_t width = w ? need_int(w, line, "indent") : 4;
      if (width > 4096) error(line, "indent: width beyond 4096");
      ind = std::string(static_cast<std::size_t>(std::max<std::int64_t>(width, 0)), ' ');
    }
    const std::string text = str();
    if (ind.size() * static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n') + 1) > limits.max_output_bytes) {
      error(line, "indent: string too long");
    }
    const Value* first = a.get(1, "first");
    const Value* blank = a.get(2, "blank");
    return Value::of(indent_text(text, ind, first && truthy(*first), blank && truthy(*blank)));
  }
  if (name == "min" || name == "max") {
    Json items = iteration_items(v, line);
    if (items.empty()) return Value::undefined(std::string(name));
    // jinja2 compares strings case-insensitively unless case_sensitive=true.
    const Value* cs = a.get(0, "case_sensitive");
    auto attr = opt_string(a.get(1, "attribute"), line, name);
    auto key = [&](const Json& x) {
      Json k = attr ? (attribute_of(x, *attr).is_json() ? attribute_of(x, *attr).json : Json()) : x;
      return !(cs && truthy(*cs)) && k.is_string() ? Json(ascii_lower(k.get<std::string>())) : k;
    };
    Json best = items[0];
    try {
      for (auto& x : items) {
        if (name == "min" ? py_less(key(x), key(best)) : py_less(key(best), key(x))) best = x;
      }
    } catch (const std::invalid_argument&) {
      error(line, fmt::format("{}: values that cannot be compared", name));
    }
    return Value::of(best);
  }
  if (name == "sum") {
    auto attr = opt_string(a.get(0, "attribute"), line, "sum");
    const Value* start = a.get(1, "start");
    Json total = start ? need_json(*start, line, "sum") : Json(0);
    for (auto& x : iteration_items(v, line)) {
      Value item = attr ? attribute_of(x, *attr) : Value::of(x);
      if (!item.is_json() || !is_number(item.json) || !is_number(total)) error(line, "sum: expects numbers");
      if (total.is_number_float() || item.json.is_number_float()) {
        total = as_double(total) + as_double(item.json);
      } else {
        auto as_int = [](const Json& j) { return j.is_boolean() ? std::int64_t{j.get<bool>()} : j.get<std::int64_t>(); };
        std::int64_t r = 0;
        if (__builtin_add_overflow(as_int(total), as_int(item.json), &r)) error(line, "sum: integer overflow");
        total = r;
      }
    }
    return Value::of(total);
  }
  if (name == "wordcount") {
    std::int64_t words = 0;
    bool in_word = false;
    const std::string text = str();
    for (auto cp : code_points(text)) {
      unsigned char c = static_cast<unsigned char>(cp[0]);
      bool w = cp.size() > 1 || std::isalnum(c) || c == '_';
      words += w && !in_word;
      in_word = w;
    }
    return Value::of(words);
  }
  error(line, fmt::format("no filter named '{}'", name));
}

bool apply_test(std::string_view name, const Value& v, const Args& a, int line) {
  const Json* j = v.is_json() ? &v.json : nullptr;
  auto other = [&]() -> const Value& {
    const Value* o = a.get(0, "other");
    if (!o) error(line, fmt::format("test '{}' needs an argument", name));
    return *o;
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return j && j->is_null();
  if (name == "string") return j && j->is_string();
  if (name == "mapping") return j && j->is_object();
  if (name == "iterable") return v.is_undefined() || (j && (j->is_array() || j->is_object() || j->is_string()));
  if (name == "sequence") return v.is_undefined() || (j && (j->is_array() || j->is_object() || j->is_string()));
  if (name == "number") return j && is_number(*j);
  if (name == "integer") return j && j->is_number_integer();
  if (name == "float") return j && j->is_number_float();
  if (name == "boolean") return j && j->is_boolean();
  if (name == "true") return j && j->is_boolean() && j->get<bool>();
  if (name == "false") return j && j->is_boolean() && !j->get<bool>();
  if (name == "callable") return v.kind == Value::Kind::method || v.kind == Value::Kind::function || v.kind == Value::Kind::macro;
  if (name == "sameas") {
    const Value& o = other();
    if (j && o.is_json() && (j->is_null() || j->is_boolean() || o.json.is_null() || o.json.is_boolean())) {
      return j->type() == o.json.type() && *j == o.json;
    }
    if (v.kind == Value::Kind::ns && o.kind == Value::Kind::ns) return v.ns == o.ns;
    return false;
  }
  if (name == "eq" || name == "equalto" || name == "==") return values_equal(v, other());
  if (name == "ne" || name == "!=") return !values_equal(v, other());
  if (name == "lt" || name == "lessthan" || name == "<" || name == "gt" || name == "greaterthan" || name == ">" ||
      name == "le" || name == "<=" || name == "ge" || name == ">=") {
    const Value& o = other();
    if (!j || !o.is_json()) error(line, "comparison of undefined values");
    try {
      if (name == "lt" || name == "lessthan" || name == "<") return py_less(*j, o.json);
      if (name == "gt" || name == "greaterthan" || name == ">") return py_less(o.json, *j);
      if (name == "le" || name == "<=") return !py_less(o.json, *j);
      return !py_less(*j, o.json);
    } catch (const std::invalid_argument&) {
      error(line, "values that cannot be compared");
    }
  }
  if (name == "in") {
    const Value& o = other();
    Json items = iteration_items(o, line);
    if (o.is_json() && o.json.is_string()) {
      return j && j->is_string() && o.json.get_ref<const std::string&>().find(j->get_ref<const std::string&>()) != std::string::npos;
    }
    return j && std::any_of(items.begin(), items.end(), [&](const Json& x) { return py_equal(x, *j); });
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!j || !is_number(*j)) error(line, fmt::format("test '{}' expects a number", name));
    if (j->is_number_float()) {  // Python's value % 2 == 1 on a float
      double x = j->get<double>();
      double m = std::fmod(x, 2.0);
      if (m < 0) m += 2.0;
      if (name == "odd") return m == 1.0;
      if (name == "even") return m == 0.0;
      error(line, "divisibleby expects an integer");
    }
    std::int64_t x = j->is_boolean() ? j->get<bool>() : j->get<std::int64_t>();
    if (name == "odd") return x % 2 != 0;
    if (name == "even") return x % 2 == 0;
    std::int64_t d = need_int(&other(), line, "divisibleby");
    if (d == 0) error(line, "divisibleby 0");
    return x % d == 0;
  }
  if (name == "lower" || name == "upper") {
    std::string s = to_str(v);
    auto cps = code_points(s);
    bool cased = std::any_of(cps.begin(), cps.end(), is_cased_letter);
    return cased && (name == "lower" ? ascii_lower(s) == s : ascii_upper(s) == s);
  }
  error(line, fmt::format("no test named '{}'", name));
}

bool is_method(const Json& self, std::string_view name) {
  static constexpr std::string_view str_methods[] = {
      "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper", "lower", "title",
      "capitalize", "replace", "find", "rfind", "count", "join", "splitlines", "isdigit", "isspace", "isalpha",
      "isalnum", "islower", "isupper", "removeprefix", "removesuffix", "format", "index"};
  static constexpr std::string_view dict_methods[] = {"items", "keys", "values", "get", "copy", "pop", "popitem",
                                                      "update", "setdefault", "clear", "fromkeys"};
  static constexpr std::string_view list_methods[] = {"append", "extend", "insert", "pop", "remove", "clear",
                                                      "sort", "reverse", "index", "count", "copy"};
  auto in = [&](const auto& list) { return std::find(std::begin(list), std::end(list), name) != std::end(list); };
  if (self.is_string()) return in(str_methods);
  if (self.is_object()) return in(dict_methods);
  if (self.is_array()) return in(list_methods);
  return false;
}

Value call_method(const Json& self, std::string_view name, const Args& a, int line, const JinjaLimits& limits) {
  if (self.is_string()) {
    const std::string& s = self.get_ref<const std::string&>();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      return Value::of(py_strip(s, name != "rstrip", name != "lstrip", opt_string(a.get(0, "chars"), line, name)));
    }
    if (name == "split" || name == "rsplit") {
      const Value* ms = a.get(1, "maxsplit");
      std::int64_t maxsplit = ms ? need_int(ms, line, name) : -1;
      if (name == "rsplit" && maxsplit >= 0) error(line, "rsplit with maxsplit is not supported");
      return Value::of(py_split(s, opt_string(a.get(0, "sep"), line, name), maxsplit, line));
    }
    if (name == "startswith" || name == "endswith") {
      const Value* p = a.get(0, "prefix");
      if (!p || !p->is_json()) error(line, fmt::format("{} expects a string or a tuple", name));
      Json cands = p->json.is_array() ? p->json : Json::array({p->json});
      for (auto& c : cands) {
        if (!c.is_string()) error(line, fmt::format("{} expects a string or a tuple", name));
        const std::string& x = c.get_ref<const std::string&>();
        if (name == "startswith" ? s.compare(0, x.size(), x) == 0 && s.size() >= x.size()
                                 : s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0) {
          return Value::of(true);
        }
      }
      return Value::of(false);
    }
    if (name == "upper") return Value::of(ascii_upper(s));
    if (name == "lower") return Value::of(ascii_lower(s));
    if (name == "capitalize") return Value::of(capitalize(s));
    if (name == "title") return Value::of(py_title(s));
    if (name == "replace") {
      const Value* cnt = a.get(2, "count");
      return Value::of(py_replace(s, need_string(a.get(0, "old"), line, "replace"), need_string(a.get(1, "new"), line, "replace"),
                                  cnt ? need_int(cnt, line, "replace") : -1, limits.max_output_bytes, line));
    }
    if (name == "removeprefix" || name == "removesuffix") {
      std::string x = need_string(a.get(0, "x"), line, name);
      if (name == "removeprefix" && s.compare(0, x.size(), x) == 0 && s.size() >= x.size()) return Value::of(s.substr(x.size()));
      if (name == "removesuffix" && s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0) {
        return Value::of(s.substr(0, s.size() - x.size()));
      }
      return Value::of(s);
    }
    if (name == "find" || name == "rfind" || name == "index" || name == "count") {
      std::string x = need_string(a.get(0, "sub"), line, name);
      if (name == "count") {
        if (x.empty()) return Value::of(static_cast<std::int64_t>(code_points(s).size() + 1));
        std::int64_t n = 0;
        for (std::size_t p = s.find(x); p != std::string::npos; p = s.find(x, p + x.size())) ++n;
        return Value::of(n);
      }
      std::size_t p = name == "rfind" ? s.rfind(x) : s.find(x);
      if (p == std::string::npos) {
        if (name == "index") error(line, "substring not found");
        return Value::of(-1);
      }
      return Value::of(static_cast<std::int64_t>(code_points(std::string_view(s).substr(0, p)).size()));
    }
    if (name == "join") {
      std::string out;
      bool first = true;
      const Value* it = a.get(0, "iterable");
      if (!it) error(line, "join expects an iterable");
      for (auto& x : iteration_items(*it, line)) {
        if (!x.is_string()) error(line, "join: sequence item is not a string");
        out += (first ? "" : s) + x.get<std::string>();
        first = false;
        if (out.size() > limits.max_output_bytes) error(line, "join: string too long");
      }
      return Value::of(out);
    }
    if (name == "splitlines") {
      Json out = Json::array();
      std::size_t pos = 0;
      while (pos < s.size()) {
        std::size_t e = s.find_first_of("\r\n", pos);
        if (e == std::string::npos) {
          out.push_back(s.substr(pos));
          break;
        }
        out.push_back(s.substr(pos, e - pos));
        pos = e + ((s[e] == '\r' && e + 1 < s.size() && s[e + 1] == '\n') ? 2 : 1);
      }
      return Value::of(out);
    }
    if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum" || name == "islower" || name == "isupper") {
      if (s.empty()) return Value::of(false);
      bool cased = false;
      for (unsigned char c : s) {
        bool ok = name == "isdigit"   ? std::isdigit(c) != 0
                  : name == "isspace" ? std::isspace(c) != 0
                  : name == "isalpha" ? std::isalpha(c) != 0
                  : name == "isalnum" ? std::isalnum(c) != 0
                  : name == "islower" ? !std::isupper(c)
                                      : !std::islower(c);
        if (std::isalpha(c)) cased = true;
        if (!ok) return Value::of(false);
      }
      return Value::of(name == "islower" || name == "isupper" ? cased : true);
    }
  } else if (self.is_object()) {
    if (name == "items") return apply_filter_eager("items", Value::of(self), {}, line, limits);
    if (name == "keys") return Value::of(iteration_items(Value::of(self), line));
    if (name == "values") {
      Json out = Json::array();
      for (auto it = self.begin(); it != self.end(); ++it) out.push_back(it.value());
      return Value::of(out);
    }
    if (name == "get") {
      std::string k = need_string(a.get(0, "key"), line, "get");
      auto it = self.find(k);
      if (it != self.end()) return Value::of(*it);
      const Value* d = a.get(1, "default");
      return d ? *d : Value::of(nullptr);
    }
    if (name == "copy") return Value::of(self);
  } else if (self.is_array()) {
    if (name == "copy") return Value::of(self);
    if (name == "index" || name == "count") {
      const Value* x = a.get(0, "x");
      if (!x || !x->is_json()) error(line, fmt::format("{} expects a value", name));
      std::int64_t n = 0;
      for (std::size_t k = 0; k < self.size(); ++k) {
        if (py_equal(self[k], x->json)) {
          if (name == "index") return Value::of(static_cast<std::int64_t>(k));
          ++n;
        }
      }
      if (name == "index") error(line, "value is not in list");
      return Value::of(n);
    }
  }
  error(line, fmt::format("access to method '{}' of a {} is unsafe or unsupported in the sandbox", name, type_name(Value::of(self))));
}

bool is_global(std::string_view name) {
  return name == "raise_exception" || name == "strftime_now" || name == "namespace" || name == "range" || name == "dict";
}

Value call_global(std::string_view name, const Args& a, int line, const JinjaLimits& limits) {
  (void)limits;
  if (name == "raise_exception") {
    const Value* m = a.get(0, "message");
    fail("jinja template line {}: raise_exception: {}", line, m ? to_str(*m) : "");
  }
  if (name == "strftime_now") {
    std::string format = need_string(a.get(0, "format"), line, "strftime_now");
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    std::string buf(256 + format.size() * 8, '\0');
    std::size_t n = format.empty() ? 0 : std::strftime(buf.data(), buf.size(), format.c_str(), &tm);
    buf.resize(n);
    return Value::of(buf);
  }
  if (name == "namespace") {
    Value v;
    v.kind = Value::Kind::ns;
    v.ns = std::make_shared<std::map<std::string, Value>>();
    for (const auto& p : a.pos) {
      if (!p.is_json() || !p.json.is_object()) error(line, "namespace() takes a mapping and keyword arguments");
      for (auto it = p.json.begin(); it != p.json.end(); ++it) (*v.ns)[it.key()] = Value::of(it.value());
    }
    for (const auto& [k, x] : a.kw) (*v.ns)[k] = x;
    return v;
  }
  if (name == "dict") {
    Json out = Json::object();
    for (const auto& [k, x] : a.kw) out[k] = x.is_json() ? x.json : Json();
    return Value::of(out);
  }
  if (name == "range") {
    std::int64_t start = 0, stop = 0, step = 1;
    if (a.pos.size() == 1) {
      stop = need_int(&a.pos[0], line, "range");
    } else if (a.pos.size() == 2 || a.pos.size() == 3) {
      start = need_int(&a.pos[0], line, "range");
      stop = need_int(&a.pos[1], line, "range");
      if (a.pos.size() == 3) step = need_int(&a.pos[2], line, "range");
    } else {
      error(line, "range expects 1 to 3 integers");
    }
    if (step == 0) error(line, "range() arg 3 must not be zero");
    Json out = Json::array();
    for (std::int64_t x = start; step > 0 ? x < stop : x > stop; x += step) {
      if (static_cast<std::int64_t>(out.size()) >= kMaxRange) {
        error(line, fmt::format("range too big, maximum size for range is {}", kMaxRange));
      }
      out.push_back(x);
    }
    return Value::of(out);
  }
  error(line, fmt::format("'{}' is not callable", name));
}

}  // namespace kvlab::harness::jinja
