// Recursive descent over jinja_lexer's tokens, one function per jinja2 grammar level
// (condexpr > or > and > not > compare > math1 > concat > math2 > pow > unary > primary).
#include "harness/tokenizer/jinja_parser.h"

#include <charconv>
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "core/error.h"
#include "harness/tokenizer/jinja_lexer.h"

namespace kvlab::harness::jinja {
namespace {

using Json = nlohmann::ordered_json;

class Parser {
 public:
  Parser(std::vector<Token> tokens, int max_nesting) : toks_(std::move(tokens)), max_nesting_(max_nesting) {}

  Body parse_template() {
    Body body = parse_body({});
    return body;
  }

 private:
  // --- token helpers ---------------------------------------------------------------------
  const Token& cur() const { return toks_[i_]; }
  const Token& peek(std::size_t k = 1) const { return toks_[std::min(i_ + k, toks_.size() - 1)]; }
  void next() {
    if (i_ + 1 < toks_.size()) ++i_;
  }
  bool is_op(std::string_view op) const { return cur().type == Tok::op && cur().value == op; }
  bool is_name(std::string_view n) const { return cur().type == Tok::name && cur().value == n; }
  bool skip_op(std::string_view op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(std::string_view n) {
    if (!is_name(n)) return false;
    next();
    return true;
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::text: return "template text";
      case Tok::var_begin: return "'{{'";
      case Tok::var_end: return "'}}'";
      case Tok::block_begin: return "'{%'";
      case Tok::block_end: return "'%}'";
      case Tok::eof: return "end of template";
      case Tok::string: return "string literal";
      default: return "'" + t.value + "'";
    }
  }
  [[noreturn]] void error(const std::string& what) const { fail("jinja template line {}: {}", cur().line, what); }
  void expect_op(std::string_view op) {
    if (!skip_op(op)) error(fmt::format("expected '{}', got {}", op, describe(cur())));
  }
  std::string expect_name() {
    if (cur().type != Tok::name) error(fmt::format("expected a name, got {}", describe(cur())));
    std::string n = cur().value;
    next();
    return n;
  }
  void expect_block_end() {
    if (cur().type != Tok::block_end) error(fmt::format("expected '%}}', got {}", describe(cur())));
    next();
  }

  struct Depth {
    Parser& p;
    explicit Depth(Parser& parser) : p(parser) {
      if (++p.depth_ > p.max_nesting_) p.error("template nested too deeply");
    }
    ~Depth() { --p.depth_; }
  };

  static ExprPtr make(Expr::Kind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // --- statements -----------------------------------------------------------------------
  // Parses nodes until a block tag whose name is in `ends` (left unconsumed, cur() is its name)
  // or the end of the template (an error when `ends` is not empty).
  Body parse_body(std::initializer_list<std::string_view> ends) {
    Depth depth(*this);
    Body body;
    while (true) {
      const Token& t = cur();
      if (t.type == Tok::eof) {
        if (ends.size() != 0) {
          std::string list;
          for (auto e : ends) list += (list.empty() ? "'" : " or '") + std::string(e) + "'";
          error(fmt::format("unexpected end of template, expected {}", list));
        }
        return body;
      }
      if (t.type == Tok::text) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::text;
        n->line = t.line;
        n->text = t.value;
        body.push_back(std::move(n));
        next();
      } else if (t.type == Tok::var_begin) {
        next();
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::output;
        n->line = t.line;
        n->expr = parse_tuple(true);
        if (cur().type != Tok::var_end) error(fmt::format("expected '}}}}', got {}", describe(cur())));
        next();
        body.push_back(std::move(n));
      } else if (t.type == Tok::block_begin) {
        next();
        if (cur().type != Tok::name) error(fmt::format("expected a tag name, got {}", describe(cur())));
        for (auto e : ends) {
          if (cur().value == e) return body;
        }
        body.push_back(parse_statement());
      } else {
        error(fmt::format("unexpected {}", describe(t)));
      }
    }
  }

