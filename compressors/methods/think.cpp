// think: query-driven key-channel pruning (think.h, docs/methods/think.md).
#include "compressors/methods/think.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <set>
#include <string>

#include "compressors/dense.h"
#include "core/error.h"

namespace kvlab::compressors {

ThinkParams think_params(const StageSpec& spec) {
  ThinkParams p;
  p.ratio = spec.get_real("ratio");
  p.window = spec.get_int("window");
  p.recent = spec.get_int("recent");
  // parse_stage checks the bounds; a hand-built StageSpec could still carry anything.
  if (!(p.ratio >= 0 && p.ratio < 1)) fail("spec 'think': key 'ratio' = {} must be in [0, 1)", p.ratio);
  if (p.window < 1) fail("spec 'think': key 'window' = {} must be at least 1", p.window);
  if (p.recent < 0) fail("spec 'think': key 'recent' = {} must be at least 0", p.recent);
  return p;
}

std::vector<double> think_channel_scores(std::span<const float> queries, std::int64_t w, int group,
                                         std::span<const float> keys, std::int64_t n, int head_dim) {
  const auto D = static_cast<std::int64_t>(head_dim);
  if (static_cast<std::int64_t>(queries.size()) != w * group * D || static_cast<std::int64_t>(keys.size()) != n * D)
    fail("think: {} query values for [{}, {}, {}] or {} key values for [{}, {}]", queries.size(), w, group, D,
         keys.size(), n, D);
  std::vector<double> score(static_cast<std::size_t>(D), 0.0);
  for (std::int64_t c = 0; c < D; ++c) {
    // kvpress: queries.pow(2).mean(window), then .mean over the GQA group; the authors repeat the KV
    // head per query head instead (docs/methods/think.md §2). Means, not sums: the ranking is the same.
    double q = 0;
    for (int g = 0; g < group; ++g) {
      double qg = 0;
      for (std::int64_t i = 0; i < w; ++i) {
        const double v = queries[static_cast<std::size_t>((i * group + g) * D + c)];
        qg += v * v;
      }
      q += w > 0 ? qg / static_cast<double>(w) : 0.0;
    }
    q /= group;
    double k = 0;
    for (std::int64_t j = 0; j < n; ++j) {
      const double v = keys[static_cast<std::size_t>(j * D + c)];
      k += v * v;
    }
    score[static_cast<std::size_t>(c)] = q * (n > 0 ? k / static_cast<double>(n) : 0.0);
  }
  return score;
}

std::vector<int> think_kept_channels(const std::vector<double>& scores, double ratio) {
  const auto D = static_cast<int>(scores.size());
  const auto pruned = static_cast<int>(std::floor(D * ratio));  // the authors' and kvpress's int(head_dim * ratio)
  std::vector<int> order(static_cast<std::size_t>(D));
  std::iota(order.begin(), order.end(), 0);
  // Lowest score first; stable, so among equal scores the lower channel comes (and is pruned) first.
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return scores[a] < scores[b]; });
  std::vector<int> kept(order.begin() + pruned, order.end());
  std::sort(kept.begin(), kept.end());
  return kept;
}

std::int64_t think_head_key_bytes(std::int64_t n, int head_dim, const ThinkParams& p) {
  const std::int64_t r = std::min(p.recent, n), pruned = static_cast<std::int64_t>(std::floor(head_dim * p.ratio));
  return 2 * (n - r) * (head_dim - pruned) + 2 * r * head_dim + (head_dim + 7) / 8;
}

namespace {

// One pruned head: its own stored tensors and where its rows go.
struct PrunedHead {
  int layer = 0, head = 0;
  std::int64_t n = 0;                     // stored rows (tokens) of the head
  const StoredTensor* index = nullptr;    // the rows' token indices (eviction), null: every token
  std::size_t at = 0;                     // its three tensors in ThinkCompressed::own_: pruned, recent, mask
};

// The chain's stored form with each per-head key tensor replaced by ThinK's three.
class ThinkCompressed final : public Compressed {
 public:
  ThinkCompressed(std::unique_ptr<Compressed> inner, std::vector<StoredTensor> own, std::vector<PrunedHead> heads,
                  std::set<const StoredTensor*> replaced, const CacheSource& cache, nlohmann::json notes)
      : inner_(std::move(inner)), own_(std::move(own)), heads_(std::move(heads)), replaced_(std::move(replaced)),
        shape_(cache.shape()), ropes_(layer_ropes(cache)), positions_(cache.positions()), notes_(std::move(notes)) {}

  std::vector<StoredTensor*> stored() override {
    std::vector<StoredTensor*> out;
    for (auto* t : inner_->stored())
      if (!replaced_.count(t)) out.push_back(t);
    for (auto& t : own_) out.push_back(&t);
    return out;
  }

