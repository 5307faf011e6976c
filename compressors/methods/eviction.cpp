#include "compressors/methods/eviction.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "compressors/attention.h"
#include "core/error.h"

namespace kvlab::compressors {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- spec -------------------------------------------------------------------------------------

ParamDef agg_param() {
  return {"agg", ParamType::choice, "mean",
          "reduction of the GQA group's query-head scores to their KV head: mean (kvpress), max or sum "
          "(KVCache-Factory --gqa_score_agg)",
          {"mean", "max", "sum"}};
}
ParamDef window_param() {
  return {"window", ParamType::integer, "32",
          "observation window: the last `window` prompt queries score the keys and their tokens are always kept; "
          "≤ the dump's query window W and < the budget (paper LongBench 32; KVCache-Factory runner 8, kvpress 64)",
          {}, 1, 1e9};
}
ParamDef kernel_param() {
  return {"kernel", ParamType::integer, "7",
          "1-D pooling kernel over the token axis, odd, stride 1, padding kernel/2 (paper LongBench 7; code init 5); "
          "1: no pooling",
          {}, 1, 1e6};
}
ParamDef order_param() {
  return {"order", ParamType::choice, "reduce_then_pool",
          "GQA order: reduce the group's query-head scores to the KV head, then pool (KVCache-Factory's kv_head path) "
          "or pool each query head, then reduce (kvpress's; the same ranking for avg pooling with mean or sum)",
          {"reduce_then_pool", "pool_then_reduce"}};
}
ParamDef granularity_param() {
  return {"granularity", ParamType::choice, "kv_head",
          "GQA selection: kv_head = one selection per KV head from its query heads' scores reduced by agg and order "
          "(kvpress; KVCache-Factory --kv_cache_granularity kv_head), H_kv heads stored; query_head = one selection "
          "per query head after repeat_kv (the SnapKV repository; KVCache-Factory's default query_head), "
          "H_q heads stored, H_q/H_kv times the bytes, agg and order unused; alone in its chain",
          {"kv_head", "query_head"}};
}
ParamDef pool_param() {
  return {"pool", ParamType::choice, "max", "pooling: max (paper LongBench) or avg (code init default)", {"max", "avg"}};
}

void check_window_keys(const StageSpec& spec, const std::vector<std::string>& given) {
  check_eviction_budget(spec, given);
  if (spec.get_int("kernel") % 2 == 0)
    fail("spec '{}': key 'kernel' = {} must be odd (the pooled scores stay centred on their token)", spec.method,
         spec.get_int("kernel"));
  const auto budget = spec.get_int("budget");
  if (budget > 0 && spec.get_int("window") >= budget)
    fail("spec '{}': key 'window' = {} must be < budget = {} (the window is kept inside the budget)", spec.method,
         spec.get_int("window"), budget);
}

enum class Kind { streamingllm, h2o, snapkv, pyramidkv };
enum class Agg { mean, max, sum };

// ---- scoring helpers --------------------------------------------------------------------------

// Reduces the n_rep query-head rows of KV head g (rows[r][t]) to one score per token.
std::vector<double> aggregate(const std::vector<std::vector<float>>& rows, Agg agg) {
  const auto n = rows.empty() ? std::size_t{0} : rows[0].size();
  std::vector<double> out(n, agg == Agg::max ? -kInf : 0.0);
  for (const auto& row : rows)
    for (std::size_t t = 0; t < n; ++t) {
      if (agg == Agg::max) out[t] = std::max(out[t], double{row[t]});
      else out[t] += row[t];
    }
  if (agg == Agg::mean)
    for (auto& x : out) x /= static_cast<double>(rows.size());
  return out;
}

// Marks in `mask` [T, H_kv] each KV head's cells that any of its query heads keeps in `per_query` [T, H_q].
void keep_group_union(const std::vector<std::uint8_t>& per_query, const CacheShape& s, std::vector<std::uint8_t>& mask) {
  const int n_rep = s.group_size();
  for (std::int64_t t = 0; t < s.tokens; ++t)
    for (int h = 0; h < s.q_heads; ++h)
      if (per_query[static_cast<std::size_t>(t * s.q_heads + h)])
        mask[static_cast<std::size_t>(t * s.kv_heads + h / n_rep)] = 1;
}

void keep_range(std::int64_t begin, std::int64_t end, int H, int g, std::vector<std::uint8_t>& mask) {
  for (std::int64_t t = begin; t < end; ++t) mask[static_cast<std::size_t>(t * H + g)] = 1;
}

// ---- the stage --------------------------------------------------------------------------------

class Eviction final : public BudgetedEviction {
 public:
  explicit Eviction(const StageSpec& spec) : BudgetedEviction(spec) {
    const auto& m = spec.method;
    kind_ = m == "streamingllm" ? Kind::streamingllm
            : m == "h2o"        ? Kind::h2o
            : m == "snapkv"     ? Kind::snapkv
            : m == "pyramidkv"  ? Kind::pyramidkv
                                : (fail("'{}' is not an eviction method of compressors/eviction", m), Kind::h2o);
    if (kind_ == Kind::streamingllm) sinks_ = spec.get_int("sinks");
    if (kind_ == Kind::h2o) recent_ = spec.get_real("recent");
    if (kind_ != Kind::streamingllm) {
      const auto& a = spec.get("agg");
      agg_ = a == "max" ? Agg::max : a == "sum" ? Agg::sum : Agg::mean;
    }
    if (kind_ == Kind::snapkv || kind_ == Kind::pyramidkv) {
      window_ = static_cast<int>(spec.get_int("window"));
      kernel_ = static_cast<int>(spec.get_int("kernel"));
      max_pool_ = spec.get("pool") == "max";
    }
    if (kind_ == Kind::snapkv || kind_ == Kind::pyramidkv) {
      pool_first_ = spec.get("order") == "pool_then_reduce";
      query_head_ = spec.get("granularity") == "query_head";
    }
    if (kind_ == Kind::pyramidkv) {
      beta_ = spec.get_real("beta");
      conserved_ = spec.get("schedule") == "conserved";
    }
  }

