// The method table: the one place that lists every method. Each method's own file defines
// `MethodDef <name>_method()` — its keys, factory, sweep and needs (compressors/spec.h); adding
// a method is that file, its test and one line here.
#include "compressors/compressor.h"
#include "core/error.h"

// Every method, in the order `kvlab compress --help` lists them.
#define KVLAB_METHODS(X) \
  X(full)                \
  X(svd)                 \
  X(xkv)                 \
  X(minicache)           \
  X(commonkv)            \
  X(palu)                \
  X(kivi)                \
  X(gear)                \
  X(kvquant)             \
  X(qjl)                 \
  X(think)               \
  X(turboquant)          \
  X(streamingllm)        \
  X(h2o)                 \
  X(snapkv)              \
  X(pyramidkv)           \
  X(knorm)               \
  X(keydiff)             \
  X(tova)                \
  X(expected_attention)  \
  X(random)              \
  X(adakv)               \
  X(chunkkv)             \
  X(criticalkv)          \
  X(duoattention)        \
  X(kvzip)               \
  X(quest)

namespace kvlab::compressors {

#define KVLAB_DECLARE_METHOD(name) MethodDef name##_method();
KVLAB_METHODS(KVLAB_DECLARE_METHOD)
#undef KVLAB_DECLARE_METHOD

const std::vector<MethodDef>& methods() {
#define KVLAB_METHOD_ENTRY(name) name##_method(),
  static const std::vector<MethodDef> table = {KVLAB_METHODS(KVLAB_METHOD_ENTRY)};
#undef KVLAB_METHOD_ENTRY
  return table;
}

bool selects_per_query_head(const StageSpec& stage) {
  const auto& def = method(stage.method);
  return def.per_query_head && def.per_query_head(stage);
}

namespace {

const MethodDef& of_kind(const StageSpec& spec, StageKind kind) {
  const auto& def = method(spec.method);
  if (def.kind != kind) fail("'{}' is not {} method (it is a {} method)", spec.method,
                             kind == StageKind::eviction ? "an eviction" : kind == StageKind::transform ? "a transform" : "a quantizer",
                             to_string(def.kind));
  return def;
}

}  // namespace

std::unique_ptr<EvictionStage> make_eviction(const StageSpec& spec) {
  return of_kind(spec, StageKind::eviction).make_eviction(spec);
}

std::unique_ptr<TransformStage> make_transform(const StageSpec& spec) {
  return of_kind(spec, StageKind::transform).make_transform(spec);
}

std::unique_ptr<QuantizerStage> make_quantizer(const StageSpec& spec) {
  return of_kind(spec, StageKind::quantizer).make_quantizer(spec);
}

}  // namespace kvlab::compressors
