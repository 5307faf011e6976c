// Walks jinja_parser's tree: scopes as jinja2 has them (a for loop's body gets a fresh scope
// each iteration, so a plain `set` inside it does not leak out; namespace attributes do; a
// macro sees the template's top-level names and its arguments), with jinja2's default
// Undefined and the sandbox limits of JinjaLimits.
#include <cmath>
#include <string>
#include <unordered_map>

#include "core/error.h"
#include "harness/tokenizer/jinja.h"
#include "harness/tokenizer/jinja_builtins.h"
#include "harness/tokenizer/jinja_parser.h"

namespace kvlab::harness {
namespace jinja {
namespace {

[[noreturn]] void error(int line, const std::string& what) { fail("jinja template line {}: {}", line, what); }

enum class Flow { normal, break_, continue_ };

class Renderer {
 public:
  Renderer(const Json& context, const JinjaLimits& limits) : limits_(limits) {
    frames_.emplace_back();
    if (!context.is_null()) {
      if (!context.is_object()) fail("jinja template context: expected a JSON object");
      for (auto it = context.begin(); it != context.end(); ++it) frames_[0][it.key()] = Value::of(it.value());
    }
  }

  std::string render(const Body& body) {
    Flow f = exec(body);
    (void)f;
    return std::move(out_);
  }

 private:
  using Frame = std::unordered_map<std::string, Value>;

  void step(int line) {
    if (++steps_ > limits_.max_steps) error(line, fmt::format("more than {} steps: a runaway template?", limits_.max_steps));
  }
  void check_size(std::size_t n, int line) const {
    if (n > limits_.max_output_bytes) error(line, fmt::format("output beyond {} bytes", limits_.max_output_bytes));
  }

  Value lookup(const std::string& name) const {
    for (std::size_t k = frames_.size(); k-- > base_;) {
      auto it = frames_[k].find(name);
      if (it != frames_[k].end()) return it->second;
    }
    if (base_ > 0) {
      auto it = frames_[0].find(name);
      if (it != frames_[0].end()) return it->second;
    }
    if (is_global(name)) {
      Value v;
      v.kind = Value::Kind::function;
      v.name = name;
      return v;
    }
    return Value::undefined(name);
  }

  // --- statements -----------------------------------------------------------------------
  Flow exec(const Body& body) {
    for (const auto& n : body) {
      Flow f = exec(*n);
      if (f != Flow::normal) return f;
    }
    return Flow::normal;
  }

  void emit(const std::string& s, int line) {
    out_ += s;
    check_size(out_.size(), line);
  }

  Flow exec(const Node& n) {
    step(n.line);
    switch (n.kind) {
      case Node::Kind::text: emit(n.text, n.line); return Flow::normal;
      case Node::Kind::output: emit(to_str(eval(*n.expr)), n.line); return Flow::normal;
      case Node::Kind::if_:
        for (const auto& [cond, body] : n.branches) {
          if (!cond || truthy(eval(*cond))) return exec(body);
        }
        return Flow::normal;
      case Node::Kind::for_: return exec_for(n);
      case Node::Kind::set: assign(n.targets, eval(*n.expr), n.line); return Flow::normal;
      case Node::Kind::set_attr: {
        Value target = lookup(n.targets[0]);
        if (target.kind != Value::Kind::ns) error(n.line, "cannot assign attribute on non-namespace object");
        (*target.ns)[n.attr] = eval(*n.expr);
        return Flow::normal;
      }
      case Node::Kind::set_block: {
        Value v = Value::of(capture(n.body));
        if (n.expr) v = eval_filters(*n.expr, v);
        frames_.back()[n.targets[0]] = v;
        return Flow::normal;
      }
      case Node::Kind::filter_block: emit(to_str(eval_filters(*n.expr, Value::of(capture(n.body)))), n.line); return Flow::normal;
      case Node::Kind::macro: {
        Value m;
        m.kind = Value::Kind::macro;
        m.name = n.targets[0];
        m.macro = &n;
        frames_.back()[n.targets[0]] = m;
        return Flow::normal;
      }
      case Node::Kind::break_: return Flow::break_;
      case Node::Kind::continue_: return Flow::continue_;
      case Node::Kind::generation: return exec(n.body);
    }
    return Flow::normal;
  }

