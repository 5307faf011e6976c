#include "core/rope.h"

#include <fmt/format.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <numbers>

#include "core/error.h"
#include "core/parse_json.h"

namespace kvlab::core {

Rope Rope::identity() { return Rope{}; }

namespace {

// Every product below is rounded to f32 on its own, as the separate vector instructions of Sleef
// and torch's separate tensor kernels round it: kvlab builds with -march=native, where GCC's
// default -ffp-contract=fast would otherwise fuse a product and a following sum into one fma.
// Fused steps are written as explicit std::fma, exactly where Sleef's FMA builds fuse.
float mul(float a, float b) {
  volatile float p = a * b;
  return p;
}

// Sleef 3.5.1–3.9 (the version torch bundles in third_party/sleef; the arithmetic of these
// functions is unchanged over that range), src/libm/sleefsimdsp.c: xpowf, logkf, expkf, and the
// double-float helpers of src/libm/df.h (src/common/df.h from 3.6) in their ENABLE_FMA_SP form,
// which the AVX2 and AVX-512 builds use. One lane, restricted to x > 0 normal and finite y.
struct F2 {
  float x, y;
};

F2 df_add2(float x, float y) {  // dfadd2_vf2_vf_vf
  const float s = x + y, v = s - x;
  return {s, (x - (s - v)) + (y - v)};
}
F2 df_add2(F2 x, float y) {  // dfadd2_vf2_vf2_vf
  const float s = x.x + y, v = s - x.x;
  const float t = (x.x - (s - v)) + (y - v);
  return {s, t + x.y};
}
F2 df_add2(F2 x, F2 y) {  // dfadd2_vf2_vf2_vf2
  const float s = x.x + y.x, v = s - x.x;
  const float t = (x.x - (s - v)) + (y.x - v);
  return {s, t + (x.y + y.y)};
}
F2 df_add(F2 x, F2 y) {  // dfadd_vf2_vf2_vf2 (|x| ≥ |y|)
  const float s = x.x + y.x;
  return {s, (((x.x - s) + y.x) + x.y) + y.y};
}
F2 df_add(float x, F2 y) {  // dfadd_vf2_vf_vf2
  const float s = x + y.x;
  return {s, ((x - s) + y.x) + y.y};
}
F2 df_normalize(F2 t) {  // dfnormalize_vf2_vf2
  const float s = t.x + t.y;
  return {s, (t.x - s) + t.y};
}
F2 df_scale(F2 d, float s) { return {mul(d.x, s), mul(d.y, s)}; }  // dfscale_vf2_vf2_vf
F2 df_div(F2 n, F2 d) {                                             // dfdiv_vf2_vf2_vf2 (FMA)
  const float t = 1.0f / d.x, s = mul(n.x, t);
  const float u = std::fma(t, n.x, -s);
  const float v = std::fma(-d.y, t, std::fma(-d.x, t, 1.0f));
  return {s, std::fma(s, v, std::fma(n.y, t, u))};
}
F2 df_squ(F2 x) {  // dfsqu_vf2_vf2 (FMA)
  const float s = mul(x.x, x.x);
  return {s, std::fma(x.x + x.x, x.y, std::fma(x.x, x.x, -s))};
}
F2 df_mul(F2 x, F2 y) {  // dfmul_vf2_vf2_vf2 (FMA)
  const float s = mul(x.x, y.x);
  return {s, std::fma(x.x, y.y, std::fma(x.y, y.x, std::fma(x.x, y.x, -s)))};
}
F2 df_mul(F2 x, float y) {  // dfmul_vf2_vf2_vf (FMA)
  const float s = mul(x.x, y);
  return {s, std::fma(x.y, y, std::fma(x.x, y, -s))};
}

F2 logkf(float d) {  // log(d) as a double-float, d normal and positive
  // vilogb2k_vi2_vf(d · (1/0.75f)): the biased exponent field; m = d·2^−e ∈ [0.75, 1.5).
  const float scaled = mul(d, 1.0f / 0.75f);
  const int e = static_cast<int>((std::bit_cast<std::uint32_t>(scaled) >> 23) & 0xff) - 0x7f;
  const float m = std::ldexp(d, -e);
  const F2 x = df_div(df_add2(-1.0f, m), df_add2(1.0f, m));
  const F2 x2 = df_squ(x);
  float t = 0.240320354700088500976562f;
  t = std::fma(t, x2.x, 0.285112679004669189453125f);
  t = std::fma(t, x2.x, 0.400007992982864379882812f);
  const F2 c{0.66666662693023681640625f, 3.69183861259614332084311e-09f};
  F2 s = df_mul(F2{0.69314718246459960938f, -1.904654323148236017e-09f}, static_cast<float>(e));
  s = df_add(s, df_scale(x, 2.0f));
  s = df_add(s, df_mul(df_mul(x2, x), df_add2(df_mul(x2, t), c)));
  return s;
}

float expkf(F2 d) {
  constexpr float kRecLn2 = 1.442695040888963407359924681001892137426645954152985934135449406931f;  // R_LN2f
  constexpr float kLn2Hi = 0.693145751953125f, kLn2Lo = 1.428606765330187045e-06f;              // L2Uf, L2Lf
  const float u0 = mul(d.x + d.y, kRecLn2);
  const int q = static_cast<int>(std::nearbyint(u0));  // vrint_vi2_vf: round half to even
  F2 s = df_add2(d, mul(static_cast<float>(q), -kLn2Hi));
  s = df_add2(s, mul(static_cast<float>(q), -kLn2Lo));
  s = df_normalize(s);
  float u = 0.00136324646882712841033936f;
  u = std::fma(u, s.x, 0.00836596917361021041870117f);
  u = std::fma(u, s.x, 0.0416710823774337768554688f);
  u = std::fma(u, s.x, 0.166665524244308471679688f);
  u = std::fma(u, s.x, 0.499999850988388061523438f);
  F2 t = df_add(s, df_mul(df_squ(s), u));
  t = df_add(1.0f, t);
  const float r = std::ldexp(t.x + t.y, q);
  return d.x < -104.0f ? 0.0f : r;
}

}  // namespace

float sleef_powf_u10(float x, float y) {
  if (y == 0.0f || x == 1.0f) return 1.0f;
  return expkf(df_mul(logkf(x), y));  // xpowf for x > 0: expkf(dfmul(logkf(|x|), y))
}

std::vector<float> torch_rope_powers(int head_dim, double base, int pow_block) {
  if (head_dim <= 0 || head_dim % 2) fail("RoPE: head_dim {} must be positive and even", head_dim);
  if (!(base > 1)) fail("RoPE: rope_theta {} must be > 1", base);
  if (pow_block < 0) fail("RoPE: pow block {} must be ≥ 0", pow_block);
  const int half = head_dim / 2;
  // `base ** t`, base a Python float: torch wraps it as a scalar and casts it to the tensor's f32.
  const float b = static_cast<float>(base);
  const int vector_end = pow_block > 0 ? half / pow_block * pow_block : 0;
  std::vector<float> p(half);
  for (int i = 0; i < half; ++i) {
    // arange(0, dim, 2) as int64 → f32 (exact), / dim: one correctly rounded f32 division.
    const float t = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    p[i] = i < vector_end ? sleef_powf_u10(b, t) : std::pow(b, t);  // std::pow(float, float) = powf
  }
  return p;
}

std::vector<float> torch_default_inv_freq(int head_dim, double base, int pow_block) {
  std::vector<float> inv = torch_rope_powers(head_dim, base, pow_block);
  for (auto& x : inv) x = 1.0f / x;  // `1.0 / x` is x.reciprocal() * 1.0 (torch/_tensor.py __rdiv__)
  return inv;
}

Rope Rope::standard(int head_dim, double base, int pow_block) {
  Rope r;
  r.inv_freq_ = torch_default_inv_freq(head_dim, base, pow_block);
  r.head_dim_ = head_dim;
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

// rope_scaling.<key>: a list of `count` positive finite numbers (LongRoPE's per-frequency divisors).
std::vector<double> factor_list(const nlohmann::json& scaling, const char* key, int count) {
  auto it = scaling.find(key);
  if (it == scaling.end() || !it->is_array())
    fail("RoPE config: longrope needs rope_scaling.{} (a list of {} numbers)", key, count);
  if (static_cast<int>(it->size()) != count)
    fail("RoPE config: rope_scaling.{} has {} entries; the rotary dim needs {} (rotary_dim / 2)", key, it->size(),
         count);
  std::vector<double> out;
  for (const auto& v : *it) {
    if (!v.is_number() || !(v.get<double>() > 0) || !std::isfinite(v.get<double>()))
      fail("RoPE config: rope_scaling.{} holds {}; each factor must be a positive finite number", key, v.dump());
    out.push_back(v.get<double>());
  }
  return out;
}

// `1.0 / (ext_factors * base**inv_freq_shape)` (_compute_longrope_parameters): the factors
// become an f32 tensor, one f32 product with the power, then the f32 reciprocal.
std::vector<float> longrope_table(const std::vector<float>& powers, const std::vector<double>& factors) {
  std::vector<float> inv(powers.size());
  for (std::size_t i = 0; i < powers.size(); ++i) {
    volatile float product = static_cast<float>(factors[i]) * powers[i];
    inv[i] = 1.0f / product;
  }
  return inv;
}

}  // namespace

// transformers' _compute_longrope_parameters and dynamic_rope_update (v5 modeling_rope_utils.py;
// docs/models.md §2.6): r is the default rule over the rotary dim, replaced by the two tables.
struct RopeConfigReader {
  static Rope longrope(Rope r, const nlohmann::json& config, const nlohmann::json& scaling, double theta,
                       const std::string& partial_note, int pow_block);
};

Rope RopeConfigReader::longrope(Rope r, const nlohmann::json& config, const nlohmann::json& scaling, double theta,
                               const std::string& partial_note, int pow_block) {
  const int half = static_cast<int>(r.inv_freq_.size());
  const auto short_factor = factor_list(scaling, "short_factor", half);
  const auto long_factor = factor_list(scaling, "long_factor", half);
  // original_max_position_embeddings: in rope_parameters (v5) or at the top level (Phi-3's
  // config.json); Phi3Config's default is 4096. max_position_embeddings likewise (default 4096).
  const bool phi3 = config.value("model_type", std::string()) == "phi3";
  const double original_max =
      number(scaling, "original_max_position_embeddings",
             number(config, "original_max_position_embeddings", phi3 ? 4096.0 : std::nan("")));
  if (!(original_max >= 2) || original_max != std::floor(original_max))
    fail("RoPE config: longrope needs original_max_position_embeddings, an integer ≥ 2 (got {})", original_max);
  // factor: rope_scaling.factor when given (v5), else max_position_embeddings / original_max.
  double factor = number(scaling, "factor", std::nan(""));
  if (std::isnan(factor)) {
    const double max_pos = number(config, "max_position_embeddings", phi3 ? 4096.0 : std::nan(""));
    if (std::isnan(max_pos)) fail("RoPE config: longrope needs rope_scaling.factor or max_position_embeddings");
    factor = max_pos / original_max;
  }
  if (!(factor > 0)) fail("RoPE config: longrope factor {} must be > 0", factor);
  // attention_factor: given, else 1 for factor ≤ 1, else sqrt(1 + ln(factor) / ln(original_max))
  // (Python doubles; cast to f32 where it multiplies the f32 cos/sin).
  double attention = number(scaling, "attention_factor", std::nan(""));
  if (std::isnan(attention))
    attention = factor <= 1.0 ? 1.0 : std::sqrt(1.0 + std::log(factor) / std::log(original_max));
  if (!(attention > 0) || !std::isfinite(attention))
    fail("RoPE config: rope_scaling.attention_factor {} must be a positive finite number", attention);
  const auto powers = torch_rope_powers(r.rotary_dim(), theta, pow_block);
  r.short_inv_ = longrope_table(powers, short_factor);
  r.long_inv_ = longrope_table(powers, long_factor);
  r.inv_freq_ = r.short_inv_;  // HF's table at init (seq_len None), kept until a forward exceeds original_max
  r.original_max_ = static_cast<std::int64_t>(original_max);
  r.attention_factor_ = static_cast<float>(attention);
  r.base_description_ = fmt::format("longrope θ={} original_max={} factor={} attention_factor={}{}", theta,
                                    r.original_max_, factor, attention, partial_note);
  r.description_ = r.base_description_ + " short";
  return r;
}

Rope Rope::for_length(std::int64_t seq_len) const {
  if (!is_length_dependent()) return *this;
  Rope r = *this;
  const bool long_table = seq_len > original_max_;
  r.inv_freq_ = long_table ? long_inv_ : short_inv_;
  r.description_ = base_description_ + (long_table ? " long" : " short");
  return r;
}

Rope Rope::from_config(std::string_view config_json, int head_dim, int pow_block) {
  const nlohmann::json config = parse_json(config_json, "RoPE config");
  if (!config.is_object()) fail("RoPE config: not a JSON object");
  if (config.value("rope_type", std::string()) == "none") return identity();

  nlohmann::json scaling = nlohmann::json::object();
  if (auto it = config.find("rope_parameters"); it != config.end() && it->is_object()) scaling = *it;  // transformers v5
  if (auto it = config.find("rope_scaling"); it != config.end() && it->is_object()) scaling.update(*it);
  const double theta = number(scaling, "rope_theta", number(config, "rope_theta", 10000.0));
  // partial_rotary_factor: top level (transformers ≤ 4.x, Phi-4-mini's config.json) or inside
  // rope_parameters (v5 moves it there: PreTrainedConfig.standardize_rope_params).
  const double partial = number(scaling, "partial_rotary_factor", number(config, "partial_rotary_factor", 1.0));
  if (head_dim <= 0) {
    head_dim = static_cast<int>(number(config, "head_dim", 0));
    if (head_dim <= 0 && config.contains("hidden_size") && config.contains("num_attention_heads"))
      head_dim = config["hidden_size"].get<int>() / config["num_attention_heads"].get<int>();
  }
  // transformers: dim = int(head_dim * partial_rotary_factor) (a Python float product, truncated);
  // only the first dim channels rotate, pairing j with j + dim/2 (apply_rotary_pos_emb's q_rot).
  if (!(partial > 0 && partial <= 1)) fail("RoPE config: partial_rotary_factor {} must be in (0, 1]", partial);
  const int rotary_dim = static_cast<int>(static_cast<double>(head_dim) * partial);
  if (rotary_dim <= 0 || rotary_dim % 2)
    fail("RoPE config: partial_rotary_factor {} × head_dim {} gives {} rotary channels; need a positive even count",
         partial, head_dim, rotary_dim);

  Rope r = standard(rotary_dim, theta, pow_block);
  r.head_dim_ = head_dim;
  if (rotary_dim != head_dim) r.description_ += fmt::format(" rotary={}/{}", rotary_dim, head_dim);
  const std::string partial_note = rotary_dim != head_dim ? fmt::format(" rotary={}/{}", rotary_dim, head_dim) : "";
  std::string type = "default";
  if (scaling.contains("rope_type")) type = scaling["rope_type"].get<std::string>();
  else if (scaling.contains("type")) type = scaling["type"].get<std::string>();
  // Phi3Config renames rope_scaling types "su" and "yarn" to "longrope" (transformers ≤ 4.x
  // _rope_scaling_adjustment, v5 convert_rope_params_to_dict); other families keep yarn's meaning.
  const bool phi3 = config.value("model_type", std::string()) == "phi3";
  if (phi3 && (type == "su" || type == "yarn")) type = "longrope";
  if (type == "default") return r;
  if (type == "longrope")
    return RopeConfigReader::longrope(std::move(r), config, scaling, theta, partial_note, pow_block);
  const double factor = number(scaling, "factor", 1.0);
  if (!(factor > 0)) fail("RoPE config: rope_scaling.factor {} must be > 0", factor);
  // transformers' tensor arithmetic on the f32 table: each Python-float operand is cast to f32
  // (torch's wrapped-scalar promotion), each op rounds once, `a / tensor` is
  // tensor.reciprocal() * a.
  const float f = static_cast<float>(factor);
  if (type == "linear") {
    for (auto& x : r.inv_freq_) x = x / f;  // inv_freq /= factor
    r.description_ = fmt::format("linear θ={} factor={}{}", theta, factor, partial_note);
    return r;
  }
  if (type == "llama3") {
    // transformers' _compute_llama3_parameters (docs/models.md §2.3).
    const double low = number(scaling, "low_freq_factor", NAN), high = number(scaling, "high_freq_factor", NAN);
    const double old_ctx = number(scaling, "original_max_position_embeddings", NAN);
    if (std::isnan(low) || std::isnan(high) || std::isnan(old_ctx))
      fail("RoPE config: llama3 scaling needs low_freq_factor, high_freq_factor and original_max_position_embeddings");
    if (!(high > low)) fail("RoPE config: llama3 high_freq_factor {} must exceed low_freq_factor {}", high, low);
    // Python-side doubles, then cast to f32 where they meet the tensor.
    const float low_wavelen = static_cast<float>(old_ctx / low), high_wavelen = static_cast<float>(old_ctx / high);
    const float two_pi = static_cast<float>(2 * std::numbers::pi), old_f = static_cast<float>(old_ctx);
    const float low_f = static_cast<float>(low), span = static_cast<float>(high - low);
    for (auto& x : r.inv_freq_) {
      const float inv = x;
      const float wavelen = mul(1.0f / inv, two_pi);  // 2 * math.pi / inv_freq
      // torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
      const float llama = wavelen > low_wavelen ? inv / f : inv;
      const bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      if (!medium) {
        x = llama;
        continue;
      }
      const float smooth = (mul(1.0f / wavelen, old_f) - low_f) / span;  // (old / wavelen − low) / (high − low)
      x = mul(1.0f - smooth, llama) / f + mul(smooth, llama);           // (1 − s) · inv / factor + s · inv
    }
    r.description_ = fmt::format("llama3 θ={} factor={} low={} high={} original_max={}{}", theta, factor, low, high, old_ctx,
                                 partial_note);
    return r;
  }
  fail("RoPE config: rope type '{}' is not supported (default, linear, llama3, longrope)", type);
}

std::string Rope::describe() const { return description_; }

void Rope::apply(std::span<float> x, std::int64_t n, int heads, std::span<const std::int64_t> positions,
                 bool inverse) const {
  if (is_identity()) return;
  // Channels [0, rotary_dim) rotate in rotate-half pairs (j, j + rotary_dim/2); the rest pass
  // through (partial rotary; full rotary: rotary_dim = head_dim).
  const int d = head_dim_, half = static_cast<int>(inv_freq_.size());
  if (static_cast<std::int64_t>(x.size()) != n * heads * d)
    fail("RoPE: {} values for {} rows × {} heads × {} dims", x.size(), n, heads, d);
  if (static_cast<std::int64_t>(positions.size()) != n) fail("RoPE: {} positions for {} rows", positions.size(), n);
  std::vector<float> cos_t(half), sin_t(half);
  const float scale = attention_factor_;  // 1 (exact, a no-op) except under LongRoPE
  for (std::int64_t t = 0; t < n; ++t) {
    for (int j = 0; j < half; ++j) {
      // As HF: the angle is formed in fp32, cos/sin of it in fp32, each times attention_scaling.
      const float angle = static_cast<float>(positions[t]) * inv_freq_[j];
      if (inverse) {
        cos_t[j] = std::cos(angle) / scale;
        sin_t[j] = -std::sin(angle) / scale;
      } else {
        cos_t[j] = mul(std::cos(angle), scale);
        sin_t[j] = mul(std::sin(angle), scale);
      }
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
