// kvzip: query-agnostic eviction by context reconstruction (docs/methods/kvzip.md). Kim, Kim,
// Kwon, Yang, Yun, Song, "KVzip: Query-Agnostic KV Cache Compression with Context
// Reconstruction", arXiv 2505.23416; authors' code snu-mllab/KVzip (model/wrapper.py `self_task`
// and `scoring`, attention/score.py `_get_score` and `_threshold`), also NVIDIA/kvpress
// kvpress/presses/kvzip_press.py.
//
// After the prefill, the model is asked to repeat its context: for each chunk of the cached
// tokens, "\n\nRepeat the previous context exactly." (later chunks: "...the part of the previous
// context exactly, starting with " and the previous chunk's last 8 tokens), the chat template's
// answer start, and the chunk itself, teacher-forced, run over the whole cache and not kept. A
// cached token's score is the largest attention any of those queries pays it — with each
// query's softmax taken over the sinks, the chunk being repeated and the probe's own tokens
// only — maxed over the query heads of its KV head. The lowest scores are evicted: by default
// over all layers and heads at once (the authors' pair-level threshold), so layers and heads
// keep different counts that add up to every other method's total, L·H_kv·budget.
//
// It runs the model (MethodNeeds::live_model): the harness gives the stage a LiveModel
// (compressors/live_model.h). Not layer-local: the global level ranks every layer's scores.
#include "compressors/methods/kvzip.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <numeric>

#include "compressors/attention.h"
#include "compressors/live_model.h"
#include "compressors/methods/eviction.h"
#include "core/error.h"

namespace kvlab::compressors {

std::vector<KvzipProbe> kvzip_probes(std::span<const std::int32_t> cached, std::int64_t sink, std::int64_t chunk,
                                     int tail, std::span<const std::int32_t> first,
                                     std::span<const std::int32_t> later, std::span<const std::int32_t> answer_start) {
  std::vector<KvzipProbe> out;
  const auto T = static_cast<std::int64_t>(cached.size());
  for (std::int64_t begin = sink; begin < T; begin += chunk) {
    KvzipProbe p{begin, std::min(begin + chunk, T), {}};
    if (out.empty()) {
      p.tokens.assign(first.begin(), first.end());
    } else {
      p.tokens.assign(later.begin(), later.end());
      const std::int64_t from = std::max(out.back().begin, out.back().end - tail);  // python's [-tail:]
      p.tokens.insert(p.tokens.end(), cached.begin() + from, cached.begin() + out.back().end);
    }
    p.tokens.insert(p.tokens.end(), answer_start.begin(), answer_start.end());
    p.tokens.insert(p.tokens.end(), cached.begin() + p.begin, cached.begin() + p.end);
    out.push_back(std::move(p));
  }
  return out;
}

void kvzip_probe_scores(const float* cache_keys, std::int64_t T, const float* probe_queries, const float* probe_keys,
                        std::int64_t n, int q_heads, int kv_heads, int head_dim, std::int64_t sink,
                        std::int64_t begin, std::int64_t end, std::vector<double>& scores) {
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const std::int64_t chunk = end - begin, K = sink + chunk + n;
  const int D = head_dim, group = q_heads / kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  Matrix keys(K, D), queries(n, D);
  for (int g = 0; g < kv_heads; ++g) {
    // The keys a probe query may see, in the authors' order: sinks, the chunk, the probe itself.
    const auto row = [&](const float* base, std::int64_t t, int heads, int h) { return base + (t * heads + h) * D; };
    for (std::int64_t j = 0; j < sink; ++j) std::copy_n(row(cache_keys, j, kv_heads, g), D, &keys(j, 0));
    for (std::int64_t j = 0; j < chunk; ++j) std::copy_n(row(cache_keys, begin + j, kv_heads, g), D, &keys(sink + j, 0));
    for (std::int64_t j = 0; j < n; ++j) std::copy_n(row(probe_keys, j, kv_heads, g), D, &keys(sink + chunk + j, 0));
    double* score = scores.data() + g * T;
    for (int r = 0; r < group; ++r) {
      const int h = g * group + r;
      for (std::int64_t i = 0; i < n; ++i) std::copy_n(row(probe_queries, i, q_heads, h), D, &queries(i, 0));
      const Matrix logits = (queries * keys.transpose()) * scale;  // [n, K]
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t visible = sink + chunk + i + 1;  // causal within the probe
        const auto x = logits.row(i).head(visible).array();
        const float top = x.maxCoeff();
        const Eigen::ArrayXf e = (x - top).exp().transpose();
        const double sum = e.cast<double>().sum();
        for (std::int64_t j = 0; j < chunk; ++j) score[begin + j] = std::max(score[begin + j], e(sink + j) / sum);
      }
    }
  }
}

