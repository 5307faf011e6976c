// criticalkv: a two-stage selection around another method's scores that re-weights them by how
// much each value moves the attention output once projected by W_o (docs/methods/criticalkv.md).
// Feng, Lv, Cao, Xie, Zhou, "Identify Critical KV Cache in LLM Inference from an Output
// Perturbation Perspective", arXiv 2502.03805; kvlab follows kvpress's CriticalKVPress and
// CriticalAdaKVPress (NVIDIA/kvpress kvpress/presses/criticalkv_press.py; no separate authors'
// repository was found, and that file marks CriticalAdaKVPress's two stages "Start of CriticalKV
// code"). For one layer, with the scorer's scores s[g, t] ([H_kv, T]) and the per-head budget b < T:
//
//   n[g, t]   = (1/n_rep) Σ_{r<n_rep} ‖v[t, g, :] · W_o[:, h·D:(h+1)·D]ᵀ‖₁,  h = g·n_rep + r
//               (kvpress vwl1norm: o_proj.weight [d_model, H_q·D] split per query head; repeat_kv
//               gives query head h the values of KV head h / n_rep; the L1 norm over d_model,
//               then the mean over the group's query heads)
//   budgets   allocation=uniform: B_g = b, K_g = ⌊first_stage_ratio·b⌋          (CriticalKVPress)
//             allocation=adaptive: B_g = head g's count of Ada-KV's H·b cells (keep_top_adaptive,
//             alpha as adakv), K_g = max(⌊alpha·b⌋, ⌊first_stage_ratio·B_g⌋)     (CriticalAdaKVPress:
//             its safeguard cells stay at finfo.max through both stages)
//   stage 1   each head keeps its top K_g by s (ties: secondary, then the earlier token)
//   stage 2   the rest of B_g by (s + epsilon)·n (ties: s, then secondary, then the earlier token)
//
// So a head keeps exactly B_g cells (uniform: b; adaptive: H·b per layer). A scorer's +inf
// (snapkv's window) stays +inf in stage 2 whatever n is (kvpress pads the window with the layer's
// maximum score instead; docs/methods/criticalkv.md §4). n is computed in double through the
// backend's f64 gemm, a block of tokens at a time, from the dumped f32 values and the
// checkpoint's o_proj converted to f32 (kvpress: the model dtype). The o_proj bias is not used
// (kvpress multiplies by the weight only).
//
// Device path `scores`: the scorer scores through the cache source as it does alone; the values
// are copied to the host per layer (KvCacheSource::layer) and n is computed there.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "compressors/methods/eviction.h"
#include "core/error.h"
#include "core/safetensors.h"

