// The libtorch decoder against oracles that do not share its code path: core::Rope (the CPU
// RoPE), recomputation without the cache, the same model with MHA weights built by
// repeat-interleave, causality and receptive-field arguments, and f32 as the reference for bf16.
// Tolerances: f32 paths that differ only in summation order agree to 1e-4 (logits are O(1–10)).
#include "harness/model/llama_model.h"

#include <fmt/ranges.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <numeric>
#include <set>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "harness/tiny_model.h"

namespace kvlab::harness {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;

constexpr int kVocab = 97;

// A checkpoint folder from config JSON and weights (no tokenizer: the model does not need one).
class ModelDir {
 public:
  ModelDir(const std::string& name, const json& config, std::map<std::string, core::TensorToWrite> weights)
      : dir_(fs::temp_directory_path() / fmt::format("kvlab_model_{}_{}", name, ::getpid())) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ofstream(dir_ / "config.json") << config.dump();
    core::write_safetensors(dir_ / "model.safetensors", weights);
  }
  ~ModelDir() { fs::remove_all(dir_); }
  const fs::path& path() const { return dir_; }
  LlamaModel load(RunOptions o = {}) const { return LlamaModel::load(dir_, o); }

 private:
  fs::path dir_;
};

TinyModelOptions small(const std::string& arch = "llama") {
  TinyModelOptions o;
  o.arch = arch;
  o.layers = 2;
  o.hidden = 32;
  o.heads = 4;
  o.kv_heads = 2;
  o.intermediate = 48;
  o.dtype = "float32";
  o.max_position_embeddings = 256;  // llama3 bands at the tiny scale
  o.seed = 7;
  return o;
}

json config_json(const TinyModelOptions& o) { return json::parse(tiny_model_config_json(o, kVocab)); }

std::map<std::string, core::TensorToWrite> weights_for(const json& config, const TinyModelOptions& o) {
  return tiny_weights(parse_model_config(config.dump()), o);
}

// Loading `weights` under `config` (in a folder named after `name`) fails with an error that
// contains `message`.
void expect_load_fails(const std::string& name, const json& config, std::map<std::string, core::TensorToWrite> weights,
                       const std::string& message) {
  try {
    ModelDir(name, config, std::move(weights)).load();
    ADD_FAILURE() << name << ": loaded; expected the error \"" << message << "\"";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(message));
  }
}

at::Tensor ids(std::vector<std::int64_t> v) { return at::tensor(v, at::kLong); }

std::vector<std::int64_t> random_ids(int n, unsigned seed) {
  std::vector<std::int64_t> v(n);
  std::uint64_t s = seed * 2654435761u + 1;
  for (auto& x : v) x = static_cast<std::int64_t>((s = s * 6364136223846793005ull + 1442695040888963407ull) >> 33) % kVocab;
  return v;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

using Weights = std::map<std::string, core::TensorToWrite>;

// transformers' activations by name, in doubles, from their definitions (ACT2FN: nn.SiLU,
// nn.GELU, NewGELUActivation / nn.GELU("tanh"), nn.ReLU), not from libtorch's kernels.
double activation_oracle(const std::string& name, double x) {
  if (name == "silu" || name == "swish") return x / (1 + std::exp(-x));
  if (name == "gelu") return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
  if (name == "gelu_new" || name == "gelu_pytorch_tanh")
    return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
  if (name == "relu") return std::max(x, 0.0);
  ADD_FAILURE() << "no oracle for " << name;
  return NAN;
}

// Which cells attention may read beyond the causal and window rules: (layer, query head, key
// index, query index) → visible. KvCache's keep mask is per KV head (the same for a group's query
// heads), a QuerySelection's per query head.
using CellFilter = std::function<bool(int layer, int q_head, int key, int query)>;

// What the oracle's routers did (sparse layers only): the smallest gap between the k-th and the
// (k+1)-th routing probability of any token — f32 and double pick the same experts when it is
// far above f32's rounding (~1e-7) — and every expert that was some token's first choice.
struct RoutingStats {
  double min_margin = std::numeric_limits<double>::infinity();
  std::set<int> first_choices;
};

// The oracle: the decoder in plain loops over doubles, straight from the weights as written (no
// libtorch on its path), Qwen3's q_norm/k_norm as RMSNorm over each head's D channels between
// the projection and RoPE, RoPE by core::Rope::apply, the masks as docs/models.md §1.3 states them: query
// i (position i) sees key j when j ≤ i, j > i − window (when the config has one) and
// filter(l, h, j, i), query head h reading KV head h / n_rep, the MLP's activation
// `hidden_act` by activation_oracle. Sparse layers (Mixtral, Qwen3-MoE; docs/models.md §7.3) as
// the MoE is defined: p = softmax(router · x) over all experts, the k largest, weights p_e
// (divided by their sum when normalize_top_k), output Σ weight · expert_e(x). Gemma (docs/models.md
// §9.3): norms x̂·(1 + w), embeddings × √d, scores × query_pre_attn_scalar^−½ then cap·tanh(s / cap),
// layer l's own window (config.window) and RoPE (config.rope_of), post_attention_layernorm on the
// attention output, pre/post_feedforward_layernorm around the MLP, logits soft-capped. Returns logits [S][V].
// With f32-stored weights the f32 model differs from it by rounding only (~1e-6 relative).
// Phi-3's fused tensors as separate q/k/v and gate/up ones, by the row layout modeling_phi3.py
// slices: qkv_proj rows [0, H_q·D) are q_proj, the next H_kv·D k_proj, the last H_kv·D v_proj;
// gate_up_proj rows [0, I) are gate_proj (chunk(2)'s first half), [I, 2I) up_proj.
Weights split_fused(const ModelConfig& c, Weights w) {
  const std::int64_t d = c.hidden_size, dq = std::int64_t{c.num_heads} * c.head_dim,
                     dkv = std::int64_t{c.num_kv_heads} * c.head_dim, I = c.intermediate_size;
  const auto rows = [&](const core::TensorToWrite& t, std::int64_t first, std::int64_t n) {
    return core::TensorToWrite{{n, d}, std::vector<float>(t.data.begin() + first * d, t.data.begin() + (first + n) * d),
                               core::DType::f32};
  };
  for (int l = 0; l < c.num_layers; ++l) {
    const auto p = fmt::format("model.layers.{}.", l);
    const auto qkv = w.at(p + "self_attn.qkv_proj.weight"), gate_up = w.at(p + "mlp.gate_up_proj.weight");
    w[p + "self_attn.q_proj.weight"] = rows(qkv, 0, dq);
    w[p + "self_attn.k_proj.weight"] = rows(qkv, dq, dkv);
    w[p + "self_attn.v_proj.weight"] = rows(qkv, dq + dkv, dkv);
    w[p + "mlp.gate_proj.weight"] = rows(gate_up, 0, I);
    w[p + "mlp.up_proj.weight"] = rows(gate_up, I, I);
  }
  return w;
}

std::vector<std::vector<double>> oracle_logits(const ModelConfig& c, const Weights& stored,
                                               const std::vector<std::int64_t>& tokens, const CellFilter& filter = {},
                                               const std::string& hidden_act = "silu", RoutingStats* routing = nullptr) {
  const Weights w = c.fused_projections ? split_fused(c, stored) : stored;
  using Vec = std::vector<double>;
  const int S = static_cast<int>(tokens.size()), d = c.hidden_size, H = c.num_heads, Hkv = c.num_kv_heads,
            D = c.head_dim, I = c.intermediate_size, rep = H / Hkv;
  const auto data = [&](const std::string& name) -> const std::vector<float>& { return w.at(name).data; };
  const auto linear = [&](const Vec& x, const std::string& name, int out, bool bias) {
    const auto& W = data(name + ".weight");
    Vec y(out);
    for (int o = 0; o < out; ++o) {
      double acc = bias ? data(name + ".bias")[o] : 0.0;
      for (std::size_t i = 0; i < x.size(); ++i) acc += double{W[o * x.size() + i]} * x[i];
      y[o] = acc;
    }
    return y;
  };
  const auto norm = [&](const Vec& x, const std::string& name) {
    double mean_sq = 0;
    for (double v : x) mean_sq += v * v;
    const double r = 1 / std::sqrt(mean_sq / x.size() + c.rms_norm_eps);
    Vec y(x.size());
    // Gemma's RMSNorm scales by (1 + w) (Gemma2RMSNorm), the others by w.
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = x[i] * r * (c.unit_offset_norm + double{data(name)[i]});
    return y;
  };
  const auto soft_cap = [](double x, const std::optional<double>& cap) { return cap ? *cap * std::tanh(x / *cap) : x; };
  // Qwen3's q_norm / k_norm: the same RMSNorm over each head's D channels.
  const auto head_norm = [&](Vec& row, int heads, const std::string& name) {
    for (int head = 0; head < heads; ++head) {
      const Vec part(row.begin() + head * D, row.begin() + (head + 1) * D);
      const Vec normed = norm(part, name);
      std::copy(normed.begin(), normed.end(), row.begin() + head * D);
    }
  };
  // rows[t]: [heads·D] at position t, rotated by layer l's RoPE (Gemma-3's sliding layers: the local one).
  const auto rope = [&](std::vector<Vec>& rows, int heads, int l) {
    std::vector<float> flat;
    for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
    std::vector<std::int64_t> pos(S);
    std::iota(pos.begin(), pos.end(), 0);
    c.rope_of(l).apply(flat, S, heads, pos);
    for (int t = 0; t < S; ++t) rows[t].assign(flat.begin() + t * heads * D, flat.begin() + (t + 1) * heads * D);
  };
  std::vector<Vec> h(S);
  for (int t = 0; t < S; ++t) {
    const auto& E = data("model.embed_tokens.weight");
    h[t].assign(E.begin() + tokens[t] * d, E.begin() + (tokens[t] + 1) * d);
    if (c.scale_embeddings)  // Gemma: × √d
      for (double& e : h[t]) e *= std::sqrt(double(d));
  }
  // Gemma: query_pre_attn_scalar^−½ instead of D^−½.
  const double scale = 1 / std::sqrt(c.query_pre_attn_scalar.value_or(double(D)));
  for (int l = 0; l < c.num_layers; ++l) {
    const auto p = fmt::format("model.layers.{}.", l);
    std::vector<Vec> q(S), k(S), v(S);
    for (int t = 0; t < S; ++t) {
      const Vec x = norm(h[t], p + "input_layernorm.weight");
      q[t] = linear(x, p + "self_attn.q_proj", H * D, c.qkv_bias);
      k[t] = linear(x, p + "self_attn.k_proj", Hkv * D, c.qkv_bias);
      v[t] = linear(x, p + "self_attn.v_proj", Hkv * D, c.qkv_bias);
      if (c.qk_norm) {
        head_norm(q[t], H, p + "self_attn.q_norm.weight");
        head_norm(k[t], Hkv, p + "self_attn.k_norm.weight");
      }
    }
    rope(q, H, l);
    rope(k, Hkv, l);
    const std::optional<int> window = c.window(l);
    for (int i = 0; i < S; ++i) {
      Vec attn(H * D, 0.0);
      for (int head = 0; head < H; ++head) {
        const int g = head / rep;
        std::vector<double> score(S, -std::numeric_limits<double>::infinity());
        double top = score[0];
        for (int j = 0; j <= i; ++j) {
          if (window && j <= i - *window) continue;
          if (filter && !filter(l, head, j, i)) continue;
          double dot = 0;
          for (int e = 0; e < D; ++e) dot += q[i][head * D + e] * k[j][g * D + e];
          score[j] = soft_cap(dot * scale, c.attn_logit_softcap);
          top = std::max(top, score[j]);
        }
        double total = 0;
        for (double& s : score) total += (s = std::exp(s - top));
        for (int j = 0; j < S; ++j)
          for (int e = 0; e < D; ++e) attn[head * D + e] += score[j] / total * v[j][g * D + e];
      }
      Vec o = linear(attn, p + "self_attn.o_proj", d, c.o_bias);
      if (c.sandwich_norms) o = norm(o, p + "post_attention_layernorm.weight");  // Gemma: on the attention output
      for (int e = 0; e < d; ++e) h[i][e] += o[e];  // q, k, v of every token are already computed
    }
    // An MLP act(gate(x)) ⊙ up(x) → down of width `width` whose projections are named gate/up/down.
    const auto mlp = [&](const Vec& x, const std::string& gate, const std::string& up_name, const std::string& down_name,
                         int width, bool bias) {
      Vec act = linear(x, gate, width, bias);
      const Vec up = linear(x, up_name, width, bias);
      for (int e = 0; e < width; ++e) act[e] = activation_oracle(hidden_act, act[e]) * up[e];
      return linear(act, down_name, d, bias);
    };
    const auto moe_name = [&](MoeTensor t, int e) {  // "model.layers.l.<tensor>" without ".weight"
      const std::string name = c.moe_tensor_name(t, e);
      return p + name.substr(0, name.size() - std::string(".weight").size());
    };
    for (int t = 0; c.sparse_layer(l) && t < S; ++t) {
      const MoeConfig& m = *c.moe;
      const Vec x = norm(h[t], p + "post_attention_layernorm.weight");
      Vec prob = linear(x, moe_name(MoeTensor::router, 0), m.num_experts, false);
      const double top = *std::max_element(prob.begin(), prob.end());
      double total = 0;
      for (double& pe : prob) total += (pe = std::exp(pe - top));
      for (double& pe : prob) pe /= total;
      std::vector<int> order(m.num_experts);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return prob[a] > prob[b]; });
      double chosen = 0;
      for (int i = 0; i < m.top_k; ++i) chosen += prob[order[i]];
      if (routing) {
        if (m.top_k < m.num_experts)
          routing->min_margin = std::min(routing->min_margin, prob[order[m.top_k - 1]] - prob[order[m.top_k]]);
        routing->first_choices.insert(order[0]);
      }
      for (int i = 0; i < m.top_k; ++i) {
        const int e = order[i];
        const double weight = m.normalize_top_k ? prob[e] / chosen : prob[e];
        const Vec y = mlp(x, moe_name(MoeTensor::gate, e), moe_name(MoeTensor::up, e), moe_name(MoeTensor::down, e),
                          m.expert_intermediate_size, false);
        for (int j = 0; j < d; ++j) h[t][j] += weight * y[j];
      }
    }
    for (int t = 0; !c.sparse_layer(l) && t < S; ++t) {
      // Gemma: pre_feedforward_layernorm in, post_feedforward_layernorm out.
      const Vec x = norm(h[t], p + (c.sandwich_norms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight"));
      Vec down = mlp(x, p + "mlp.gate_proj", p + "mlp.up_proj", p + "mlp.down_proj", I, c.mlp_bias);
      if (c.sandwich_norms) down = norm(down, p + "post_feedforward_layernorm.weight");
      for (int e = 0; e < d; ++e) h[t][e] += down[e];
    }
  }
  std::vector<Vec> logits(S);
  const std::string head = c.tie_word_embeddings ? "model.embed_tokens" : "lm_head";
  for (int t = 0; t < S; ++t) {
    logits[t] = linear(norm(h[t], "model.norm.weight"), head, c.vocab_size, false);
    for (double& v : logits[t]) v = soft_cap(v, c.final_logit_softcap);
  }
  return logits;
}

// Rows [first, first + rows.size()) of the oracle's logits against the model's, max |difference|.
double max_diff(const at::Tensor& ours, const std::vector<std::vector<double>>& oracle, int first = 0) {
  double worst = 0;
  for (std::int64_t t = 0; t < ours.size(0); ++t)
    for (std::int64_t v = 0; v < ours.size(1); ++v)
      worst = std::max(worst, std::abs(ours[t][v].item<double>() - oracle[first + t][v]));
  return worst;
}

// Seeded biases uniform in [−0.2, 0.2) for the projections tiny_weights leaves without (o_proj, MLP).
void add_bias(Weights& w, const std::string& name, std::int64_t n, std::uint64_t seed) {
  core::TensorToWrite t{{n}, {}, core::DType::f32};
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    t.data.push_back(static_cast<float>(0.4 * static_cast<double>(s >> 11) / 9007199254740992.0 - 0.2));
  }
  w[name] = t;
}

