// Mixtral and Qwen3-MoE config.json (docs/models.md §7.2): the published configs, each family's
// defaults (MixtralConfig, Qwen3MoeConfig in transformers' configuration_*.py), the sparse-layer
// rule of Qwen3MoeDecoderLayer, the expert tensor names, and an error naming every bad key.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "harness/model_config.h"
#include "harness/model_config_error.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

// mistralai/Mixtral-8x7B-v0.1's config.json as published (docs/models.md §7.1).
json mixtral_8x7b() {
  return json::parse(R"({
    "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mixtral", "num_attention_heads": 32,
    "num_experts_per_tok": 2, "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8,
    "output_router_logits": false, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02,
    "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true,
    "vocab_size": 32000})");
}

// Qwen/Qwen3-30B-A3B's config.json as published (docs/models.md §7.1).
json qwen3_30b_a3b() {
  return json::parse(R"({
    "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144,
    "max_position_embeddings": 40960, "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe",
    "moe_intermediate_size": 768, "norm_topk_prob": true, "num_attention_heads": 32, "num_experts": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": false,
    "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
    "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true,
    "use_sliding_window": false, "vocab_size": 151936})");
}

// Which layers are sparse, as a list (MoeConfig computes it per layer).
std::vector<bool> sparse_pattern(const ModelConfig& c) {
  std::vector<bool> out;
  for (int l = 0; l < c.num_layers; ++l) out.push_back(c.sparse_layer(l));
  EXPECT_EQ(c.moe->count_sparse(c.num_layers), std::count(out.begin(), out.end(), true));
  return out;
}

TEST(MoeConfig, Mixtral8x7bIsMistralsAttentionWithEightExpertsTopTwoRenormalised) {
  const auto c = parse_model_config(mixtral_8x7b().dump());
  ASSERT_TRUE(c.moe);
  EXPECT_EQ(c.moe->num_experts, 8);
  EXPECT_EQ(c.moe->top_k, 2);
  EXPECT_EQ(c.moe->expert_intermediate_size, 14336);  // each expert is intermediate_size wide
  EXPECT_TRUE(c.moe->normalize_top_k);
  EXPECT_EQ(sparse_pattern(c), std::vector<bool>(32, true));
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.n_rep(), 4);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias);
  EXPECT_FALSE(c.sliding_window);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_NEAR(c.rope.inv_freq()[1], std::pow(1e6, -2.0 / 128), 1e-7);
  EXPECT_THAT(c.describe(), HasSubstr("moe E=8 top-2 I_e=14336 renormalised sparse-layers=32/32"));
  EXPECT_EQ(c.moe_tensor_name(MoeTensor::router, 5), "block_sparse_moe.gate.weight");
  EXPECT_EQ(c.moe_tensor_name(MoeTensor::gate, 3), "block_sparse_moe.experts.3.w1.weight");
  EXPECT_EQ(c.moe_tensor_name(MoeTensor::up, 3), "block_sparse_moe.experts.3.w3.weight");
  EXPECT_EQ(c.moe_tensor_name(MoeTensor::down, 7), "block_sparse_moe.experts.7.w2.weight");
}

TEST(MoeConfig, MixtralDefaultsAreMixtralConfigs) {
  // configuration_mixtral.py: num_local_experts 8, num_experts_per_tok 2, num_key_value_heads 8
  // (null: num_attention_heads), rms_norm_eps 1e-5, rope_theta 1e6 (default_theta).
  json j = mixtral_8x7b();
  for (const char* key : {"num_local_experts", "num_experts_per_tok", "num_key_value_heads", "rms_norm_eps", "rope_theta"})
    j.erase(key);
  auto c = parse_model_config(j.dump());
  EXPECT_EQ(c.moe->num_experts, 8);
  EXPECT_EQ(c.moe->top_k, 2);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_NEAR(c.rope.inv_freq()[1], std::pow(1e6, -2.0 / 128), 1e-7);
  j["num_key_value_heads"] = nullptr;
  EXPECT_EQ(parse_model_config(j.dump()).num_kv_heads, 32);
  // v5's attribute_map: num_experts stands for num_local_experts.
  j["num_experts"] = 4;
  EXPECT_EQ(parse_model_config(j.dump()).moe->num_experts, 4);
  j["num_local_experts"] = 6;
  EXPECT_THAT(error_of(j), HasSubstr("num_local_experts 6 and num_experts 4 disagree"));
  // MixtralAttention and the experts have no bias, whatever attention_bias / mlp_bias say.
  j = mixtral_8x7b();
  j["attention_bias"] = j["mlp_bias"] = true;
  c = parse_model_config(j.dump());
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias);
  // A window is Mistral's: every layer, as MixtralModel masks them.
  j["sliding_window"] = 4096;
  EXPECT_EQ(parse_model_config(j.dump()).sliding_window, 4096);
}