  void select_cells(const CompressContext& ctx, int l, std::int64_t b, std::vector<std::uint8_t>& mask) const override {
    const auto& cache = ctx.cache;
    const auto& s = cache.shape();
    const std::int64_t T = s.tokens;
    const int H = s.kv_heads;
    if (static_cast<std::int64_t>(cache.positions().size()) != T)
      fail("{}: {} has {} positions for {} tokens", spec_.method, cache.describe(), cache.positions().size(), T);
    switch (kind_) {
      case Kind::streamingllm:
        for (int g = 0; g < H; ++g) {
          keep_range(0, sinks_, H, g, mask);
          keep_range(T - (b - sinks_), T, H, g, mask);
        }
        break;
      case Kind::h2o: select_h2o(ctx, l, b, mask); break;
      case Kind::snapkv:
      case Kind::pyramidkv:
        if (query_head_) keep_group_union(query_head_selection(ctx, l, b), s, mask);
        else keep_top_per_head(snap_scores(ctx, l), T, H, b, mask);
        break;
    }
  }

  // granularity=query_head: each query head's own cells of the cache repeated to H_q heads
  // ([T, H_q]); everything when the layer's budget is ≥ T. Empty for granularity=kv_head.
  std::vector<std::uint8_t> select_query_heads(const CompressContext& ctx, int l) const override {
    if (!query_head_) return {};
    const auto& s = ctx.cache.shape();
    if (l < 0 || l >= s.layers) fail("{}: layer {} is outside 0..{}", spec_.method, l, s.layers - 1);
    const auto b = layer_budgets(s)[static_cast<std::size_t>(l)];
    if (b >= s.tokens) return std::vector<std::uint8_t>(static_cast<std::size_t>(s.tokens * s.q_heads), 1);
    return query_head_selection(ctx, l, b);
  }

  // SnapKV's scores (snap_scores) for a stage that allocates `budget` per KV head itself (adakv),
  // with the window checks snapkv makes against its own budget. PyramidKV's budgets are its
  // method, so it gives none.
  HeadScores score_layer(const CompressContext& ctx, int l, std::int64_t budget) const override {
    if (kind_ != Kind::snapkv) return {};
    if (query_head_)
      fail("{}: granularity=query_head selects per query head; it gives no per-KV-head scores to rank by", spec_.method);
    check_window(ctx.cache.shape(), budget);
    return snap_scores(ctx, l);
  }