  NodePtr parse_statement() {
    const std::string tag = cur().value;
    const int line = cur().line;
    auto n = std::make_unique<Node>();
    n->line = line;
    next();
    if (tag == "if") {
      n->kind = Node::Kind::if_;
      ExprPtr c = parse_tuple(false);
      expect_block_end();
      while (true) {
        Body b = parse_body({"elif", "else", "endif"});
        n->branches.emplace_back(std::move(c), std::move(b));
        std::string end = cur().value;
        next();
        if (end == "elif") {
          c = parse_tuple(false);
          expect_block_end();
        } else if (end == "else") {
          expect_block_end();
          n->branches.emplace_back(nullptr, parse_body({"endif"}));
          next();
          expect_block_end();
          break;
        } else {
          expect_block_end();
          break;
        }
      }
    } else if (tag == "for") {
      n->kind = Node::Kind::for_;
      n->targets = parse_targets();
      if (!skip_name("in")) error(fmt::format("expected 'in', got {}", describe(cur())));
      n->expr = parse_tuple(false);
      if (skip_name("if")) n->cond = parse_expression(true);
      if (is_name("recursive")) error("recursive for loops are not supported");
      expect_block_end();
      n->body = parse_body({"endfor", "else"});
      bool has_else = cur().value == "else";
      next();
      expect_block_end();
      if (has_else) {
        n->else_body = parse_body({"endfor"});
        next();
        expect_block_end();
      }
    } else if (tag == "set") {
      std::string first = expect_name();
      if (skip_op(".")) {
        n->kind = Node::Kind::set_attr;
        n->targets = {first};
        n->attr = expect_name();
        expect_op("=");
        n->expr = parse_tuple(true);
        expect_block_end();
      } else {
        n->targets = {first};
        while (skip_op(",")) n->targets.push_back(expect_name());
        if (skip_op("=")) {
          n->kind = Node::Kind::set;
          n->expr = parse_tuple(true);
          expect_block_end();
        } else {
          if (n->targets.size() != 1) error("a block set takes one name");
          n->kind = Node::Kind::set_block;
          if (is_op("|")) n->expr = parse_filters(nullptr);
          expect_block_end();
          n->body = parse_body({"endset"});
          next();
          expect_block_end();
        }
      }
    } else if (tag == "macro") {
      n->kind = Node::Kind::macro;
      n->targets = {expect_name()};
      expect_op("(");
      while (!is_op(")")) {
        if (!n->params.empty()) expect_op(",");
        if (is_op(")")) break;
        std::string p = expect_name();
        ExprPtr def;
        if (skip_op("=")) def = parse_expression(true);
        n->params.emplace_back(p, std::move(def));
      }
      next();
      expect_block_end();
      n->body = parse_body({"endmacro"});
      next();
      expect_block_end();
    } else if (tag == "break" || tag == "continue") {
      n->kind = tag == "break" ? Node::Kind::break_ : Node::Kind::continue_;
      expect_block_end();
    } else if (tag == "generation") {
      n->kind = Node::Kind::generation;
      expect_block_end();
      n->body = parse_body({"endgeneration"});
      next();
      expect_block_end();
    } else if (tag == "filter") {
      n->kind = Node::Kind::filter_block;
      n->expr = parse_filter_chain(nullptr, line);
      expect_block_end();
      n->body = parse_body({"endfilter"});
      next();
      expect_block_end();
    } else {
      fail("jinja template line {}: unknown or unsupported tag '{}'", line, tag);
    }
    return n;
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> t;
    bool paren = skip_op("(");
    t.push_back(expect_name());
    while (skip_op(",")) {
      if (is_name("in") || is_op(")")) break;
      t.push_back(expect_name());
    }
    if (paren) expect_op(")");
    return t;
  }

  // --- expressions ----------------------------------------------------------------------
  // expression [, expression ...]: a tuple when there is a comma.
  ExprPtr parse_tuple(bool with_condexpr) {
    int line = cur().line;
    ExprPtr first = parse_expression(with_condexpr);
    if (!is_op(",")) return first;
    auto t = make(Expr::Kind::tuple, line);
    t->args.push_back(std::move(first));
    while (skip_op(",")) {
      if (cur().type == Tok::block_end || cur().type == Tok::var_end || is_name("if")) break;
      t->args.push_back(parse_expression(with_condexpr));
    }
    return t;
  }

  ExprPtr parse_expression(bool with_condexpr) {
    Depth depth(*this);
    return with_condexpr ? parse_condexpr() : parse_or();
  }