TEST(MoeConfig, Qwen3_30bA3bIsQwen3sAttentionWith128ExpertsTopEight) {
  const auto c = parse_model_config(qwen3_30b_a3b().dump());
  ASSERT_TRUE(c.moe);
  EXPECT_EQ(c.moe->num_experts, 128);
  EXPECT_EQ(c.moe->top_k, 8);
  EXPECT_EQ(c.moe->expert_intermediate_size, 768);
  EXPECT_TRUE(c.moe->normalize_top_k);
  EXPECT_EQ(sparse_pattern(c), std::vector<bool>(48, true));
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.n_rep(), 8);
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias || c.tie_word_embeddings);
  EXPECT_EQ(c.moe_tensor_name(MoeTensor::router, 0), "mlp.gate.weight");
  EXPECT_EQ(c.moe_tensor_name(MoeTensor::gate, 127), "mlp.experts.127.gate_proj.weight");
  EXPECT_EQ(c.moe_tensor_name(MoeTensor::up, 0), "mlp.experts.0.up_proj.weight");
  EXPECT_EQ(c.moe_tensor_name(MoeTensor::down, 1), "mlp.experts.1.down_proj.weight");
  EXPECT_THAT(c.describe(), HasSubstr("qk-norm"));
}

TEST(MoeConfig, Qwen3MoeDefaultsAreQwen3MoeConfigsNotQwen3s) {
  // configuration_qwen3_moe.py: num_experts 128, num_experts_per_tok 8, moe_intermediate_size
  // 768, norm_topk_prob false, decoder_sparse_step 1, mlp_only_layers [], num_key_value_heads 4;
  // head_dim is not a Qwen3MoeConfig field: Qwen3MoeAttention falls back to hidden / heads
  // (unlike Qwen3Config's constant 128).
  json j = qwen3_30b_a3b();
  for (const char* key : {"num_experts", "num_experts_per_tok", "moe_intermediate_size", "norm_topk_prob",
                          "decoder_sparse_step", "mlp_only_layers", "num_key_value_heads", "head_dim"})
    j.erase(key);
  const auto c = parse_model_config(j.dump());
  EXPECT_EQ(c.moe->num_experts, 128);
  EXPECT_EQ(c.moe->top_k, 8);
  EXPECT_EQ(c.moe->expert_intermediate_size, 768);
  EXPECT_FALSE(c.moe->normalize_top_k);
  EXPECT_EQ(sparse_pattern(c), std::vector<bool>(48, true));
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 2048 / 32);
  EXPECT_THAT(c.describe(), Not(HasSubstr("renormalised")));
  j["num_attention_heads"] = 6;
  j["hidden_size"] = 6 * 64;
  EXPECT_THAT(error_of(j), HasSubstr("num_key_value_heads 4 (absent: Qwen3MoeConfig's default) must divide "
                                     "num_attention_heads 6"));
}