  void add_notes(const CacheShape& s, nlohmann::json& n) const override {
    const auto budgets = layer_budgets(s);
    const auto b = budgets.empty() ? std::int64_t{0} : budgets[0];
    switch (kind_) {
      case Kind::streamingllm:
        n["sinks"] = sinks_;
        n["recent"] = std::max<std::int64_t>(0, std::min(b, s.tokens) - sinks_);
        n["positions"] = "original (StreamingLLM's pos-shift re-assignment is not modelled)";
        break;
      case Kind::h2o: {
        const auto r = recent_tokens(b);
        n["recent"] = r;
        n["heavy"] = b - r;
        n["score_queries"] = s.query_window;
        n["score"] =
            "attention accumulated over the dumped window's queries only (H2O accumulates over every prompt query; "
            "exact when the window covers the prompt)";
        break;
      }
      case Kind::snapkv:
      case Kind::pyramidkv:
        n["window"] = window_;
        n["kernel"] = kernel_;
        n["pool"] = max_pool_ ? "max" : "avg";
        n["granularity"] = spec_.get("granularity");
        if (query_head_) n["stored_heads"] = s.q_heads;
        else n["order"] = spec_.get("order");
        break;
    }
    if (kind_ != Kind::streamingllm && !query_head_) n["agg"] = spec_.get("agg");
    if (kind_ == Kind::pyramidkv) {
      n["beta"] = beta_;
      n["schedule"] = spec_.get("schedule");
    }
  }

 private:
  // Tokens kept per KV head in each layer (all layers alike except PyramidKV). Checks the keys
  // that depend on the cache (window vs W and budget, sinks vs budget), naming them.
  std::vector<std::int64_t> layer_budgets(const CacheShape& s) const override {
    const std::int64_t T = s.tokens;
    const auto b = eviction_budget(spec_, T);
    if (b < T) {
      if (kind_ == Kind::streamingllm && sinks_ > b)
        fail("{}: key 'sinks' = {} exceeds the budget of {} tokens (keep/budget) for T = {}", spec_.method, sinks_, b, T);
      if (kind_ == Kind::snapkv || kind_ == Kind::pyramidkv) check_window(s, b);
      if (kind_ == Kind::h2o && b - recent_tokens(b) > 0 && s.query_window < 1)
        fail("{}: the cache holds no queries (W = 0) to score heavy hitters; set recent=1 or dump queries", spec_.method);
    }
    if (kind_ == Kind::pyramidkv)
      return conserved_ ? pyramid_budgets(b, window_, T, s.layers, beta_)
                        : pyramid_budgets_authors(b, window_, T, s.layers, beta_);
    return std::vector<std::int64_t>(static_cast<std::size_t>(s.layers), b);
  }

  // The window fits the dump's query window and the budget b (< T) of its layer.
  void check_window(const CacheShape& s, std::int64_t b) const {
    if (window_ > s.query_window)
      fail("{}: key 'window' = {} exceeds the {} queries the dump holds (its query window W)", spec_.method, window_,
           s.query_window);
    if (window_ >= b)
      fail("{}: key 'window' = {} must be < the budget of {} tokens (keep/budget) for T = {}", spec_.method, window_, b,
           s.tokens);
  }

  std::int64_t recent_tokens(std::int64_t budget) const {
    return std::clamp<std::int64_t>(std::llround(recent_ * static_cast<double>(budget)), 0, budget);
  }

  // Query-head rows of KV head g from sums [H_q, T], tokens [0, n).
  static std::vector<std::vector<float>> group_rows(const FloatTensor& sums, const CacheShape& s, int g, std::int64_t n) {
    const int n_rep = s.group_size();
    std::vector<std::vector<float>> rows;
    for (int r = 0; r < n_rep; ++r) {
      const auto* row = sums.data.data() + static_cast<std::int64_t>(g * n_rep + r) * s.tokens;
      rows.emplace_back(row, row + n);
    }
    return rows;
  }

  // H2O: the last `recent` tokens plus the heavy hitters (largest accumulated attention) before them.
  void select_h2o(const CompressContext& ctx, int l, std::int64_t b, std::vector<std::uint8_t>& mask) const {
    const auto& s = ctx.cache.shape();
    const std::int64_t T = s.tokens;
    const auto recent = recent_tokens(b), heavy = b - recent, n = T - recent;
    FloatTensor sums;
    if (heavy > 0) sums = window_attention_sums(ctx.cache, l, s.query_window, ctx.backend);
    for (int g = 0; g < s.kv_heads; ++g) {
      keep_range(n, T, s.kv_heads, g, mask);
      if (heavy == 0) continue;
      const auto score = aggregate(group_rows(sums, s, g, n), agg_);
      keep_top_scores(score, score, n, heavy, s.kv_heads, g, mask);
    }
  }

