// tova: keeps, per layer, the tokens the last prompt token attends to most, averaged over every
// query head, the same tokens in every KV head (docs/methods/tova.md). Oren, Hassid, Yarden, Adi,
// Schwartz, "Transformers are Multi-State RNNs", arXiv 2401.06104; the authors' TOVACache
// (schwartz-lab-NLP/TOVA src/tova_cache.py, `reduce`): mean over heads of attn_weights[:, :, -1, :]
// (the last query's softmax over all keys, itself included), torch.topk(cache_size), one index
// set gathered for every KV head.
//
// Knob `last` (docs/methods/tova.md §2): `scored` (the authors' cache) ranks the last token by its
// own attention like any other; `kept` (kvpress's TOVAPress, kvpress/presses/tova_press.py)
// drops the last key from the scores and pads it back with the maximum, so it is always kept.
// The budget is every eviction method's (`keep`/`budget`, eviction.h eviction_budget); ties go
// to the earlier token (keep_top_scores; torch.topk leaves them unspecified).
//
// Scores come from window_attention_sums with one row: the dump's last query (the query window W
// must be ≥ 1), RoPE at the true positions, softmax in double; on the resident route the cache
// source scores it where the cache lies (DevicePath::scores).
#include <algorithm>

#include "compressors/methods/eviction.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

class Tova final : public BudgetedEviction {
 public:
  explicit Tova(const StageSpec& spec) : BudgetedEviction(spec), pin_last_(spec.get("last") == "kept") {}

  HeadScores score_layer(const CompressContext& ctx, int l, std::int64_t) const override {
    const auto& s = ctx.cache.shape();
    const std::int64_t T = s.tokens;
    if (s.query_window < 1) fail("tova: {} holds no queries (W = 0): TOVA scores with the last token's query", ctx.cache.describe());
    const auto last_row = window_attention_sums(ctx.cache, l, 1, ctx.backend);  // [H_q, T]
    std::vector<double> score(static_cast<std::size_t>(T), 0.0);
    for (int h = 0; h < s.q_heads; ++h)
      for (std::int64_t t = 0; t < T; ++t) score[static_cast<std::size_t>(t)] += last_row.data[static_cast<std::size_t>(h * T + t)];
    for (double& x : score) x /= s.q_heads;  // torch.mean over the heads
    if (pin_last_) score.back() = *std::max_element(score.begin(), score.end() - 1);  // T ≥ 2 here
    HeadScores out;  // the same scores in every KV head
    for (int g = 0; g < s.kv_heads; ++g) out.primary.insert(out.primary.end(), score.begin(), score.end());
    return out;
  }

  void add_notes(const CacheShape&, nlohmann::json& n) const override {
    n["score"] = "the last query's attention, mean over all query heads; one token set for every KV head";
    n["last"] = spec_.get("last");
  }

 private:
  bool pin_last_;
};

}  // namespace

MethodDef tova_method() {
  return eviction_method<Tova>({"tova", StageKind::eviction,
              "TOVA (docs/methods/tova.md; arXiv 2401.06104, schwartz-lab-NLP/TOVA tova_cache.py): keeps, per layer, the "
              "budget tokens with the highest attention from the last prompt token, averaged over all query heads; the "
              "same tokens in every KV head. Needs the dump's query window (W >= 1).",
              {eviction_keep_param(), eviction_budget_param(),
               {"last", ParamType::choice, "scored",
                "the last token: scored by its own attention like the others (authors' TOVACache) or always kept "
                "(kvpress TOVAPress pads it with the maximum score)",
                {"scored", "kept"}}},
              check_eviction_budget});
}

}  // namespace kvlab::compressors
