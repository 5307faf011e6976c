// Tiny checkpoints: the folder must load through the same code as a downloaded one (config,
// safetensors, tokenizer), weights must have the HF names and shapes the config implies, the
// same seed must give the same bytes, and layer_similarity must give adjacent layers exactly
// the correlation it promises (sample correlation within 4/√n of s).
#include "harness/tiny_model.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path temp_dir(const char* name) {
  auto dir = fs::temp_directory_path() / fmt::format("kvlab_tiny_{}_{}", name, ::getpid());
  fs::remove_all(dir);
  return dir;
}

double correlation(const std::vector<float>& a, const std::vector<float>& b) {
  double ma = 0, mb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) ma += a[i], mb += b[i];
  ma /= a.size(), mb /= b.size();
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return sab / std::sqrt(saa * sbb);
}

class TinyModel : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyModel, FolderLoadsLikeARealCheckpoint) {
  const auto dir = temp_dir(GetParam().c_str());
  TinyModelOptions o;
  o.arch = GetParam();
  o.layers = 2;
  const ModelConfig written = write_tiny_model(dir, o);
  const ModelConfig c = load_model_config(dir);
  EXPECT_EQ(c.model_type, o.arch);
  EXPECT_EQ(c.num_layers, 2);
  const bool qwen3 = o.arch == "qwen3", qwen3_moe = o.arch == "qwen3_moe", moe = qwen3_moe || o.arch == "mixtral";
  // qwen3 and qwen3_moe: an explicit head_dim that is not hidden / heads and q/k norms; qwen3's
  // embeddings tied.
  EXPECT_EQ(c.head_dim, (qwen3 || qwen3_moe ? 2 : 1) * o.hidden / o.heads);
  EXPECT_EQ(c.qkv_bias, o.arch == "qwen2");
  EXPECT_EQ(c.qk_norm, qwen3 || qwen3_moe);
  EXPECT_EQ(c.tie_word_embeddings, qwen3);
  if (qwen3 || qwen3_moe) {
    EXPECT_EQ(json::parse(c.json).at("head_dim"), 2 * o.hidden / o.heads);
  }
  // mixtral, qwen3_moe: every layer sparse with --experts, --experts-per-token; Qwen3-30B-A3B
  // renormalises its top-k (norm_topk_prob true), Mixtral always does.
  ASSERT_EQ(c.moe.has_value(), moe);
  if (moe) {
    EXPECT_EQ(c.moe->num_experts, o.experts);
    EXPECT_EQ(c.moe->top_k, o.experts_per_token);
    EXPECT_EQ(c.moe->expert_intermediate_size, qwen3_moe ? o.moe_intermediate : o.intermediate);
    EXPECT_TRUE(c.moe->normalize_top_k);
    EXPECT_TRUE(c.sparse_layer(0) && c.sparse_layer(1));
  }
  EXPECT_EQ(c.vocab_size, written.vocab_size);
  EXPECT_FALSE(c.eos_token_ids.empty());

  const auto tokenizer = load_tokenizer(dir);
  EXPECT_LE(tokenizer->vocab_size(), c.vocab_size);
  for (int id : c.eos_token_ids) EXPECT_LT(id, tokenizer->vocab_size());
  const std::string text = "kvlab dumps the KV cache of a model.";
  EXPECT_EQ(tokenizer->decode(tokenizer->encode(text, false)), text);