  // SnapKV (KVCache-Factory SnapKVCluster.update_kv): attention of the last `window` queries summed
  // over the window for the keys before it, reduced to the KV head and pooled (`order`: either
  // way round), the raw reduced score breaking ties; the window itself scores +inf, so a head's
  // top b are the window and the top (b − window) of the keys before it. [H_kv, T].
  HeadScores snap_scores(const CompressContext& ctx, int l) const {
    const auto& s = ctx.cache.shape();
    const std::int64_t T = s.tokens, n = T - window_;
    const auto sums = window_attention_sums(ctx.cache, l, window_, ctx.backend);
    HeadScores out{std::vector<double>(static_cast<std::size_t>(s.kv_heads * T), kInf),
                   std::vector<double>(static_cast<std::size_t>(s.kv_heads * T), kInf)};
    for (int g = 0; g < s.kv_heads; ++g) {
      auto rows = group_rows(sums, s, g, n);
      const auto raw = aggregate(rows, agg_);
      std::vector<double> pooled;
      if (pool_first_) {  // kvpress: pool each query head, then reduce
        for (auto& row : rows) row = pool_scores(row, kernel_, max_pool_);
        pooled = aggregate(rows, agg_);
      } else {  // KVCache-Factory's kv_head path: reduce, then pool (in f32, as its scores are)
        const auto p = pool_scores(std::vector<float>(raw.begin(), raw.end()), kernel_, max_pool_);
        pooled.assign(p.begin(), p.end());
      }
      std::copy(pooled.begin(), pooled.end(), out.primary.begin() + g * T);
      std::copy(raw.begin(), raw.end(), out.secondary.begin() + g * T);
    }
    return out;
  }

  // The SnapKV repository's selection (snapkv_utils.py SnapKVCluster.update_kv after repeat_kv):
  // each query head h ranks the keys before the window by its own window attention sums, 1-D
  // pooled (f32, as the repository's scores), ties to the raw sum then the earlier token, and
  // keeps its top b − window plus the window. Marks [T, H_q].
  std::vector<std::uint8_t> query_head_selection(const CompressContext& ctx, int l, std::int64_t b) const {
    const auto& s = ctx.cache.shape();
    const std::int64_t T = s.tokens, n = T - window_;
    const int Hq = s.q_heads;
    const auto sums = window_attention_sums(ctx.cache, l, window_, ctx.backend);
    HeadScores scores{std::vector<double>(static_cast<std::size_t>(Hq * T), kInf),
                      std::vector<double>(static_cast<std::size_t>(Hq * T), kInf)};
    for (int h = 0; h < Hq; ++h) {
      const auto* row = sums.data.data() + static_cast<std::int64_t>(h) * T;
      const std::vector<float> raw(row, row + n);
      const auto pooled = pool_scores(raw, kernel_, max_pool_);
      std::copy(pooled.begin(), pooled.end(), scores.primary.begin() + h * T);
      std::copy(raw.begin(), raw.end(), scores.secondary.begin() + h * T);
    }
    std::vector<std::uint8_t> out(static_cast<std::size_t>(T * Hq), 0);
    keep_top_per_head(scores, T, Hq, b, out);
    return out;
  }

  Kind kind_ = Kind::snapkv;
  std::int64_t sinks_ = 0;
  double recent_ = 0.5;
  Agg agg_ = Agg::mean;
  int window_ = 0, kernel_ = 1;
  bool max_pool_ = true;
  bool pool_first_ = false;
  bool query_head_ = false;
  double beta_ = 20;
  bool conserved_ = false;
};

}  // namespace

// ---- method table -----------------------------------------------------------------------------

namespace {

// The four methods share one stage class (Eviction reads its kind from the spec); each selects a
// layer's cells from that layer's window alone.
MethodDef with_eviction_stage(MethodDef m) { return eviction_method<Eviction>(std::move(m)); }

// snapkv and pyramidkv: granularity=query_head keeps one selection per query head.
MethodDef with_query_head_granularity(MethodDef m) {
  m.per_query_head = [](const StageSpec& spec) { return spec.get("granularity") == "query_head"; };
  return m;
}

}  // namespace

