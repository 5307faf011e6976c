// knorm: keeps, per layer and KV head, the tokens whose keys have the LOWEST L2 norm
// (docs/methods/key-scorers.md §3). Devoto, Zhao, Scardapane, Minervini, "A Simple and Effective
// L2 Norm-Based Strategy for KV Cache Compression", EMNLP 2024, arXiv 2406.11430; kvlab follows
// kvpress's KnormPress (NVIDIA/kvpress kvpress/presses/knorm_press.py: score = −‖k‖ over the
// cached keys, ScorerPress's top-k per KV head, every layer alike).
//
// The budget is every eviction method's (`keep`/`budget`, eviction.h eviction_budget): kvpress
// keeps int(T·(1 − compression_ratio)) (floor), the authors' own l2compress ceil(keep_ratio·T);
// kvlab rounds, at least 1. Ties go to the earlier token (keep_top_scores).
//
// The norm is taken on the pre-RoPE keys the cache source gives: RoPE rotates pairs of
// coordinates, so ‖RoPE(k)‖ = ‖k‖ and this is the post-RoPE norm kvpress scores, without the f32
// rounding a rotation would add (knorm_test.cpp checks it against keys rotated in double).
//
// Device path `scores`: the resident route (harness/resident_routes.cpp) calls select() on a
// KvCacheSource, whose layer(l, key) copies only that layer's keys to host f32 (no values, no
// write-back); the keep masks go back and the kept cells stay as the model computed them.
#include <cmath>

#include "compressors/methods/eviction.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

class Knorm final : public BudgetedEviction {
 public:
  explicit Knorm(const StageSpec& spec) : BudgetedEviction(spec) {}

  HeadScores score_layer(const CompressContext& ctx, int l, std::int64_t) const override {
    const auto& s = ctx.cache.shape();
    const std::int64_t T = s.tokens;
    const int H = s.kv_heads, D = s.head_dim;
    const auto key = ctx.cache.layer(l, Part::key);
    if (key.shape != core::Shape{T, H, D}) fail("knorm: {}: layer {} keys have the wrong shape", ctx.cache.describe(), l);
    HeadScores out{std::vector<double>(static_cast<std::size_t>(H * T)), {}};
    for (int g = 0; g < H; ++g) {
      double* score = out.primary.data() + g * T;
      for (std::int64_t t = 0; t < T; ++t) {
        const float* k = key.data.data() + (t * H + g) * D;
        double sq = 0;
        for (int d = 0; d < D; ++d) sq += double{k[d]} * k[d];
        score[t] = -std::sqrt(sq);  // KnormPress: −keys.norm(dim=−1)
      }
    }
    return out;
  }

  void add_notes(const CacheShape&, nlohmann::json& n) const override {
    n["score"] = "-||k||_2 per KV head (lowest key norms kept)";
  }
};

}  // namespace

MethodDef knorm_method() {
  return eviction_method<Knorm>({"knorm", StageKind::eviction,
              "K-norm (docs/methods/key-scorers.md §3; kvpress KnormPress, arXiv 2406.11430): keeps, per layer and KV "
              "head, the budget tokens whose keys have the lowest L2 norm; no queries, sinks or windows. Every layer is "
              "compressed (the authors' l2compress can skip layers, e.g. 0 and 1; kvpress does not).",
              {eviction_keep_param(), eviction_budget_param()},
              check_eviction_budget});
}

}  // namespace kvlab::compressors
