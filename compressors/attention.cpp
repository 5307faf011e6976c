#include "compressors/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace kvlab::compressors {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
}

WindowAttention::WindowAttention(const CacheSource& cache, int layer, std::int64_t rows) { load(cache, layer, rows); }

void WindowAttention::load(const CacheSource& cache, int layer, std::int64_t rows) {
  cache_ = &cache;
  rows_ = rows;
  shape_ = cache.shape();
  const std::int64_t W = shape_.query_window;
  if (rows_ < 1 || rows_ > W)
    fail("{}: layer {}: {} window queries asked for, the dump holds W = {}", cache.describe(), layer, rows_, W);
  const auto all = cache.queries(layer);
  const core::Shape expected{W, shape_.q_heads, shape_.head_dim};
  if (all.shape != expected) fail("{}: layer {} queries have the wrong shape", cache.describe(), layer);
  queries_ = FloatTensor({rows_, shape_.q_heads, shape_.head_dim});
  std::copy(all.data.end() - static_cast<std::ptrdiff_t>(queries_.data.size()), all.data.end(), queries_.data.begin());
  const auto& pos = cache.positions();
  query_pos_.assign(pos.end() - rows_, pos.end());
  cache.rope(layer).apply(queries_.span(), rows_, shape_.q_heads, query_pos_);
  window_ = cache.window(layer);
}

void WindowAttention::head(int g, const FloatTensor& key_rot, const std::vector<std::uint8_t>& kept,
                           linalg::Backend& backend, const FloatTensor* value, const std::uint8_t* query_kept) {
  const std::int64_t T = shape_.tokens, M = row_count();
  const int H = shape_.kv_heads, Hq = shape_.q_heads, D = shape_.head_dim, n_rep = shape_.group_size();
  const auto& pos = cache_->positions();
  k_.resize(static_cast<std::size_t>(T * D));
  q_.resize(static_cast<std::size_t>(M * D));
  probs_.resize(static_cast<std::size_t>(M * T));
  logp_.resize(probs_.size());
  shifted_exp_.resize(static_cast<std::size_t>(T));
  for (std::int64_t t = 0; t < T; ++t) std::copy_n(key_rot.data.begin() + (t * H + g) * D, D, k_.begin() + t * D);
  for (std::int64_t w = 0; w < rows_; ++w)  // row m = w·n_rep + r: query head g·n_rep + r
    std::copy_n(queries_.data.begin() + (w * Hq + g * n_rep) * D, n_rep * D, q_.begin() + w * n_rep * D);
  // Column-major: row-major K_g [T, D] is K_gᵀ (D×T); logits (T×M col-major = row-major [M, T]) = K_g·Q_gᵀ/√D.
  backend.gemm(true, false, T, M, D, 1.0f / std::sqrt(static_cast<float>(D)), k_.data(), D, q_.data(), D, 0.0f,
               probs_.data(), T);
  if (query_kept)  // per-query selection: a logit of a token its query did not select becomes −inf
    for (std::int64_t m = 0; m < M; ++m) {
      const std::uint8_t* sel = query_kept + ((m / n_rep) * Hq + g * n_rep + m % n_rep) * T;
      float* row = probs_.data() + m * T;
      for (std::int64_t t = 0; t < T; ++t)
        if (!sel[t]) row[t] = -std::numeric_limits<float>::infinity();
    }
  for (std::int64_t m = 0; m < M; ++m) {
    const std::int64_t p = query_pos_[static_cast<std::size_t>(m / n_rep)];
    float* row = probs_.data() + m * T;
    double* lp = logp_.data() + m * T;
    double mx = -kInf;
    for (std::int64_t t = 0; t < T; ++t) {
      const bool visible =
          sees(p, pos[static_cast<std::size_t>(t)], window_) && (kept.empty() || kept[static_cast<std::size_t>(t * H + g)]);
      lp[t] = visible ? static_cast<double>(row[t]) : -kInf;
      mx = std::max(mx, lp[t]);
    }
    if (mx == -kInf) {  // nothing this query may attend to is held
      std::fill(row, row + T, 0.0f);
      continue;
    }
    // One exp a cell (it was most of the scorer's arithmetic): e_t = exp(l_t − max), then
    // p_t = e_t / Σe and log p_t = l_t − (max + log Σe).
    double sum = 0;
    for (std::int64_t t = 0; t < T; ++t) sum += shifted_exp_[static_cast<std::size_t>(t)] = std::exp(lp[t] - mx);
    const double lse = mx + std::log(sum);
    for (std::int64_t t = 0; t < T; ++t) {
      lp[t] -= lse;
      row[t] = static_cast<float>(shifted_exp_[static_cast<std::size_t>(t)] / sum);
    }
  }
  if (!value) return;
  v_.resize(k_.size());
  out_.resize(static_cast<std::size_t>(M * D));
  for (std::int64_t t = 0; t < T; ++t) std::copy_n(value->data.begin() + (t * H + g) * D, D, v_.begin() + t * D);
  // O (D×M col-major = row-major [M, D]) = V_gᵀ·P with P the probabilities (T×M col-major).
  backend.gemm(false, false, D, M, T, 1.0f, v_.data(), D, probs_.data(), T, 0.0f, out_.data(), D);
}

FloatTensor rotate_keys(const CacheSource& cache, int layer, FloatTensor key) {
  const auto& s = cache.shape();
  cache.rope(layer).apply(key.span(), s.tokens, s.kv_heads, cache.positions());
  return key;
}

}  // namespace kvlab::compressors