MethodDef streamingllm_method() {
  return with_eviction_stage({"streamingllm", StageKind::eviction,
          "StreamingLLM (docs/methods/eviction.md §4): keeps the first `sinks` tokens (attention sinks) and the most recent "
          "budget − sinks; no scores. Kept keys keep their original positions (the paper's pos-shift is not modelled).",
          {eviction_keep_param(), eviction_budget_param(),
           {"sinks", ParamType::integer, "4", "initial tokens always kept (paper start_size 4; kvpress n_sink 4)", {}, 0,
            1e9}},
          [](StageSpec& spec, const std::vector<std::string>& given) {
            check_eviction_budget(spec, given);
            const auto budget = spec.get_int("budget");
            if (budget > 0 && spec.get_int("sinks") > budget)
              fail("spec 'streamingllm': key 'sinks' = {} exceeds budget = {}", spec.get_int("sinks"), budget);
          }});
}

MethodDef h2o_method() {
  return with_eviction_stage({"h2o", StageKind::eviction,
          "H2O (docs/methods/eviction.md §5): keeps the most recent recent·budget tokens and the heavy hitters before them, "
          "ranked by the attention they accumulate (column sums of the softmax). The dump holds only the last W "
          "queries, so H2O's accumulation over the whole prompt is approximated by the window (exact when W = T).",
          {eviction_keep_param(), eviction_budget_param(),
           {"recent", ParamType::real, "0.5",
            "fraction of the budget given to the recent window, the rest to heavy hitters (H2O README 0.1 + 0.1 of "
            "the prompt = 0.5)",
            {}, 0, 1},
           agg_param()},
          check_eviction_budget});
}

MethodDef snapkv_method() {
  return with_query_head_granularity(with_eviction_stage({"snapkv", StageKind::eviction,
          "SnapKV as in KVCache-Factory (docs/methods/eviction.md §6): attention of the last `window` prompt queries summed "
          "over the window, reduced per KV head (agg) and 1-D pooled (order), top budget − window of the earlier "
          "tokens plus the window; granularity=query_head selects per query head as the SnapKV repository does.",
          {eviction_keep_param(), eviction_budget_param(), window_param(), kernel_param(), pool_param(), agg_param(),
           order_param(), granularity_param()},
          check_window_keys}));
}

MethodDef pyramidkv_method() {
  return with_query_head_granularity(with_eviction_stage({"pyramidkv", StageKind::eviction,
          "PyramidKV (docs/methods/eviction.md §7): SnapKV scoring with per-layer budgets decreasing linearly with depth "
          "(lower layers keep more), about SnapKV's total at this keep/budget.",
          {eviction_keep_param(), eviction_budget_param(), window_param(), kernel_param(), pool_param(), agg_param(),
           order_param(), granularity_param(),
           {"beta", ParamType::real, "20",
            "ratio of the first layer's to the last layer's budget beyond the window is ≈ 2β − 1 (min = (C−w)/β; "
            "paper and code 20)",
            {}, 1, 1e9},
           {"schedule", ParamType::choice, "authors",
            "per-layer budgets: authors = KVCache-Factory's integers (floored steps; every layer C while T < 2(C−w)); "
            "conserved = the real schedule rounded so the layers sum to SnapKV's L·C",
            {"authors", "conserved"}}},
          check_window_keys}));
}

std::unique_ptr<EvictionStage> make_eviction_method(const StageSpec& spec) { return std::make_unique<Eviction>(spec); }

// ---- the shared frame -------------------------------------------------------------------------

std::vector<std::uint8_t> BudgetedEviction::select_layer(const CompressContext& ctx, int l) const {
  const auto& s = ctx.cache.shape();
  if (l < 0 || l >= s.layers) fail("{}: layer {} is outside 0..{}", spec_.method, l, s.layers - 1);
  const auto b = layer_budgets(s)[static_cast<std::size_t>(l)];
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(s.tokens * s.kv_heads), static_cast<std::uint8_t>(b >= s.tokens));
  if (b < s.tokens) select_cells(ctx, l, b, mask);
  return mask;
}

nlohmann::json BudgetedEviction::notes(const CacheShape& s) const {
  nlohmann::json n{{"tokens", s.tokens}, {"budget_per_layer", layer_budgets(s)}};
  add_notes(s, n);
  return n;
}

void BudgetedEviction::select_cells(const CompressContext& ctx, int l, std::int64_t b, std::vector<std::uint8_t>& mask) const {
  const auto& s = ctx.cache.shape();
  const auto scores = score_layer(ctx, l, b);
  if (scores.primary.size() != static_cast<std::size_t>(s.kv_heads * s.tokens))
    fail("{}: layer {}: no per-head scores to select by", spec_.method, l);
  keep_top_per_head(scores, s.tokens, s.kv_heads, b, mask);
}

