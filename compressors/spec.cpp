#include "compressors/spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace kvlab::compressors {

std::string_view to_string(StageKind kind) {
  switch (kind) {
    case StageKind::eviction: return "eviction";
    case StageKind::transform: return "transform";
    case StageKind::quantizer: return "quantizer";
  }
  return "?";
}

std::string format_real(double value) {
  // Shortest representation that round-trips (std::to_chars without precision).
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  if (ec != std::errc()) fail("format_real: cannot format {}", value);
  return std::string(buf, end);
}

namespace {

// out += (out empty ? "" : sep) + item, written so GCC 12 does not warn (a false -Wrestrict on
// operator+(const char*, std::string&&)).
void append_joined(std::string& out, std::string_view sep, std::string_view item) {
  if (!out.empty()) out += sep;
  out += item;
}

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return "";
  const auto e = s.find_last_not_of(" \t");
  return std::string(s.substr(b, e - b + 1));
}

// Splits on `sep` outside square brackets.
std::vector<std::string> split_top(std::string_view s, char sep) {
  std::vector<std::string> parts;
  int depth = 0;
  std::string cur;
  for (char c : s) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (c == sep && depth == 0) {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  parts.push_back(cur);
  return parts;
}

std::string allowed_keys(const MethodDef& m) {
  std::string out;
  for (const auto& p : m.params) append_joined(out, ", ", p.key);
  return out.empty() ? "(none)" : out;
}

const ParamDef& param_def(const MethodDef& m, std::string_view key) {
  for (const auto& p : m.params)
    if (p.key == key) return p;
  fail("spec '{}': unknown key '{}' (allowed: {})", m.name, key, allowed_keys(m));
}

bool parse_double(std::string_view text, double& out) {
  const char* b = text.data();
  const char* e = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(b, e, out);
  return ec == std::errc() && ptr == e && std::isfinite(out);
}

// Checks one concrete value against its definition; returns its canonical text.
std::string canonical_value(const MethodDef& m, const ParamDef& p, const std::string& text) {
  const auto where = [&] { return fmt::format("spec '{}': key '{}'", m.name, p.key); };
  if (text.empty()) fail("{} has an empty value", where());
  switch (p.type) {
    case ParamType::integer: {
      std::int64_t v = 0;
      auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (ec != std::errc() || ptr != text.data() + text.size())
        fail("{} needs an integer, got '{}'", where(), text);
      if (v < p.min || v > p.max) fail("{} = {} is outside [{}, {}]", where(), v, format_real(p.min), format_real(p.max));
      return std::to_string(v);
    }
    case ParamType::real: {
      double v = 0;
      if (!parse_double(text, v)) fail("{} needs a number, got '{}'", where(), text);
      if (v < p.min || v > p.max) fail("{} = {} is outside [{}, {}]", where(), text, format_real(p.min), format_real(p.max));
      return format_real(v);
    }
    case ParamType::choice: {
      if (std::find(p.choices.begin(), p.choices.end(), text) == p.choices.end()) {
        std::string list;
        for (const auto& c : p.choices) append_joined(list, ", ", c);
        fail("{} = '{}' is not one of: {}", where(), text, list);
      }
      return text;
    }
    case ParamType::text:
      if (text.find_first_of(",+:=[]") != std::string::npos)
        fail("{} = '{}' may not contain , + : = [ ]", where(), text);
      return text;
  }
  return text;
}

// Expands a sweep value (A..B:STEP or [a,b,c]) into its concrete values; a plain value is one.
std::vector<std::string> sweep_values(const MethodDef& m, const ParamDef& p, const std::string& text) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    std::vector<std::string> out;
    for (const auto& v : split_top(std::string_view(text).substr(1, text.size() - 2), ',')) out.push_back(trim(v));
    if (out.empty() || (out.size() == 1 && out[0].empty())) fail("spec '{}': key '{}' has an empty list", m.name, p.key);
    return out;
  }
  const auto dots = text.find("..");
  if (dots == std::string::npos) return {text};
  if (p.type != ParamType::integer && p.type != ParamType::real)
    fail("spec '{}': key '{}' is not numeric and cannot take a range ('{}')", m.name, p.key, text);
  const auto colon = text.find(':', dots);
  if (colon == std::string::npos)
    fail("spec '{}': range '{}' for key '{}' needs a step: A..B:STEP", m.name, text, p.key);
  double a = 0, b = 0, step = 0;
  if (!parse_double(std::string_view(text).substr(0, dots), a) ||
      !parse_double(std::string_view(text).substr(dots + 2, colon - dots - 2), b) ||
      !parse_double(std::string_view(text).substr(colon + 1), step))
    fail("spec '{}': range '{}' for key '{}' is not A..B:STEP with numbers", m.name, text, p.key);
  if (!(step > 0) || b < a) fail("spec '{}': range '{}' for key '{}' needs A ≤ B and STEP > 0", m.name, text, p.key);
  std::vector<std::string> out;
  // Counted in double and checked before the conversion: (b − a) / step may exceed any integer
  // (or overflow to infinity), and converting such a double to an integer is undefined.
  const double steps = std::floor((b - a) / step * (1 + 1e-12));
  if (!(steps < 10000)) fail("spec '{}': range '{}' for key '{}' has {} values (at most 10000)", m.name, text, p.key, steps + 1);
  const auto count = static_cast<std::int64_t>(steps) + 1;
  if (p.type == ParamType::integer && (a != std::round(a) || b != std::round(b) || step != std::round(step)))
    fail("spec '{}': key '{}' takes integers, but range '{}' has a bound or step that is not one", m.name, p.key, text);
  for (std::int64_t i = 0; i < count; ++i) {
    const double v = a + static_cast<double>(i) * step;
    out.push_back(p.type == ParamType::integer ? std::to_string(std::llround(v)) : format_real(v));
  }
  return out;
}