  std::string capture(const Body& body) {
    std::string saved = std::move(out_);
    out_.clear();
    Flow f = exec(body);
    (void)f;
    std::string captured = std::move(out_);
    out_ = std::move(saved);
    return captured;
  }

  void assign(const std::vector<std::string>& targets, const Value& v, int line) {
    if (targets.size() == 1) {
      frames_.back()[targets[0]] = v;
      return;
    }
    Json items = iteration_items(v, line);
    if (items.size() != targets.size()) {
      error(line, fmt::format("cannot unpack {} values into {} names", items.size(), targets.size()));
    }
    for (std::size_t k = 0; k < targets.size(); ++k) frames_.back()[targets[k]] = Value::of(items[k]);
  }

  struct FramePush {
    Renderer& r;
    explicit FramePush(Renderer& renderer) : r(renderer) { r.frames_.emplace_back(); }
    ~FramePush() { r.frames_.pop_back(); }
  };

  Flow exec_for(const Node& n) {
    Json all = iteration_items(eval(*n.expr), n.line);
    Json items = Json::array();
    if (n.cond) {
      for (auto& x : all) {
        step(n.line);
        FramePush push(*this);
        assign(n.targets, Value::of(x), n.line);
        if (truthy(eval(*n.cond))) items.push_back(x);
      }
    } else {
      items = std::move(all);
    }
    if (items.empty()) {
      exec(n.else_body);
      return Flow::normal;
    }
    const auto len = static_cast<std::int64_t>(items.size());
    for (std::int64_t k = 0; k < len; ++k) {
      step(n.line);
      FramePush push(*this);
      assign(n.targets, Value::of(items[k]), n.line);
      Json loop = Json::object();
      loop["index"] = k + 1;
      loop["index0"] = k;
      loop["revindex"] = len - k;
      loop["revindex0"] = len - k - 1;
      loop["first"] = k == 0;
      loop["last"] = k == len - 1;
      loop["length"] = len;
      loop["depth"] = 1;
      loop["depth0"] = 0;
      if (k > 0) loop["previtem"] = items[k - 1];
      if (k + 1 < len) loop["nextitem"] = items[k + 1];
      frames_.back()["loop"] = Value::of(std::move(loop));
      Flow f = exec(n.body);
      if (f == Flow::break_) break;
    }
    return Flow::normal;
  }

  Value call_macro(const Value& m, const Args& a, int line) {
    const Node& def = *m.macro;
    if (++call_depth_ > limits_.max_call_depth) error(line, fmt::format("macro calls nested deeper than {}", limits_.max_call_depth));
    if (a.pos.size() > def.params.size()) {
      error(line, fmt::format("macro '{}' takes not more than {} argument(s)", def.targets[0], def.params.size()));
    }
    std::size_t saved_base = base_;
    frames_.emplace_back();
    base_ = frames_.size() - 1;
    std::string result;
    try {
      for (std::size_t k = 0; k < def.params.size(); ++k) {
        const auto& [pname, pdefault] = def.params[k];
        const Value* given = k < a.pos.size() ? &a.pos[k] : nullptr;
        for (const auto& [kname, kv] : a.kw) {
          if (kname == pname) given = &kv;
        }
        frames_.back()[pname] = given ? *given : pdefault ? eval(*pdefault) : Value::undefined(pname);
      }
      for (const auto& [kname, kv] : a.kw) {
        bool known = false;
        for (const auto& p : def.params) known = known || p.first == kname;
        if (!known) error(line, fmt::format("macro '{}' takes no keyword argument '{}'", def.targets[0], kname));
      }
      result = capture(def.body);
    } catch (...) {
      frames_.pop_back();
      base_ = saved_base;
      --call_depth_;
      throw;
    }
    frames_.pop_back();
    base_ = saved_base;
    --call_depth_;
    return Value::of(result);
  }

