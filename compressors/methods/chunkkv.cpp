// chunkkv: keeps whole chunks of contiguous tokens, ranked by another method's scores
// (docs/methods/chunkkv.md). Liu, Tang, Dong, Li, Liu, Li, Hu, Chu, "ChunkKV: Semantic-Preserving
// KV Cache Compression for Efficient Long-Context LLM Inference", arXiv 2502.00299; kvlab follows
// kvpress's ChunkKVPress (NVIDIA/kvpress kvpress/presses/chunkkv_press.py), the implementation the
// method is published with. For one layer, with the scorer's scores s[g, t] ([H_kv, T]), chunk
// length c and the per-head budget b < T:
//
//   T < c                  no complete chunk: the scorer's own per-head top b (kvpress delegates
//                          to press.compress)
//   N = ⌈T / c⌉ chunks     ⌊T/c⌋ complete ones and, when c ∤ T, the last r = T mod c tokens
//   chunk score            mean over the chunk's tokens of Σ_g s[g, t] (the partial chunk divides
//                          by r, not c); the same chunks for every KV head
//   n = max(1, ⌊N·b/T⌋)    kvpress's max(1, int(N·(1 − compression_ratio))), with 1 − ratio = b/T
//   kept                   every token of the n best chunks, in every KV head
//
// So a head keeps n·c tokens, or (n − 1)·c + r when the partial chunk is among the n: not exactly
// b but b − 2c < kept < b + c (c·max(1, ⌊b/c⌋) when c divides T): whole chunks are the method's
// unit, and the bytes count the cells kept. A scorer's +inf window (snapkv) enters the chunk
// means as the layer's largest finite score, as kvpress's SnapKVPress pads its window with
// scores.max(), so the window is not always kept whole here. Sums in double; ties between chunk
// scores go to the earlier chunk (torch.topk leaves them unspecified). Layers are selected one
// at a time, as kvpress does; the paper's layer-wise index reuse is not in its code, nor here.
//
// Device path `scores`: the scorers read the cache only through the cache source, so on the
// resident route (harness/resident_routes.cpp) they score where the cache lies, as adakv's do.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "compressors/methods/eviction.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

class ChunkKV final : public BudgetedEviction {
 public:
  explicit ChunkKV(const StageSpec& spec)
      : BudgetedEviction(spec),
        scorer_(spec),
        chunk_(spec.get_int("chunk")) {}

  void select_cells(const CompressContext& ctx, int l, std::int64_t b, std::vector<std::uint8_t>& mask) const override {
    const auto& s = ctx.cache.shape();
    const std::int64_t T = s.tokens;
    const int H = s.kv_heads;
    const auto scores = scorer_.scores(ctx, l, b);
    if (T < chunk_) {  // no complete chunk: the scorer's own selection
      keep_top_per_head(scores, T, H, b, mask);
      return;
    }
    // A window's +inf counts as the layer's best finite score (SnapKVPress's padding).
    double best = -std::numeric_limits<double>::infinity();
    for (const double x : scores.primary)
      if (std::isfinite(x)) best = std::max(best, x);
    const std::int64_t n_chunks = (T + chunk_ - 1) / chunk_;
    std::vector<double> chunk_score(static_cast<std::size_t>(n_chunks), 0.0);
    for (std::int64_t t = 0; t < T; ++t) {
      double head_sum = 0;
      for (int g = 0; g < H; ++g) {
        const double x = scores.primary[static_cast<std::size_t>(g * T + t)];
        head_sum += x == std::numeric_limits<double>::infinity() ? best : x;
      }
      chunk_score[static_cast<std::size_t>(t / chunk_)] += head_sum;
    }
    for (std::int64_t i = 0; i < n_chunks; ++i)
      chunk_score[static_cast<std::size_t>(i)] /= static_cast<double>(std::min(T, (i + 1) * chunk_) - i * chunk_);
    std::vector<std::int64_t> order(static_cast<std::size_t>(n_chunks));
    std::iota(order.begin(), order.end(), std::int64_t{0});
    const auto n_kept = chunks_kept(T, b);
    std::partial_sort(order.begin(), order.begin() + n_kept, order.end(), [&](std::int64_t x, std::int64_t y) {
      const auto sx = chunk_score[static_cast<std::size_t>(x)], sy = chunk_score[static_cast<std::size_t>(y)];
      return sx != sy ? sx > sy : x < y;
    });
    for (std::int64_t k = 0; k < n_kept; ++k) {
      const auto i = order[static_cast<std::size_t>(k)];
      for (std::int64_t t = i * chunk_; t < std::min(T, (i + 1) * chunk_); ++t)
        std::fill_n(mask.begin() + t * H, H, std::uint8_t{1});
    }
  }

  void add_notes(const CacheShape& s, nlohmann::json& n) const override {
    const auto budgets = layer_budgets(s);
    const auto b = budgets.empty() ? std::int64_t{0} : budgets[0];
    n["scorer"] = scorer_.spec().to_string();
    n["chunk"] = chunk_;
    n["chunks"] = s.tokens < chunk_ ? 0 : (s.tokens + chunk_ - 1) / chunk_;
    n["chunks_kept"] = s.tokens < chunk_ ? 0 : b >= s.tokens ? (s.tokens + chunk_ - 1) / chunk_ : chunks_kept(s.tokens, b);
    n["selection"] =
        s.tokens < chunk_
            ? "T < chunk: the scorer's own per-head top budget (kvpress delegates to the scorer)"
            : "the chunks_kept chunks with the highest mean over their tokens of the scorer's score summed over KV heads, "
              "the same in every head; each head keeps chunks_kept·chunk tokens, or fewer when the last partial chunk "
              "(T mod chunk tokens) is among them (kvpress ChunkKVPress), so budget_per_layer sets the chunk count";
  }

 private:
  // kvpress's n_chunks_kept = max(1, int(N·(1 − compression_ratio))) with 1 − ratio = b/T.
  std::int64_t chunks_kept(std::int64_t T, std::int64_t b) const {
    const std::int64_t n_chunks = (T + chunk_ - 1) / chunk_;
    return std::clamp<std::int64_t>(n_chunks * b / T, 1, n_chunks);
  }

  WrappedScorer scorer_;
  std::int64_t chunk_;
};

}  // namespace

MethodDef chunkkv_method() {
  return eviction_method<ChunkKV>({"chunkkv", StageKind::eviction,
              "ChunkKV (docs/methods/chunkkv.md; arXiv 2502.00299, kvpress ChunkKVPress): keeps whole chunks of `chunk` "
              "contiguous tokens, the same chunks in every KV head, ranked by the scorer's scores summed over heads and "
              "averaged over the chunk; max(1, floor(N·budget/T)) of the N chunks (the last one partial when chunk does "
              "not divide T), so a head keeps about the budget (more than budget − 2·chunk, fewer than budget + chunk); the scorer "
              "runs with its default keys.",
              {eviction_keep_param(), eviction_budget_param(),
               eviction_scorer_param("the method whose per-head scores rank the chunks (kvpress wraps any "
                                     "ScorerPress; no default there), run with its default keys"),
               {"chunk", ParamType::integer, "20",
                "tokens per chunk (kvpress chunk_length 20); T < chunk: the scorer's own per-head selection", {}, 1, 1e9}},
              check_eviction_budget});
}

}  // namespace kvlab::compressors
