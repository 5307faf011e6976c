// The syntax tree the Jinja parser builds and the renderer walks. Every node keeps the template
// line it starts on, for error messages.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace kvlab::harness::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    literal,    // value
    name,       // name
    list,       // args: items
    tuple,      // args: items (a list at runtime)
    dict,       // args: key, value, key, value, ...
    attr,       // args[0].name
    subscript,  // args[0][args[1]]
    slice,      // args[0][args[1]:args[2]:args[3]], each bound may be null
    call,       // args[0](args[1..], kwargs)
    filter,     // args[0] | name(args[1..], kwargs)
    test,       // args[0] is [not] name(args[1..])
    not_,       // not args[0]
    neg,        // -args[0]
    pos,        // +args[0]
    binary,     // args[0] name args[1]: + - * / // % ** ~
    compare,    // args[0] ops[0] args[1] ops[1] args[2] ...: == != < > <= >= in notin
    and_,       // args[0] and args[1]
    or_,        // args[0] or args[1]
    cond,       // args[0] if args[1] else args[2] (args[2] null: undefined)
  };
  Kind kind;
  int line;
  nlohmann::ordered_json value;
  std::string name;
  bool negated = false;  // test: "is not"
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  std::vector<std::string> ops;
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

struct Node {
  enum class Kind {
    text,          // text
    output,        // {{ expr }}
    if_,           // branches: (condition, body); a final else has a null condition
    for_,          // for targets in expr [if cond] body [else else_body]
    set,           // set targets = expr (one target, or several unpacked from a sequence)
    set_attr,      // set targets[0].attr = expr (a namespace)
    set_block,     // set targets[0] [| filters in expr, operand null] body endset
    macro,         // macro targets[0](params) body endmacro
    break_,
    continue_,
    generation,    // transformers' {% generation %} body {% endgeneration %}: renders body
    filter_block,  // filter expr (filters with a null operand) body endfilter
  };
  Kind kind;
  int line;
  std::string text;
  ExprPtr expr;
  ExprPtr cond;
  std::vector<std::string> targets;
  std::string attr;
  std::vector<std::pair<ExprPtr, Body>> branches;
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro parameters, default or null
  Body body;
  Body else_body;
};

}  // namespace kvlab::harness::jinja