  // Every tensor a Llama-family loader asks for, with the shape docs/models.md §1.4 gives.
  core::Checkpoint ckpt(dir);
  const std::int64_t d = c.hidden_size, q = std::int64_t{c.num_heads} * c.head_dim,
                     kv = std::int64_t{c.num_kv_heads} * c.head_dim;
  EXPECT_EQ(ckpt.shape("model.embed_tokens.weight"), (core::Shape{c.vocab_size, d}));
  EXPECT_EQ(ckpt.has("lm_head.weight"), !c.tie_word_embeddings);
  if (!c.tie_word_embeddings) {
    EXPECT_EQ(ckpt.shape("lm_head.weight"), (core::Shape{c.vocab_size, d}));
  }
  EXPECT_EQ(ckpt.shape("model.norm.weight"), (core::Shape{d}));
  for (int l = 0; l < c.num_layers; ++l) {
    const auto p = fmt::format("model.layers.{}.", l);
    EXPECT_EQ(ckpt.shape(p + "self_attn.q_proj.weight"), (core::Shape{q, d}));
    EXPECT_EQ(ckpt.shape(p + "self_attn.k_proj.weight"), (core::Shape{kv, d}));
    EXPECT_EQ(ckpt.shape(p + "self_attn.v_proj.weight"), (core::Shape{kv, d}));
    EXPECT_EQ(ckpt.shape(p + "self_attn.o_proj.weight"), (core::Shape{d, q}));
    if (c.sparse_layer(l)) {  // the router and each expert, by the family's names (docs/models.md §7.4)
      const std::int64_t ie = c.moe->expert_intermediate_size;
      EXPECT_EQ(ckpt.shape(p + c.moe_tensor_name(MoeTensor::router, 0)), (core::Shape{c.moe->num_experts, d}));
      for (int e = 0; e < c.moe->num_experts; ++e) {
        EXPECT_EQ(ckpt.shape(p + c.moe_tensor_name(MoeTensor::gate, e)), (core::Shape{ie, d}));
        EXPECT_EQ(ckpt.shape(p + c.moe_tensor_name(MoeTensor::up, e)), (core::Shape{ie, d}));
        EXPECT_EQ(ckpt.shape(p + c.moe_tensor_name(MoeTensor::down, e)), (core::Shape{d, ie}));
        EXPECT_EQ(ckpt.dtype(p + c.moe_tensor_name(MoeTensor::up, e)), "BF16");
      }
      EXPECT_FALSE(ckpt.has(p + "mlp.gate_proj.weight"));
      continue;
    }
    EXPECT_EQ(ckpt.shape(p + "mlp.gate_proj.weight"), (core::Shape{c.intermediate_size, d}));
    EXPECT_EQ(ckpt.shape(p + "mlp.down_proj.weight"), (core::Shape{d, c.intermediate_size}));
    EXPECT_EQ(ckpt.has(p + "self_attn.k_proj.bias"), c.qkv_bias);
    EXPECT_EQ(ckpt.has(p + "self_attn.q_norm.weight"), c.qk_norm);
    EXPECT_EQ(ckpt.has(p + "self_attn.k_norm.weight"), c.qk_norm);
    if (c.qk_norm) {
      EXPECT_EQ(ckpt.shape(p + "self_attn.q_norm.weight"), (core::Shape{c.head_dim}));
      EXPECT_EQ(ckpt.shape(p + "self_attn.k_norm.weight"), (core::Shape{c.head_dim}));
    }
    EXPECT_EQ(ckpt.dtype(p + "mlp.up_proj.weight"), "BF16");
  }
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Archs, TinyModel, ::testing::Values("llama", "qwen2", "mistral", "qwen3", "mixtral", "qwen3_moe"));

TEST(TinyWeights, MoeLayersDrawExpertsWhereDenseLayersDrawTheirMlpAndOtherFamiliesKeepTheirBytes) {
  // A qwen3_moe whose layer 0 is dense (mlp_only_layers [0]) and layer 1 sparse: layer 0 has the
  // dense MLP, layer 1 the router and 4 experts; attention tensors are drawn as on a qwen3 of
  // the same shape (layer 0's tensors are byte-identical: the MoE additions change no draw before them).
  TinyModelOptions o;
  o.arch = "qwen3_moe";
  o.layers = 2;
  o.dtype = "float32";
  auto config = json::parse(tiny_model_config_json(o, 300));
  config["mlp_only_layers"] = {0};
  const auto mc = parse_model_config(config.dump());
  ASSERT_TRUE(!mc.sparse_layer(0) && mc.sparse_layer(1));
  const auto w = tiny_weights(mc, o);
  EXPECT_EQ(w.at("model.layers.0.mlp.gate_proj.weight").shape, (core::Shape{o.intermediate, o.hidden}));
  EXPECT_EQ(w.count("model.layers.1.mlp.gate_proj.weight"), 0u);
  EXPECT_EQ(w.at("model.layers.1.mlp.gate.weight").shape, (core::Shape{o.experts, o.hidden}));
  EXPECT_EQ(w.at("model.layers.1.mlp.experts.3.down_proj.weight").shape, (core::Shape{o.hidden, o.moe_intermediate}));
  EXPECT_NE(w.at("model.layers.1.mlp.experts.0.up_proj.weight").data, w.at("model.layers.1.mlp.experts.1.up_proj.weight").data);
  TinyModelOptions dense = o;
  dense.arch = "qwen3";
  auto dense_config = json::parse(tiny_model_config_json(dense, 300));
  dense_config["tie_word_embeddings"] = false;
  const auto dw = tiny_weights(parse_model_config(dense_config.dump()), dense);
  for (const char* name : {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.down_proj.weight",
                           "model.layers.0.self_attn.k_norm.weight", "model.layers.1.self_attn.k_proj.weight"})
    EXPECT_EQ(w.at(name).data, dw.at(name).data) << name;
}