  // The inner rebuild, with each pruned head's keys rebuilt from ThinK's stored tensors: pruned
  // channels zero (post-RoPE), rotated back to pre-RoPE as dense.h's rebuild does.
  LayerKV reconstruct(int layer) const override {
    auto out = inner_->reconstruct(layer);
    const int H = shape_.kv_heads, D = shape_.head_dim;
    for (const auto& ph : heads_) {
      if (ph.layer != layer) continue;
      const auto& pruned = own_[ph.at];
      const auto& recent = own_[ph.at + 1];
      const auto& mask = own_[ph.at + 2];
      std::vector<int> kept;
      for (int c = 0; c < D; ++c)
        if (mask.packed.at(static_cast<std::size_t>(c / 8)) >> (c % 8) & 1) kept.push_back(c);
      const auto k = static_cast<std::int64_t>(kept.size()), old = pruned.shape.at(0), r = recent.shape.at(0);
      if (old + r != ph.n || pruned.shape.at(1) != k)
        fail("think: {} holds [{}, {}] for {} rows of {} kept channels", pruned.name, old, pruned.shape.at(1), ph.n, k);
      std::vector<float> rows(static_cast<std::size_t>(ph.n * D), 0.0f);
      for (std::int64_t i = 0; i < old; ++i)
        for (std::int64_t j = 0; j < k; ++j)
          rows[static_cast<std::size_t>(i * D + kept[static_cast<std::size_t>(j)])] = pruned.values[static_cast<std::size_t>(i * k + j)];
      std::copy(recent.values.begin(), recent.values.end(), rows.begin() + old * D);
      std::vector<std::int64_t> token(static_cast<std::size_t>(ph.n)), pos(token.size());
      if (ph.index) {
        const auto idx = ph.index->unpack_indices();
        std::copy(idx.begin(), idx.end(), token.begin());
      } else {
        std::iota(token.begin(), token.end(), 0);
      }
      for (std::size_t i = 0; i < token.size(); ++i) pos[i] = positions_.at(static_cast<std::size_t>(token[i]));
      ropes_[static_cast<std::size_t>(layer)].apply(rows, ph.n, 1, pos, /*inverse=*/true);
      for (std::int64_t i = 0; i < ph.n; ++i)
        std::copy_n(rows.begin() + i * D, D, out.key.data.begin() + (token[static_cast<std::size_t>(i)] * H + ph.head) * D);
    }
    return out;
  }

  nlohmann::json notes() const override {
    auto n = inner_->notes();
    n["think"] = notes_;
    return n;
  }

 private:
  std::unique_ptr<Compressed> inner_;
  std::vector<StoredTensor> own_;  // per pruned head: key_pruned, key_recent, key_channels
  std::vector<PrunedHead> heads_;
  std::set<const StoredTensor*> replaced_;  // the inner key tensors ThinK's stand in for
  CacheShape shape_;
  std::vector<core::Rope> ropes_;  // [L]
  std::vector<std::int64_t> positions_;
  nlohmann::json notes_;
};

class Think final : public QuantizerStage {
 public:
  explicit Think(ThinkParams p) : p_(p) {}

  void quantize(const std::vector<StoredTensor*>&) const override {
    fail("think scores key channels with the cache's query window: it runs in a compressor chain (compress_chain)");
  }

