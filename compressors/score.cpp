#include "compressors/score.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "compressors/attention.h"
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
}

double ratio_or_nan(double num, double den) { return den > 0 ? std::sqrt(num / den) : (num > 0 ? kInf : 0.0); }

}  // namespace

void window_attention(const CacheSource& cache, int layer, const FloatTensor& key, const FloatTensor& value,
                      const std::vector<std::uint8_t>& kept, std::vector<double>& out, std::vector<double>* log_probs) {
  const auto& s = cache.shape();
  const std::int64_t W = s.query_window, T = s.tokens;
  const int n_rep = s.group_size(), D = s.head_dim;
  WindowAttention a(cache, layer, W);
  const auto key_rot = rotate_keys(cache, key);
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

Score score(const CacheSource& cache, Compressed& compressed, linalg::Backend& backend,
            const std::function<void(int, int)>& on_layer) {
  const auto& s = cache.shape();
  const std::int64_t T = s.tokens, W = s.query_window;
  const int H = s.kv_heads, D = s.head_dim;
  std::vector<LayerScore> layers;
  for (int l = 0; l < s.layers; ++l) {
    const auto key = cache.layer(l, Part::key);
    const auto value = cache.layer(l, Part::value);
    auto rec = compressed.reconstruct(l);
    check_layer_kv(rec, s, l);
    LayerScore ls;
    std::int64_t held = 0;
    for (std::int64_t t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h) {
        if (!rec.holds(t, h, H)) continue;
        ++held;
        for (int d = 0; d < D; ++d) {
          const auto i = static_cast<std::size_t>((t * H + h) * D + d);
          const double dk = double{key.data[i]} - rec.key.data[i], dv = double{value.data[i]} - rec.value.data[i];
          ls.key_err2 += dk * dk;
          ls.key_norm2 += double{key.data[i]} * key.data[i];
          ls.value_err2 += dv * dv;
          ls.value_norm2 += double{value.data[i]} * value.data[i];
        }
      }
    ls.kept_fraction = T > 0 ? static_cast<double>(held) / static_cast<double>(T * H) : 1.0;
    ls.key_error = ratio_or_nan(ls.key_err2, ls.key_norm2);
    ls.value_error = ratio_or_nan(ls.value_err2, ls.value_norm2);

    if (W > 0) {
      WindowAttention exact(cache, l, W), approx(cache, l, W);
      const auto key_rot = rotate_keys(cache, key), rec_key_rot = rotate_keys(cache, std::move(rec.key));
      double layer_kl = 0;
      const std::int64_t M = exact.row_count();
      for (int g = 0; g < H; ++g) {
        exact.head(g, key_rot, {}, backend, &value);
        approx.head(g, rec_key_rot, rec.kept, backend, &rec.value);
        for (std::int64_t i = 0; i < M * D; ++i) {
          const double e = double{exact.output()[i]} - approx.output()[i];
          ls.out_err2 += e * e;
          ls.out_norm2 += double{exact.output()[i]} * exact.output()[i];
        }
        for (std::int64_t m = 0; m < M; ++m) {
          const double* p = exact.log_probs().data() + m * T;
          const double* q = approx.log_probs().data() + m * T;
          double kl = 0;
          bool any = false;
          for (std::int64_t t = 0; t < T; ++t) {
            if (q[t] == -kInf) continue;
            any = true;
            kl += std::exp(q[t]) * (q[t] - p[t]);
          }
          layer_kl += any ? std::max(kl, 0.0) : kInf;  // KL ≥ 0; tiny negatives are rounding
        }
      }
      ls.attn_kl = layer_kl / static_cast<double>(M * H);
      ls.attn_output_error = ratio_or_nan(ls.out_err2, ls.out_norm2);
      ls.kl_sum = layer_kl;
      ls.kl_count = M * H;
    } else {
      ls.attn_kl = ls.attn_output_error = std::nan("");
    }
    ls.held_cells = held;
    layers.push_back(ls);
    if (on_layer) on_layer(l + 1, s.layers);
  }
  return summarize(s, std::move(layers), compressed.bytes());
}

Score summarize(const CacheShape& s, std::vector<LayerScore> layers, std::int64_t bytes) {
  double k_err = 0, k_norm = 0, v_err = 0, v_norm = 0, o_err = 0, o_norm = 0, kl_sum = 0, kept_cells = 0;
  std::int64_t kl_count = 0;
  for (const auto& ls : layers) {
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
          {"dense_fp16_bytes", sc.dense_bytes},
          {"compression_ratio", number(sc.ratio)},
          {"layers", layers}};
}

}  // namespace kvlab::compressors
