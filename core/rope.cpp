#include "core/rope.h"

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <numbers>

#include "core/error.h"
#include "core/parse_json.h"

namespace kvlab::core {

Rope Rope::identity() { return Rope{}; }

Rope Rope::standard(int head_dim, double base) {
  if (head_dim <= 0 || head_dim % 2) fail("RoPE: head_dim {} must be positive and even", head_dim);
  if (!(base > 1)) fail("RoPE: rope_theta {} must be > 1", base);
  Rope r;
  r.head_dim_ = head_dim;
  const int half = head_dim / 2;
  r.inv_freq_.resize(half);
  // HF computes base ** (arange(0, dim, 2) / dim) in float32 from an int64 arange.
  for (int i = 0; i < half; ++i)
    r.inv_freq_[i] = static_cast<float>(1.0 / std::pow(base, static_cast<double>(2 * i) / head_dim));
  r.description_ = fmt::format("default θ={}", base);
  return r;
}

namespace {

double number(const nlohmann::json& j, const char* key, double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) fail("RoPE config: '{}' is not a number", key);
  return it->get<double>();
}

}  // namespace

Rope Rope::from_config(std::string_view config_json, int head_dim) {
  const nlohmann::json config = parse_json(config_json, "RoPE config");
  if (!config.is_object()) fail("RoPE config: not a JSON object");
  if (config.value("rope_type", std::string()) == "none") return identity();

  nlohmann::json scaling = nlohmann::json::object();
  if (auto it = config.find("rope_parameters"); it != config.end() && it->is_object()) scaling = *it;  // transformers v5
  if (auto it = config.find("rope_scaling"); it != config.end() && it->is_object()) scaling.update(*it);
  const double theta = number(scaling, "rope_theta", number(config, "rope_theta", 10000.0));
  const double partial = number(config, "partial_rotary_factor", 1.0);
  if (head_dim <= 0) {
    head_dim = static_cast<int>(number(config, "head_dim", 0));
    if (head_dim <= 0 && config.contains("hidden_size") && config.contains("num_attention_heads"))
      head_dim = config["hidden_size"].get<int>() / config["num_attention_heads"].get<int>();
  }
  const int rotary_dim = static_cast<int>(head_dim * partial);
  if (rotary_dim != head_dim) fail("RoPE config: partial_rotary_factor {} is not supported (need 1.0)", partial);

  Rope r = standard(head_dim, theta);
  std::string type = "default";
  if (scaling.contains("rope_type")) type = scaling["rope_type"].get<std::string>();
  else if (scaling.contains("type")) type = scaling["type"].get<std::string>();
  if (type == "default") return r;
  const double factor = number(scaling, "factor", 1.0);
  if (!(factor > 0)) fail("RoPE config: rope_scaling.factor {} must be > 0", factor);
  if (type == "linear") {
    for (auto& f : r.inv_freq_) f = static_cast<float>(f / factor);
    r.description_ = fmt::format("linear θ={} factor={}", theta, factor);
    return r;
  }
  if (type == "llama3") {
    // transformers' _compute_llama3_parameters (docs/models.md §2.3).
    const double low = number(scaling, "low_freq_factor", NAN), high = number(scaling, "high_freq_factor", NAN);
    const double old_ctx = number(scaling, "original_max_position_embeddings", NAN);
    if (std::isnan(low) || std::isnan(high) || std::isnan(old_ctx))
      fail("RoPE config: llama3 scaling needs low_freq_factor, high_freq_factor and original_max_position_embeddings");
    if (!(high > low)) fail("RoPE config: llama3 high_freq_factor {} must exceed low_freq_factor {}", high, low);
    const double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
    for (auto& f : r.inv_freq_) {
      const double inv = f, wavelen = 2 * std::numbers::pi / inv;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(inv / factor);
      } else {
        const double smooth = (old_ctx / wavelen - low) / (high - low);
        f = static_cast<float>((1 - smooth) * inv / factor + smooth * inv);
      }
    }
    r.description_ = fmt::format("llama3 θ={} factor={} low={} high={} original_max={}", theta, factor, low, high, old_ctx);
    return r;
  }
  fail("RoPE config: rope type '{}' is not supported (default, linear, llama3)", type);
}

std::string Rope::describe() const { return description_; }

void Rope::apply(std::span<float> x, std::int64_t n, int heads, std::span<const std::int64_t> positions,
                 bool inverse) const {
  if (is_identity()) return;
  const int d = head_dim_, half = d / 2;
  if (static_cast<std::int64_t>(x.size()) != n * heads * d)
    fail("RoPE: {} values for {} rows × {} heads × {} dims", x.size(), n, heads, d);
  if (static_cast<std::int64_t>(positions.size()) != n) fail("RoPE: {} positions for {} rows", positions.size(), n);
  std::vector<float> cos_t(half), sin_t(half);
  for (std::int64_t t = 0; t < n; ++t) {
    for (int j = 0; j < half; ++j) {
      // As HF: the angle is formed in fp32, cos/sin of it in fp32.
      const float angle = static_cast<float>(positions[t]) * inv_freq_[j];
      cos_t[j] = std::cos(angle);
      sin_t[j] = inverse ? -std::sin(angle) : std::sin(angle);
    }
    for (int h = 0; h < heads; ++h) {
      float* row = x.data() + (t * heads + h) * d;
      for (int j = 0; j < half; ++j) {
        const float a = row[j], b = row[j + half];
        row[j] = a * cos_t[j] - b * sin_t[j];
        row[j + half] = b * cos_t[j] + a * sin_t[j];
      }
    }
  }
}

}  // namespace kvlab::core