TEST(TinyWeights, Qwen3NormWeightsAreRandomAroundOneAndOtherFamiliesKeepTheirBytes) {
  // q_norm/k_norm [D] ~ 1 + N(0, 0.1²), drawn after a layer's other tensors: layer 0's other
  // tensors are those of a llama with the same head_dim (the draws for existing families are
  // unchanged by the qwen3 additions).
  TinyModelOptions o;
  o.arch = "qwen3";
  o.dtype = "float32";
  const auto qwen3 = parse_model_config(tiny_model_config_json(o, 300));
  ASSERT_TRUE(qwen3.qk_norm);
  ASSERT_EQ(qwen3.head_dim, 2 * o.hidden / o.heads);
  const auto w = tiny_weights(qwen3, o);
  EXPECT_EQ(w.count("lm_head.weight"), 0u) << "tied";
  for (int l = 0; l < qwen3.num_layers; ++l)
    for (const char* name : {"q_norm", "k_norm"}) {
      const auto& t = w.at(fmt::format("model.layers.{}.self_attn.{}.weight", l, name));
      ASSERT_EQ(t.shape, (core::Shape{qwen3.head_dim}));
      double mean = 0, var = 0;
      for (float v : t.data) mean += v;
      mean /= t.data.size();
      for (float v : t.data) var += (v - mean) * (v - mean);
      EXPECT_NEAR(mean, 1.0, 0.1) << name;  // 32 draws of N(1, 0.1²): mean within 5.6 σ
      EXPECT_GT(std::sqrt(var / t.data.size()), 0.03) << name << " is random, not all ones";
    }
  TinyModelOptions llama = o;
  llama.arch = "llama";
  llama.head_dim = qwen3.head_dim;
  const auto lw = tiny_weights(parse_model_config(tiny_model_config_json(llama, 300)), llama);
  EXPECT_EQ(w.at("model.layers.0.self_attn.k_proj.weight").data, lw.at("model.layers.0.self_attn.k_proj.weight").data);
  EXPECT_EQ(w.at("model.layers.0.mlp.down_proj.weight").data, lw.at("model.layers.0.mlp.down_proj.weight").data);
}

TEST(TinyWeights, SameSeedSameBytesOtherSeedOtherBytes) {
  TinyModelOptions o;
  const auto config = parse_model_config(tiny_model_config_json(o, 300));
  const auto a = tiny_weights(config, o);
  const auto b = tiny_weights(config, o);
  o.seed = 1;
  const auto c = tiny_weights(config, o);
  for (const auto& [name, t] : a) {
    EXPECT_EQ(t.data, b.at(name).data) << name;
    EXPECT_NE(t.data, c.at(name).data) << name;
  }
}

TEST(TinyWeights, LayerSimilarityIsTheCorrelationOfAdjacentLayers) {
  TinyModelOptions o;
  o.hidden = 128;
  o.heads = 4;
  o.layers = 3;
  o.dtype = "float32";
  for (double s : {0.0, 0.5, 0.9}) {
    o.layer_similarity = s;
    const auto w = tiny_weights(parse_model_config(tiny_model_config_json(o, 300)), o);
    const auto& a = w.at("model.layers.1.self_attn.k_proj.weight").data;
    const auto& b = w.at("model.layers.2.self_attn.k_proj.weight").data;
    EXPECT_NEAR(correlation(a, b), s, 4 / std::sqrt(double(a.size()))) << "s=" << s;
    // The blend keeps each entry's variance: 1/fan_in.
    double var = 0;
    for (float v : b) var += double(v) * v;
    EXPECT_NEAR(var / b.size(), 1.0 / o.hidden, 0.1 / o.hidden);
  }
}

TEST(TinyWeights, BadOptionsAreErrorsNamingTheFlag) {
  TinyModelOptions o;
  o.arch = "gpt2";
  EXPECT_THROW(tiny_model_config_json(o, 100), Error);
  o = {};
  o.kv_heads = 3;
  try {
    tiny_model_config_json(o, 100);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("--kv-heads"));
  }
  o = {};
  o.layer_similarity = 1.0;
  EXPECT_THROW(tiny_model_config_json(o, 100), Error);
}

}  // namespace
}  // namespace kvlab::harness
