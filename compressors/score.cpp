#include "compressors/score.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "compressors/attention.h"
#include "core/parallel.h"
#include "linalg/fan_out.h"
#include "core/error.h"

namespace kvlab::compressors {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

void check_layer_kv(const LayerKV& rec, const CacheShape& s, int layer) {
  const core::Shape kv{s.tokens, s.kv_heads, s.head_dim};
  if (rec.key.shape != kv || rec.value.shape != kv)
    fail("score: the compressed cache rebuilt layer {} with the wrong shape", layer);
  if (!rec.kept.empty() && static_cast<std::int64_t>(rec.kept.size()) != s.tokens * s.kv_heads)
    fail("score: layer {} keep mask has {} cells, not T·H = {}", layer, rec.kept.size(), s.tokens * s.kv_heads);
  if (!rec.query_kept.empty() &&
      static_cast<std::int64_t>(rec.query_kept.size()) != s.query_window * s.q_heads * s.tokens)
    fail("score: layer {} per-query selection has {} cells, not W·H_q·T = {}", layer, rec.query_kept.size(),
         s.query_window * s.q_heads * s.tokens);
}

double ratio_or_nan(double num, double den) { return den > 0 ? std::sqrt(num / den) : (num > 0 ? kInf : 0.0); }

}  // namespace

void window_attention(const CacheSource& cache, int layer, const FloatTensor& key, const FloatTensor& value,
                      const std::vector<std::uint8_t>& kept, std::vector<double>& out, std::vector<double>* log_probs) {
  const auto& s = cache.shape();
  const std::int64_t W = s.query_window, T = s.tokens;
  const int n_rep = s.group_size(), D = s.head_dim;
  WindowAttention a(cache, layer, W);
  const auto key_rot = rotate_keys(cache, layer, key);
  out.assign(static_cast<std::size_t>(W * s.q_heads * D), 0.0);
  if (log_probs) log_probs->assign(static_cast<std::size_t>(W * s.q_heads * T), -kInf);
  for (int g = 0; g < s.kv_heads; ++g) {
    a.head(g, key_rot, kept, linalg::cpu_backend(), &value);
    for (std::int64_t w = 0; w < W; ++w)
      for (int r = 0; r < n_rep; ++r) {
        const std::int64_t m = w * n_rep + r, h = g * n_rep + r;
        for (int d = 0; d < D; ++d) out[static_cast<std::size_t>((w * s.q_heads + h) * D + d)] = a.output()[m * D + d];
        if (log_probs)
          std::copy_n(a.log_probs().begin() + m * T, T, log_probs->begin() + (w * s.q_heads + h) * T);
      }
  }
}

// A thread's two attentions (the exact cache and the rebuilt one), kept from layer to layer.
struct LayerScorer::Worker {
  WindowAttention exact, approx;
};

LayerScorer::LayerScorer(linalg::Backend& backend) : backend_(backend) {}
LayerScorer::~LayerScorer() = default;

LayerScore LayerScorer::score(const CacheSource& cache, int layer, LayerKV rec) {
  const auto& s = cache.shape();
  const std::int64_t T = s.tokens, W = s.query_window;
  const int H = s.kv_heads, D = s.head_dim;
  const core::Shape kv{T, H, D};
  for (auto* t : {&key_, &value_, &key_rot_})
    if (t->shape != kv) *t = FloatTensor(kv);
  cache.read_layer_into(layer, Part::key, key_.data.data(), std::int64_t{H} * D);
  cache.read_layer_into(layer, Part::value, value_.data.data(), std::int64_t{H} * D);
  check_layer_kv(rec, s, layer);
  LayerScore ls;
  std::int64_t held = 0;
  for (std::int64_t t = 0; t < T; ++t)
    for (int h = 0; h < H; ++h) {
      if (!rec.holds(t, h, H)) continue;
      ++held;
      for (int d = 0; d < D; ++d) {
        const auto i = static_cast<std::size_t>((t * H + h) * D + d);
        const double dk = double{key_.data[i]} - rec.key.data[i], dv = double{value_.data[i]} - rec.value.data[i];
        ls.key_err2 += dk * dk;
        ls.key_norm2 += double{key_.data[i]} * key_.data[i];
        ls.value_err2 += dv * dv;
        ls.value_norm2 += double{value_.data[i]} * value_.data[i];
      }
    }
  ls.kept_fraction = T > 0 ? static_cast<double>(held) / static_cast<double>(T * H) : 1.0;
  ls.key_error = ratio_or_nan(ls.key_err2, ls.key_norm2);
  ls.value_error = ratio_or_nan(ls.value_err2, ls.value_norm2);
  ls.held_cells = held;
  ls.loaded_bytes = rec.loaded_bytes;
  if (W == 0) {
    ls.attn_kl = ls.attn_output_error = std::nan("");
    return ls;
  }
  key_rot_.data = key_.data;  // a copy into the kept buffer
  cache.rope(layer).apply(key_rot_.span(), T, H, cache.positions());
  cache.rope(layer).apply(rec.key.span(), T, H, cache.positions());
  // Per KV head: Σ over its rows of KL, and the output's squared error and norm.
  std::vector<double> kl(static_cast<std::size_t>(H)), err2(kl.size()), norm2(kl.size());
  const int workers = std::max(1, std::min(backend_.threads(), H));
  for (int w = 0; w < workers; ++w) {  // the queries read here, one at a time (a dump's reads are serial)
    if (w < static_cast<int>(workers_.size())) {
      workers_[static_cast<std::size_t>(w)]->exact.load(cache, layer, W);
      workers_[static_cast<std::size_t>(w)]->approx.load(cache, layer, W);
    } else {
      workers_.push_back(std::make_unique<Worker>(Worker{{cache, layer, W}, {cache, layer, W}}));
    }
  }
  std::atomic<int> next{0};
  const linalg::OneThreadPerCall fan_out(backend_, workers);
  core::parallel_for(workers, [&](std::int64_t w) {
    linalg::Backend& gemm = backend_.worker(static_cast<int>(w));
    Worker& own = *workers_[static_cast<std::size_t>(w)];
    const std::int64_t M = own.exact.row_count();
    for (int g = next++; g < H; g = next++) {
      own.exact.head(g, key_rot_, {}, gemm, &value_);
      own.approx.head(g, rec.key, rec.kept, gemm, &rec.value, rec.query_kept.empty() ? nullptr : rec.query_kept.data());
      const auto u = static_cast<std::size_t>(g);
      for (std::int64_t i = 0; i < M * D; ++i) {
        const double e = double{own.exact.output()[i]} - own.approx.output()[i];
        err2[u] += e * e;
        norm2[u] += double{own.exact.output()[i]} * own.exact.output()[i];
      }
      for (std::int64_t m = 0; m < M; ++m) {
        const double* p = own.exact.log_probs().data() + m * T;
        const double* q = own.approx.log_probs().data() + m * T;
        double sum = 0;
        bool any = false;
        for (std::int64_t t = 0; t < T; ++t) {
          if (q[t] == -kInf) continue;
          any = true;
          sum += std::exp(q[t]) * (q[t] - p[t]);
        }
        kl[u] += any ? std::max(sum, 0.0) : kInf;  // KL ≥ 0; tiny negatives are rounding
      }
    }
  });
  double layer_kl = 0;
  for (int g = 0; g < H; ++g) {  // in head order, whatever thread computed them
    const auto u = static_cast<std::size_t>(g);
    layer_kl += kl[u];
    ls.out_err2 += err2[u];
    ls.out_norm2 += norm2[u];
  }
  const std::int64_t rows = W * s.group_size();
  ls.attn_kl = layer_kl / static_cast<double>(rows * H);
  ls.attn_output_error = ratio_or_nan(ls.out_err2, ls.out_norm2);
  ls.kl_sum = layer_kl;
  ls.kl_count = rows * H;
  return ls;
}