  // --- expressions ----------------------------------------------------------------------
  Args eval_args(const Expr& e, std::size_t first) {
    Args a;
    for (std::size_t k = first; k < e.args.size(); ++k) a.pos.push_back(eval(*e.args[k]));
    for (const auto& [k, v] : e.kwargs) a.kw.emplace_back(k, eval(*v));
    return a;
  }

  // A filter chain whose innermost operand is null (filter blocks, block sets) gets `operand`.
  Value eval_filters(const Expr& e, const Value& operand) {
    Value in = e.args[0] ? (e.args[0]->kind == Expr::Kind::filter ? eval_filters(*e.args[0], operand) : eval(*e.args[0])) : operand;
    return apply_filter(e.name, in, eval_args(e, 1), e.line, limits_);
  }

  // Lists and dicts built by the template nest at most kMaxValueDepth deep, so that printing,
  // comparing and copying them (all recursive) cannot exhaust the stack.
  static constexpr int kMaxValueDepth = 512;
  static bool deeper_than(const Json& j, int limit) {
    if (!j.is_structured()) return false;
    if (limit <= 0) return true;
    for (const auto& x : j) {
      if (deeper_than(x, limit - 1)) return true;
    }
    return false;
  }

  static Json to_json_item(const Value& v, int line) {
    if (v.is_json()) {
      if (deeper_than(v.json, kMaxValueDepth - 1)) error(line, fmt::format("lists or dicts nested deeper than {}", kMaxValueDepth));
      return v.json;
    }
    if (v.is_undefined()) return Value::undefined_in_container();
    error(line, fmt::format("a {} cannot be stored in a list or dict", type_name(v)));
  }

  Value get_attr(const Value& obj, const std::string& name, int line) {
    if (obj.is_undefined()) error(line, fmt::format("'{}' is undefined", obj.name.empty() ? name : obj.name));
    if (obj.kind == Value::Kind::ns) {
      auto it = obj.ns->find(name);
      return it == obj.ns->end() ? Value::undefined(name) : it->second;
    }
    if (!obj.is_json()) return Value::undefined(name);
    const Json& j = obj.json;
    if (is_method(j, name)) {
      Value m;
      m.kind = Value::Kind::method;
      m.json = j;
      m.name = name;
      return m;
    }
    if (j.is_object()) {
      auto it = j.find(name);
      if (it != j.end()) return Value::of(*it);
    }
    return Value::undefined(name);
  }

  Value get_item(const Value& obj, const Value& key, int line) {
    if (obj.is_undefined()) error(line, fmt::format("'{}' is undefined", obj.name));
    if (obj.kind == Value::Kind::ns) {
      if (key.is_json() && key.json.is_string()) return get_attr(obj, key.json.get<std::string>(), line);
      return Value::undefined();
    }
    if (!obj.is_json() || !key.is_json()) return Value::undefined();
    const Json& j = obj.json;
    const Json& k = key.json;
    if (j.is_object()) {
      if (!k.is_string()) return Value::undefined();
      auto it = j.find(k.get<std::string>());
      if (it != j.end()) return Value::of(*it);
      return is_method(j, k.get<std::string>()) ? get_attr(obj, k.get<std::string>(), line) : Value::undefined(k.get<std::string>());
    }
    if ((j.is_array() || j.is_string()) && (k.is_number_integer() || k.is_boolean())) {
      std::int64_t i = k.is_boolean() ? k.get<bool>() : k.get<std::int64_t>();
      if (j.is_array()) {
        auto n = static_cast<std::int64_t>(j.size());
        if (i < 0) i += n;
        return i >= 0 && i < n ? Value::of(j[static_cast<std::size_t>(i)]) : Value::undefined();
      }
      auto cps = code_points(j.get_ref<const std::string&>());
      auto n = static_cast<std::int64_t>(cps.size());
      if (i < 0) i += n;
      return i >= 0 && i < n ? Value::of(std::string(cps[static_cast<std::size_t>(i)])) : Value::undefined();
    }
    if (k.is_string()) return get_attr(obj, k.get<std::string>(), line);
    return Value::undefined();
  }