TEST(MoeConfig, Qwen3MoeSparseLayersFollowMlpOnlyLayersAndDecoderSparseStep) {
  // Qwen3MoeDecoderLayer: sparse iff l ∉ mlp_only_layers and num_experts > 0 and
  // (l + 1) % decoder_sparse_step == 0. 6 layers, step 2 → 1, 3, 5; layer 3 listed dense.
  json j = qwen3_30b_a3b();
  j["num_hidden_layers"] = 6;
  j["decoder_sparse_step"] = 2;
  j["mlp_only_layers"] = {3, 0};
  auto c = parse_model_config(j.dump());
  EXPECT_EQ(sparse_pattern(c), (std::vector<bool>{false, true, false, false, false, true}));
  EXPECT_TRUE(c.sparse_layer(1));
  EXPECT_FALSE(c.sparse_layer(3));
  EXPECT_THAT(c.describe(), HasSubstr("sparse-layers=2/6"));
  j["num_experts"] = 0;  // no experts: every layer dense, top-k not checked
  c = parse_model_config(j.dump());
  EXPECT_EQ(sparse_pattern(c), std::vector<bool>(6, false));
  // The rule is computed, not stored: 2³¹ − 1 layers parse at once (a fuzzed config must not
  // allocate per layer); every second one is sparse.
  json huge = j;
  huge["num_hidden_layers"] = 2147483647;
  huge["num_experts"] = 16;
  huge["mlp_only_layers"] = {1, 2};
  const auto h = parse_model_config(huge.dump());
  EXPECT_EQ(h.moe->count_sparse(h.num_layers), 2147483647 / 2 - 1);
  EXPECT_TRUE(h.sparse_layer(2147483645));
  EXPECT_FALSE(h.sparse_layer(1));
  j["mlp_only_layers"] = nullptr;  // null is the default []
  j["num_experts"] = 16;
  j["decoder_sparse_step"] = 1;
  EXPECT_EQ(sparse_pattern(parse_model_config(j.dump())), std::vector<bool>(6, true));
}

TEST(MoeConfig, BadKeysAreNamedWithTheirRange) {
  const auto expect_error = [](json j, const char* key, const json& value, const std::string& message) {
    if (value.is_null())
      j.erase(key);
    else
      j[key] = value;
    EXPECT_THAT(error_of(j), HasSubstr(message)) << key << " = " << value.dump();
  };
  const json q = qwen3_30b_a3b(), m = mixtral_8x7b();
  expect_error(q, "num_experts_per_tok", 129, "num_experts_per_tok 129 must be in 1..128 (num_experts 128)");
  expect_error(q, "num_experts_per_tok", 0, "num_experts_per_tok 0 must be in 1..128");
  expect_error(m, "num_experts_per_tok", 9, "num_experts_per_tok 9 must be in 1..8 (num_local_experts 8)");
  expect_error(m, "num_local_experts", 0, "num_local_experts 0 must be positive");
  expect_error(q, "num_experts", -1, "num_experts -1 must be ≥ 0");
  expect_error(q, "moe_intermediate_size", 0, "moe_intermediate_size 0 must be positive");
  expect_error(q, "decoder_sparse_step", 0, "decoder_sparse_step 0 must be ≥ 1");
  expect_error(q, "mlp_only_layers", json::array({48}), "mlp_only_layers entry 48 is outside the layers 0..47");
  expect_error(q, "mlp_only_layers", json::array({-1}), "mlp_only_layers entry -1 is outside");
  expect_error(q, "mlp_only_layers", 3, "'mlp_only_layers' must be a list of layer indices");
  expect_error(q, "mlp_only_layers", json::array({"1"}), "'mlp_only_layers' must be an integer");
  expect_error(q, "norm_topk_prob", "yes", "'norm_topk_prob' must be true or false");
  expect_error(q, "num_experts", 1ll << 40, "'num_experts' = 1099511627776 is outside the range");
  expect_error(q, "moe_intermediate_size", 1.5, "'moe_intermediate_size' must be an integer");
  expect_error(q, "num_key_value_heads", json(), "no error");  // absent: 4, which divides 32
  json null_kv = q;
  null_kv["num_key_value_heads"] = nullptr;
  EXPECT_THAT(error_of(null_kv), HasSubstr("'num_key_value_heads' is null"));
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"})
    for (const json& family : {q, m}) expect_error(family, key, json(), fmt::format("'{}' is missing", key));
  // Sliding windows: Qwen3-MoE's per-layer windows are refused; a null window is fine.
  json windowed = q;
  windowed["use_sliding_window"] = true;
  windowed["sliding_window"] = 4096;
  EXPECT_THAT(error_of(windowed), HasSubstr("use_sliding_window: true is not supported for qwen3_moe"));
  windowed["use_sliding_window"] = false;
  EXPECT_FALSE(parse_model_config(windowed.dump()).sliding_window);
}

}  // namespace
}  // namespace kvlab::harness
