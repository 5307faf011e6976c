// expected_attention: keeps, per layer and KV head, the tokens that future queries are expected
// to attend to most, from the statistics of the recent queries (docs/methods/expected_attention.md).
// Devoto, Jeblick, Jégou, "Expected Attention: KV Cache Compression by Estimating Attention from
// Future Queries Distribution", arXiv 2510.00636; kvlab follows kvpress's ExpectedAttentionPress
// (NVIDIA/kvpress kvpress/presses/expected_attention_press.py), per layer:
//
//   queries   the pre-RoPE queries q of the statistics window (kvpress: q_proj of every hidden
//             state after the first n_sink; kvlab: the dump's last `window` queries, those of the
//             first `sinks` tokens left out), per query head h:
//             μ_h = mean q,  Σ_h = (1/N) Σ (q − μ_h)(q − μ_h)ᵀ   (population covariance)
//   rotation  R̄ = mean over the `future` positions P = p_last+1 … p_last+future of the RoPE
//             matrix R(P) = diag(cos) + diag(sin)·rotate_half (kvpress: positions q_len …
//             q_len+n_future_positions−1, the same when positions are 0 … T−1);
//             μ̂_h = R̄ μ_h, Σ̂_h = R̄ Σ_h R̄ᵀ
//   score     for the post-RoPE keys k_t of t ≥ sinks (KV head g = h / n_rep):
//             z_{h,t} = μ̂_h·k_t/√D + k_tᵀ Σ̂_h k_t/(2D)      (the second term only with cov=on)
//             a_{g,t} = mean over the group's heads of softmax_t(z_{h,t})   (over t ≥ sinks only)
//             s_{g,t} = (a_{g,t} + epsilon)·‖v_t‖             (vnorm=on; else a_{g,t})
//   sinks     s_{g,t<sinks} = max over the layer's heads and tokens of s + 1 (kept first).
//
// exp(z) is E[exp(q·k/√D)] for a Gaussian q ~ N(μ̂, Σ̂) up to the constant the softmax drops. Then
// ScorerPress's top-k per KV head (budget: eviction.h eviction_budget; ties to the earlier token).
//
// Arithmetic: keys rotated at their true positions in f32 (rotate_keys, as the cache holds them);
// the future angles formed in f32 as HF's rotary embedding does (position · inv_freq), their cos
// and sin, the averages, the statistics, scores and softmax in double. kvpress casts cos/sin to the
// model dtype (bf16) before averaging and computes in that dtype; kvlab keeps double throughout.
// The quadratic form goes through the backend's f64 gemm, a block of tokens at a time: with fewer
// statistics queries than channels (N < D, the usual case: N ≤ the dump's query window) as
// k_tᵀ Σ̂ k_t = Σ_w (k_t·z_w)², z_w = R̄(q_w − μ)/√N (N·D per key and query head instead of D²),
// else with Σ̂ formed (D² per key). Both are the same sum up to rounding.
//
// Device path `scores`: the resident route (harness/resident_routes.cpp) calls select() on a
// KvCacheSource, which copies the layer's keys, values and query window to host f32; the keep
// masks go back and the kept cells stay as the model computed them.
#include <algorithm>
#include <cmath>
#include <limits>

#include "compressors/attention.h"
#include "compressors/methods/eviction.h"
#include "core/error.h"

namespace kvlab::compressors {
namespace {

constexpr std::int64_t kTokenBlock = 2048;  // keys per gemm of the quadratic form (bounds its scratch)

// y ← R̄ x for the averaged rotation R̄ = diag(c̄) + diag(s̄)·P (rotate_half pairing j ↔ j + D/2):
// y_j = c̄_j x_j − s̄_j x_{j+D/2}, y_{j+D/2} = s̄_j x_j + c̄_j x_{j+D/2}. x and y have stride `stride`.
void rotate_mean(const std::vector<double>& c, const std::vector<double>& s, double* x, std::int64_t stride) {
  const auto half = static_cast<std::int64_t>(c.size());
  for (std::int64_t j = 0; j < half; ++j) {
    const double a = x[j * stride], b = x[(j + half) * stride];
    x[j * stride] = c[static_cast<std::size_t>(j)] * a - s[static_cast<std::size_t>(j)] * b;
    x[(j + half) * stride] = s[static_cast<std::size_t>(j)] * a + c[static_cast<std::size_t>(j)] * b;
  }
}

class ExpectedAttention final : public BudgetedEviction {
 public:
  explicit ExpectedAttention(const StageSpec& spec)
      : BudgetedEviction(spec),
        future_(spec.get_int("future")),
        sinks_(spec.get_int("sinks")),
        window_(spec.get_int("window")),
        cov_(spec.get("cov") == "on"),
        vnorm_(spec.get("vnorm") == "on"),
        epsilon_(spec.get_real("epsilon")) {}

