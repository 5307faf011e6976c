// svd/xkv (and KIVI after them) on a ResidentCache: methods/low_rank.cpp's Gram and randomized
// routes with every T-sized tensor left where the backend computes.
#include "compressors/low_rank_resident.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "compressors/chain.h"
#include "compressors/methods/kivi.h"
#include "compressors/methods/low_rank.h"
#include "compressors/methods/low_rank_plan.h"
#include "core/error.h"
#include "core/profile.h"

namespace kvlab::compressors {

namespace {

// Whether the host route would take the Gram route for every group, or HMT (as factors_by_route).
bool resident_route_fits(const LowRankPlan& plan, const CacheShape& shape) {
  if (shape.tokens < 1) return false;
  if (plan.randomized) return true;  // HMT whatever the shape
  for (const auto& g : plan.groups)
    if (shape.tokens < shape.width() * static_cast<std::int64_t>(g.size())) return false;
  return true;
}

// The chain's low-rank stage and, when one follows it, its KIVI parameters; null stage when the
// chain is anything else.
std::pair<const StageSpec*, std::optional<KiviParams>> low_rank_then_kivi(const ChainSpec& chain) {
  const auto s = stages_of(chain);
  if (s.eviction || s.repeats || device_of(s.transform) != DevicePath::low_rank) return {nullptr, std::nullopt};
  if (!s.quantizer) return {s.transform, std::nullopt};
  if (device_of(s.quantizer) != DevicePath::kivi) return {nullptr, std::nullopt};
  return {s.transform, kivi_params(*s.quantizer)};
}

}  // namespace

bool resident_low_rank_applies(const ChainSpec& chain, const CacheShape& shape) {
  const auto [spec, kivi] = low_rank_then_kivi(chain);
  return spec && resident_route_fits(make_low_rank_plan(*spec, shape), shape);
}

std::int64_t compress_low_rank_resident(const ChainSpec& chain, ResidentCache& cache, linalg::Backend& backend) {
  const auto [found, kivi] = low_rank_then_kivi(chain);
  if (!found) fail("{}: the resident route takes one svd or xkv stage, optionally followed by kivi", chain.to_string());
  const StageSpec& spec = *found;
  const KiviParams* quantizer = kivi ? &*kivi : nullptr;  // the quantizer after the stage, if any
  const auto& shape = cache.shape();
  const LowRankPlan plan = make_low_rank_plan(spec, shape);  // fails on anything but svd/xkv
  if (!resident_route_fits(plan, shape))
    fail("{}: the resident route takes caches with at least as many tokens as a group has columns, unless the "
         "solver is randomized (T = {}, H·D = {})",
         spec.method, shape.tokens, shape.width());
  const std::int64_t T = shape.tokens, N = shape.width();
  void* stream = cache.stream();
  std::int64_t bytes = 0;  // what the chain stores: the packed forms' sizes, or 2 per fp16 value
  for (std::size_t g = 0; g < plan.groups.size(); ++g)
    for (Part part : {Part::key, Part::value}) {
      if (!plan.compresses(part)) continue;
      const auto& layers = plan.groups[g];
      const std::int64_t c = N * static_cast<std::int64_t>(layers.size());
      const std::int64_t r = std::min({plan.rank(part), T, c});
      const float* x = nullptr;
      {
        const core::ProfileScope scope("low-rank resident: gather");
        x = cache.gather(layers, part);
      }
      linalg::SubspaceFactors f;
      if (plan.randomized) {
        const core::ProfileScope scope("low-rank resident: randomized subspace");
        f = backend.resident_randomized_top(
            x, T, c, r, {plan.oversample, plan.iters, plan.seed, sketch_stream(g, part), plan.f64()}, stream);
      } else {
        const core::ProfileScope scope("low-rank resident: Gram and eigenpairs");
        const auto p = plan.gram_precision;
        const void* input = backend.resident_gram_reads_input(p) ? cache.gram_input(p) : nullptr;
        f = backend.resident_gram_top(x, input, T, c, r, p, stream);
      }
      // v only (A is formed from the canonical V_r below). X̂ = A·B does not see signs, but the
      // factors then equal the host route's, whatever the eigensolver.
      f.canonicalize_signs();
      const core::ProfileScope scope("low-rank resident: project and rebuild");
      float* v = cache.buffer(0, c * r);
      float* a = cache.buffer(1, T * r);
      float* rows = cache.buffer(2, T * N);
      cache.upload(f.v.data(), c * r, v);
      // A = X·V_r: Aᵀ (r×T, the column-major view of row-major A) = V_rᵀ·Xᵀ.
      backend.resident_gemm(true, false, r, T, c, 1.f, v, c, x, c, 0.f, a, r, stream);
      // A and every B_l (layer l's rows of V_r: [r, N] row-major from column i·N, row stride c),
      // at fp16 and, with KIVI, packed; the buffers become what is stored.
      bytes += cache.store(low_rank_a_name(g, part), a, T, r, r, QuantLayout::per_token, /*token_rows=*/true, quantizer);
      for (std::size_t i = 0; i < layers.size(); ++i)
        bytes += cache.store(low_rank_b_name(layers[i], part), v + static_cast<std::int64_t>(i) * N, r, N, c,
                             QuantLayout::per_token, /*token_rows=*/false, quantizer);
      for (std::size_t i = 0; i < layers.size(); ++i) {
        // X̂_lᵀ (N×T) = B_lᵀ·Aᵀ, with B_lᵀ = V_r's rows i·N … (i+1)·N − 1 (column-major, ld c).
        backend.resident_gemm(false, false, N, T, r, 1.f, v + static_cast<std::int64_t>(i) * N, c, a, r, 0.f, rows, N,
                              stream);
        cache.write(layers[i], part, rows);
      }
    }
  // The layer parts the spec leaves alone: KIVI's packed form of them, or the model's values at fp16.
  for (int l = 0; l < shape.layers; ++l)
    for (Part part : {Part::key, Part::value})
      if (plan.group_of[static_cast<std::size_t>(l)] < 0 || !plan.compresses(part)) {
        const core::ProfileScope scope("low-rank resident: kivi of the uncompressed layers");
        bytes += cache.store_uncompressed(l, part, quantizer);
      }
  return bytes;
}

}  // namespace kvlab::compressors
