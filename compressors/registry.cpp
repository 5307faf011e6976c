// The method table and the stage factories: the one place that knows every method.
#include "compressors/commonkv.h"
#include "compressors/compressor.h"
#include "compressors/dense.h"
#include "compressors/eviction.h"
#include "compressors/kivi.h"
#include "compressors/low_rank.h"
#include "compressors/minicache.h"
#include "core/error.h"

namespace kvlab::compressors {

const std::vector<MethodDef>& methods() {
  static const std::vector<MethodDef> table = {
      full_method(),         svd_method(),    xkv_method(),   minicache_method(), commonkv_method(),
      kivi_method(),         streamingllm_method(), h2o_method(), snapkv_method(),  pyramidkv_method(),
  };
  return table;
}

std::unique_ptr<EvictionStage> make_eviction(const StageSpec& spec) {
  if (method(spec.method).kind != StageKind::eviction) fail("'{}' is not an eviction method", spec.method);
  return make_eviction_method(spec);
}

std::unique_ptr<TransformStage> make_transform(const StageSpec& spec) {
  const auto& name = spec.method;
  if (name == "full") return make_full(spec);
  if (name == "svd" || name == "xkv") return make_low_rank(spec);
  if (name == "minicache") return make_minicache(spec);
  if (name == "commonkv") return make_commonkv(spec);
  fail("'{}' is not a transform method", name);
}

std::unique_ptr<QuantizerStage> make_quantizer(const StageSpec& spec) {
  if (spec.method == "kivi") return make_kivi(spec);
  fail("'{}' is not a quantizer", spec.method);
}

TransformSweep transform_sweep(std::string_view method) {
  if (method == "svd" || method == "xkv") return compress_low_rank_sweep;
  return {};
}

}  // namespace kvlab::compressors