  HeadScores score_layer(const CompressContext& ctx, int l, std::int64_t) const override {
    const auto& cache = ctx.cache;
    const auto& s = cache.shape();
    const std::int64_t T = s.tokens, W = s.query_window;
    const int H = s.kv_heads, Hq = s.q_heads, D = s.head_dim, n_rep = s.group_size();
    if (static_cast<std::int64_t>(cache.positions().size()) != T)
      fail("expected_attention: {} has {} positions for {} tokens", cache.describe(), cache.positions().size(), T);
    if (W < 1) fail("expected_attention: {} holds no queries (W = 0): the statistics come from the query window", cache.describe());
    if (window_ > W)
      fail("expected_attention: key 'window' = {} exceeds the {} queries {} holds (its query window W)", window_, W,
           cache.describe());
    if (T <= sinks_)
      fail("expected_attention: {} has T = {} tokens, not more than key 'sinks' = {} (kvpress asserts the same)",
           cache.describe(), T, sinks_);
    const std::int64_t first = first_stats_token(T, W), N = T - first, n = T - sinks_;

    const auto query = cache.queries(l);
    if (query.shape != core::Shape{W, Hq, D}) fail("expected_attention: {}: layer {} queries have the wrong shape", cache.describe(), l);
    auto key_raw = cache.layer(l, Part::key);
    if (key_raw.shape != core::Shape{T, H, D}) fail("expected_attention: {}: layer {} keys have the wrong shape", cache.describe(), l);
    const auto key = rotate_keys(cache, l, std::move(key_raw));
    FloatTensor value;
    if (vnorm_) {
      value = cache.layer(l, Part::value);
      if (value.shape != core::Shape{T, H, D}) fail("expected_attention: {}: layer {} values have the wrong shape", cache.describe(), l);
    }

    // R̄: the RoPE rotation averaged over the future positions (identity without RoPE).
    const auto& inv_freq = cache.rope(l).inv_freq();
    const std::size_t half = static_cast<std::size_t>(D / 2);
    std::vector<double> cbar(half, 1.0), sbar(half, 0.0);
    if (!cache.rope(l).is_identity()) {
      if (inv_freq.size() != half) fail("expected_attention: RoPE of {} dims for head_dim {}", 2 * inv_freq.size(), D);
      if (cache.rope(l).attention_factor() != 1.0f)  // the averaged rotation below leaves it out
        fail("expected_attention: RoPE with attention factor {} (LongRoPE) is not supported",
             cache.rope(l).attention_factor());
      const std::int64_t p0 = cache.positions().back() + 1;
      for (std::size_t j = 0; j < half; ++j) {
        double c = 0, sn = 0;
        for (std::int64_t i = 0; i < future_; ++i) {
          const float angle = static_cast<float>(p0 + i) * inv_freq[j];  // HF: position·inv_freq in fp32
          c += std::cos(static_cast<double>(angle));
          sn += std::sin(static_cast<double>(angle));
        }
        cbar[j] = c / static_cast<double>(future_);
        sbar[j] = sn / static_cast<double>(future_);
      }
    }

    // Per query head: μ̂ [Hq, D], and the covariance as `rows` D-vectors b_j per head [Hq, rows, D]
    // with k_tᵀ Σ̂ k_t = Σ_j (k_t·b_j)(k_t·b'_j): the z_w (rows = N, b' = b), or Σ̂'s rows with
    // b'_j = e_j·k_t (rows = D; Σ̂ row-major).
    const bool factored = N < D;
    const std::int64_t rows = factored ? N : D;
    std::vector<double> mu(static_cast<std::size_t>(Hq) * D, 0.0), sigma;
    if (cov_) sigma.assign(static_cast<std::size_t>(Hq * rows) * D, 0.0);
    const std::int64_t w0 = first - (T - W);  // the first window row in the statistics
    for (int h = 0; h < Hq; ++h) {
      double* m = mu.data() + static_cast<std::size_t>(h) * D;
      const auto q = [&](std::int64_t w) { return query.data.data() + (w * Hq + h) * D; };
      for (std::int64_t w = w0; w < W; ++w)
        for (int d = 0; d < D; ++d) m[d] += q(w)[d];
      for (int d = 0; d < D; ++d) m[d] /= static_cast<double>(N);
      if (cov_) {
        double* c = sigma.data() + static_cast<std::size_t>(h * rows) * D;
        std::vector<double> x(static_cast<std::size_t>(D));
        const double scale = 1.0 / std::sqrt(static_cast<double>(N));
        for (std::int64_t w = w0; w < W; ++w) {
          for (int d = 0; d < D; ++d) x[static_cast<std::size_t>(d)] = q(w)[d] - m[d];
          if (factored) {  // z_w = R̄ (q_w − μ)/√N
            double* zw = c + (w - w0) * D;
            for (int d = 0; d < D; ++d) zw[d] = x[static_cast<std::size_t>(d)] * scale;
            rotate_mean(cbar, sbar, zw, 1);
            continue;
          }
          for (int i = 0; i < D; ++i)
            for (int j = 0; j < D; ++j) c[i * D + j] += x[static_cast<std::size_t>(i)] * x[static_cast<std::size_t>(j)];
        }
        if (!factored) {
          for (int i = 0; i < D * D; ++i) c[i] /= static_cast<double>(N);
          for (int j = 0; j < D; ++j) rotate_mean(cbar, sbar, c + j, D);      // every column: R̄ Σ
          for (int i = 0; i < D; ++i) rotate_mean(cbar, sbar, c + i * D, 1);  // every row: (R̄ Σ) R̄ᵀ
        }
      }
      rotate_mean(cbar, sbar, m, 1);
    }

    HeadScores out{std::vector<double>(static_cast<std::size_t>(H * T), 0.0), {}};
    const double inv_sqrt_d = 1.0 / std::sqrt(static_cast<double>(D)), inv_2d = 1.0 / (2.0 * D);
    const std::int64_t rd = static_cast<std::int64_t>(n_rep) * rows;
    std::vector<double> z(static_cast<std::size_t>(n_rep * n)), e(static_cast<std::size_t>(n)), kd, y;
    double top = -std::numeric_limits<double>::infinity();
    for (int g = 0; g < H; ++g) {
      const auto k_row = [&](std::int64_t t) { return key.data.data() + (t * H + g) * D; };
      for (int r = 0; r < n_rep; ++r) {
        const double* m = mu.data() + static_cast<std::size_t>(g * n_rep + r) * D;
        for (std::int64_t i = 0; i < n; ++i) {
          const float* k = k_row(sinks_ + i);
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += m[d] * k[d];
          z[static_cast<std::size_t>(r * n + i)] = dot * inv_sqrt_d;
        }
      }
      if (cov_) {
        // Y [block, n_rep·rows] row-major = K_block · [B_1ᵀ … B_rᵀ]: column-major, Yᵀ = Bᵀ·K_blockᵀ
        // with B the group's heads' rows side by side (D × n_rep·rows, ld D; Σ̂ is symmetric) and
        // K_block row-major (ld D).
        const double* b = sigma.data() + static_cast<std::size_t>(g * n_rep * rows) * D;
        for (std::int64_t i0 = 0; i0 < n; i0 += kTokenBlock) {
          const std::int64_t m = std::min(kTokenBlock, n - i0);
          kd.resize(static_cast<std::size_t>(m * D));
          y.resize(static_cast<std::size_t>(m * rd));
          for (std::int64_t i = 0; i < m; ++i) std::copy_n(k_row(sinks_ + i0 + i), D, kd.data() + i * D);
          ctx.backend.gemm(true, false, rd, m, D, 1.0, b, D, kd.data(), D, 0.0, y.data(), rd);
          for (std::int64_t i = 0; i < m; ++i)
            for (int r = 0; r < n_rep; ++r) {
              const double* yr = y.data() + i * rd + r * rows;
              const double* k = kd.data() + i * D;
              double quad = 0;
              if (factored)
                for (std::int64_t j = 0; j < rows; ++j) quad += yr[j] * yr[j];
              else
                for (int d = 0; d < D; ++d) quad += k[d] * yr[d];
              z[static_cast<std::size_t>(r * n + i0 + i)] += quad * inv_2d;
            }
        }
      }
      double* score = out.primary.data() + g * T;
      for (int r = 0; r < n_rep; ++r) {  // softmax over the keys after the sinks, mean over the group
        const double* zr = z.data() + static_cast<std::size_t>(r) * n;
        const double zmax = *std::max_element(zr, zr + n);
        double sum = 0;
        for (std::int64_t i = 0; i < n; ++i) sum += e[static_cast<std::size_t>(i)] = std::exp(zr[i] - zmax);
        for (std::int64_t i = 0; i < n; ++i) score[sinks_ + i] += e[static_cast<std::size_t>(i)] / sum;
      }
      for (std::int64_t t = sinks_; t < T; ++t) {
        score[t] /= n_rep;
        if (vnorm_) {
          const float* v = value.data.data() + (t * H + g) * D;
          double sq = 0;
          for (int d = 0; d < D; ++d) sq += double{v[d]} * v[d];
          score[t] = (score[t] + epsilon_) * std::sqrt(sq);
        }
        top = std::max(top, score[t]);
      }
    }
    for (int g = 0; g < H; ++g)  // kvpress pads the sinks with scores.max() + 1, one value for the layer
      std::fill_n(out.primary.data() + g * T, sinks_, top + 1);
    return out;
  }