  std::unique_ptr<Compressed> apply(const CompressContext& ctx, std::unique_ptr<Compressed> rep) const override {
    const auto& s = ctx.cache.shape();
    const int D = s.head_dim, G = s.group_size();
    // The dense per-head keys and token indices the chain stores (dense.h), by (layer, head).
    std::map<std::pair<int, int>, StoredTensor*> keys;
    std::map<std::pair<int, int>, const StoredTensor*> index;
    for (auto* t : rep->stored()) {
      int l = 0, h = 0;
      std::string leaf;
      if (!parse_head_tensor(t->name, l, h, leaf)) continue;
      if (leaf == "key") keys[{l, h}] = t;
      if (leaf == "index") index[{l, h}] = t;
    }
    if (keys.empty())
      fail("think prunes the per-head keys a chain stores densely (full, or the cells an eviction keeps); this chain "
           "stores none (a transform's factors or whole-layer tensors): put think after an eviction stage or alone");
    const auto W = static_cast<std::int64_t>(s.query_window);
    if (W < 1) fail("think: {} has no query window (dump --window W ≥ 1) to score key channels with", ctx.cache.describe());
    if (p_.window > W)  // as snapkv: the window is the dump's, never silently shortened
      fail("think: key 'window' = {} exceeds the {} queries {} holds (its query window W)", p_.window, W, ctx.cache.describe());
    const std::int64_t w = p_.window;

    std::vector<StoredTensor> own;
    std::vector<PrunedHead> heads;
    std::set<const StoredTensor*> replaced;
    int last_layer = -1;
    std::vector<float> q;  // the layer's last w window queries, post-RoPE [w, H_q, D]
    for (const auto& [lh, t] : keys) {
      const auto [l, h] = lh;
      if (t->format != "fp16" || t->layout == QuantLayout::none || t->shape.size() != 2 || t->shape[1] != D)
        fail("think: stored tensor {} is {} [{}]; think must come before any quantizer of the keys", t->name, t->format,
             fmt::join(t->shape, ", "));
      const std::int64_t n = t->shape[0];
      if (n == 0) continue;  // the head keeps no token: nothing to prune
      if (l != last_layer) {
        auto all = ctx.cache.queries(l);
        const auto& positions = ctx.cache.positions();
        const std::span<const std::int64_t> window_pos(positions.data() + (s.tokens - W), static_cast<std::size_t>(W));
        ctx.cache.rope(l).apply(all.span(), W, s.q_heads, window_pos);  // post-RoPE, as the authors and kvpress
        q.assign(all.data.end() - w * s.q_heads * D, all.data.end());
        last_layer = l;
      }
      std::vector<float> group(static_cast<std::size_t>(w * G * D));
      for (std::int64_t i = 0; i < w; ++i)
        std::copy_n(q.begin() + (i * s.q_heads + h * G) * D, G * D, group.begin() + i * G * D);
      const auto kept = think_kept_channels(think_channel_scores(group, w, G, t->values, n, D), p_.ratio);
      const auto k = static_cast<std::int64_t>(kept.size()), r = std::min(p_.recent, n), old = n - r;
      std::vector<float> pruned(static_cast<std::size_t>(old * k)), recent(t->values.begin() + old * D, t->values.end());
      for (std::int64_t i = 0; i < old; ++i)
        for (std::int64_t j = 0; j < k; ++j)
          pruned[static_cast<std::size_t>(i * k + j)] = t->values[static_cast<std::size_t>(i * D + kept[static_cast<std::size_t>(j)])];
      const auto prefix = fmt::format("layer{}/head{}/", l, h);
      heads.push_back({l, h, n, index.count(lh) ? index.at(lh) : nullptr, own.size()});
      // Both parts stay quantizable by a later stage (KIVI per channel along the tokens, as ThinK_kivi).
      own.push_back(StoredTensor::fp16(prefix + "key_pruned", {old, k}, std::move(pruned), QuantLayout::per_channel, true));
      own.push_back(StoredTensor::fp16(prefix + "key_recent", {r, D}, std::move(recent), QuantLayout::per_channel, true));
      StoredTensor mask;
      mask.name = prefix + "key_channels";
      mask.shape = {D};
      mask.format = "bitmask";  // bit c (least significant first) of byte c/8: channel c kept
      mask.packed.assign(static_cast<std::size_t>((D + 7) / 8), 0);
      for (const int c : kept) mask.packed[static_cast<std::size_t>(c / 8)] |= static_cast<std::uint8_t>(1u << (c % 8));
      own.push_back(std::move(mask));
      replaced.insert(t);
    }
    std::vector<StoredTensor*> fresh;
    for (auto& t : own) fresh.push_back(&t);
    pack_fp16_storage(fresh);  // the values are stored fp16 already: packing gives them back unchanged
    nlohmann::json notes{{"pruned_channels", static_cast<int>(std::floor(D * p_.ratio))},
                         {"kept_channels", D - static_cast<int>(std::floor(D * p_.ratio))},
                         {"window_queries", w},
                         {"recent_rows", p_.recent}};
    return std::make_unique<ThinkCompressed>(std::move(rep), std::move(own), std::move(heads), std::move(replaced),
                                             ctx.cache, std::move(notes));
  }

 private:
  ThinkParams p_;
};

}  // namespace

MethodDef think_method() {
  MethodDef m;
  m.name = "think";
  m.kind = StageKind::quantizer;
  m.help =
      "ThinK (docs/methods/think.md; arXiv 2407.21018, SalesforceAIResearch/ThinK, kvpress ThinKPress): prunes, per "
      "layer and KV head, the int(D·ratio) key channels with the lowest ‖q_c‖²·‖k_c‖² (post-RoPE window queries, "
      "GQA group averaged, over the stored keys); stores the kept channels at 16 bits, the last `recent` rows whole, and "
      "a D-bit channel mask; values untouched. Runs on the dense per-head keys (alone or after an eviction), before "
      "any quantizer of the keys (snapkv:…+think:…+kivi:…)";
  m.params = {
      {"ratio", ParamType::real, "0.4", "fraction λ of key channels pruned per head, int(D·λ) (authors' default 0.4)", {}, 0, 0.999},
      {"window", ParamType::integer, "32", "window queries that score the channels, the last w of the dump's W ≥ w (authors 32)", {}, 1, 1 << 30},
      {"recent", ParamType::integer, "32", "most recent stored rows per head kept with every channel (authors 32; kvpress 0)", {}, 0, 1 << 30},
  };
  m.make_quantizer = [](const StageSpec& spec) -> std::unique_ptr<QuantizerStage> {
    return std::make_unique<Think>(think_params(spec));
  };
  m.layer_local = true;  // a layer's channels come from that layer's window and keys alone
  return m;
}

}  // namespace kvlab::compressors
