#include "results/records.h"

#include <array>
#include <utility>

#include "core/error.h"

namespace kvlab::results {

namespace {
constexpr std::array<std::pair<RunKind, std::string_view>, 4> kKinds{
    {{RunKind::analyze, "analyze"}, {RunKind::compress, "compress"}, {RunKind::eval, "eval"}, {RunKind::other, "other"}}};
constexpr std::array<std::pair<Scope, std::string_view>, 4> kScopes{
    {{Scope::run, "run"}, {Scope::layer, "layer"}, {Scope::task, "task"}, {Scope::sample, "sample"}}};
}  // namespace

std::string_view to_string(RunKind kind) {
  for (const auto& [k, name] : kKinds)
    if (k == kind) return name;
  return "other";
}

RunKind parse_run_kind(std::string_view text) {
  for (const auto& [k, name] : kKinds)
    if (name == text) return k;
  fail("unknown run kind '{}' (known: analyze, compress, eval, other)", text);
}

std::string_view to_string(Scope scope) {
  for (const auto& [s, name] : kScopes)
    if (s == scope) return name;
  return "run";
}

Scope parse_scope(std::string_view text) {
  for (const auto& [s, name] : kScopes)
    if (name == text) return s;
  fail("unknown metric scope '{}' (known: run, layer, task, sample)", text);
}

}  // namespace kvlab::results
