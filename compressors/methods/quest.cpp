// quest: query-aware page selection at every decode step (docs/methods/quest.md). Tang, Zhao,
// Zhu, Xiao, Kasikci, Han, "Quest: Query-Aware Sparsity for Efficient Long-Context LLM
// Inference", ICML 2024, arXiv 2406.10774; kvlab follows the authors' serving code
// (mit-han-lab/Quest quest/models/llama.py, quest/utils/controller.py, quest/utils/__init__.py).
//
// The whole cache stays stored (16-bit cells as `full` stores them, post-RoPE keys), plus, per
// layer, page of `page_size` tokens and KV head, the channel-wise min and max of the post-RoPE
// 16-bit keys (the authors' metadata cache; min and max of fp16 values are fp16 values, so they
// are stored exactly). At a decode step the query at position p sees the n tokens at positions
// ≤ p, in N = ⌈n/P⌉ pages; the last page (the current one) is always attended, and when N
// exceeds the page budget B the other pages are ranked per query head by the upper bound
// Σ_c max(q_c·min_c, q_c·max_c) of q·k over the page (MaxPossibleSample in the authors' kernels)
// and the best B − 1 are attended. B = budget // P (quest_init: token_budget // page_size, the
// current page included); N ≤ B, and the first `skip_layers` layers (the authors' 2), attend all.
//
// GQA (the authors run MHA models): each query head selects its own pages from its KV head's
// metadata; a decode step loads, per KV head, the union of its query heads' pages once.
//
// Layer-local: compress stores and scores it a layer at a time; skip_layers reads the layer's
// depth from the slice (CacheSource::model_layer).
//
// Scoring (compressors/score.h): each dumped window query is a decode step; the rebuilt layer
// carries each query's selection (LayerKV::query_kept) and what the step loads
// (LayerKV::loaded_bytes: the metadata of the N − 1 scored pages when pages are ranked, plus
// the union's cells at the bytes each KV head's cells are stored in).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <unordered_map>

#include "compressors/dense.h"
#include "compressors/methods/eviction.h"
#include "core/dtype.h"
#include "core/error.h"
#include "linalg/backend.h"

namespace kvlab::compressors {
namespace {

// The rule for a cache of T tokens: the page budget B (pages, the current one included) is the
// authors' token_budget // page_size when budget > 0 (at least one page, checked by
// check_quest_keys), else keep·T tokens, rounded as every selection method rounds them, // P, at
// least the current page. The budget is fixed when the cache is compressed.
PagedSelection quest_rule(const StageSpec& spec, std::int64_t tokens) {
  const std::int64_t P = spec.get_int("page_size");
  return {.page_size = P,
          .page_budget = spec.get_int("budget") > 0 ? spec.get_int("budget") / P
                                                    : std::max<std::int64_t>(1, eviction_budget(spec, tokens) / P),
          .skip_layers = static_cast<int>(spec.get_int("skip_layers"))};
}

class QuestCompressed final : public Compressed {
 public:
  QuestCompressed(const CacheSource& cache, const StageSpec& spec)
      : cache_(cache),
        shape_(cache.shape()),
        rule_(quest_rule(spec, cache.shape().tokens)),
        cells_(dense_representation(cache, nullptr)) {
    const std::int64_t T = shape_.tokens, P = rule_.page_size, pages = (T + P - 1) / P;
    const int H = shape_.kv_heads, D = shape_.head_dim;
    // The cells' keys as dense_representation holds them before the chain packs them: post-RoPE
    // f32 [T, D] per layer and KV head ("layer{l}/head{g}/key", compressors/dense.h). Their
    // 16-bit values are round(k); rounding to nearest is monotone, so a page's min and max of
    // the 16-bit keys are round(min k) and round(max k): the metadata rounds 2 values a channel.
    std::unordered_map<std::string, const StoredTensor*> by_name;
    for (const StoredTensor* t : cells_->stored()) by_name[t->name] = t;
    const auto key_of = [&](int l, int g) {
      const auto it = by_name.find(fmt::format("layer{}/head{}/key", l, g));
      return it == by_name.end() ? nullptr : it->second;
    };
    for (int l = 0; l < shape_.layers; ++l) {
      // [page, head, {max, min}, D]
      std::vector<float> meta(static_cast<std::size_t>(pages * H * 2 * D));
      for (int g = 0; g < H; ++g) {
        const StoredTensor* key = key_of(l, g);
        if (!key || key->values.size() != static_cast<std::size_t>(T * D))
          fail("quest: layer {} KV head {}: the stored keys are not [T, D]", l, g);
        for (std::int64_t i = 0; i < pages; ++i) {
          float* mx = meta.data() + ((i * H + g) * 2) * D;
          float* mn = mx + D;
          std::fill_n(mx, D, -std::numeric_limits<float>::infinity());
          std::fill_n(mn, D, std::numeric_limits<float>::infinity());
          for (std::int64_t t = i * P; t < std::min(T, (i + 1) * P); ++t) {
            const float* k = key->values.data() + t * D;
            for (int d = 0; d < D; ++d) {
              mx[d] = std::max(mx[d], k[d]);
              mn[d] = std::min(mn[d], k[d]);
            }
          }
        }
      }
      std::vector<std::uint16_t> bits(meta.size());
      core::f32_to_16bit(core::DType::f16, meta, bits);
      core::bits16_to_f32(core::DType::f16, bits, meta);
      meta_.push_back(StoredTensor::fp16(fmt::format("layer{}/page_max_min", l), {pages, std::int64_t{H} * 2 * D},
                                         std::move(meta), QuantLayout::none, false));
    }
  }