  Value eval_slice(const Expr& e) {
    Value obj = eval(*e.args[0]);
    std::optional<std::int64_t> bound[3];
    for (int b = 0; b < 3; ++b) {
      if (!e.args[1 + b]) continue;
      Value v = eval(*e.args[1 + b]);
      if (v.is_json() && v.json.is_null()) continue;
      if (!v.is_json() || !(v.json.is_number_integer() || v.json.is_boolean())) error(e.line, "slice indices must be integers or None");
      bound[b] = v.json.is_boolean() ? v.json.get<bool>() : v.json.get<std::int64_t>();
    }
    if (obj.is_undefined()) error(e.line, fmt::format("'{}' is undefined", obj.name));
    if (!obj.is_json() || !(obj.json.is_array() || obj.json.is_string())) return Value::undefined();
    bool is_str = obj.json.is_string();
    std::vector<std::string_view> cps;
    if (is_str) cps = code_points(obj.json.get_ref<const std::string&>());
    const auto n = static_cast<std::int64_t>(is_str ? cps.size() : obj.json.size());
    std::int64_t step = bound[2].value_or(1);
    if (step == 0) error(e.line, "slice step cannot be zero");
    auto clamp = [&](std::optional<std::int64_t> b, std::int64_t dflt) {
      if (!b) return dflt;
      std::int64_t x = *b;
      if (x < 0) {
        x += n;
        if (x < 0) x = step < 0 ? -1 : 0;
      } else if (x >= n) {
        x = step < 0 ? n - 1 : n;
      }
      return x;
    };
    std::int64_t start = clamp(bound[0], step < 0 ? n - 1 : 0);
    std::int64_t stop = clamp(bound[1], step < 0 ? -1 : n);
    Json out = Json::array();
    std::string s;
    for (std::int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (is_str) {
        s += cps[static_cast<std::size_t>(i)];
      } else {
        out.push_back(obj.json[static_cast<std::size_t>(i)]);
      }
    }
    return is_str ? Value::of(s) : Value::of(out);
  }