std::vector<std::int64_t> BudgetedEviction::layer_budgets(const CacheShape& s) const {
  return std::vector<std::int64_t>(static_cast<std::size_t>(s.layers), eviction_budget(spec_, s.tokens));
}

// ---- free functions ---------------------------------------------------------------------------

ParamDef eviction_keep_param() {
  return {"keep", ParamType::real, "0.25",
          "fraction of the T prompt tokens kept per layer and KV head, sinks/windows included; used when budget=0",
          {}, 0, 1};
}

ParamDef eviction_budget_param() {
  return {"budget", ParamType::integer, "0",
          "tokens kept per layer and KV head (KVCache-Factory's max_capacity_prompt; papers use 128..4096), "
          "clamped to T; > 0 overrides keep, 0: use keep",
          {}, 0, 1e15};
}

ParamDef eviction_scorer_param(const std::string& help) {
  return {"scorer", ParamType::choice, "snapkv", help, {"snapkv", "knorm", "keydiff", "tova", "expected_attention", "random"}};
}

namespace {
std::string_view fixed_keys(const std::map<std::string, std::string, std::less<>>& fixed, std::string_view scorer) {
  const auto it = fixed.find(scorer);
  return it == fixed.end() ? std::string_view{} : std::string_view{it->second};
}
}  // namespace

WrappedScorer::WrappedScorer(const StageSpec& wrapper, const std::map<std::string, std::string, std::less<>>& fixed)
    : wrapper_(wrapper.method),
      spec_(parse_stage(method(wrapper.get("scorer")), fixed_keys(fixed, wrapper.get("scorer")))),
      stage_(make_eviction(spec_)) {}

HeadScores WrappedScorer::scores(const CompressContext& ctx, int layer, std::int64_t budget) const {
  const auto& s = ctx.cache.shape();
  HeadScores scores;
  try {
    scores = stage_->score_layer(ctx, layer, budget);
  } catch (const std::exception& e) {  // the user never named the scorer's keys: say whose they are
    fail("{}: its scorer {} (run with its default keys, {}): {}", wrapper_, spec_.method, spec_.to_string(), e.what());
  }
  if (scores.primary.size() != static_cast<std::size_t>(s.kv_heads * s.tokens))
    fail("{}: scorer '{}' gives no per-head scores for layer {}", wrapper_, spec_.method, layer);
  if (scores.secondary.empty()) scores.secondary = scores.primary;
  return scores;
}

// Checks shared by every method: keep > 0. (budget > 0 overrides keep; writing both is not an
// error, because the canonical form prints every key and must parse back.)
void check_eviction_budget(const StageSpec& spec, const std::vector<std::string>&) {
  if (!(spec.get_real("keep") > 0)) fail("spec '{}': key 'keep' = {} must be > 0", spec.method, spec.get("keep"));
}

void keep_top_adaptive(const HeadScores& scores, std::int64_t T, int H, std::int64_t b, double alpha,
                       std::vector<std::uint8_t>& mask) {
  // The safeguard: every head's top ⌊alpha·b⌋ ranks above all else.
  std::vector<std::uint8_t> safe(static_cast<std::size_t>(T * H), 0);
  keep_top_per_head(scores, T, H, static_cast<std::int64_t>(std::floor(alpha * static_cast<double>(b))), safe);
  const auto& second = scores.secondary.empty() ? scores.primary : scores.secondary;
  // The layer's H·b best cells over all heads, flat index g·T + t as kvpress's reshape.
  const auto cell = [&](std::int64_t i) { return static_cast<std::size_t>((i % T) * H + i / T); };
  const auto better = [&](std::int64_t x, std::int64_t y) {
    const auto ux = static_cast<std::size_t>(x), uy = static_cast<std::size_t>(y);
    if (safe[cell(x)] != safe[cell(y)]) return safe[cell(x)] > safe[cell(y)];
    if (scores.primary[ux] != scores.primary[uy]) return scores.primary[ux] > scores.primary[uy];
    if (second[ux] != second[uy]) return second[ux] > second[uy];
    return x < y;
  };
  std::vector<std::int64_t> idx(static_cast<std::size_t>(H * T));
  std::iota(idx.begin(), idx.end(), std::int64_t{0});
  const auto k = std::clamp<std::int64_t>(static_cast<std::int64_t>(H) * b, 0, static_cast<std::int64_t>(H) * T);
  if (k < static_cast<std::int64_t>(idx.size())) std::nth_element(idx.begin(), idx.begin() + k, idx.end(), better);
  for (std::int64_t i = 0; i < k; ++i) mask[cell(idx[static_cast<std::size_t>(i)])] = 1;
}

