// Token eviction: streamingllm, h2o, snapkv, pyramidkv (docs/methods/eviction.md).
//
// Every method keeps, per layer and KV head, exactly `budget` of the T prompt tokens (budget
// clamped to T; budget ≥ T keeps everything, as KVCache-Factory does when the prompt is shorter
// than max_capacity_prompt). The budget is `budget` tokens when that key is > 0, else
// round(keep·T) (at least 1). Sinks, recent and observation windows count inside the budget.
//
// Attention scores come from the dumped query window: queries rotated at positions[T−W+w], keys at
// positions[t] (the eviction methods see post-RoPE keys, docs/methods/README.md §2), softmax(q·k/√D) with the
// causal mask (a query at position p sees keys at positions ≤ p; on a sliding layer of window w
// only those > p − w, docs/dump-format.md §8.1), each layer rotated with its own RoPE, in double. Scores are per query
// head, reduced to KV heads (query head h reads KV head h / (H_q/H_kv)) by `agg` = mean | max | sum
// (docs/methods/eviction.md §3), so selection is per KV head and the cache keeps H_kv heads. snapkv and
// pyramidkv also offer the SnapKV repository's repeat_kv layout (granularity=query_head): one selection
// per query head, H_q heads stored (EvictionStage::select_query_heads, compressors/query_head_cells.h).
// One layer at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "compressors/compressor.h"

namespace kvlab::compressors {

MethodDef streamingllm_method();
MethodDef h2o_method();
MethodDef snapkv_method();
MethodDef pyramidkv_method();
std::unique_ptr<EvictionStage> make_eviction_method(const StageSpec& spec);

// Tokens kept per (layer, KV head) for T prompt tokens: budget > 0 ? min(budget, T) :
// clamp(round(keep·T), 1, T). For every method's `keep`/`budget` keys.
std::int64_t eviction_budget(const StageSpec& spec, std::int64_t tokens);

// The frame every eviction method's stage shares: select_layer checks the layer (naming the
// method), takes its budget from layer_budgets and keeps every cell when that is ≥ T, else marks
// the cells select_cells keeps; notes() reports "tokens" and "budget_per_layer" and what
// add_notes adds. A method that ranks tokens by one score per KV head implements score_layer
// (select_cells then keeps each head's top budget of them); others override select_cells (and
// layer_budgets when their layers differ, as PyramidKV's do).
class BudgetedEviction : public EvictionStage {
 public:
  explicit BudgetedEviction(const StageSpec& spec) : spec_(spec) {}
  std::vector<std::uint8_t> select_layer(const CompressContext& ctx, int layer) const final;
  nlohmann::json notes(const CacheShape& s) const final;

 protected:
  // Tokens kept per KV head in each layer: eviction_budget(spec_, T) on every layer by default.
  virtual std::vector<std::int64_t> layer_budgets(const CacheShape& s) const;
  // Marks in `mask` [T, H_kv] (all 0 on entry) the cells layer `layer` keeps with `budget` < T
  // tokens per KV head: by default each head's top `budget` of score_layer (keep_top_per_head).
  virtual void select_cells(const CompressContext& ctx, int layer, std::int64_t budget,
                            std::vector<std::uint8_t>& mask) const;
  // The method's own entries of notes().
  virtual void add_notes(const CacheShape&, nlohmann::json&) const {}

  StageSpec spec_;
};

// An eviction method's registry entry completed: its stage `Stage` built from the spec,
// layer-local, scored through the cache source where the cache lies (DevicePath::scores: every
// eviction method here reads the cache only through CacheSource, which KvCacheSource serves on
// the device).
template <class Stage>
MethodDef eviction_method(MethodDef m) {
  m.make_eviction = [](const StageSpec& spec) -> std::unique_ptr<EvictionStage> { return std::make_unique<Stage>(spec); };
  m.layer_local = true;
  m.device = DevicePath::scores;
  return m;
}

// The `keep` and `budget` keys every eviction method declares (same names, defaults and help, so
// sweeps and chains read them alike), and the check they share (keep > 0; usable as a
// MethodDef::resolve). Eviction methods in other files (knorm.cpp, keydiff.cpp) use them too.
ParamDef eviction_keep_param();
ParamDef eviction_budget_param();
void check_eviction_budget(const StageSpec& spec, const std::vector<std::string>& given);

// The method a wrapper (adakv, chunkkv, criticalkv) ranks cells by: its `scorer` key names one of
// the methods whose EvictionStage::score_layer gives per-KV-head scores, run with that method's
// default keys, except the keys `fixed` sets for it (scorer name → params text, as criticalkv
// runs expected_attention with vnorm=off, as kvpress's evaluation registry does).
ParamDef eviction_scorer_param(const std::string& help);
class WrappedScorer {
 public:
  explicit WrappedScorer(const StageSpec& wrapper, const std::map<std::string, std::string, std::less<>>& fixed = {});
  // Layer `layer`'s scores for a per-head budget `budget`, [H_kv, T], secondary filled (primary's
  // when the scorer has none); fails, naming the wrapper, when the scorer gives none.
  HeadScores scores(const CompressContext& ctx, int layer, std::int64_t budget) const;
  const StageSpec& spec() const { return spec_; }