TEST(LlamaModel, FullForwardMatchesAPlainLoopOracle) {
  // llama3 RoPE with every bias flag (attention_bias: q/k/v/o, mlp_bias), Qwen2's q/k/v biases,
  // Mistral with a 3-token window and head_dim 6 ≠ hidden / heads, and Qwen3 (q_norm/k_norm,
  // tied embeddings) as released (head_dim 16 = 2 · hidden / heads, no bias) and with head_dim 6
  // and attention_bias (q/k/v/o; its MLP never has a bias), and Phi-3 (fused qkv_proj /
  // gate_up_proj split by the oracle, partial rotary 0.75: 6 of D = 8 channels rotate) without
  // and with a 3-token window; attention_bias and mlp_bias are ignored on phi3 (no biases in
  // Phi3Attention / Phi3MLP). Tolerance 1e-4: f32 against double on logits of magnitude ~1–10.
  struct Case { const char* arch; int window, head_dim; bool all_biases; };
  for (const Case& k : {Case{"llama", 0, 0, true}, Case{"qwen2", 0, 0, false}, Case{"mistral", 3, 6, false},
                        Case{"qwen3", 0, 0, false}, Case{"qwen3", 0, 6, true}, Case{"phi3", 0, 0, false},
                        Case{"phi3", 3, 0, false}}) {
    auto o = small(k.arch);
    o.head_dim = k.head_dim;
    json config = config_json(o);
    if (k.window) config["sliding_window"] = k.window;
    if (k.all_biases) config["attention_bias"] = config["mlp_bias"] = true;
    const ModelConfig mc = parse_model_config(config.dump());
    auto w = tiny_weights(mc, o);
    if (k.all_biases)
      for (int l = 0; l < o.layers; ++l) {
        const auto p = fmt::format("model.layers.{}.", l);
        add_bias(w, p + "self_attn.o_proj.bias", o.hidden, 10 * l + 1);
        add_bias(w, p + "mlp.gate_proj.bias", o.intermediate, 10 * l + 2);
        add_bias(w, p + "mlp.up_proj.bias", o.intermediate, 10 * l + 3);
        add_bias(w, p + "mlp.down_proj.bias", o.hidden, 10 * l + 4);
      }
    // Qwen3MLP has no bias whatever mlp_bias says: its stored gate/up/down biases go unused.
    ASSERT_EQ(mc.o_bias && mc.qkv_bias, k.all_biases) << k.arch;
    ASSERT_EQ(mc.mlp_bias, k.all_biases && std::string(k.arch) != "qwen3") << k.arch;
    ASSERT_EQ(mc.qk_norm, std::string(k.arch) == "qwen3");
    ASSERT_EQ(mc.fused_projections, std::string(k.arch) == "phi3");
    if (mc.fused_projections) {
      ASSERT_EQ(mc.rope.rotary_dim(), 6) << "partial rotary 0.75 of D = 8";
    }
    const ModelDir dir(fmt::format("oracle_{}_{}_{}", k.arch, k.head_dim, k.window), config, w);
    const auto tokens = random_ids(11, 13);
    const auto ours = dir.load().forward(ids(tokens), nullptr, {}, true);
    EXPECT_LT(max_diff(ours, oracle_logits(mc, w, tokens)), 1e-4) << k.arch;
  }
}

// A variant of a family (MoE, Gemma): the tiny model of `arch` with config.json edits.
struct VariantCase {
  std::string name, arch;
  std::function<void(json&)> edit = {};
  int layers = 2;
};

std::vector<VariantCase> moe_cases() {
  return {
      {"mixtral", "mixtral"},
      // Mistral-style window 3, head_dim 6 ≠ hidden / heads, top-1 (the renormalised weight is 1).
      {"mixtral_window_top1", "mixtral", [](json& j) {
         j["sliding_window"] = 3;
         j["head_dim"] = 6;
         j["num_experts_per_tok"] = 1;
       }},
      {"qwen3_moe", "qwen3_moe"},  // norm_topk_prob true, every layer sparse (Qwen3-30B-A3B)
      // norm_topk_prob false; 4 layers, decoder_sparse_step 2 → layers 1 and 3 sparse, 3 listed
      // in mlp_only_layers → only layer 1 sparse; the dense layers use intermediate_size.
      {"qwen3_moe_mixed_unnormalised", "qwen3_moe", [](json& j) {
         j["norm_topk_prob"] = false;
         j["decoder_sparse_step"] = 2;
         j["mlp_only_layers"] = {3};
       }, 4},
      // Every expert for every token (top-k = E) with hidden_act gelu: a dense softmax mixture.
      {"qwen3_moe_all_experts_gelu", "qwen3_moe", [](json& j) {
         j["num_experts_per_tok"] = 4;
         j["hidden_act"] = "gelu";
       }},
  };
}