void keep_top_per_head(const HeadScores& scores, std::int64_t T, int H, std::int64_t k, std::vector<std::uint8_t>& mask) {
  const auto& second = scores.secondary.empty() ? scores.primary : scores.secondary;
  for (int g = 0; g < H; ++g) {
    const auto row = static_cast<std::ptrdiff_t>(g * T);
    const std::vector<double> p(scores.primary.begin() + row, scores.primary.begin() + row + T),
        q(second.begin() + row, second.begin() + row + T);
    keep_top_scores(p, q, T, k, H, g, mask);
  }
}

void keep_top_scores(const std::vector<double>& primary, const std::vector<double>& secondary, std::int64_t n,
                     std::int64_t k, int H, int g, std::vector<std::uint8_t>& mask) {
  k = std::clamp<std::int64_t>(k, 0, n);
  std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), std::int64_t{0});
  const auto better = [&](std::int64_t a, std::int64_t b) {
    const auto ua = static_cast<std::size_t>(a), ub = static_cast<std::size_t>(b);
    if (primary[ua] != primary[ub]) return primary[ua] > primary[ub];
    if (secondary[ua] != secondary[ub]) return secondary[ua] > secondary[ub];
    return a < b;
  };
  if (k < n) std::nth_element(idx.begin(), idx.begin() + k, idx.end(), better);
  for (std::int64_t i = 0; i < k; ++i) mask[static_cast<std::size_t>(idx[static_cast<std::size_t>(i)] * H + g)] = 1;
}

std::int64_t eviction_budget(const StageSpec& spec, std::int64_t tokens) {
  if (tokens <= 0) return 0;
  const auto budget = spec.get_int("budget");
  if (budget > 0) return std::min(budget, tokens);
  const auto b = std::llround(spec.get_real("keep") * static_cast<double>(tokens));
  return std::clamp<std::int64_t>(b, 1, tokens);
}

FloatTensor window_attention_sums(const CacheSource& cache, int layer, int rows, linalg::Backend& backend) {
  const auto& s = cache.shape();
  const std::int64_t T = s.tokens;
  const int H = s.kv_heads, D = s.head_dim, n_rep = s.group_size();
  if (rows < 1 || rows > s.query_window)
    fail("{}: layer {}: {} window queries asked for, the dump holds W = {}", cache.describe(), layer, rows, s.query_window);
  if (auto resident = cache.resident_window_attention_sums(layer, rows); !resident.data.empty()) {
    if (resident.shape != core::Shape{s.q_heads, T})
      fail("{}: layer {}: window scores of the wrong shape", cache.describe(), layer);
    return resident;
  }
  WindowAttention attention(cache, layer, rows);
  auto key = cache.layer(layer, Part::key);
  if (key.shape != core::Shape{T, H, D}) fail("{}: layer {} keys have the wrong shape", cache.describe(), layer);
  const auto key_rot = rotate_keys(cache, layer, std::move(key));
  FloatTensor out({s.q_heads, T});
  std::vector<double> acc;
  for (int g = 0; g < H; ++g) {
    attention.head(g, key_rot, {}, backend);
    acc.assign(static_cast<std::size_t>(n_rep * T), 0.0);  // summed in double over the window rows
    for (std::int64_t m = 0; m < attention.row_count(); ++m) {
      const float* p = attention.probs().data() + m * T;
      double* a = acc.data() + (m % n_rep) * T;
      for (std::int64_t t = 0; t < T; ++t) a[t] += p[t];
    }
    for (int r = 0; r < n_rep; ++r)
      for (std::int64_t t = 0; t < T; ++t)
        out.data[static_cast<std::size_t>((g * n_rep + r) * T + t)] = static_cast<float>(acc[static_cast<std::size_t>(r * T + t)]);
  }
  return out;
}

