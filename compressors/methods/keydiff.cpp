// keydiff: keeps, per layer and KV head, the tokens whose keys are LEAST similar (cosine) to the
// head's mean normalised key (docs/methods/key-scorers.md §4). Park et al., "KeyDiff: Key
// Similarity-Based KV Cache Eviction for Long-Context LLM Inference in Resource-Constrained
// Environments", arXiv 2504.15364; kvlab follows kvpress's KeyDiffPress (NVIDIA/kvpress
// kvpress/presses/keydiff_press.py), over the cached, post-RoPE keys k_t of one KV head:
//
//   anchor   = mean_t k_t / max(‖k_t‖, 1e-12)                     (F.normalize, then mean over T)
//   score_t  = −k_t·anchor / (max(‖k_t‖, 1e-8) · max(‖anchor‖, 1e-8))   (−F.cosine_similarity)
//
// and ScorerPress's top-k per KV head. The anchor is taken over all T prompt tokens of the layer
// at once; the paper's block-wise prefill (kvpress BlockPress, block_size 128) is not modelled.
// Budget as every eviction method's (eviction.h eviction_budget; kvpress floors
// T·(1 − compression_ratio), kvlab rounds, at least 1). Ties go to the earlier token.
//
// Keys are rotated at their true positions first (compressors/attention.h rotate_keys): unlike
// a norm, the mean direction depends on RoPE. Everything after the f32 rotation is in double.
//
// Device path `scores`: the resident route (harness/resident_routes.cpp) calls select() on a
// KvCacheSource, whose layer(l, key) copies only that layer's keys to host f32 (no values, no
// write-back); the keep masks go back and the kept cells stay as the model computed them.
#include <algorithm>
#include <cmath>

#include "compressors/attention.h"
#include "compressors/methods/eviction.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

constexpr double kNormalizeEps = 1e-12;  // torch.nn.functional.normalize's default eps
constexpr double kCosineEps = 1e-8;      // torch.nn.functional.cosine_similarity's default eps

class KeyDiff final : public BudgetedEviction {
 public:
  explicit KeyDiff(const StageSpec& spec) : BudgetedEviction(spec) {}

  HeadScores score_layer(const CompressContext& ctx, int l, std::int64_t) const override {
    const auto& cache = ctx.cache;
    const auto& s = cache.shape();
    const std::int64_t T = s.tokens;
    const int H = s.kv_heads, D = s.head_dim;
    if (static_cast<std::int64_t>(cache.positions().size()) != T)
      fail("keydiff: {} has {} positions for {} tokens", cache.describe(), cache.positions().size(), T);
    auto key = cache.layer(l, Part::key);
    if (key.shape != core::Shape{T, H, D}) fail("keydiff: {}: layer {} keys have the wrong shape", cache.describe(), l);
    const auto key_rot = rotate_keys(cache, l, std::move(key));
    std::vector<double> norm(static_cast<std::size_t>(T)), anchor(static_cast<std::size_t>(D));
    HeadScores out{std::vector<double>(static_cast<std::size_t>(H * T)), {}};
    for (int g = 0; g < H; ++g) {
      double* score = out.primary.data() + g * T;
      const auto row = [&](std::int64_t t) { return key_rot.data.data() + (t * H + g) * D; };
      std::fill(anchor.begin(), anchor.end(), 0.0);
      for (std::int64_t t = 0; t < T; ++t) {
        const float* k = row(t);
        double sq = 0;
        for (int d = 0; d < D; ++d) sq += double{k[d]} * k[d];
        const double n = std::sqrt(sq);
        norm[static_cast<std::size_t>(t)] = n;
        const double inv = 1.0 / std::max(n, kNormalizeEps);
        for (int d = 0; d < D; ++d) anchor[static_cast<std::size_t>(d)] += k[d] * inv;
      }
      double anchor_sq = 0;
      for (auto& a : anchor) {
        a /= static_cast<double>(T);
        anchor_sq += a * a;
      }
      const double anchor_norm = std::max(std::sqrt(anchor_sq), kCosineEps);
      for (std::int64_t t = 0; t < T; ++t) {
        const float* k = row(t);
        double dot = 0;
        for (int d = 0; d < D; ++d) dot += k[d] * anchor[static_cast<std::size_t>(d)];
        score[t] = -dot / (std::max(norm[static_cast<std::size_t>(t)], kCosineEps) * anchor_norm);
      }
    }
    return out;
  }

  void add_notes(const CacheShape&, nlohmann::json& n) const override {
    n["score"] = "-cos(k, mean of normalised post-RoPE keys) per KV head over the whole prompt (no blocks)";
  }
};

}  // namespace

MethodDef keydiff_method() {
  return eviction_method<KeyDiff>({"keydiff", StageKind::eviction,
              "KeyDiff (docs/methods/key-scorers.md §4; kvpress KeyDiffPress, arXiv 2504.15364): keeps, per layer and KV "
              "head, the budget tokens whose post-RoPE keys have the lowest cosine similarity to the mean normalised key "
              "of the head; no queries. The anchor is over the whole prompt (the paper's block-wise prefill, kvpress "
              "BlockPress, is not modelled).",
              {eviction_keep_param(), eviction_budget_param()},
              check_eviction_budget});
}

}  // namespace kvlab::compressors
