// adakv: adaptive budget allocation across the KV heads of a layer, around another method's
// scores (docs/methods/adakv.md). Feng, Lv, Cao, Xie, Zhou, "Ada-KV: Optimizing KV Cache
// Eviction by Adaptive Budget Allocation for Efficient LLM Inference", arXiv 2407.11550; kvlab
// follows kvpress's AdaKVPress (NVIDIA/kvpress kvpress/presses/adakv_press.py), which the
// authors list as a community implementation of theirs (FFY0/AdaKV README):
//
//   n_kept = the per-head budget b                    (kvpress: int(T·(1 − compression_ratio)))
//   n_safe = ⌊alpha·b⌋                                (int(n_kept · alpha_safeguard))
//   each head's top n_safe scores are raised above every other score (scatter_ of finfo.max),
//   then the layer keeps its H·b highest scores over all heads at once (kvpress prunes the
//   H·(T − b) lowest of the flattened [H, T] scores).
//
// So a layer keeps exactly H·b cells, every head at least n_safe; heads whose scores are spread
// out take the budget the concentrated ones leave. The scores are the wrapped method's
// (`scorer`, with that method's default keys), from EvictionStage::score_layer; a scorer's
// windows (snapkv) come as +inf scores and are kept in every head. Ties go to the secondary
// score, then the lower head, then the earlier token (torch.topk leaves them unspecified).
//
// The authors' own code (FFY0/AdaKV adaptive_snapkv/monkeypatch/snapkv_utils.py,
// AdaptiveSnapKVCluster) allocates differently: head h's count of the global top H·(b − w) is
// rounded as round(c_h·(1 − alpha) + ⌊alpha·(b − w)⌋), which need not sum to H·(b − w);
// docs/methods/adakv.md §3 lists the differences.
//
// The allocation is keep_top_adaptive (compressors/methods/eviction.h), which criticalkv's
// allocation=adaptive shares.
//
// Device path `scores`: the scorers all score through the cache source, so on the resident route
// (harness/resident_routes.cpp) the scores are computed where the cache lies, as the scorer's are.
#include "compressors/methods/eviction.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

class AdaKV final : public BudgetedEviction {
 public:
  explicit AdaKV(const StageSpec& spec)
      : BudgetedEviction(spec),
        scorer_(spec),
        alpha_(spec.get_real("alpha")) {}

  void select_cells(const CompressContext& ctx, int l, std::int64_t b, std::vector<std::uint8_t>& mask) const override {
    const auto& s = ctx.cache.shape();
    keep_top_adaptive(scorer_.scores(ctx, l, b), s.tokens, s.kv_heads, b, alpha_, mask);
  }

  void add_notes(const CacheShape&, nlohmann::json& n) const override {
    n["scorer"] = scorer_.spec().to_string();
    n["alpha"] = alpha_;
    n["allocation"] =
        "budget_per_layer is the mean per KV head: each layer keeps H_kv·budget cells, the top floor(alpha·budget) of "
        "every head, then the best of the scorer's scores over all heads (kvpress AdaKVPress)";
  }

 private:
  WrappedScorer scorer_;
  double alpha_;
};

}  // namespace

MethodDef adakv_method() {
  return eviction_method<AdaKV>({"adakv", StageKind::eviction,
              "Ada-KV (docs/methods/adakv.md; arXiv 2407.11550, kvpress AdaKVPress): each layer keeps H_kv·budget cells "
              "chosen over all its KV heads at once by the scorer's scores, every head at least floor(alpha·budget); "
              "the scorer runs with its default keys.",
              {eviction_keep_param(), eviction_budget_param(),
               eviction_scorer_param("the method whose per-head scores are allocated (Ada-SnapKV is the paper's; "
                                     "kvpress wraps any ScorerPress), run with its default keys"),
               {"alpha", ParamType::real, "0.2",
                "safeguard: every head keeps at least floor(alpha·budget) of its best tokens (kvpress alpha_safeguard "
                "0.20; the authors' floor_alpha has no default, their runall.sh 0.5); 1: the scorer's own per-head top-k",
                {}, 0, 1}},
              check_eviction_budget});
}

}  // namespace kvlab::compressors