namespace {

constexpr int kPreviousTail = 8;  // `prev_postfix_size` in both the authors' code and kvpress
// model/wrapper.py `self_task` (the second keeps its trailing space there; kvpress drops it).
constexpr const char* kRepeatFirst = "\n\nRepeat the previous context exactly.";
constexpr const char* kRepeatLater = "\n\nRepeat the part of the previous context exactly, starting with ";

class Kvzip final : public BudgetedEviction {
 public:
  explicit Kvzip(const StageSpec& spec)
      : BudgetedEviction(spec), level_(spec.get("level")), chunk_(spec.get_int("chunk")), sink_(spec.get_int("sink")) {}

  void select_cells(const CompressContext& ctx, int l, std::int64_t b, std::vector<std::uint8_t>& mask) const override {
    const auto& s = ctx.cache.shape();
    const std::lock_guard lock(mutex_);
    if (scores_.empty()) score_all(ctx);
    const HeadScores layer{scores_[static_cast<std::size_t>(l)], {}};  // ties: the earlier cell
    if (level_ == "head") return keep_top_per_head(layer, s.tokens, s.kv_heads, b, mask);
    if (level_ == "layer") return keep_top_adaptive(layer, s.tokens, s.kv_heads, b, 0.0, mask);
    if (global_.empty()) select_globally(s, b);
    const auto& kept = global_[static_cast<std::size_t>(l)];
    for (std::int64_t t = 0; t < s.tokens; ++t)
      for (int g = 0; g < s.kv_heads; ++g) mask[t * s.kv_heads + g] = kept[g * s.tokens + t];
  }

  void add_notes(const CacheShape&, nlohmann::json& n) const override {
    const std::lock_guard lock(mutex_);
    n["score"] = "max attention from the context-reconstruction probes (snu-mllab/KVzip)";
    n["probes"] = probes_;
    if (!kept_per_layer_.empty()) n["kept_per_layer"] = kept_per_layer_;
  }

 private:
  // Every layer's scores [H_kv, T] from the reconstruction probes; the sinks +inf (always kept).
  void score_all(const CompressContext& ctx) const {
    const auto& s = ctx.cache.shape();
    if (!ctx.live_model)
      fail("kvzip: {} has no live model: kvzip runs the model to score the cache (use it in `kvlab eval`, or "
           "`kvlab compress --model DIR` on a dump that holds its tokens)",
           ctx.cache.describe());
    const auto& live = *ctx.live_model;
    const auto cached = live.cached_tokens();
    if (static_cast<std::int64_t>(cached.size()) != s.tokens)
      fail("kvzip: {}: the live model holds {} tokens, the cache {}", ctx.cache.describe(), cached.size(), s.tokens);
    const std::int64_t T = s.tokens, sink = std::min(sink_, T);
    scores_.assign(static_cast<std::size_t>(s.layers), std::vector<double>(static_cast<std::size_t>(s.kv_heads * T), 0.0));
    for (auto& layer : scores_)
      for (int g = 0; g < s.kv_heads; ++g)
        std::fill_n(layer.begin() + g * T, sink, std::numeric_limits<double>::infinity());
    const auto first = live.encode(kRepeatFirst), later = live.encode(kRepeatLater), answer = live.answer_start();
    const auto probes = kvzip_probes(cached, sink, chunk_, kPreviousTail, first, later, answer);
    probes_ = static_cast<std::int64_t>(probes.size());
    for (const auto& probe : probes) {
      // The probe's rotated queries and keys of every layer, scored once it is over: while it
      // runs, the model's cache (which the source may read) holds its tokens too.
      const auto n = static_cast<std::int64_t>(probe.tokens.size());
      std::vector<FloatTensor> queries(static_cast<std::size_t>(s.layers)), keys(static_cast<std::size_t>(s.layers));
      live.probe(probe.tokens, [&](const LiveModel::ProbeLayer& p) {
        if (p.layer < 0 || p.layer >= s.layers || p.queries.shape != core::Shape{n, s.q_heads, s.head_dim} ||
            p.keys.shape != core::Shape{n, s.kv_heads, s.head_dim} || static_cast<std::int64_t>(p.positions.size()) != n)
          fail("kvzip: {}: the live model's layer {} probe has the wrong shape", ctx.cache.describe(), p.layer);
        auto& q = queries[static_cast<std::size_t>(p.layer)] = p.queries;
        auto& k = keys[static_cast<std::size_t>(p.layer)] = p.keys;
        const auto& rope = ctx.cache.rope(p.layer);  // Gemma-3: the sliding layers' own base
        rope.apply(q.span(), n, s.q_heads, p.positions);
        rope.apply(k.span(), n, s.kv_heads, p.positions);
      });
      for (int l = 0; l < s.layers; ++l) {
        const auto& q = queries[static_cast<std::size_t>(l)];
        if (q.data.empty()) fail("kvzip: {}: the live model's probe skipped layer {}", ctx.cache.describe(), l);
        const auto rotated = rotate_keys(ctx.cache, l, ctx.cache.layer(l, Part::key));
        kvzip_probe_scores(rotated.data.data(), T, q.data.data(), keys[static_cast<std::size_t>(l)].data.data(), n,
                           s.q_heads, s.kv_heads, s.head_dim, sink, probe.begin, probe.end,
                           scores_[static_cast<std::size_t>(l)]);
      }
    }
  }