  Value arith(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "~") {
      std::string s = to_str(a) + to_str(b);
      check_size(s.size(), line);
      return Value::of(std::move(s));
    }
    if (!a.is_json() || !b.is_json()) {
      error(line, fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a), type_name(b)));
    }
    const Json& x = a.json;
    const Json& y = b.json;
    if (op == "+" && x.is_string() && y.is_string()) {
      std::string s = x.get<std::string>() + y.get<std::string>();
      check_size(s.size(), line);
      return Value::of(std::move(s));
    }
    if (op == "+" && x.is_array() && y.is_array()) {
      if (x.size() + y.size() > limits_.max_output_bytes / 16) error(line, "list too long");
      Json out = x;
      for (auto& v : y) out.push_back(v);
      return Value::of(out);
    }
    if (op == "*" && ((x.is_string() || x.is_array()) != (y.is_string() || y.is_array()))) {
      const Json& seq = x.is_string() || x.is_array() ? x : y;
      const Json& cnt = x.is_string() || x.is_array() ? y : x;
      if (cnt.is_number_integer() || cnt.is_boolean()) {
        std::int64_t c = cnt.is_boolean() ? cnt.get<bool>() : cnt.get<std::int64_t>();
        if (c <= 0) return Value::of(seq.is_string() ? Json("") : Json::array());
        std::size_t unit = seq.is_string() ? seq.get_ref<const std::string&>().size() : seq.size();
        if (unit != 0 && static_cast<std::uint64_t>(c) > limits_.max_output_bytes / (seq.is_string() ? 1 : 16) / unit) {
          error(line, "repetition too long");
        }
        if (seq.is_string()) {
          std::string s;
          for (std::int64_t k = 0; k < c; ++k) s += seq.get_ref<const std::string&>();
          return Value::of(s);
        }
        Json out = Json::array();
        for (std::int64_t k = 0; k < c; ++k) {
          for (auto& v : seq) out.push_back(v);
        }
        return Value::of(out);
      }
    }
    if (!is_number(x) || !is_number(y)) {
      error(line, fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, type_name(a), type_name(b)));
    }
    bool ints = !x.is_number_float() && !y.is_number_float();
    if (ints && op != "/") {
      std::int64_t p = x.is_boolean() ? x.get<bool>() : x.get<std::int64_t>();
      std::int64_t q = y.is_boolean() ? y.get<bool>() : y.get<std::int64_t>();
      std::int64_t r = 0;
      bool overflow = false;
      if (op == "+") {
        overflow = __builtin_add_overflow(p, q, &r);
      } else if (op == "-") {
        overflow = __builtin_sub_overflow(p, q, &r);
      } else if (op == "*") {
        overflow = __builtin_mul_overflow(p, q, &r);
      } else if (op == "//" || op == "%") {
        if (q == 0) error(line, "integer division or modulo by zero");
        if (p == INT64_MIN && q == -1) error(line, "integer overflow");
        std::int64_t d = p / q, m = p % q;
        if (m != 0 && ((m < 0) != (q < 0))) {
          --d;
          m += q;
        }
        r = op == "//" ? d : m;
      } else if (op == "**") {
        if (q < 0) return Value::of(std::pow(static_cast<double>(p), static_cast<double>(q)));
        r = 1;
        for (std::int64_t k = 0; k < q && !overflow; ++k) {
          overflow = __builtin_mul_overflow(r, p, &r);
          if (r == 0 || r == 1) break;
          step(line);
        }
        if (p == -1) r = q % 2 ? -1 : 1;
      }
      if (overflow) error(line, "integer overflow");
      return Value::of(r);
    }
    double p = as_double(x), q = as_double(y);
    if (op == "+") return Value::of(p + q);
    if (op == "-") return Value::of(p - q);
    if (op == "*") return Value::of(p * q);
    if (op == "**") return Value::of(std::pow(p, q));
    if (q == 0) error(line, "division by zero");
    if (op == "/") return Value::of(p / q);
    double m = std::fmod(p, q);
    if (m != 0 && ((m < 0) != (q < 0))) m += q;
    if (op == "%") return Value::of(m);
    return Value::of(std::floor(p / q));
  }

  bool compare(const std::string& op, const Value& a, const Value& b, int line) {
    if (op == "==") return values_equal(a, b);
    if (op == "!=") return !values_equal(a, b);
    if (op == "in" || op == "notin") {
      bool found = false;
      if (b.is_json() && b.json.is_string()) {
        if (!a.is_json() || !a.json.is_string()) error(line, "'in <string>' requires a string as left operand");
        found = b.json.get_ref<const std::string&>().find(a.json.get_ref<const std::string&>()) != std::string::npos;
      } else if (b.is_json() && b.json.is_object()) {
        found = a.is_json() && a.json.is_string() && b.json.contains(a.json.get<std::string>());
      } else if (b.is_json() && b.json.is_array()) {
        for (const auto& x : b.json) found = found || (a.is_json() && py_equal(x, a.json));
      } else if (b.kind == Value::Kind::ns || !b.is_undefined()) {
        error(line, fmt::format("argument of type '{}' is not iterable", type_name(b)));
      }
      return op == "in" ? found : !found;
    }
    if (!a.is_json() || !b.is_json()) {
      error(line, fmt::format("'{}' not supported between '{}' and '{}'", op, type_name(a), type_name(b)));
    }
    try {
      if (op == "<") return py_less(a.json, b.json);
      if (op == ">") return py_less(b.json, a.json);
      if (op == "<=") return !py_less(b.json, a.json);
      return !py_less(a.json, b.json);
    } catch (const std::invalid_argument&) {
      error(line, fmt::format("'{}' not supported between '{}' and '{}'", op, type_name(a), type_name(b)));
    }
  }

  Value eval(const Expr& e) {
    step(e.line);
    switch (e.kind) {
      case Expr::Kind::literal: return Value::of(e.value);
      case Expr::Kind::name: return lookup(e.name);
      case Expr::Kind::list:
      case Expr::Kind::tuple: {
        Json out = Json::array();
        for (const auto& x : e.args) out.push_back(to_json_item(eval(*x), e.line));
        return Value::of(out);
      }
      case Expr::Kind::dict: {
        Json out = Json::object();
        for (std::size_t k = 0; k + 1 < e.args.size(); k += 2) {
          Value key = eval(*e.args[k]);
          if (!key.is_json() || !key.json.is_string()) error(e.line, "dict keys must be strings");
          out[key.json.get<std::string>()] = to_json_item(eval(*e.args[k + 1]), e.line);
        }
        return Value::of(out);
      }
      case Expr::Kind::attr: return get_attr(eval(*e.args[0]), e.name, e.line);
      case Expr::Kind::subscript: return get_item(eval(*e.args[0]), eval(*e.args[1]), e.line);
      case Expr::Kind::slice: return eval_slice(e);
      case Expr::Kind::call: {
        Value callee = eval(*e.args[0]);
        Args a = eval_args(e, 1);
        switch (callee.kind) {
          case Value::Kind::method: return call_method(callee.json, callee.name, a, e.line, limits_);
          case Value::Kind::function: return call_global(callee.name, a, e.line, limits_);
          case Value::Kind::macro: return call_macro(callee, a, e.line);
          case Value::Kind::undefined:
            error(e.line, fmt::format("'{}' is undefined", callee.name));
          default: error(e.line, fmt::format("'{}' object is not callable", type_name(callee)));
        }
      }
      case Expr::Kind::filter: return eval_filters(e, Value());
      case Expr::Kind::test: {
        Value v = eval(*e.args[0]);
        bool r = apply_test(e.name, v, eval_args(e, 1), e.line);
        return Value::of(e.negated ? !r : r);
      }
      case Expr::Kind::not_: return Value::of(!truthy(eval(*e.args[0])));
      case Expr::Kind::neg:
      case Expr::Kind::pos: {
        Value v = eval(*e.args[0]);
        if (!v.is_json() || !is_number(v.json)) error(e.line, fmt::format("bad operand type for unary {}: '{}'", e.kind == Expr::Kind::neg ? '-' : '+', type_name(v)));
        if (e.kind == Expr::Kind::pos) return v.json.is_boolean() ? Value::of(v.json.get<bool>() ? 1 : 0) : v;
        if (v.json.is_number_float()) return Value::of(-v.json.get<double>());
        std::int64_t x = v.json.is_boolean() ? v.json.get<bool>() : v.json.get<std::int64_t>();
        if (x == INT64_MIN) error(e.line, "integer overflow");
        return Value::of(-x);
      }
      case Expr::Kind::binary: return arith(e.name, eval(*e.args[0]), eval(*e.args[1]), e.line);
      case Expr::Kind::compare: {
        Value left = eval(*e.args[0]);
        for (std::size_t k = 0; k < e.ops.size(); ++k) {
          Value right = eval(*e.args[k + 1]);
          if (!compare(e.ops[k], left, right, e.line)) return Value::of(false);
          left = std::move(right);
        }
        return Value::of(true);
      }
      case Expr::Kind::and_: {
        Value a = eval(*e.args[0]);
        return truthy(a) ? eval(*e.args[1]) : a;
      }
      case Expr::Kind::or_: {
        Value a = eval(*e.args[0]);
        return truthy(a) ? a : eval(*e.args[1]);
      }
      case Expr::Kind::cond:
        if (truthy(eval(*e.args[1]))) return eval(*e.args[0]);
        return e.args[2] ? eval(*e.args[2]) : Value::undefined();
    }
    return Value::undefined();
  }

  const JinjaLimits& limits_;
  std::vector<Frame> frames_;
  std::size_t base_ = 0;  // a macro's frames start here; below them only frames_[0] is visible
  std::int64_t steps_ = 0;
  int call_depth_ = 0;
  std::string out_;
};

}  // namespace
}  // namespace jinja

std::string render_jinja(std::string_view source, const nlohmann::ordered_json& context, const JinjaLimits& limits) {
  jinja::Body body = jinja::parse(source, limits.max_nesting);
  return jinja::Renderer(context, limits).render(body);
}

}  // namespace kvlab::harness