struct VariantModel {
  TinyModelOptions options;
  json config;
  ModelConfig parsed;
  Weights weights;
};

VariantModel variant_model(const VariantCase& k, const std::string& dtype = "float32") {
  VariantModel m;
  m.options = small(k.arch);
  m.options.layers = k.layers;
  m.options.dtype = dtype;
  m.config = config_json(m.options);
  if (k.edit) k.edit(m.config);
  m.parsed = parse_model_config(m.config.dump());
  m.weights = tiny_weights(m.parsed, m.options);
  return m;
}

TEST(LlamaModel, MoeForwardMatchesAPlainLoopOracle) {
  // Mixtral and Qwen3-MoE, each knob of §7: f32 against the double oracle, 1e-4 on logits
  // O(1–10) as for the dense families. The routing must be well-conditioned (the k-th and
  // (k+1)-th probabilities > 1e-4 apart, 1000× f32's rounding of probabilities O(0.1–1)) so
  // both sides pick the same experts, and varied (several experts are some token's first choice).
  for (const auto& k : moe_cases()) {
    const auto m = variant_model(k);
    ASSERT_TRUE(m.parsed.moe) << k.name;
    const ModelDir dir("moe_oracle_" + k.name, m.config, m.weights);
    const auto tokens = random_ids(13, 31);
    RoutingStats routing;
    const auto oracle = oracle_logits(m.parsed, m.weights, tokens, {}, m.config.value("hidden_act", "silu"), &routing);
    EXPECT_GT(routing.min_margin, 1e-4) << k.name << ": routing too close to a tie to compare";
    EXPECT_GE(routing.first_choices.size(), 2u) << k.name << ": every token routed alike";
    const auto ours = dir.load().forward(ids(tokens), nullptr, {}, true);
    EXPECT_LT(max_diff(ours, oracle), 1e-4) << k.name;
  }
}

TEST(LlamaModel, MoeRenormalisationAndSparseLayersChangeTheOutput) {
  // The knobs are live: flipping norm_topk_prob, or making a dense layer sparse, moves the logits
  // by far more than the 1e-4 the oracle comparison allows.
  const auto base = variant_model(moe_cases()[3]);  // qwen3_moe_mixed_unnormalised
  const auto tokens = random_ids(9, 32);
  const auto logits = [&](const json& config) {
    const ModelDir dir("moe_knob", config, tiny_weights(parse_model_config(config.dump()), base.options));
    return dir.load().forward(ids(tokens), nullptr, {}, true);
  };
  const auto reference = logits(base.config);
  json normalised = base.config;
  normalised["norm_topk_prob"] = true;
  EXPECT_GT(max_diff(reference, logits(normalised)), 1e-2);
  // The same weights with layer 3 sparse: the loader then wants layer 3's experts.
  json more_sparse = base.config;
  more_sparse["mlp_only_layers"] = json::array();
  EXPECT_THROW(ModelDir("moe_knob_missing", more_sparse, base.weights).load(), Error);
}

TEST(LlamaModel, MoeIncrementalDecodeEqualsFullRecompute) {
  // Prefill 5 tokens into the cache (in query chunks of 2: the MLP/MoE runs per chunk), then one
  // token at a time: every step's logits equal the full forward's row, and the cache holds the
  // full forward's pre-RoPE keys and values. Same f32 arithmetic in another grouping: 1e-4.
  for (const auto& k : moe_cases()) {
    const auto m = variant_model(k);
    const ModelDir dir("moe_decode_" + k.name, m.config, m.weights);
    const auto tokens = random_ids(12, 33);
    std::vector<at::Tensor> keys, values;
    const auto model = dir.load();
    const auto full = model.forward(ids(tokens), nullptr, [&](const LayerTap& tap) {
      keys.push_back(tap.key.clone());
      values.push_back(tap.value.clone());
    }, true);
    RunOptions chunked;
    chunked.max_chunk_tokens = 2;
    const auto stepper = dir.load(chunked);
    KvCache cache(k.layers);
    std::vector<at::Tensor> steps = {stepper.forward(ids({tokens.begin(), tokens.begin() + 5}), &cache, {}, true)};
    for (std::size_t t = 5; t < tokens.size(); ++t) steps.push_back(stepper.forward(ids({tokens[t]}), &cache));
    EXPECT_LT(max_diff(at::cat(steps, 0), full), 1e-4) << k.name;
    for (int l = 0; l < k.layers; ++l) {
      EXPECT_LT(max_diff(cache.key(l).transpose(0, 1), keys[l]), 1e-5) << k.name << " layer " << l;
      EXPECT_LT(max_diff(cache.value(l).transpose(0, 1), values[l]), 1e-5) << k.name << " layer " << l;
    }
  }
}