 private:
  std::string wrapper_;
  StageSpec spec_;
  std::unique_ptr<EvictionStage> stage_;
};

// Marks the k best tokens of [0, n) in column g of mask [T, H] (k clamped to [0, n]): highest
// `primary`, ties to the highest `secondary`, then to the lower index (torch.topk leaves the
// order of ties unspecified; with SnapKV's max pooling a spike ties with its neighbours, and the
// raw score as `secondary` keeps the spike itself). Methods with one score pass it twice.
void keep_top_scores(const std::vector<double>& primary, const std::vector<double>& secondary, std::int64_t n,
                     std::int64_t k, int H, int g, std::vector<std::uint8_t>& mask);

// keep_top_scores on each KV head g of `scores` ([H, T] rows, all T tokens), k per head, into mask [T, H].
void keep_top_per_head(const HeadScores& scores, std::int64_t T, int H, std::int64_t k, std::vector<std::uint8_t>& mask);

// Ada-KV's allocation as kvpress's AdaKVPress makes it (docs/methods/adakv.md §3): each KV head's
// top ⌊alpha·b⌋ cells of `scores` ([H, T] rows) rank above all others, then the layer's H·b best
// cells over all heads at once are marked in mask [T, H] (all 0 on entry; exactly H·b marked,
// b < T). Ties: primary, then secondary, then the lower flat index g·T + t (lower head, then
// earlier token). adakv keeps these cells; criticalkv (allocation=adaptive) takes each head's
// count of them as that head's budget.
void keep_top_adaptive(const HeadScores& scores, std::int64_t T, int H, std::int64_t b, double alpha,
                       std::vector<std::uint8_t>& mask);

// Attention each key receives from the last `rows` dumped queries of `layer` (1 ≤ rows ≤ W):
// [H_q, T], entry (h, t) = Σ_w softmax_t(q_{w,h}·k_t/√D) with the layer's RoPE at the true positions
// and the causal and sliding-window mask (0 for keys no window query may see). Sums of probabilities, so each query head's
// row sums to `rows`. H2O uses all W rows, SnapKV/PyramidKV the last `window`.
FloatTensor window_attention_sums(const CacheSource& cache, int layer, int rows, linalg::Backend& backend);

// 1-D pooling over the token axis as torch's max_pool1d / avg_pool1d with kernel `kernel` (odd),
// stride 1, padding kernel/2: max ignores the padding, avg divides by `kernel` always
// (count_include_pad = true, torch's default, which SnapKV's code uses). Output has n values.
std::vector<float> pool_scores(const std::vector<float>& scores, int kernel, bool max_pool);

// PyramidKV's per-layer budgets (docs/methods/eviction.md §7), window included: with C the per-layer SnapKV
// budget (already clamped to T), w the window, β = beta, min = (C−w)/β, max = 2(C−w) − min, and
// max capped at T−w (then min = 2(C−w) − max, as KVCache-Factory does), layer l keeps
// w + max − l·(max − min)/(L − 1). The real values are rounded by largest remainder so that the
// layers sum exactly to L·C, the SnapKV total. [L] token counts. C ≥ T gives T everywhere.
// (`schedule=conserved`.)
std::vector<std::int64_t> pyramid_budgets(std::int64_t budget, int window, std::int64_t tokens, int layers, double beta);
// PyramidKV's per-layer budgets as KVCache-Factory's PyramidKVCluster.update_kv computes them
// (pyramidkv/pyramidkv_utils.py; docs/methods/eviction.md §7), window included: with C, w, β as
// above, all T when C ≥ T; C on every layer when T < 2(C − w); else min = ⌊(C − w)/β⌋,
// max = 2(C − w) − min, capped (when max ≥ T − w) at T − w with min = 2(C − w) − max, steps =
// ⌊(max − min)/(L − 1)⌋ and layer l keeps w + max − l·steps. The floored steps leave the layers'
// sum at or above L·C. [L] token counts. The default schedule (`schedule=authors`).
std::vector<std::int64_t> pyramid_budgets_authors(std::int64_t budget, int window, std::int64_t tokens, int layers,
                                                  double beta);

}  // namespace kvlab::compressors