namespace kvlab::compressors {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr std::int64_t kScratchDoubles = std::int64_t{1} << 22;  // bounds the [d_model, tokens] gemm output (32 MiB)

// Layer `l`'s o_proj weight [d_model, H_q·D] as f32, checked against the cache's heads.
FloatTensor output_projection(const core::Checkpoint* ckpt, const CacheShape& s, int l) {
  if (!ckpt)
    fail("criticalkv needs the model's weights (each layer's self_attn.o_proj.weight, W_o): give --model DIR, the "
         "checkpoint the dump came from");
  const auto name = fmt::format("model.layers.{}.self_attn.o_proj.weight", l);
  if (!ckpt->has(name)) fail("criticalkv: {} has no tensor '{}' (W_o of layer {})", ckpt->path().string(), name, l);
  const auto& shape = ckpt->shape(name);
  const std::int64_t cols = std::int64_t{s.q_heads} * s.head_dim;
  if (shape.size() != 2 || shape[1] != cols || (s.d_model > 0 && shape[0] != s.d_model))
    fail("criticalkv: {}: tensor '{}' has shape [{}], expected [d_model, H_q·D = {}] for the dumped cache "
         "(H_q = {}, D = {}{})",
         ckpt->path().string(), name, fmt::join(shape, ", "), cols, s.q_heads, s.head_dim,
         s.d_model > 0 ? fmt::format(", d_model = {}", s.d_model) : std::string{});
  return ckpt->tensor(name);
}

// n[g, t] of the header comment, [H_kv, T] rows, for layer `l`.
std::vector<double> projected_value_norms(const CompressContext& ctx, int l) {
  const auto& s = ctx.cache.shape();
  const std::int64_t T = s.tokens, D = s.head_dim, N = s.width(), HqD = std::int64_t{s.q_heads} * D;
  const int H = s.kv_heads, n_rep = s.group_size();
  const auto w = output_projection(ctx.checkpoint, s, l);
  const std::int64_t d_model = w.shape[0];
  const auto v = ctx.cache.layer(l, Part::value);
  if (v.shape != core::Shape{T, H, D}) fail("criticalkv: {}: layer {} values have the wrong shape", ctx.cache.describe(), l);
  const std::vector<double> values(v.data.begin(), v.data.end());  // [T, H_kv·D] row-major = [N, T] column-major
  std::vector<double> out(static_cast<std::size_t>(H * T), 0.0);
  std::vector<double> wh(static_cast<std::size_t>(D * d_model));
  const std::int64_t block = std::clamp<std::int64_t>(kScratchDoubles / std::max<std::int64_t>(d_model, 1), 1, T);
  std::vector<double> prod(static_cast<std::size_t>(d_model * block));
  for (int h = 0; h < s.q_heads; ++h) {
    const int g = h / n_rep;
    // W_h [D, d_model] column-major: W_h(d, j) = o_proj.weight[j, h·D + d].
    for (std::int64_t j = 0; j < d_model; ++j)
      for (std::int64_t d = 0; d < D; ++d) wh[static_cast<std::size_t>(j * D + d)] = w.data[static_cast<std::size_t>(j * HqD + h * D + d)];
    for (std::int64_t t0 = 0; t0 < T; t0 += block) {
      const std::int64_t nt = std::min(block, T - t0);
      // prod [d_model, nt] = W_hᵀ · V_g, V_g(d, t) = v[t, g, d].
      ctx.backend.gemm(true, false, d_model, nt, D, 1.0, wh.data(), D, values.data() + t0 * N + g * D, N, 0.0,
                       prod.data(), d_model);
      for (std::int64_t t = 0; t < nt; ++t) {
        double l1 = 0;
        for (std::int64_t j = 0; j < d_model; ++j) l1 += std::abs(prod[static_cast<std::size_t>(t * d_model + j)]);
        out[static_cast<std::size_t>(g * T + t0 + t)] += l1 / n_rep;
      }
    }
  }
  return out;
}

class CriticalKV final : public BudgetedEviction {
 public:
  explicit CriticalKV(const StageSpec& spec)
      : BudgetedEviction(spec),
        // kvpress's registry runs ExpectedAttentionPress(use_vnorm=False) under CriticalKV (and warns
        // otherwise): its value-norm rescaling would count ‖v‖ twice.
        scorer_(spec, {{"expected_attention", "vnorm=off"}}),
        epsilon_(spec.get_real("epsilon")),
        first_(spec.get_real("first_stage_ratio")),
        adaptive_(spec.get("allocation") == "adaptive"),
        alpha_(spec.get_real("alpha")) {}

  void select_cells(const CompressContext& ctx, int l, std::int64_t b, std::vector<std::uint8_t>& mask) const override {
    const auto& s = ctx.cache.shape();
    const std::int64_t T = s.tokens;
    const int H = s.kv_heads;
    const auto scores = scorer_.scores(ctx, l, b);
    const auto norms = projected_value_norms(ctx, l);
    std::vector<std::int64_t> budget(static_cast<std::size_t>(H), b), first(static_cast<std::size_t>(H));
    if (adaptive_) {
      std::vector<std::uint8_t> ada(static_cast<std::size_t>(T * H), 0);
      keep_top_adaptive(scores, T, H, b, alpha_, ada);
      std::fill(budget.begin(), budget.end(), 0);
      for (std::int64_t t = 0; t < T; ++t)
        for (int g = 0; g < H; ++g) budget[static_cast<std::size_t>(g)] += ada[static_cast<std::size_t>(t * H + g)];
    }
    const auto n_safe = static_cast<std::int64_t>(std::floor(alpha_ * static_cast<double>(b)));
    for (int g = 0; g < H; ++g) {
      const auto B = budget[static_cast<std::size_t>(g)];
      const auto k1 = static_cast<std::int64_t>(std::floor(first_ * static_cast<double>(B)));
      first[static_cast<std::size_t>(g)] = std::min(B, adaptive_ ? std::max(n_safe, k1) : k1);
    }
    for (int g = 0; g < H; ++g) select_head(scores, norms, T, H, g, first[static_cast<std::size_t>(g)], budget[static_cast<std::size_t>(g)], mask);
  }

  void add_notes(const CacheShape& s, nlohmann::json& n) const override {
    const auto budgets = layer_budgets(s);
    const auto b = budgets.empty() ? std::int64_t{0} : budgets[0];
    n["scorer"] = scorer_.spec().to_string();
    n["epsilon"] = epsilon_;
    n["first_stage_ratio"] = first_;
    n["allocation"] = adaptive_ ? "adaptive" : "uniform";
    if (adaptive_) {
      n["alpha"] = alpha_;
      n["selection"] =
          "budget_per_layer is the mean per KV head: each head's budget is its count of Ada-KV's H_kv·budget cells "
          "(kvpress CriticalAdaKVPress); stage 1 keeps its top max(floor(alpha·budget), floor(first_stage_ratio·"
          "head budget)) by the scorer, stage 2 the rest by (score + epsilon)·mean ||v·W_o,h||_1";
    } else {
      n["first_stage_per_head"] = b >= s.tokens ? b : static_cast<std::int64_t>(std::floor(first_ * static_cast<double>(b)));
      n["selection"] =
          "each KV head keeps its top first_stage_per_head by the scorer, then the rest of budget_per_layer by "
          "(score + epsilon)·mean over its query heads of ||v·W_o,h||_1 (kvpress CriticalKVPress)";
    }
  }