  void add_notes(const CacheShape& s, nlohmann::json& n) const override {
    n["score"] =
        "(mean over the GQA group of softmax over t >= sinks of mu'.k_t/sqrt(D) + k_t'.Sigma.k_t/(2D) + epsilon) * "
        "||v_t||, mu and Sigma of the window's pre-RoPE queries rotated by the RoPE averaged over the next `future` "
        "positions; sinks scored max + 1";
    n["future"] = future_;
    n["sinks"] = sinks_;
    n["cov"] = spec_.get("cov");
    n["vnorm"] = spec_.get("vnorm");
    n["epsilon"] = epsilon_;
    n["stats_queries"] = s.query_window >= 1 && s.tokens > sinks_ ? s.tokens - first_stats_token(s.tokens, s.query_window) : 0;
  }

 private:
  // The first token whose query enters the statistics: the last `window` (0: all W) of the dump's
  // queries, none of the first `sinks` tokens (kvpress drops their hidden states).
  std::int64_t first_stats_token(std::int64_t T, std::int64_t W) const {
    const std::int64_t rows = window_ > 0 ? std::min(window_, W) : W;
    return std::max(T - rows, sinks_);
  }

  std::int64_t future_, sinks_, window_;
  bool cov_, vnorm_;
  double epsilon_;
};

}  // namespace

MethodDef expected_attention_method() {
  return eviction_method<ExpectedAttention>({"expected_attention", StageKind::eviction,
              "Expected Attention (docs/methods/expected_attention.md; arXiv 2510.00636, kvpress "
              "ExpectedAttentionPress): keeps, per layer and KV head, the budget tokens with the highest expected "
              "attention from future queries, a Gaussian fit (mean, covariance) of the window's pre-RoPE queries "
              "rotated by the RoPE averaged over the next `future` positions, mean over the GQA group, times the "
              "value norm; the first `sinks` tokens are always kept first. Needs the dump's query window (W >= 1).",
              {eviction_keep_param(), eviction_budget_param(),
               {"future", ParamType::integer, "512",
                "future positions the RoPE rotation is averaged over, p_last+1 .. p_last+future (kvpress "
                "n_future_positions 512)",
                {}, 1, 1e7},
               {"sinks", ParamType::integer, "4",
                "first tokens kept before all others (scored max + 1) and left out of the softmax and the query "
                "statistics (kvpress n_sink 4)",
                {}, 0, 1e9},
               {"cov", ParamType::choice, "on",
                "add the query covariance term k'.Sigma.k/(2D) to the expected logit (kvpress use_covariance True)",
                {"on", "off"}},
               {"vnorm", ParamType::choice, "on",
                "multiply the expected attention (plus epsilon) by ||v|| (kvpress use_vnorm True)", {"on", "off"}},
               {"epsilon", ParamType::real, "0",
                "added to the expected attention before the value-norm rescaling; only with vnorm=on (kvpress "
                "epsilon 0.0; its evaluation registry's expected_attention press uses 1e-2)",
                {}, 0, 1e9},
               {"window", ParamType::integer, "0",
                "query statistics over the dump's last `window` queries (those of sink tokens left out), <= W; 0: all "
                "W (kvpress: every prompt token after the sinks, the same when W >= T - sinks)",
                {}, 0, 1e9}},
              check_eviction_budget});
}

}  // namespace kvlab::compressors