  // The authors' pair level: the L·H_kv·b best cells over every layer and head at once; ties to
  // the lower layer, then head, then token (the authors keep the scores strictly above the
  // threshold, which can keep fewer: docs/methods/kvzip.md §3).
  void select_globally(const CacheShape& s, std::int64_t b) const {
    const std::int64_t T = s.tokens, per_layer = s.kv_heads * T;
    std::vector<std::int64_t> order(static_cast<std::size_t>(s.layers * per_layer));
    std::iota(order.begin(), order.end(), std::int64_t{0});
    const auto score = [&](std::int64_t i) { return scores_[static_cast<std::size_t>(i / per_layer)][i % per_layer]; };
    const auto total = std::min<std::int64_t>(s.layers * s.kv_heads * b, static_cast<std::int64_t>(order.size()));
    std::nth_element(order.begin(), order.begin() + total, order.end(), [&](std::int64_t a, std::int64_t c) {
      const double x = score(a), y = score(c);
      return x != y ? x > y : a < c;
    });
    global_.assign(static_cast<std::size_t>(s.layers), std::vector<std::uint8_t>(static_cast<std::size_t>(per_layer), 0));
    kept_per_layer_.assign(static_cast<std::size_t>(s.layers), 0);
    for (std::int64_t k = 0; k < total; ++k) {
      const auto i = order[static_cast<std::size_t>(k)];
      global_[static_cast<std::size_t>(i / per_layer)][static_cast<std::size_t>(i % per_layer)] = 1;
      ++kept_per_layer_[static_cast<std::size_t>(i / per_layer)];
    }
  }

  std::string level_;
  std::int64_t chunk_, sink_;
  mutable std::mutex mutex_;
  mutable std::vector<std::vector<double>> scores_;         // [L][H_kv·T]
  mutable std::vector<std::vector<std::uint8_t>> global_;   // [L][H_kv·T] the pair-level selection
  mutable std::vector<std::int64_t> kept_per_layer_;
  mutable std::int64_t probes_ = 0;
};

}  // namespace

MethodDef kvzip_method() {
  MethodDef m{"kvzip", StageKind::eviction,
              "KVzip (docs/methods/kvzip.md; snu-mllab/KVzip, arXiv 2505.23416): query-agnostic scores from the "
              "attention each cached token receives while the model, given the whole cache, repeats the context in "
              "chunks (teacher-forced); the lowest are evicted. Runs the model: `kvlab eval`, or `kvlab compress "
              "--model DIR` on a dump that holds its tokens. level=global ranks every layer and head at once (the "
              "authors' default), level=layer each layer's heads together (kvpress layerwise), level=head each head "
              "alone.",
              {eviction_keep_param(), eviction_budget_param(),
               {"level", ParamType::choice, "global",
                "global: the budget of all layers ranked at once | layer: per layer, across its heads | head: per head",
                {"global", "layer", "head"}},
               {"chunk", ParamType::integer, "2000",
                "tokens repeated per probe (the authors' self_task chunk_size; kvpress uses 2048)", {}, 1, 1e9},
               {"sink", ParamType::integer, "4",
                "first tokens always kept and seen by every probe (kvpress n_sink; the authors: the system prompt)",
                {}, 0, 1e9}},
              check_eviction_budget};
  m.make_eviction = [](const StageSpec& spec) -> std::unique_ptr<EvictionStage> { return std::make_unique<Kvzip>(spec); };
  m.needs.live_model = true;
  return m;
}

}  // namespace kvlab::compressors