  ExprPtr parse_condexpr() {
    ExprPtr e = parse_or();
    while (is_name("if")) {
      int line = cur().line;
      next();
      auto c = make(Expr::Kind::cond, line);
      c->args.push_back(std::move(e));
      c->args.push_back(parse_or());
      c->args.push_back(skip_name("else") ? parse_condexpr() : nullptr);
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(Expr::Kind kind, ExprPtr a, ExprPtr b, int line, std::string op = {}) {
    auto e = make(kind, line);
    e->name = std::move(op);
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (is_name("or")) {
      int line = cur().line;
      next();
      e = binary(Expr::Kind::or_, std::move(e), parse_and(), line);
    }
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (is_name("and")) {
      int line = cur().line;
      next();
      e = binary(Expr::Kind::and_, std::move(e), parse_not(), line);
    }
    return e;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      Depth depth(*this);
      auto e = make(Expr::Kind::not_, cur().line);
      next();
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    int line = cur().line;
    ExprPtr first = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == Tok::op && (cur().value == "==" || cur().value == "!=" || cur().value == "<" ||
                                    cur().value == ">" || cur().value == "<=" || cur().value == ">=")) {
        op = cur().value;
        next();
      } else if (is_name("in")) {
        op = "in";
        next();
      } else if (is_name("not") && peek().type == Tok::name && peek().value == "in") {
        op = "notin";
        next();
        next();
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(Expr::Kind::compare, line);
        cmp->args.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }
  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = cur().value;
      int line = cur().line;
      next();
      e = binary(Expr::Kind::binary, std::move(e), parse_concat(), line, op);
    }
    return e;
  }
  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (is_op("~")) {
      int line = cur().line;
      next();
      e = binary(Expr::Kind::binary, std::move(e), parse_math2(), line, "~");
    }
    return e;
  }
  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = cur().value;
      int line = cur().line;
      next();
      e = binary(Expr::Kind::binary, std::move(e), parse_pow(), line, op);
    }
    return e;
  }
  ExprPtr parse_pow() {
    ExprPtr e = parse_unary(true);
    while (is_op("**")) {
      int line = cur().line;
      next();
      e = binary(Expr::Kind::binary, std::move(e), parse_unary(true), line, "**");
    }
    return e;
  }
  ExprPtr parse_unary(bool with_filter) {
    Depth depth(*this);
    ExprPtr e;
    int line = cur().line;
    if (is_op("-") || is_op("+")) {
      e = make(is_op("-") ? Expr::Kind::neg : Expr::Kind::pos, line);
      next();
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_primary();
    }
    e = parse_postfix(std::move(e));
    if (with_filter) e = parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = cur();
    int line = t.line;
    if (t.type == Tok::name) {
      auto e = make(Expr::Kind::literal, line);
      if (t.value == "true" || t.value == "True") {
        e->value = true;
      } else if (t.value == "false" || t.value == "False") {
        e->value = false;
      } else if (t.value == "none" || t.value == "None") {
        e->value = nullptr;
      } else {
        e->kind = Expr::Kind::name;
        e->name = t.value;
      }
      next();
      return e;
    }
    if (t.type == Tok::string) {
      std::string s;
      while (cur().type == Tok::string) {
        s += cur().value;
        next();
      }
      auto e = make(Expr::Kind::literal, line);
      e->value = s;
      return e;
    }
    if (t.type == Tok::integer) {
      auto e = make(Expr::Kind::literal, line);
      std::int64_t v = 0;
      auto [p, ec] = std::from_chars(t.value.data(), t.value.data() + t.value.size(), v);
      if (ec != std::errc() || p != t.value.data() + t.value.size()) error("integer literal out of range");
      e->value = v;
      next();
      return e;
    }
    if (t.type == Tok::floating) {
      auto e = make(Expr::Kind::literal, line);
      e->value = std::strtod(t.value.c_str(), nullptr);  // 1e999 is inf, as in Python
      next();
      return e;
    }
    if (is_op("(")) {
      next();
      if (skip_op(")")) return make(Expr::Kind::tuple, line);
      ExprPtr inner = parse_expression(true);
      if (is_op(",")) {
        auto tup = make(Expr::Kind::tuple, line);
        tup->args.push_back(std::move(inner));
        while (skip_op(",")) {
          if (is_op(")")) break;
          tup->args.push_back(parse_expression(true));
        }
        inner = std::move(tup);
      }
      expect_op(")");
      return inner;
    }
    if (is_op("[")) {
      next();
      auto e = make(Expr::Kind::list, line);
      while (!is_op("]")) {
        if (!e->args.empty()) expect_op(",");
        if (is_op("]")) break;
        e->args.push_back(parse_expression(true));
      }
      next();
      return e;
    }
    if (is_op("{")) {
      next();
      auto e = make(Expr::Kind::dict, line);
      while (!is_op("}")) {
        if (!e->args.empty()) expect_op(",");
        if (is_op("}")) break;
        e->args.push_back(parse_expression(true));
        expect_op(":");
        e->args.push_back(parse_expression(true));
      }
      next();
      return e;
    }
    error(fmt::format("unexpected {}", describe(t)));
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      int line = cur().line;
      if (is_op(".")) {
        next();
        if (cur().type == Tok::integer) {
          auto s = make(Expr::Kind::subscript, line);
          auto idx = make(Expr::Kind::literal, line);
          std::int64_t v = 0;
          auto [end, ec] = std::from_chars(cur().value.data(), cur().value.data() + cur().value.size(), v);
          if (ec != std::errc() || end != cur().value.data() + cur().value.size()) error("integer literal out of range");
          idx->value = v;
          next();
          s->args.push_back(std::move(e));
          s->args.push_back(std::move(idx));
          e = std::move(s);
        } else {
          auto a = make(Expr::Kind::attr, line);
          a->name = expect_name();
          a->args.push_back(std::move(e));
          e = std::move(a);
        }
      } else if (is_op("[")) {
        next();
        ExprPtr parts[3];
        bool is_slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!is_op(":") && !is_op("]")) parts[k] = parse_expression(true);
          if (k < 2 && skip_op(":")) {
            is_slice = true;
          } else {
            break;
          }
        }
        expect_op("]");
        if (is_slice) {
          auto s = make(Expr::Kind::slice, line);
          s->args.push_back(std::move(e));
          for (auto& p : parts) s->args.push_back(std::move(p));
          e = std::move(s);
        } else {
          if (!parts[0]) error("expected a subscript");
          auto s = make(Expr::Kind::subscript, line);
          s->args.push_back(std::move(e));
          s->args.push_back(std::move(parts[0]));
          e = std::move(s);
        }
      } else if (is_op("(")) {
        auto c = make(Expr::Kind::call, line);
        c->args.push_back(std::move(e));
        parse_call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  // "(" [arg {"," arg}] ")" with keyword arguments name=expr; cur() is "(".
  void parse_call_args(Expr& e) {
    expect_op("(");
    bool first = true;
    while (!is_op(")")) {
      if (!first) expect_op(",");
      first = false;
      if (is_op(")")) break;
      if (cur().type == Tok::name && peek().type == Tok::op && peek().value == "=") {
        std::string k = cur().value;
        next();
        next();
        e.kwargs.emplace_back(k, parse_expression(true));
      } else {
        if (!e.kwargs.empty()) error("positional argument after a keyword argument");
        e.args.push_back(parse_expression(true));
      }
    }
    next();
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        e = parse_filters(std::move(e));
      } else if (is_name("is")) {
        int line = cur().line;
        next();
        auto t = make(Expr::Kind::test, line);
        t->negated = skip_name("not");
        t->name = expect_name();
        while (skip_op(".")) {
          t->name += '.';
          t->name += expect_name();
        }
        t->args.push_back(std::move(e));
        if (is_op("(")) {
          parse_call_args(*t);
        } else if ((cur().type == Tok::name || cur().type == Tok::string || cur().type == Tok::integer ||
                    cur().type == Tok::floating || is_op("[") || is_op("{")) &&
                   !is_name("else") && !is_name("or") && !is_name("and")) {
          if (is_name("is")) error("tests cannot be chained with 'is'");
          t->args.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else if (is_op("(")) {
        auto c = make(Expr::Kind::call, cur().line);
        c->args.push_back(std::move(e));
        parse_call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  // One or more "| name(args)" applied to e (null for filter blocks and block sets).
  ExprPtr parse_filters(ExprPtr e) {
    while (skip_op("|")) e = parse_one_filter(std::move(e), cur().line);
    return e;
  }
  ExprPtr parse_filter_chain(ExprPtr e, int line) {
    e = parse_one_filter(std::move(e), line);
    return parse_filters(std::move(e));
  }
  ExprPtr parse_one_filter(ExprPtr e, int line) {
    auto f = make(Expr::Kind::filter, line);
    f->name = expect_name();
    while (skip_op(".")) {
      f->name += '.';
      f->name += expect_name();
    }
    f->args.push_back(std::move(e));
    if (is_op("(")) parse_call_args(*f);
    return f;
  }

  std::vector<Token> toks_;
  std::size_t i_ = 0;
  int depth_ = 0;
  int max_nesting_;
};

}  // namespace

Body parse(std::string_view source, int max_nesting) { return Parser(lex(source), max_nesting).parse_template(); }

}  // namespace kvlab::harness::jinja