std::vector<float> pool_scores(const std::vector<float>& scores, int kernel, bool max_pool) {
  if (kernel < 1 || kernel % 2 == 0) fail("pool_scores: kernel {} must be odd and ≥ 1", kernel);
  const auto n = static_cast<std::int64_t>(scores.size());
  const int half = kernel / 2;
  std::vector<float> out(scores.size());
  for (std::int64_t t = 0; t < n; ++t) {
    const auto lo = std::max<std::int64_t>(0, t - half), hi = std::min<std::int64_t>(n - 1, t + half);
    if (max_pool) {
      float m = scores[static_cast<std::size_t>(lo)];
      for (auto i = lo + 1; i <= hi; ++i) m = std::max(m, scores[static_cast<std::size_t>(i)]);
      out[static_cast<std::size_t>(t)] = m;
    } else {
      double sum = 0;  // the zero padding adds nothing but still counts in the divisor
      for (auto i = lo; i <= hi; ++i) sum += scores[static_cast<std::size_t>(i)];
      out[static_cast<std::size_t>(t)] = static_cast<float>(sum / kernel);
    }
  }
  return out;
}

std::vector<std::int64_t> pyramid_budgets_authors(std::int64_t budget, int window, std::int64_t tokens, int layers,
                                                  double beta) {
  if (layers < 1) return {};
  const std::int64_t C = std::min(budget, tokens);
  std::vector<std::int64_t> out(static_cast<std::size_t>(layers), C);
  if (C >= tokens) return out;  // q_len < max_capacity_prompt: nothing evicted
  if (window >= C) fail("pyramidkv: key 'window' = {} must be < the budget of {} tokens", window, C);
  if (!(beta >= 1)) fail("pyramidkv: key 'beta' = {} must be ≥ 1", beta);
  const std::int64_t extra = C - window;
  if (tokens < 2 * extra) return out;  // the code's middle branch: top C − w on every layer
  auto lo = static_cast<std::int64_t>(std::floor(static_cast<double>(extra) / beta));
  std::int64_t hi = 2 * extra - lo;
  if (hi >= tokens - window) {
    hi = tokens - window;
    lo = 2 * extra - hi;
  }
  const std::int64_t steps = layers > 1 ? (hi - lo) / (layers - 1) : 0;  // the code divides by L − 1 (L = 1: by 0)
  for (int l = 0; l < layers; ++l) out[static_cast<std::size_t>(l)] = hi - l * steps + window;
  return out;
}

std::vector<std::int64_t> pyramid_budgets(std::int64_t budget, int window, std::int64_t tokens, int layers, double beta) {
  if (layers < 1) return {};
  const std::int64_t C = std::min(budget, tokens);
  std::vector<std::int64_t> out(static_cast<std::size_t>(layers), C);
  if (C >= tokens) return out;  // nothing evicted: every layer keeps all T
  if (window >= C) fail("pyramidkv: key 'window' = {} must be < the budget of {} tokens", window, C);
  if (!(beta >= 1)) fail("pyramidkv: key 'beta' = {} must be ≥ 1", beta);
  if (layers == 1) return out;
  const double extra = static_cast<double>(C - window), room = static_cast<double>(tokens - window);
  double lo = extra / beta, hi = 2 * extra - lo;
  if (hi > room) {  // the first layer cannot keep more than every token outside the window
    hi = room;
    lo = 2 * extra - hi;
  }
  const double step = (hi - lo) / (layers - 1);
  // Largest-remainder rounding of the real schedule keeps the total exactly L·(C − w).
  const std::int64_t total = static_cast<std::int64_t>(layers) * (C - window);
  std::vector<double> real(static_cast<std::size_t>(layers));
  std::int64_t floor_sum = 0;
  for (int l = 0; l < layers; ++l) {
    real[static_cast<std::size_t>(l)] = hi - l * step;
    out[static_cast<std::size_t>(l)] = static_cast<std::int64_t>(std::floor(real[static_cast<std::size_t>(l)] + 1e-9));
    floor_sum += out[static_cast<std::size_t>(l)];
  }
  std::vector<int> order(static_cast<std::size_t>(layers));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    const auto fa = real[static_cast<std::size_t>(a)] - static_cast<double>(out[static_cast<std::size_t>(a)]);
    const auto fb = real[static_cast<std::size_t>(b)] - static_cast<double>(out[static_cast<std::size_t>(b)]);
    return fa > fb;
  });
  for (std::int64_t i = 0; i < total - floor_sum && i < layers; ++i)
    ++out[static_cast<std::size_t>(order[static_cast<std::size_t>(i)])];
  const auto max_extra = tokens - window;
  for (auto& b : out) b = std::clamp<std::int64_t>(b, 0, max_extra) + window;
  return out;
}

}  // namespace kvlab::compressors