 private:
  // Marks head g's first `k1` cells by the scorer, then its best `budget` − k1 others by (s + ε)·n.
  void select_head(const HeadScores& scores, const std::vector<double>& norms, std::int64_t T, int H, int g,
                   std::int64_t k1, std::int64_t budget, std::vector<std::uint8_t>& mask) const {
    const auto row = static_cast<std::size_t>(g) * static_cast<std::size_t>(T);
    const double* s = scores.primary.data() + row;
    const double* sec = scores.secondary.data() + row;
    const double* n = norms.data() + row;
    std::vector<double> weighted(static_cast<std::size_t>(T));
    for (std::int64_t t = 0; t < T; ++t)
      weighted[static_cast<std::size_t>(t)] = s[t] == kInf ? kInf : (s[t] + epsilon_) * n[t];
    std::vector<std::uint8_t> stage1(static_cast<std::size_t>(T), 0);
    {
      const std::vector<double> p(s, s + T), q(sec, sec + T);
      keep_top_scores(p, q, T, k1, 1, 0, stage1);
    }
    const auto better = [&](std::int64_t x, std::int64_t y) {
      const auto ux = static_cast<std::size_t>(x), uy = static_cast<std::size_t>(y);
      if (stage1[ux] != stage1[uy]) return stage1[ux] > stage1[uy];
      if (weighted[ux] != weighted[uy]) return weighted[ux] > weighted[uy];
      if (s[x] != s[y]) return s[x] > s[y];
      if (sec[x] != sec[y]) return sec[x] > sec[y];
      return x < y;
    };
    std::vector<std::int64_t> idx(static_cast<std::size_t>(T));
    std::iota(idx.begin(), idx.end(), std::int64_t{0});
    budget = std::clamp<std::int64_t>(budget, 0, T);
    if (budget < T) std::nth_element(idx.begin(), idx.begin() + budget, idx.end(), better);
    for (std::int64_t i = 0; i < budget; ++i) mask[static_cast<std::size_t>(idx[static_cast<std::size_t>(i)] * H + g)] = 1;
  }

  WrappedScorer scorer_;
  double epsilon_, first_;
  bool adaptive_;
  double alpha_;
};

}  // namespace

MethodDef criticalkv_method() {
  auto m = eviction_method<CriticalKV>({"criticalkv", StageKind::eviction,
      "CriticalKV (docs/methods/criticalkv.md; arXiv 2502.03805, kvpress CriticalKVPress/CriticalAdaKVPress): each KV "
      "head keeps its top floor(first_stage_ratio·budget) by the scorer, then the rest of its budget by (score + "
      "epsilon)·mean over its query heads of ||v·W_o,h||_1 (needs --model: each layer's o_proj); allocation=adaptive "
      "shares the layer's H_kv·budget across heads as adakv does; the scorer runs with its default keys "
      "(expected_attention with vnorm=off).",
      {eviction_keep_param(), eviction_budget_param(),
       eviction_scorer_param("the method whose per-head scores are re-weighted (kvpress wraps any ScorerPress, no "
                             "default; its evaluation registry: SnapKVPress and ExpectedAttentionPress(use_vnorm="
                             "False)), run with its default keys, expected_attention with vnorm=off"),
       {"epsilon", ParamType::real, "1e-4", "added to the scorer's score before the W_o·v norm rescaling (kvpress epsilon 1e-4)",
        {}, 0, 1e300},
       {"first_stage_ratio", ParamType::real, "0.5",
        "fraction of each head's budget kept by the scorer alone in stage 1, floored (kvpress first_stage_ratio 0.5); "
        "0: all by the rescaled score, 1: the scorer's own top-k",
        {}, 0, 1},
       {"allocation", ParamType::choice, "uniform",
        "uniform: every KV head keeps budget (kvpress CriticalKVPress); adaptive: the layer's H_kv·budget shared "
        "across heads by Ada-KV's rule, as adakv (kvpress CriticalAdaKVPress)",
        {"uniform", "adaptive"}},
       {"alpha", ParamType::real, "0.2",
        "allocation=adaptive only: every head keeps at least its floor(alpha·budget) best tokens by the scorer "
        "(kvpress CriticalAdaKVPress alpha_safeguard 0.20); unused with uniform",
        {}, 0, 1}},
      check_eviction_budget});
  m.needs.checkpoint = true;  // W_o: each layer's self_attn.o_proj.weight
  return m;
}

}  // namespace kvlab::compressors