struct RawStage {
  const MethodDef* def;
  std::vector<std::pair<std::string, std::string>> given;  // as written, in order
};

std::vector<RawStage> split_chain(std::string_view text, const MethodTable& table) {
  const std::string spec = trim(text);
  if (spec.empty()) fail("empty compressor spec");
  std::vector<RawStage> stages;
  for (const auto& stage_text : split_top(spec, '+')) {
    const std::string s = trim(stage_text);
    if (s.empty()) fail("spec '{}': empty stage between '+'", spec);
    const auto colon = s.find(':');
    RawStage raw{&method(trim(std::string_view(s).substr(0, colon)), table), {}};
    if (colon != std::string::npos) {
      const std::string params = std::string(s.substr(colon + 1));
      if (trim(params).empty()) fail("spec '{}': nothing after ':'", raw.def->name);
      for (const auto& kv : split_top(params, ',')) {
        const auto eq = kv.find('=');
        if (eq == std::string::npos)
          fail("spec '{}': '{}' is not KEY=VALUE (allowed keys: {})", raw.def->name, trim(kv), allowed_keys(*raw.def));
        const std::string key = trim(std::string_view(kv).substr(0, eq));
        param_def(*raw.def, key);  // unknown keys fail here
        for (const auto& [k, v] : raw.given)
          if (k == key) fail("spec '{}': key '{}' given twice", raw.def->name, key);
        raw.given.emplace_back(key, trim(std::string_view(kv).substr(eq + 1)));
      }
    }
    stages.push_back(std::move(raw));
  }
  // Order: eviction, then at most one transform, then quantizers.
  int last_kind = -1, transforms = 0, evictions = 0;
  for (const auto& st : stages) {
    const int kind = static_cast<int>(st.def->kind);
    if (kind < last_kind)
      fail("spec '{}': stage '{}' ({}) comes after a {} stage; chains run eviction, then a transform, then quantizers",
           spec, st.def->name, to_string(st.def->kind), to_string(static_cast<StageKind>(last_kind)));
    last_kind = kind;
    transforms += st.def->kind == StageKind::transform;
    evictions += st.def->kind == StageKind::eviction;
  }
  if (transforms > 1) fail("spec '{}': at most one transform stage (low-rank or merging) per chain", spec);
  if (evictions > 1) fail("spec '{}': at most one eviction stage per chain", spec);
  for (const auto& st : stages)
    if (st.def->per_query() && evictions > 0)
      fail("spec '{}': '{}' selects from the whole cache at each decode query; an eviction stage before it is not "
           "supported (chain a quantizer after it instead)", spec, st.def->name);
  return stages;
}

StageSpec build_stage(const MethodDef& def, const std::vector<std::pair<std::string, std::string>>& given) {
  StageSpec st;
  st.method = def.name;
  std::vector<std::string> given_keys;
  for (const auto& p : def.params) {
    std::string value = p.default_value;
    for (const auto& [k, v] : given)
      if (k == p.key) {
        value = v;
        given_keys.push_back(k);
      }
    st.params.emplace_back(p.key, value.empty() && p.type == ParamType::text ? value : canonical_value(def, p, value));
  }
  if (def.resolve) def.resolve(st, given_keys);
  // resolve may set derived values: re-canonicalise them.
  for (auto& [k, v] : st.params) {
    const auto& p = param_def(def, k);
    if (!(v.empty() && p.type == ParamType::text)) v = canonical_value(def, p, v);
  }
  return st;
}

}  // namespace