Score score(const CacheSource& cache, Compressed& compressed, linalg::Backend& backend,
            const std::function<void(int, int)>& on_layer) {
  const auto& s = cache.shape();
  LayerScorer scorer(backend);
  std::vector<LayerScore> layers;
  for (int l = 0; l < s.layers; ++l) {
    layers.push_back(scorer.score(cache, l, compressed.reconstruct(l)));
    if (on_layer) on_layer(l + 1, s.layers);
  }
  return summarize(s, std::move(layers), compressed.bytes());
}

Score summarize(const CacheShape& s, std::vector<LayerScore> layers, std::int64_t bytes) {
  double k_err = 0, k_norm = 0, v_err = 0, v_norm = 0, o_err = 0, o_norm = 0, kl_sum = 0, kept_cells = 0;
  std::int64_t kl_count = 0;
  double loaded = 0;
  bool reads_all = layers.empty();
  for (const auto& ls : layers) {
    loaded += ls.loaded_bytes;
    reads_all = reads_all || std::isnan(ls.loaded_bytes);
    k_err += ls.key_err2, k_norm += ls.key_norm2, v_err += ls.value_err2, v_norm += ls.value_norm2;
    o_err += ls.out_err2, o_norm += ls.out_norm2;
    kl_sum += ls.kl_sum, kl_count += ls.kl_count;
    kept_cells += static_cast<double>(ls.held_cells);
  }
  Score result;
  result.layers = std::move(layers);
  result.key_error = ratio_or_nan(k_err, k_norm);
  result.value_error = ratio_or_nan(v_err, v_norm);
  result.attn_output_error = s.query_window > 0 ? ratio_or_nan(o_err, o_norm) : std::nan("");
  result.attn_kl = kl_count ? kl_sum / static_cast<double>(kl_count) : std::nan("");
  result.kept_fraction = kept_cells / static_cast<double>(std::int64_t{s.layers} * s.tokens * s.kv_heads);
  result.bytes = bytes;
  result.dense_bytes = dense_fp16_bytes(s);
  result.loaded_bytes = reads_all ? static_cast<double>(bytes) : loaded;
  result.ratio = result.bytes > 0 ? static_cast<double>(result.dense_bytes) / static_cast<double>(result.bytes) : kInf;
  return result;
}


namespace {
nlohmann::json number(double x) { return std::isfinite(x) ? nlohmann::json(x) : nlohmann::json(nullptr); }
}  // namespace

nlohmann::json to_json(const Score& sc) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : sc.layers)
    layers.push_back({{"key_error", number(l.key_error)},
                      {"value_error", number(l.value_error)},
                      {"attn_output_error", number(l.attn_output_error)},
                      {"attn_kl", number(l.attn_kl)},
                      {"kept_fraction", number(l.kept_fraction)}});
  return {{"key_error", number(sc.key_error)},
          {"value_error", number(sc.value_error)},
          {"attn_output_error", number(sc.attn_output_error)},
          {"attn_kl", number(sc.attn_kl)},
          {"kept_fraction", number(sc.kept_fraction)},
          {"bytes", sc.bytes},
          {"loaded_bytes_per_step", number(sc.loaded_bytes)},
          {"dense_fp16_bytes", sc.dense_bytes},
          {"compression_ratio", number(sc.ratio)},
          {"layers", layers}};
}

}  // namespace kvlab::compressors