TEST(LlamaModel, EachHiddenActMatchesItsFormula) {
  // hidden_act changes the MLP, hence the residual stream every later layer's K/V and the logits
  // are computed from. f32 against double differs by ~1e-6 here (2 layers, logits O(1)); the
  // oracle's gelu by erf and its tanh approximation must give logits ten tolerances apart, so
  // the comparison tells the variants apart, not only gelu from silu.
  constexpr double kTolerance = 1e-5;
  const auto o = small("llama");
  const auto tokens = random_ids(11, 17);
  json config = config_json(o);
  const ModelConfig base = parse_model_config(config.dump());
  const auto w = tiny_weights(base, o);
  const auto erf_gelu = oracle_logits(base, w, tokens, {}, "gelu");
  const auto tanh_gelu = oracle_logits(base, w, tokens, {}, "gelu_pytorch_tanh");
  double apart = 0;
  for (std::size_t t = 0; t < erf_gelu.size(); ++t)
    for (std::size_t v = 0; v < erf_gelu[t].size(); ++v) apart = std::max(apart, std::abs(erf_gelu[t][v] - tanh_gelu[t][v]));
  ASSERT_GT(apart, 10 * kTolerance) << "the gelu variants are too alike on this model to tell apart";
  for (const char* act : {"silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "relu"}) {
    config["hidden_act"] = act;
    const ModelDir dir(std::string("act_") + act, config, w);
    const auto ours = dir.load().forward(ids(tokens), nullptr, {}, true);
    EXPECT_LT(max_diff(ours, oracle_logits(base, w, tokens, {}, act)), kTolerance) << act;
  }
}

TEST(LlamaModel, PerHeadKeepMaskMatchesTheOracle) {
  // A hook masks a different pseudo-random subset of context cells in every layer and KV head;
  // the question's logits (read from the masked cache, 7-token window, attention in chunks of 2
  // and unchunked) equal the oracle's with the same cells hidden from question queries only.
  auto o = small("mistral");
  json config = config_json(o);
  config["sliding_window"] = 7;
  const ModelConfig mc = parse_model_config(config.dump());
  const auto w = tiny_weights(mc, o);
  const ModelDir dir("keep_oracle", config, w);
  const int context = 10;
  const auto tokens = random_ids(14, 14);
  const auto kept = [](int l, int g, int j) { return (l * 31 + g * 17 + j * 7) % 3 != 0; };
  const int rep = o.heads / o.kv_heads;
  const auto oracle = oracle_logits(mc, w, tokens, [&](int l, int h, int j, int i) {
    return i < context || j >= context || kept(l, h / rep, j);
  });
  for (std::int64_t chunk : {0, 2}) {
    RunOptions options;
    options.max_chunk_tokens = chunk;
    const auto model = dir.load(options);
    KvCache cache(o.layers);
    model.forward(ids({tokens.begin(), tokens.begin() + context}), &cache);
    for (int l = 0; l < o.layers; ++l) {
      auto keep = at::empty({o.kv_heads, context}, at::kBool);
      for (int g = 0; g < o.kv_heads; ++g)
        for (int j = 0; j < context; ++j) keep[g][j] = kept(l, g, j);
      cache.replace(l, cache.key(l), cache.value(l), keep);
    }
    const auto question = model.forward(ids({tokens.begin() + context, tokens.end()}), &cache, {}, true);
    EXPECT_LT(max_diff(question, oracle, context), 1e-4) << "chunk " << chunk;
    EXPECT_EQ(cache.next_position(), 14);
    EXPECT_EQ(cache.keep(0).size(1), 14);  // question tokens appended as attended
  }
}

// A per-query-head selection (KvCache::query_selection, Quest's decode path) fixed by a rule.
class FixedSelection final : public QuerySelection {
 public:
  explicit FixedSelection(std::function<bool(int layer, int q_head, int key)> rule) : rule_(std::move(rule)) {}
  at::Tensor select(int layer, const at::Tensor& q, const at::Tensor& keys) override {
    auto mask = at::empty({q.size(0), keys.size(1)}, at::kBool);
    for (int h = 0; h < q.size(0); ++h)
      for (int j = 0; j < keys.size(1); ++j) mask[h][j] = rule_(layer, h, j);
    ++calls;
    return mask;
  }
  int calls = 0;

 private:
  std::function<bool(int, int, int)> rule_;
};

TEST(LlamaModel, PerQueryHeadSelectionMatchesTheOracle) {
  // Single-token steps after a 10-token prefill attend through a selection that hides a
  // different pseudo-random subset of context cells from each query head (the two heads of a
  // GQA group differ); each step's logits equal the oracle's with the same cells hidden from that
  // query head. A multi-token call (the prefill) ignores the selection.
  const auto o = small("llama");
  const json config = config_json(o);
  const ModelConfig mc = parse_model_config(config.dump());
  const auto w = tiny_weights(mc, o);
  const ModelDir dir("query_selection_oracle", config, w);
  const int context = 10, total = 14;
  const auto tokens = random_ids(total, 21);
  const auto kept = [&](int l, int h, int j) { return j >= context || (l * 31 + h * 17 + j * 7) % 3 != 0; };
  const auto oracle = oracle_logits(mc, w, tokens, [&](int l, int h, int j, int i) { return i < context || kept(l, h, j); });
  const auto model = dir.load();
  KvCache cache(o.layers);
  const auto selection = std::make_shared<FixedSelection>(kept);
  cache.set_query_selection(selection);
  model.forward(ids({tokens.begin(), tokens.begin() + context}), &cache);
  EXPECT_EQ(selection->calls, 0) << "the prefill attends everything";
  for (int i = context; i < total; ++i) {
    const auto step = model.forward(ids({tokens.begin() + i, tokens.begin() + i + 1}), &cache);
    EXPECT_LT(max_diff(step, oracle, i), 1e-4) << "step " << i;
  }
  EXPECT_EQ(selection->calls, (total - context) * o.layers);
  // The groups' heads do differ: hiding head 1's cells from head 0 instead moves the logits.
  KvCache swapped(o.layers);
  swapped.set_query_selection(std::make_shared<FixedSelection>([&](int l, int h, int j) { return kept(l, h ^ 1, j); }));
  model.forward(ids({tokens.begin(), tokens.begin() + context}), &swapped);
  EXPECT_GT(max_diff(model.forward(ids({tokens.begin() + context, tokens.begin() + context + 1}), &swapped), oracle, context),
            1e-3);
}

TEST(LlamaModel, PerQueryHeadKeepMaskAppliesToEveryLaterCall) {
  // An eviction per query head writes one keep row per query head (KvCache::keep with H_q rows):
  // after a 10-token prefill each query head keeps its own pseudo-random subset of the context
  // (the two heads of a GQA group differ). A multi-token call (the question after compression)
  // and single-token steps both attend through it: their logits equal the oracle's with those
  // cells hidden from that query head, and new tokens are attended by every head.
  const auto o = small("llama");
  const json config = config_json(o);
  const ModelConfig mc = parse_model_config(config.dump());
  const auto w = tiny_weights(mc, o);
  const ModelDir dir("query_head_keep_oracle", config, w);
  const int context = 10, total = 15;
  const auto tokens = random_ids(total, 23);
  const auto kept = [&](int l, int h, int j) { return (l * 13 + h * 5 + j * 11) % 3 != 0; };
  const auto oracle = oracle_logits(mc, w, tokens, [&](int l, int h, int j, int i) { return i < context || j >= context || kept(l, h, j); });
  const auto model = dir.load();
  ASSERT_GT(mc.n_rep(), 1);
  const auto run = [&](const std::function<bool(int, int, int)>& rule) {
    KvCache cache(o.layers);
    model.forward(ids({tokens.begin(), tokens.begin() + context}), &cache);
    for (int l = 0; l < o.layers; ++l) {
      auto keep = at::empty({mc.num_heads, context}, at::kBool);
      for (int h = 0; h < mc.num_heads; ++h)
        for (int j = 0; j < context; ++j) keep[h][j] = rule(l, h, j);
      cache.replace(l, cache.key(l), cache.value(l), keep);
    }
    std::vector<at::Tensor> logits{model.forward(ids({tokens.begin() + context, tokens.begin() + context + 3}), &cache, {}, true)};
    for (int i = context + 3; i < total; ++i) logits.push_back(model.forward(ids({tokens.begin() + i, tokens.begin() + i + 1}), &cache));
    return at::cat(logits, 0);
  };
  EXPECT_LT(max_diff(run(kept), oracle, context), 1e-4);
  // The group's heads do differ: swapping the masks of the two heads of a group moves the logits.
  EXPECT_GT(max_diff(run([&](int l, int h, int j) { return kept(l, h ^ 1, j); }), oracle, context), 1e-3);
}

// Gemma variants of the tiny models (small(): 2 layers, window 4, head_dim 16, query_pre_attn_scalar 8).
std::vector<VariantCase> gemma_cases() {
  return {
      // Soft-caps lowered from 50 / 30 so that tanh bends the scores and logits (O(1–10) here).
      {"gemma2_capped", "gemma2", [](json& j) {
         j["attn_logit_softcapping"] = 2.0;
         j["final_logit_softcapping"] = 5.0;
       }},
      // 7 layers from Gemma2's rule (no layer_types: the even layers slide), window 3.
      {"gemma2_rule", "gemma2", [](json& j) {
         j.erase("layer_types");
         j["sliding_window"] = 3;
       }, 7},
      {"gemma3", "gemma3"},  // layer 0 sliding with the local RoPE, layer 1 global with linear ×8
      // Gemma-3's pattern rule (no layer_types) over 7 layers: layer 5 global; attention soft-capped.
      {"gemma3_pattern_capped", "gemma3", [](json& j) {
         j.erase("layer_types");
         j["sliding_window_pattern"] = 6;
         j["attn_logit_softcapping"] = 3.0;
       }, 7},
  };
}

TEST(LlamaModel, GemmaForwardMatchesAPlainLoopOracle) {
  // f32 against the double oracle, 1e-4 on logits O(1–10) as for the other families, on prompts
  // of 11 tokens, longer than the 3–4 token windows. Each Gemma knob is live: the oracle without
  // the window, with D^−½ scaling, or (capped cases) without the soft-caps differs from the
  // oracle by more than 10 tolerances, so the comparison tells them apart.
  constexpr double kTolerance = 1e-4;
  for (const auto& k : gemma_cases()) {
    const auto m = variant_model(k);
    ASSERT_TRUE(m.parsed.unit_offset_norm && m.parsed.sandwich_norms && m.parsed.scale_embeddings) << k.name;
    ASSERT_EQ(m.parsed.qk_norm, k.arch == "gemma3");
    const auto tokens = random_ids(11, 41);
    const auto oracle = oracle_logits(m.parsed, m.weights, tokens, {}, "gelu_pytorch_tanh");
    const auto apart = [&](const std::function<void(ModelConfig&)>& change) {
      ModelConfig other = m.parsed;
      change(other);
      const auto o = oracle_logits(other, m.weights, tokens, {}, "gelu_pytorch_tanh");
      double worst = 0;
      for (std::size_t t = 0; t < o.size(); ++t)
        for (std::size_t v = 0; v < o[t].size(); ++v) worst = std::max(worst, std::abs(o[t][v] - oracle[t][v]));
      return worst;
    };
    EXPECT_GT(apart([](ModelConfig& c) { c.sliding_layers.clear(), c.sliding_window.reset(); }), 10 * kTolerance) << k.name;
    EXPECT_GT(apart([](ModelConfig& c) { c.query_pre_attn_scalar.reset(); }), 10 * kTolerance) << k.name;
    if (m.parsed.attn_logit_softcap) {
      EXPECT_GT(apart([](ModelConfig& c) { c.attn_logit_softcap.reset(); }), 10 * kTolerance) << k.name;
    }
    if (m.parsed.final_logit_softcap) {
      EXPECT_GT(apart([](ModelConfig& c) { c.final_logit_softcap.reset(); }), 10 * kTolerance) << k.name;
    }
    if (m.parsed.local_rope) {
      EXPECT_GT(apart([](ModelConfig& c) { c.local_rope.reset(); }), 10 * kTolerance) << k.name;
    }
    const ModelDir dir("gemma_oracle_" + k.name, m.config, m.weights);
    EXPECT_LT(max_diff(dir.load().forward(ids(tokens), nullptr, {}, true), oracle), kTolerance) << k.name;
  }
}

TEST(LlamaModel, GemmaLayersSlideAsTheConfigSays) {
  // Gemma2Config: layer i slides when (i + 1) % 2 (the even layers); Gemma3TextConfig: when
  // (i + 1) % sliding_window_pattern; layer_types, when present, decides.
  std::vector<bool> expected2, expected3;
  for (int l = 0; l < 7; ++l) expected2.push_back(l % 2 == 0), expected3.push_back(l != 5);
  EXPECT_EQ(variant_model(gemma_cases()[1]).parsed.sliding_layers, expected2);
  EXPECT_EQ(variant_model(gemma_cases()[3]).parsed.sliding_layers, expected3);
  const auto m = variant_model(gemma_cases()[2]);  // the tiny gemma3's layer_types: sliding, full
  EXPECT_EQ(m.parsed.sliding_layers, (std::vector<bool>{true, false}));
  EXPECT_EQ(m.parsed.window(0), 4);
  EXPECT_FALSE(m.parsed.window(1));
  EXPECT_EQ(&m.parsed.rope_of(0), &*m.parsed.local_rope);
  EXPECT_EQ(&m.parsed.rope_of(1), &m.parsed.rope);
}

TEST(LlamaModel, GemmaCacheRotatesEachLayerWithItsRope) {
  // Gemma-3's sliding layer rotates its cached keys with rope_local_base_freq (default rule), the
  // global one with rope_theta and linear ×8 (core::Rope, the CPU RoPE, as oracle); the two-argument
  // rotate refuses, since no single RoPE is right for every layer.
  const auto m = variant_model(gemma_cases()[2]);
  const ModelDir dir("gemma_rope", m.config, m.weights);
  const auto model = dir.load();
  const int S = 9, Hkv = m.parsed.num_kv_heads, D = m.parsed.head_dim;
  KvCache cache(2);
  std::vector<at::Tensor> keys;
  model.forward(ids(random_ids(S, 42)), &cache, [&](const LayerTap& tap) { keys.push_back(tap.key.clone()); });
  std::vector<std::int64_t> pos(S);
  std::iota(pos.begin(), pos.end(), 0);
  ASSERT_NE(m.parsed.rope.describe(), m.parsed.local_rope->describe());
  for (int l = 0; l < 2; ++l) {
    auto k = keys[l].contiguous();
    std::vector<float> rotated(k.data_ptr<float>(), k.data_ptr<float>() + k.numel());
    m.parsed.rope_of(l).apply(rotated, S, Hkv, pos);
    EXPECT_LT(max_diff(cache.rotated_key(l), at::tensor(rotated).view({S, Hkv, D}).transpose(0, 1)), 1e-5) << l;
    EXPECT_LT(max_diff(model.rotate(keys[l], ids(pos), l), at::tensor(rotated).view({S, Hkv, D})), 1e-5) << l;
  }
  EXPECT_THROW(model.rotate(keys[0], ids(pos)), Error);
}

TEST(LlamaModel, Gemma3ConditionalGenerationRunsItsLanguageModel) {
  // A Gemma3ForConditionalGeneration folder: the tiny gemma3's config nested as text_config and its
  // tensors under language_model.model. (as released) or model.language_model. (transformers
  // ≥ 4.52 saves): the same computation as the text checkpoint, bit for bit.
  const auto m = variant_model(gemma_cases()[2]);
  const auto tokens = ids(random_ids(9, 44));
  const auto text = ModelDir("gemma3_text", m.config, m.weights).load().forward(tokens, nullptr, {}, true);
  const json outer = {{"model_type", "gemma3"},
                      {"architectures", {"Gemma3ForConditionalGeneration"}},
                      {"text_config", m.config},
                      {"vision_config", {{"model_type", "siglip_vision_model"}}}};
  for (const std::string root : {"language_model.model.", "model.language_model."}) {
    Weights w;
    for (const auto& [name, t] : m.weights) {
      ASSERT_EQ(name.rfind("model.", 0), 0u) << name << ": the tiny gemma3 is tied, every tensor under model.";
      w[root + name.substr(6)] = t;
    }
    const ModelDir dir("gemma3_nested", outer, w);
    EXPECT_EQ(max_diff(dir.load().forward(tokens, nullptr, {}, true), text), 0) << root;
  }
}

TEST(LlamaModel, CausalLogitsDoNotSeeLaterTokens) {
  const auto o = small();
  const ModelDir dir("causal", config_json(o), weights_for(config_json(o), o));
  const auto model = dir.load();
  auto a = random_ids(12, 1), b = a;
  for (int t = 7; t < 12; ++t) b[t] = (b[t] + 5) % kVocab;
  const auto la = model.forward(ids(a), nullptr, {}, true), lb = model.forward(ids(b), nullptr, {}, true);
  EXPECT_LT(max_diff(la.narrow(0, 0, 7), lb.narrow(0, 0, 7)), 1e-4);
  EXPECT_GT(max_diff(la.narrow(0, 7, 5), lb.narrow(0, 7, 5)), 1e-2);  // the change is visible after it
}

TEST(LlamaModel, IncrementalDecodeWithTheCacheEqualsAFullForward) {
  // gemma2 and gemma3: windows of 4 on their sliding layers, so the decode outgrows them.
  for (const char* arch : {"llama", "qwen2", "mistral", "qwen3", "phi3", "gemma2", "gemma3"}) {
    const auto o = small(arch);
    const ModelDir dir(std::string("incr_") + arch, config_json(o), weights_for(config_json(o), o));
    const auto model = dir.load();
    const auto tokens = random_ids(10, 2);
    const auto full = model.forward(ids(tokens), nullptr, {}, true);  // [10, V]
    KvCache cache(o.layers);
    const auto prefill = model.forward(ids({tokens.begin(), tokens.begin() + 4}), &cache, {}, true);
    EXPECT_LT(max_diff(prefill, full.narrow(0, 0, 4)), 1e-4) << arch;
    for (int t = 4; t < 10; ++t) {
      std::vector<std::int64_t> tap_positions;
      const auto step = model.forward(ids({tokens[t]}), &cache, [&](const LayerTap& tap) {
        tap_positions.push_back(tap.positions.item<std::int64_t>());
      });
      EXPECT_EQ(tap_positions, std::vector<std::int64_t>(o.layers, t)) << "taps carry the decode position";
      EXPECT_LT(max_diff(step, full.narrow(0, t, 1)), 1e-4) << arch << " token " << t;
    }
    EXPECT_EQ(cache.length(), 10);
    EXPECT_EQ(cache.next_position(), 10);
  }
}

TEST(LlamaModel, RopeEqualsTheCpuRopeForLlama3Frequencies) {
  const auto o = small();
  const ModelDir dir("rope", config_json(o), weights_for(config_json(o), o));
  const auto model = dir.load();
  const int D = o.hidden / o.heads;
  const auto x = at::randn({9, 3, D}, at::kFloat);
  std::vector<std::int64_t> pos = {0, 1, 2, 5, 17, 63, 100, 200, 255};
  const auto rotated = model.rotate(x, ids(pos)).contiguous();
  std::vector<float> expected(x.data_ptr<float>(), x.data_ptr<float>() + x.numel());
  model.config().rope.apply(expected, 9, 3, pos);
  EXPECT_EQ(model.config().rope.describe().substr(0, 6), "llama3");
  EXPECT_LT(max_diff(rotated, at::tensor(expected).view({9, 3, D})), 1e-5);
}

TEST(LlamaModel, DumpedPreRopeKeysRotatedAreTheKeysAttentionUses) {
  const auto o = small("qwen2");  // with a k bias: the tap must include it
  const ModelDir dir("taps", config_json(o), weights_for(config_json(o), o));
  const auto model = dir.load();
  KvCache cache(o.layers);
  std::vector<at::Tensor> keys;
  const auto tokens = random_ids(8, 3);
  model.forward(ids(tokens), &cache, [&](const LayerTap& tap) { keys.push_back(tap.key.clone()); });
  ASSERT_EQ(keys.size(), 2u);
  std::vector<std::int64_t> pos(8);
  std::iota(pos.begin(), pos.end(), 0);
  for (int l = 0; l < o.layers; ++l) {
    EXPECT_EQ(max_diff(cache.key(l), keys[l].transpose(0, 1)), 0) << "cache keys are the taps, bit for bit";
    auto k = keys[l].contiguous();
    std::vector<float> rotated(k.data_ptr<float>(), k.data_ptr<float>() + k.numel());
    model.config().rope.apply(rotated, 8, o.kv_heads, pos);
    const auto expected = at::tensor(rotated).view({8, o.kv_heads, -1}).transpose(0, 1);
    EXPECT_LT(max_diff(cache.rotated_key(l), expected), 1e-5) << "layer " << l;
  }
}

TEST(LlamaModel, Qwen3TapsAreTheNormalisedHeadsBeforeRope) {
  // Qwen3Attention: q = q_norm(q_proj(x).view(S, H_q, D)), k = k_norm(k_proj(x).view(S, H_kv, D)),
  // RMSNorm over D per head, then RoPE. The taps (what the dump stores) and the cache's
  // pre-RoPE keys must be the normalised heads, recomputed here in doubles from the tap's own
  // attn_in and the stored weights; the cache's rotated keys are those rotated by core::Rope.
  const auto o = small("qwen3");
  const json config = config_json(o);
  const ModelConfig mc = parse_model_config(config.dump());
  const auto w = weights_for(config, o);
  const ModelDir dir("qwen3_taps", config, w);
  const auto model = dir.load();
  const int S = 9, D = mc.head_dim, d = mc.hidden_size;
  ASSERT_EQ(D, 16);
  KvCache cache(o.layers);
  std::vector<at::Tensor> xs, queries, keys;
  model.forward(ids(random_ids(S, 22)), &cache, [&](const LayerTap& tap) {
    xs.push_back(tap.attn_in.clone());
    queries.push_back(tap.query.clone());
    keys.push_back(tap.key.clone());
  });
  std::vector<std::int64_t> pos(S);
  std::iota(pos.begin(), pos.end(), 0);
  for (int l = 0; l < o.layers; ++l) {
    const auto p = fmt::format("model.layers.{}.self_attn.", l);
    // heads of proj(x) normalised with `norm`: [S, heads, D] in doubles.
    const auto expected = [&](const char* proj, const char* norm, int heads) {
      const auto& W = w.at(p + proj + ".weight").data;
      const auto& g = w.at(p + norm + ".weight").data;
      auto out = at::empty({S, heads, D}, at::kDouble);
      double raw_vs_normed = 0;
      for (int t = 0; t < S; ++t)
        for (int h = 0; h < heads; ++h) {
          std::vector<double> y(D);
          double mean_sq = 0;
          for (int e = 0; e < D; ++e) {
            for (int i = 0; i < d; ++i) y[e] += double{W[(h * D + e) * d + i]} * xs[l][t][i].item<double>();
            mean_sq += y[e] * y[e] / D;
          }
          for (int e = 0; e < D; ++e) {
            out[t][h][e] = y[e] / std::sqrt(mean_sq + mc.rms_norm_eps) * g[e];
            raw_vs_normed = std::max(raw_vs_normed, std::abs(y[e] - out[t][h][e].item<double>()));
          }
        }
      EXPECT_GT(raw_vs_normed, 1e-2) << "the norm must change the heads for this test to tell";
      return out;
    };
    EXPECT_LT(max_diff(keys[l].to(at::kDouble), expected("k_proj", "k_norm", mc.num_kv_heads)), 1e-5) << "layer " << l;
    EXPECT_LT(max_diff(queries[l].to(at::kDouble), expected("q_proj", "q_norm", mc.num_heads)), 1e-5) << "layer " << l;
    EXPECT_EQ(max_diff(cache.key(l), keys[l].transpose(0, 1)), 0) << "cache keys are the taps, bit for bit";
    auto k = keys[l].contiguous();
    std::vector<float> rotated(k.data_ptr<float>(), k.data_ptr<float>() + k.numel());
    mc.rope.apply(rotated, S, mc.num_kv_heads, pos);
    EXPECT_LT(max_diff(cache.rotated_key(l), at::tensor(rotated).view({S, mc.num_kv_heads, D}).transpose(0, 1)), 1e-5);
  }
}

TEST(LlamaModel, Qwen3RejectsACheckpointWithoutItsNorms) {
  const auto o = small("qwen3");
  const json config = config_json(o);
  auto w = weights_for(config, o);
  w.erase("model.layers.1.self_attn.k_norm.weight");
  expect_load_fails("qwen3_no_norm", config, w, "model.layers.1.self_attn.k_norm.weight' is missing");
  w = weights_for(config, o);
  w["model.layers.0.self_attn.q_norm.weight"].shape = {4, 4};
  expect_load_fails("qwen3_norm_shape", config, w, "q_norm.weight' has shape [4, 4], the config implies [16]");
}

TEST(LlamaModel, GqaEqualsMhaWithRepeatInterleavedKvWeights) {
  auto o = small();
  const json gqa = config_json(o);
  auto w = weights_for(gqa, o);
  json mha = gqa;
  mha["num_key_value_heads"] = o.heads;
  const int D = o.hidden / o.heads, rep = o.heads / o.kv_heads;
  // MHA head h gets GQA KV head h / rep (interleave); the tiled mapping h % H_kv must differ.
  auto expand = [&](bool interleave) {
    auto m = w;
    for (int l = 0; l < o.layers; ++l)
      for (const char* p : {"k", "v"}) {
        const auto name = fmt::format("model.layers.{}.self_attn.{}_proj.weight", l, p);
        const auto& src = w.at(name);
        core::TensorToWrite dst{{std::int64_t{o.heads} * D, o.hidden}, {}, src.dtype};
        for (int h = 0; h < o.heads; ++h) {
          const int kv = interleave ? h / rep : h % o.kv_heads;
          dst.data.insert(dst.data.end(), src.data.begin() + std::int64_t{kv} * D * o.hidden,
                          src.data.begin() + std::int64_t{kv + 1} * D * o.hidden);
        }
        m[name] = dst;
      }
    return m;
  };
  const ModelDir a("gqa", gqa, w), b("mha", mha, expand(true)), c("mha_tiled", mha, expand(false));
  const auto tokens = ids(random_ids(9, 4));
  const auto lg = a.load().forward(tokens, nullptr, {}, true);
  EXPECT_LT(max_diff(lg, b.load().forward(tokens, nullptr, {}, true)), 1e-4);
  EXPECT_GT(max_diff(lg, c.load().forward(tokens, nullptr, {}, true)), 1e-2);
}

TEST(LlamaModel, Qwen2BiasesAreAppliedAndZeroBiasesEqualTheLlamaPath) {
  const auto o = small("qwen2");
  const json qwen = config_json(o);
  auto w = weights_for(qwen, o);
  json llama = qwen;
  llama["model_type"] = "llama";
  auto no_bias = w;
  for (int l = 0; l < o.layers; ++l)
    for (const char* p : {"q", "k", "v"}) {
      const auto name = fmt::format("model.layers.{}.self_attn.{}_proj.bias", l, p);
      no_bias.erase(name);
      std::fill(w.at(name).data.begin(), w.at(name).data.end(), 0.f);
    }
  const auto biased = weights_for(qwen, o);
  const ModelDir zero("qwen_zero", qwen, w), plain("llama_plain", llama, no_bias), with("qwen_bias", qwen, biased);
  const auto tokens = ids(random_ids(7, 5));
  const auto lz = zero.load().forward(tokens, nullptr, {}, true);
  EXPECT_LT(max_diff(lz, plain.load().forward(tokens, nullptr, {}, true)), 1e-5);
  EXPECT_GT(max_diff(lz, with.load().forward(tokens, nullptr, {}, true)), 1e-2);
}

TEST(LlamaModel, TiedEmbeddingsReuseTheEmbeddingAsLmHead) {
  const auto o = small("qwen2");
  json tied = config_json(o);
  tied["tie_word_embeddings"] = true;
  auto w = weights_for(tied, o);  // no lm_head.weight
  ASSERT_EQ(w.count("lm_head.weight"), 0u);
  json untied = tied;
  untied["tie_word_embeddings"] = false;
  auto w2 = w;
  w2["lm_head.weight"] = w.at("model.embed_tokens.weight");
  const ModelDir a("tied", tied, w), b("untied", untied, w2);
  const auto tokens = ids(random_ids(5, 6));
  EXPECT_LT(max_diff(a.load().forward(tokens, nullptr), b.load().forward(tokens, nullptr)), 1e-6);
}

TEST(LlamaModel, SlidingWindowLimitsTheReceptiveField) {
  // One layer, window w: logits at t depend only on tokens (t − w, t]. A window ≥ S is no window.
  auto o = small("mistral");
  o.layers = 1;
  json windowed = config_json(o);
  windowed["sliding_window"] = 4;
  json wide = windowed;
  wide["sliding_window"] = 64;
  json none = windowed;
  none.erase("sliding_window");
  const auto w = weights_for(none, o);
  const ModelDir a("win4", windowed, w), b("win64", wide, w), c("nowin", none, w);
  auto x = random_ids(12, 8), y = x;
  y[2] = (y[2] + 3) % kVocab;  // outside the window of t ≥ 6
  const auto m4 = a.load();
  const auto lx = m4.forward(ids(x), nullptr, {}, true), ly = m4.forward(ids(y), nullptr, {}, true);
  EXPECT_LT(max_diff(lx.narrow(0, 6, 6), ly.narrow(0, 6, 6)), 1e-5);
  EXPECT_GT(max_diff(lx.narrow(0, 2, 4), ly.narrow(0, 2, 4)), 1e-3);  // inside the window it matters
  const auto none_model = c.load();
  EXPECT_GT(max_diff(none_model.forward(ids(x), nullptr, {}, true).narrow(0, 6, 6),
                     none_model.forward(ids(y), nullptr, {}, true).narrow(0, 6, 6)), 1e-3);
  EXPECT_LT(max_diff(b.load().forward(ids(x), nullptr, {}, true), none_model.forward(ids(x), nullptr, {}, true)), 1e-6);
  // The cached path honours the window too.
  KvCache cache(1);
  m4.forward(ids({x.begin(), x.begin() + 8}), &cache);
  const auto step = m4.forward(ids({x[8]}), &cache);
  EXPECT_LT(max_diff(step, lx.narrow(0, 8, 1)), 1e-4);
}

TEST(LlamaModel, ChunkedAttentionAndMlpEqualUnchunked) {
  // phi3: the fused gate_up_proj sliced per chunk; gemma2 / gemma3: the post-feed-forward norm per
  // chunk and each layer's window over the chunk's key prefix (windows of 4 in 11 tokens).
  for (const char* arch : {"llama", "phi3", "gemma2", "gemma3"}) {
    const auto o = small(arch);
    const ModelDir dir(std::string("chunk_") + arch, config_json(o), weights_for(config_json(o), o));
    RunOptions chunked;
    chunked.max_chunk_tokens = 3;
    const auto tokens = ids(random_ids(11, 9));
    EXPECT_LT(max_diff(dir.load().forward(tokens, nullptr, {}, true), dir.load(chunked).forward(tokens, nullptr, {}, true)),
              1e-5) << arch;
  }
}

TEST(LlamaModel, Bf16IsCloseToF32) {
  const auto o = small();
  const ModelDir dir("bf16", config_json(o), weights_for(config_json(o), o));
  RunOptions bf16;
  bf16.dtype = at::kBFloat16;
  const auto tokens = ids(random_ids(10, 10));
  const auto ref = dir.load().forward(tokens, nullptr, {}, true);
  const auto low = dir.load(bf16).forward(tokens, nullptr, {}, true);
  // bf16 keeps 8 significant bits (relative step 2⁻⁸ ≈ 0.4 %); through 2 layers the logits stay
  // within 5 % of their range and keep the same ranking of the top token almost everywhere.
  const double range = (ref.max() - ref.min()).item<double>();
  EXPECT_LT(max_diff(ref, low), 0.05 * range);
  EXPECT_GE((ref.argmax(-1) == low.argmax(-1)).sum().item<int>(), 8);
}

TEST(LlamaModel, KeepMaskAndPrefillHook) {
  const auto o = small();
  const ModelDir dir("hook", config_json(o), weights_for(config_json(o), o));
  const auto model = dir.load();
  const auto context = random_ids(12, 11), question = random_ids(3, 12);
  const std::vector<std::int32_t> c32(context.begin(), context.end()), q32(question.begin(), question.end());
  const auto base = generate_greedy(model, c32, q32, 6);
  ASSERT_EQ(base.tokens.size(), 6u);
  EXPECT_EQ(base.step_logits.size(0), 6);
  // Replacing the cache with itself (and an all-true mask) changes nothing.
  const auto same = generate_greedy(model, c32, q32, 6, {.hook = [](KvCache& cache, std::int64_t n) {
    EXPECT_EQ(n, 12);
    for (int l = 0; l < cache.num_layers(); ++l)
      cache.replace(l, cache.key(l).clone(), cache.value(l).clone(),
                    at::ones({cache.key(l).size(0), cache.length()}, at::kBool));
  }});
  EXPECT_EQ(same.tokens, base.tokens);
  EXPECT_LT(max_diff(same.step_logits, base.step_logits), 1e-4);
  // Keeping only the first two context tokens (sinks) changes the distribution.
  const auto evicted = generate_greedy(model, c32, q32, 6, {.hook = [](KvCache& cache, std::int64_t) {
    for (int l = 0; l < cache.num_layers(); ++l) {
      auto keep = at::zeros({cache.key(l).size(0), cache.length()}, at::kBool);
      keep.narrow(1, 0, 2).fill_(true);
      cache.replace(l, cache.key(l), cache.value(l), keep);
    }
  }});
  // Re-hooking every 2 generated tokens: the hook sees the whole cache each time — context 12,
  // question 3, then 2 more tokens per call (6 tokens generated, 5 fed back) — and the decode
  // observer sees the question and each fed token, one layer at a time.
  std::vector<std::int64_t> seen_lengths;
  std::vector<std::int64_t> observed;  // tokens per decode forward, layer 0
  const auto rehooked = generate_greedy(model, c32, q32, 6,
                                        {.hook = [&](KvCache& cache, std::int64_t n) {
                                           EXPECT_EQ(n, cache.length());
                                           seen_lengths.push_back(n);
                                         },
                                         .rehook_every = 2,
                                         .decode_observer = [&](const LayerTap& tap) {
                                           if (tap.layer == 0) observed.push_back(tap.query.size(0));
                                         }});
  EXPECT_EQ(seen_lengths, (std::vector<std::int64_t>{12, 17, 19}));
  EXPECT_EQ(observed, (std::vector<std::int64_t>{3, 1, 1, 1, 1, 1}));
  EXPECT_EQ(rehooked.tokens, base.tokens) << "a hook that changes nothing changes nothing";
  // One prefill, decoded from several times: each decode works on its own copy, so a destructive
  // hook on one leaves the next one's output equal to a decode from scratch.
  const Prefill start = prefill(model, c32, 12 + 3 + 6);
  const auto from_start_evicted = generate_greedy(model, start, q32, 6, {.hook = [](KvCache& cache, std::int64_t) {
    for (int l = 0; l < cache.num_layers(); ++l) cache.replace(l, cache.key(l) * 0, cache.value(l) * 0);
  }});
  EXPECT_GT(max_diff(from_start_evicted.step_logits.narrow(0, 1, 1), base.step_logits.narrow(0, 1, 1)), 1e-3);
  const auto from_start = generate_greedy(model, start, q32, 6);
  EXPECT_EQ(from_start.tokens, base.tokens);
  EXPECT_LT(max_diff(from_start.step_logits, base.step_logits), 1e-6);
  EXPECT_EQ(start.cache.length(), 12) << "the prefill itself is untouched";
  EXPECT_GT(max_diff(evicted.step_logits.narrow(0, 0, 1), base.step_logits.narrow(0, 0, 1)), 1e-2);
  // Replaced keys are rotated again before the next step: doubling layer 0's keys changes the
  // output, and restoring them gives back the untouched cache's output.
  KvCache fresh(o.layers);
  model.forward(ids(context), &fresh);
  const auto expected = model.forward(ids(question), &fresh);
  KvCache restored(o.layers), scaled(o.layers);
  model.forward(ids(context), &restored);
  model.forward(ids(context), &scaled);
  const auto original = restored.key(0).clone();
  restored.replace(0, original * 2, restored.value(0));
  restored.replace(0, original, restored.value(0));
  EXPECT_LT(max_diff(model.forward(ids(question), &restored), expected), 1e-5);
  scaled.replace(0, original * 2, scaled.value(0));
  EXPECT_GT(max_diff(model.forward(ids(question), &scaled), expected), 1e-3);
  EXPECT_THROW(scaled.replace(0, original.narrow(1, 0, 3), scaled.value(0)), Error);
}

// A second implementation: reference_llama.py (Llama, Qwen2, Mistral) and reference_qwen3.py
// (Qwen3, module by module from modeling_qwen3.py), HF's eager forward written in PyTorch,
// reading the checkpoint with json + numpy. Skips where /usr/bin/python3 has no torch
// (python3-torch). `run_reference` runs `script` (MODEL_DIR IDS OUT.f32 KV.f32 [PREFILL]) and
// returns its logits [S, V] and per-layer pre-RoPE keys and values, each [S, H_kv, D].
struct Reference {
  at::Tensor logits;
  std::vector<at::Tensor> keys, values;
};
Reference run_reference(const std::string& python, const std::string& script, const ModelDir& dir,
                        const TinyModelOptions& o, const ModelConfig& mc, const std::vector<std::int64_t>& tokens,
                        int prefill = 0) {
  const auto S = static_cast<std::int64_t>(tokens.size());
  const auto out = dir.path() / "reference.f32", kv = dir.path() / "reference_kv.f32";
  const auto command = fmt::format("{} {}/harness/model/{} {} {} {} {}{}", python, KVLAB_SOURCE_DIR, script,
                                   dir.path().string(), fmt::join(tokens, ","), out.string(), kv.string(),
                                   prefill ? fmt::format(" {}", prefill) : std::string());
  Reference r;
  if (std::system(command.c_str()) != 0) {
    ADD_FAILURE() << command;
    return r;
  }
  const auto read = [](const fs::path& file, std::int64_t n) {
    std::vector<float> v(n);
    std::ifstream in(file, std::ios::binary);
    in.read(reinterpret_cast<char*>(v.data()), n * 4);
    EXPECT_EQ(in.gcount(), n * 4) << file << " is short";
    return at::tensor(v);
  };
  r.logits = read(out, S * kVocab).view({S, kVocab});
  const std::int64_t block = S * mc.num_kv_heads * mc.head_dim;
  const auto all = read(kv, 2 * o.layers * block);
  for (int l = 0; l < o.layers; ++l) {
    r.keys.push_back(all.narrow(0, 2 * l * block, block).view({S, mc.num_kv_heads, mc.head_dim}));
    r.values.push_back(all.narrow(0, (2 * l + 1) * block, block).view({S, mc.num_kv_heads, mc.head_dim}));
  }
  return r;
}

// Logits and per-layer KV of `script_for(arch)` against ours for each family's small model
// (qwen3 with head_dim 16 ≠ hidden / heads and tied embeddings), weights stored bf16 and computed
// in f32 on both sides. 1e-4 on logits; 1e-5 on K and V (O(1) values, one layer's rounding).
void expect_model_matches(const std::string& python, const std::function<std::string(const std::string&)>& script_for,
                          const std::vector<std::string>& archs) {
  for (const auto& arch : archs) {
    auto o = small(arch);
    o.dtype = "bfloat16";
    json config = config_json(o);
    if (arch == "mistral" || arch == "mixtral" || arch == "phi3") config["sliding_window"] = 5;  // v0.1 / Phi-3-4k style
    const ModelConfig mc = parse_model_config(config.dump());
    const ModelDir dir("ref_" + arch, config, weights_for(config, o));
    const auto tokens = random_ids(13, 20);
    const auto ref = run_reference(python, script_for(arch), dir, o, mc, tokens);
    if (!ref.logits.defined()) continue;
    std::vector<at::Tensor> keys, values;
    const auto ours = dir.load().forward(ids(tokens), nullptr, [&](const LayerTap& tap) {
      keys.push_back(tap.key.clone());
      values.push_back(tap.value.clone());
    }, true);
    EXPECT_LT(max_diff(ours, ref.logits), 1e-4) << arch << " vs " << script_for(arch);
    for (int l = 0; l < o.layers; ++l) {
      EXPECT_LT(max_diff(keys[l], ref.keys[l]), 1e-5) << arch << " layer " << l << " pre-RoPE keys";
      EXPECT_LT(max_diff(values[l], ref.values[l]), 1e-5) << arch << " layer " << l << " values";
    }
  }
}

std::string own_reference(const std::string& arch) {
  if (arch == "mixtral" || arch == "qwen3_moe") return "reference_moe.py";
  if (arch == "phi3") return "reference_phi3.py";
  if (arch == "gemma2" || arch == "gemma3") return "reference_gemma.py";
  return arch == "qwen3" ? "reference_qwen3.py" : "reference_llama.py";
}

bool system_python_has_torch() {
  return std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") == 0;
}

TEST(LlamaModel, LogitsMatchThePythonReference) {
  if (!system_python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch (Debian: python3-torch)";
  expect_model_matches("/usr/bin/python3", own_reference,
                       {"llama", "qwen2", "mistral", "qwen3", "mixtral", "qwen3_moe", "phi3", "gemma2", "gemma3"});
}

// Every variant against its family's Python reference `script` (prompt of 13 tokens, seed
// `seed`), bf16-stored weights computed in f32 on both sides: 1e-4 on logits, 1e-5 on K and V,
// as for the dense families.
void expect_variants_match_reference(const std::vector<VariantCase>& cases, const std::string& script,
                                     unsigned seed) {
  for (const auto& k : cases) {
    const auto m = variant_model(k, "bfloat16");
    const ModelDir dir(script.substr(0, script.find('.')) + "_" + k.name, m.config, m.weights);
    const auto tokens = random_ids(13, seed);
    const auto ref = run_reference("/usr/bin/python3", script, dir, m.options, m.parsed, tokens);
    if (!ref.logits.defined()) continue;
    std::vector<at::Tensor> keys, values;
    const auto ours = dir.load().forward(ids(tokens), nullptr, [&](const LayerTap& tap) {
      keys.push_back(tap.key.clone());
      values.push_back(tap.value.clone());
    }, true);
    EXPECT_LT(max_diff(ours, ref.logits), 1e-4) << k.name;
    for (int l = 0; l < k.layers; ++l) {
      EXPECT_LT(max_diff(keys[l], ref.keys[l]), 1e-5) << k.name << " layer " << l << " pre-RoPE keys";
      EXPECT_LT(max_diff(values[l], ref.values[l]), 1e-5) << k.name << " layer " << l << " values";
    }
  }
}

TEST(LlamaModel, GemmaVariantsMatchThePythonReference) {
  // reference_gemma.py on every Gemma case (soft-caps bent, the configs' layer rules, 7 layers).
  if (!system_python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch (Debian: python3-torch)";
  expect_variants_match_reference(gemma_cases(), "reference_gemma.py", 43);
}

TEST(LlamaModel, MoeVariantsMatchThePythonReference) {
  // reference_moe.py (MixtralSparseMoeBlock / Qwen3MoeSparseMoeBlock transcribed, with the
  // one-hot expert loop and index_add_) on every MoE case.
  if (!system_python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch (Debian: python3-torch)";
  expect_variants_match_reference(moe_cases(), "reference_moe.py", 34);
}

TEST(LlamaModel, CachedDecodeMatchesThePythonReferencesCachedDecode) {
  // reference_qwen3.py / reference_moe.py with PREFILL 5: the first 5 tokens in one forward, the
  // other 8 one at a time from a cache of rotated keys (transformers' DynamicCache); kvlab the
  // same way from its cache of pre-RoPE keys (k_norm'd on qwen3 and qwen3_moe). Both must equal
  // the single forward of the other side. Mixtral with a 4-token window, so the window slides
  // over the cache during the decode; Phi-3 likewise (fused projections, partial rotary).
  if (!system_python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch (Debian: python3-torch)";
  // gemma2 / gemma3: their tiny windows of 4 on the sliding layers, outgrown by the decode.
  for (const std::string arch : {"qwen3", "mixtral", "qwen3_moe", "phi3", "gemma2", "gemma3"}) {
    auto o = small(arch);
    o.dtype = "bfloat16";
    json config = config_json(o);
    if (arch == "mixtral" || arch == "phi3") config["sliding_window"] = 4;
    const ModelConfig mc = parse_model_config(config.dump());
    const ModelDir dir("ref_decode_" + arch, config, weights_for(config, o));
    const auto tokens = random_ids(13, 21);
    const auto cached = run_reference("/usr/bin/python3", own_reference(arch), dir, o, mc, tokens, 5);
    const auto full = run_reference("/usr/bin/python3", own_reference(arch), dir, o, mc, tokens);
    ASSERT_TRUE(cached.logits.defined() && full.logits.defined()) << arch;
    EXPECT_LT(max_diff(cached.logits, full.logits), 1e-5) << arch << ": the reference's own cached decode";
    const auto model = dir.load();
    KvCache cache(o.layers);
    std::vector<at::Tensor> steps = {model.forward(ids({tokens.begin(), tokens.begin() + 5}), &cache, {}, true)};
    for (std::size_t t = 5; t < tokens.size(); ++t) steps.push_back(model.forward(ids({tokens[t]}), &cache));
    const auto ours = at::cat(steps, 0);
    EXPECT_LT(max_diff(ours, cached.logits), 1e-4) << arch;
    EXPECT_LT(max_diff(ours, full.logits), 1e-4) << arch;
    for (int l = 0; l < o.layers; ++l) {
      EXPECT_LT(max_diff(cache.key(l).transpose(0, 1), cached.keys[l]), 1e-5) << arch << " layer " << l;
      EXPECT_LT(max_diff(cache.value(l).transpose(0, 1), cached.values[l]), 1e-5) << arch << " layer " << l;
    }
  }
}

// LongRoPE (docs/models.md §2.6, §8.4) on the tiny phi3 with original_max_position_embeddings 8
// and max_position_embeddings 256 (factor 32: attention factor sqrt(1 + ln 32 / ln 8) ≈ 1.63), so
// 13-token prompts cross the switch. reference_phi3.py restates _compute_longrope_parameters and
// dynamic_rope_update from transformers; tolerances as for the dense families (1e-4 logits, 1e-5 K/V).
TEST(LlamaModel, Phi3LongRopeMatchesThePythonReferenceAcrossTheSwitch) {
  if (!system_python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch (Debian: python3-torch)";
  auto o = small("phi3");
  o.dtype = "bfloat16";
  o.longrope_original_max = 8;
  const json config = config_json(o);
  const ModelConfig mc = parse_model_config(config.dump());
  ASSERT_TRUE(mc.rope.is_length_dependent());
  const ModelDir dir("ref_longrope", config, weights_for(config, o));
  const auto model = dir.load();
  const auto tokens = random_ids(13, 23);
  const auto prefix = [&](std::size_t n) { return std::vector<std::int64_t>(tokens.begin(), tokens.begin() + n); };
  // One forward: 6 tokens (short table), 8 (still short: seq_len == original_max), 9 and 13 (long).
  for (std::size_t n : {6, 8, 9, 13}) {
    const auto ref = run_reference("/usr/bin/python3", "reference_phi3.py", dir, o, mc, prefix(n));
    ASSERT_TRUE(ref.logits.defined()) << n;
    std::vector<at::Tensor> keys;
    const auto ours =
        model.forward(ids(prefix(n)), nullptr, [&](const LayerTap& tap) { keys.push_back(tap.key.clone()); }, true);
    EXPECT_LT(max_diff(ours, ref.logits), 1e-4) << n << " tokens";
    for (int l = 0; l < o.layers; ++l) EXPECT_LT(max_diff(keys[l], ref.keys[l]), 1e-5) << n << " tokens, layer " << l;
  }
  // LongRoPE is not a no-op here: the same weights without rope_scaling give other logits past the
  // switch (the long table and the attention factor) and before it (the attention factor).
  json plain = config;
  plain["rope_scaling"] = nullptr;
  const ModelDir plain_dir("ref_longrope_plain", plain, weights_for(config, o));
  const auto plain_model = plain_dir.load();
  for (std::size_t n : {6, 13})
    EXPECT_GT(max_diff(plain_model.forward(ids(prefix(n)), nullptr, {}, true), model.forward(ids(prefix(n)), nullptr, {}, true)),
              1e-2)
        << n << " tokens";
  // Cached decode across the switch (prefill 5, then one token at a time to 13): each step rotates
  // its own q and k with the table of its position + 1, the cached keys keep theirs, as HF's
  // forward with a DynamicCache (not generate(), which recomputes once at the crossing).
  const auto cached_ref = run_reference("/usr/bin/python3", "reference_phi3.py", dir, o, mc, tokens, 5);
  const auto full_ref = run_reference("/usr/bin/python3", "reference_phi3.py", dir, o, mc, tokens);
  ASSERT_TRUE(cached_ref.logits.defined() && full_ref.logits.defined());
  const auto decode = [&](std::size_t prefill, std::size_t n) {
    KvCache cache(o.layers);
    std::vector<at::Tensor> steps = {model.forward(ids(prefix(prefill)), &cache, {}, true)};
    for (std::size_t t = prefill; t < n; ++t) steps.push_back(model.forward(ids({tokens[t]}), &cache));
    return at::cat(steps, 0);
  };
  const auto ours = decode(5, 13);
  EXPECT_LT(max_diff(ours, cached_ref.logits), 1e-4);
  // Up to position 7 every step ran on the short table: the 8-token forward's rows. From position
  // 8 on, the full 13-token forward rotates every key with the long table, the decode only its new
  // ones: the rows differ.
  EXPECT_LT(max_diff(ours.narrow(0, 0, 8), model.forward(ids(prefix(8)), nullptr, {}, true)), 1e-4);
  EXPECT_GT(max_diff(ours.narrow(0, 8, 5), full_ref.logits.narrow(0, 8, 5)), 1e-3);
  // Incremental decode equals the full recompute where no step crosses: all short (3 → 8) and
  // all long (10 → 13).
  EXPECT_LT(max_diff(decode(3, 8), model.forward(ids(prefix(8)), nullptr, {}, true)), 1e-4);
  EXPECT_LT(max_diff(decode(10, 13), model.forward(ids(prefix(13)), nullptr, {}, true)), 1e-4);
}

// Transformers itself (issue 8's HF parity): $KVLAB_PYTHON, else the python3 on PATH (the GPU
// image's has transformers 5.x). Skips where it has no transformers; qwen3 and qwen3_moe need
// transformers ≥ 4.51 and are left out, with a note, where it is older (mixtral likewise).
TEST(LlamaModel, LogitsMatchTransformers) {
  const char* env = std::getenv("KVLAB_PYTHON");
  const std::string python = env && *env ? env : "python3";
  if (std::system((python + " -c 'import torch, numpy, transformers' >/dev/null 2>&1").c_str()) != 0)
    GTEST_SKIP() << python << " has no transformers (set KVLAB_PYTHON to one that has)";
  std::vector<std::string> archs = {"llama", "qwen2", "mistral"};
  for (const std::string arch : {"qwen3", "mixtral", "qwen3_moe", "phi3", "gemma2", "gemma3"}) {
    if (std::system(fmt::format("{} -c 'import transformers.models.{}.modeling_{}' >/dev/null 2>&1", python, arch, arch)
                        .c_str()) == 0)
      archs.push_back(arch);
    else
      std::cout << "[   NOTE   ] " << python << "'s transformers has no " << arch << " (qwen3, qwen3_moe need >= 4.51): "
                << arch << " not compared (gemma2 needs >= 4.42, gemma3 >= 4.50)\n";
  }
  expect_model_matches(python, [](const std::string&) { return std::string("transformers_reference.py"); }, archs);
}

TEST(LlamaModel, LoadErrorsNameTheTensor) {
  const auto o = small();
  const json config = config_json(o);
  auto w = weights_for(config, o);
  w.erase("model.layers.1.mlp.up_proj.weight");
  expect_load_fails("missing", config, w, "model.layers.1.mlp.up_proj.weight' is missing");
  w = weights_for(config, o);
  w["model.layers.0.self_attn.k_proj.weight"].shape = {8, 64};  // the same 512 values, the wrong shape
  expect_load_fails("shape", config, w, "model.layers.0.self_attn.k_proj.weight' has shape [8, 64]");
  // Sparse layers: the router and each expert's tensors by their family's names.
  const auto expect_load_error = [](const VariantModel& m, const std::string& name, const std::string& message) {
    auto without = m.weights;
    without.erase(name);
    expect_load_fails("moe_missing", m.config, without, message);
  };
  const auto cases = moe_cases();
  expect_load_error(variant_model(cases[0]), "model.layers.1.block_sparse_moe.experts.2.w3.weight",
                    "model.layers.1.block_sparse_moe.experts.2.w3.weight' is missing");
  expect_load_error(variant_model(cases[2]), "model.layers.0.mlp.experts.3.down_proj.weight",
                    "model.layers.0.mlp.experts.3.down_proj.weight' is missing");
  expect_load_error(variant_model(cases[3]), "model.layers.2.mlp.gate_proj.weight",  // a dense layer of the mix
                    "model.layers.2.mlp.gate_proj.weight' is missing");
  expect_load_error(variant_model(cases[2]), "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.gate.weight' is missing");
  // Phi-3's fused tensors by their names and fused shapes.
  const auto p = small("phi3");
  const json phi3 = config_json(p);
  w = weights_for(phi3, p);
  w.erase("model.layers.1.self_attn.qkv_proj.weight");
  expect_load_fails("phi3_missing", phi3, w, "model.layers.1.self_attn.qkv_proj.weight' is missing");
  w = weights_for(phi3, p);
  w["model.layers.0.mlp.gate_up_proj.weight"].shape = {48, 64};  // I·d values as [I, 2d]: not [2I, d]
  expect_load_fails("phi3_shape", phi3, w, "model.layers.0.mlp.gate_up_proj.weight' has shape [48, 64], the config implies [96, 32]");
  // Gemma's extra norms and Gemma-3's q/k norms by their names.
  const auto gemma2 = variant_model(gemma_cases()[0]), gemma3 = variant_model(gemma_cases()[2]);
  for (const auto* m : {&gemma2, &gemma3})
    for (const char* name : {"model.layers.1.pre_feedforward_layernorm.weight", "model.layers.0.post_feedforward_layernorm.weight",
                             "model.layers.1.post_attention_layernorm.weight"}) {
      w = m->weights;
      w.erase(name);
      expect_load_fails("gemma_missing", m->config, w, std::string(name) + "' is missing");
    }
  w = gemma3.weights;
  w.erase("model.layers.0.self_attn.q_norm.weight");
  expect_load_fails("gemma3_missing", gemma3.config, w, "model.layers.0.self_attn.q_norm.weight' is missing");
}

}  // namespace
}  // namespace kvlab::harness