const std::string& StageSpec::get(std::string_view key) const {
  for (const auto& [k, v] : params)
    if (k == key) return v;
  fail("spec '{}': no key '{}'", method, key);
}

std::int64_t StageSpec::get_int(std::string_view key) const {
  const auto& text = get(key);
  std::int64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) fail("spec '{}': key '{}' = '{}' is not an integer", method, key, text);
  return v;
}

double StageSpec::get_real(std::string_view key) const {
  double v = 0;
  if (!parse_double(get(key), v)) fail("spec '{}': key '{}' = '{}' is not a number", method, key, get(key));
  return v;
}

void StageSpec::set(std::string_view key, std::string value) {
  for (auto& [k, v] : params)
    if (k == key) {
      v = std::move(value);
      return;
    }
  fail("spec '{}': no key '{}'", method, key);
}

std::string StageSpec::to_string() const {
  std::string out = method;
  for (std::size_t i = 0; i < params.size(); ++i)
    out += fmt::format("{}{}={}", i ? "," : ":", params[i].first, params[i].second);
  return out;
}

std::string ChainSpec::to_string() const {
  std::string out;
  for (const auto& s : stages) append_joined(out, "+", s.to_string());
  return out;
}

const MethodDef& method(std::string_view name, const MethodTable& table) {
  for (const auto& m : table)
    if (m.name == name) return m;
  std::string list;
  for (const auto& m : table) append_joined(list, ", ", m.name);
  fail("unknown compression method '{}' (known: {})", name, list);
}

ChainSpec parse_spec(std::string_view text, const MethodTable& table) {
  ChainSpec chain;
  for (const auto& raw : split_chain(text, table)) {
    for (const auto& [k, v] : raw.given)
      if (sweep_values(*raw.def, param_def(*raw.def, k), v).size() != 1 || v.find("..") != std::string::npos ||
          (!v.empty() && v.front() == '['))
        fail("spec '{}': key '{}' = '{}' is a sweep; use it where sweeps are allowed (kvlab compress --method)",
             raw.def->name, k, v);
    chain.stages.push_back(build_stage(*raw.def, raw.given));
  }
  return chain;
}

std::vector<ChainSpec> expand_sweep(std::string_view text, const MethodTable& table) {
  const auto raw = split_chain(text, table);
  // One axis per (stage, key); the cartesian product, last axis fastest.
  struct Axis {
    std::size_t stage, key;
    std::vector<std::string> values;
  };
  std::vector<Axis> axes;
  for (std::size_t s = 0; s < raw.size(); ++s)
    for (std::size_t k = 0; k < raw[s].given.size(); ++k)
      axes.push_back({s, k, sweep_values(*raw[s].def, param_def(*raw[s].def, raw[s].given[k].first), raw[s].given[k].second)});
  std::int64_t total = 1;
  for (const auto& a : axes) {
    total *= static_cast<std::int64_t>(a.values.size());
    if (total > 100000) fail("spec '{}': the sweep has more than 100000 combinations", trim(text));
  }
  std::vector<ChainSpec> out;
  std::vector<std::size_t> index(axes.size(), 0);
  for (std::int64_t n = 0; n < total; ++n) {
    auto stages = raw;
    for (std::size_t a = 0; a < axes.size(); ++a) stages[axes[a].stage].given[axes[a].key].second = axes[a].values[index[a]];
    ChainSpec chain;
    for (const auto& st : stages) chain.stages.push_back(build_stage(*st.def, st.given));
    out.push_back(std::move(chain));
    for (std::size_t a = axes.size(); a-- > 0;) {
      if (++index[a] < axes[a].values.size()) break;
      index[a] = 0;
    }
  }
  return out;
}

StageSpec parse_stage(const MethodDef& def, std::string_view params) {
  const MethodTable table{def};
  const std::string text = trim(params).empty() ? def.name : def.name + ":" + std::string(params);
  return parse_spec(text, table).stages.at(0);
}

std::string describe_methods(const MethodTable& table) {
  std::string out;
  for (const auto& m : table) {
    out += fmt::format("  {} ({}): {}\n", m.name, to_string(m.kind), m.help);
    for (const auto& p : m.params) {
      std::string dflt = p.default_value.empty() ? "auto" : p.default_value;
      if (p.type == ParamType::choice) {
        std::string list;
        for (const auto& c : p.choices) append_joined(list, "|", c);
        dflt += " of " + list;
      }
      out += fmt::format("      {}={}  {}\n", p.key, dflt, p.help);
    }
  }
  return out;
}

}  // namespace kvlab::compressors