  std::vector<StoredTensor*> stored() override {
    auto out = cells_->stored();
    for (auto& m : meta_) out.push_back(&m);
    return out;
  }

  LayerKV reconstruct(int layer) const override {
    auto out = cells_->reconstruct(layer);
    const std::int64_t T = shape_.tokens, W = shape_.query_window, P = rule_.page_size, B = rule_.page_budget,
                       stored_pages = (T + P - 1) / P;
    const int H = shape_.kv_heads, Hq = shape_.q_heads, D = shape_.head_dim, n_rep = shape_.group_size();
    const auto& pos = cache_.positions();
    auto queries = cache_.queries(layer);
    const std::vector<std::int64_t> query_pos(pos.end() - W, pos.end());
    cache_.rope(layer).apply(queries.span(), W, Hq, query_pos);
    const auto& meta = meta_.at(static_cast<std::size_t>(layer));
    // What a step reads, from the packed buffers: a page's metadata for one KV head, and each
    // KV head's cell (key + value of one token) as it is stored (16-bit, or a quantizer's mean).
    const double meta_bytes = static_cast<double>(meta.bytes()) / static_cast<double>(stored_pages * H);
    std::vector<double> cell_bytes(static_cast<std::size_t>(H), 0.0);
    for (int g = 0; g < H; ++g) {
      const auto key = fmt::format("layer{}/head{}/key", layer, g), value = fmt::format("layer{}/head{}/value", layer, g);
      for (const StoredTensor* s : cells_->stored())
        if (s->name == key || s->name == value)
          cell_bytes[static_cast<std::size_t>(g)] += static_cast<double>(s->bytes()) / static_cast<double>(T);
    }

    // Every window row's bound on every stored page at once, per KV head: with q⁺ = max(q, 0)
    // and q⁻ = min(q, 0), Σ_c max(q_c·min_c, q_c·max_c) = q⁺·max + q⁻·min, one GEMM of the rows
    // [q⁺ | q⁻] (M = W·n_rep of them) against the pages' [max | min] (f32, as the authors' fp16
    // kernel is lower still). A step only ranks the complete pages before its current one.
    const std::int64_t M = W * n_rep;
    std::vector<float> signed_q(static_cast<std::size_t>(M * 2 * D)), pages_of_g(static_cast<std::size_t>(stored_pages * 2 * D)),
        bounds(static_cast<std::size_t>(H * M * stored_pages));
    for (int g = 0; g < H; ++g) {
      for (std::int64_t m = 0; m < M; ++m) {
        const float* q = queries.data.data() + ((m / n_rep) * Hq + g * n_rep + m % n_rep) * D;
        float* row = signed_q.data() + m * 2 * D;
        for (int d = 0; d < D; ++d) {
          row[d] = std::max(q[d], 0.0f);
          row[D + d] = std::min(q[d], 0.0f);
        }
      }
      for (std::int64_t i = 0; i < stored_pages; ++i)
        std::copy_n(meta.values.data() + (i * H + g) * 2 * D, 2 * D, pages_of_g.data() + i * 2 * D);
      // Row-major [M, pages] = [q⁺ | q⁻]·[max | min]ᵀ (column-major, as WindowAttention::head's logits).
      linalg::cpu_backend().gemm(true, false, stored_pages, M, 2 * D, 1.0f, pages_of_g.data(), 2 * D, signed_q.data(),
                                 2 * D, 0.0f, bounds.data() + g * M * stored_pages, stored_pages);
    }

    out.query_kept.assign(static_cast<std::size_t>(W * Hq * T), 0);
    double loaded = 0;
    std::vector<std::int64_t> order;
    std::vector<std::uint8_t> chosen, group;
    for (std::int64_t w = 0; w < W; ++w) {
      const std::int64_t p = query_pos[static_cast<std::size_t>(w)];
      std::int64_t n = 0;  // the cache at this step: the tokens up to the query's position
      while (n < T && pos[static_cast<std::size_t>(n)] <= p) ++n;
      const std::int64_t pages = (n + P - 1) / P;
      const bool ranked = cache_.model_layer(layer) >= rule_.skip_layers && pages > B;
      for (int g = 0; g < H; ++g) {
        group.assign(static_cast<std::size_t>(pages), 0);
        for (int r = 0; r < n_rep; ++r) {
          const int h = g * n_rep + r;
          chosen.assign(static_cast<std::size_t>(pages), ranked ? 0 : 1);
          if (ranked) {
            chosen[static_cast<std::size_t>(pages - 1)] = 1;  // the current page, always
            const float* bound = bounds.data() + (g * M + w * n_rep + r) * stored_pages;
            // The best B − 1 of the pages before it; equal bounds go to the earlier page (the
            // authors' top-k kernel leaves the order of ties unspecified).
            order.resize(static_cast<std::size_t>(pages - 1));
            std::iota(order.begin(), order.end(), std::int64_t{0});
            const auto k = static_cast<std::ptrdiff_t>(B - 1);
            std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](std::int64_t a, std::int64_t b) {
              return bound[a] > bound[b] || (bound[a] == bound[b] && a < b);
            });
            for (std::ptrdiff_t j = 0; j < k; ++j) chosen[static_cast<std::size_t>(order[static_cast<std::size_t>(j)])] = 1;
          }
          std::uint8_t* sel = out.query_kept.data() + (w * Hq + h) * T;
          for (std::int64_t i = 0; i < pages; ++i) {
            if (!chosen[static_cast<std::size_t>(i)]) continue;
            group[static_cast<std::size_t>(i)] = 1;
            std::fill(sel + i * P, sel + std::min(n, (i + 1) * P), std::uint8_t{1});
          }
        }
        std::int64_t cells = 0;
        for (std::int64_t i = 0; i < pages; ++i)
          if (group[static_cast<std::size_t>(i)]) cells += std::min(n, (i + 1) * P) - i * P;
        loaded += static_cast<double>(cells) * cell_bytes[static_cast<std::size_t>(g)] +
                  (ranked ? static_cast<double>(pages - 1) * meta_bytes : 0.0);
      }
    }
    out.loaded_bytes = loaded / static_cast<double>(W);
    return out;
  }

  nlohmann::json notes() const override {
    auto n = cells_->notes();
    n["quest"] = {{"page_size", rule_.page_size},
                  {"page_budget", rule_.page_budget},
                  {"token_budget", rule_.page_budget * rule_.page_size},
                  {"skip_layers", rule_.skip_layers},
                  {"selection", "per query head, the current page + the best page_budget - 1 pages by "
                                "sum_c max(q_c*min_c, q_c*max_c); load counted per KV head as the union"}};
    return n;
  }

 private:
  const CacheSource& cache_;  // the queries each window step selects with; outlives this
  CacheShape shape_;
  PagedSelection rule_;
  std::unique_ptr<Compressed> cells_;
  std::vector<StoredTensor> meta_;  // per layer, [pages, H_kv·2·D]: per page and KV head, max then min
};

class Quest final : public TransformStage {
 public:
  explicit Quest(const StageSpec& spec) : spec_(spec) {}
  std::unique_ptr<Compressed> compress(const CompressContext& ctx) const override {
    if (ctx.cache.shape().query_window < 1)
      fail("quest: {} holds no query window (W = 0); quest selects pages for each window query (dump with a window)",
           ctx.cache.describe());
    return std::make_unique<QuestCompressed>(ctx.cache, spec_);
  }

 private:
  StageSpec spec_;
};

void check_quest_keys(const StageSpec& spec, const std::vector<std::string>& given) {
  check_eviction_budget(spec, given);
  const auto budget = spec.get_int("budget"), page = spec.get_int("page_size");
  if (budget > 0 && budget < page)
    fail("spec 'quest': key 'budget' = {} must be 0 (use keep) or ≥ page_size = {}: the page budget is budget // "
         "page_size and the current page counts in it",
         budget, page);
}

}  // namespace

MethodDef quest_method() {
  MethodDef m{"quest", StageKind::transform,
              "Quest (docs/methods/quest.md; mit-han-lab/Quest, arXiv 2406.10774): stores the whole cache plus per-page "
              "key min/max; at each decode step (each window query) every query head attends the current page and the "
              "page_budget - 1 pages with the highest bound sum_c max(q_c*min_c, q_c*max_c), page_budget = "
              "budget // page_size; the first skip_layers layers attend everything. Reports loaded_bytes_per_step "
              "next to the bytes stored; in eval the model selects at every decode step. A quantizer may follow it, no "
              "eviction before it.",
              {{"keep", ParamType::real, "0.25",
                "fraction of the T prompt tokens each decode step attends (round(keep*T) // page_size pages, at least "
                "the current one); used when budget=0",
                {}, 0, 1},
               {"budget", ParamType::integer, "0",
                "tokens each decode step attends per query head (the authors' token_budget: 512..4096 in their "
                "LongBench runs), page budget budget // page_size with the current page; 0: use keep",
                {}, 0, 1e15},
               {"page_size", ParamType::integer, "16", "tokens per page (the authors' page_size / chunk_size 16)", {}, 1,
                65536},
               {"skip_layers", ParamType::integer, "2",
                "the first layers attend the whole cache (the authors' _quest_skip_layer = 2)", {}, 0, 1e6}},
              check_quest_keys};
  m.make_transform = [](const StageSpec& spec) -> std::unique_ptr<TransformStage> { return std::make_unique<Quest>(spec); };
  m.paged_selection = quest_rule;
  m.layer_local = true;  // each layer from itself; skip_layers reads its depth from the slice (model_layer)
  return m;
}

}  // namespace kvlab::compressors
