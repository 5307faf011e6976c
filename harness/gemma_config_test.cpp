// Gemma-2 / Gemma-3 config.json (docs/models.md §9.2): the released configs as the checkpoints
// write them, the configuration classes' defaults under absent keys (Gemma2Config,
// Gemma3TextConfig), the layer rules, Gemma-3's two RoPEs and the nested text_config of
// Gemma3ForConditionalGeneration; every malformed field an error naming it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rope.h"
#include "harness/model_config.h"
#include "harness/model_config_error.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

// google/gemma-2-2b-it's config.json (transformers 4.42 writes hidden_act and hidden_activation).
json gemma2_2b() {
  return json::parse(R"({
    "architectures": ["Gemma2ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "attn_logit_softcapping": 50.0, "bos_token_id": 2, "cache_implementation": "hybrid",
    "eos_token_id": [1, 107], "final_logit_softcapping": 30.0, "head_dim": 256,
    "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304,
    "initializer_range": 0.02, "intermediate_size": 9216, "max_position_embeddings": 8192,
    "model_type": "gemma2", "num_attention_heads": 8, "num_hidden_layers": 26, "num_key_value_heads": 4,
    "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06, "rope_theta": 10000.0,
    "sliding_window": 4096, "torch_dtype": "float32", "use_cache": true, "vocab_size": 256000})");
}

// google/gemma-3-4b-it's config.json: the text model's keys nested in text_config, most left to
// Gemma3TextConfig's defaults (vocab_size, head_dim, heads, rope_theta, ...).
json gemma3_4b() {
  return json::parse(R"({
    "architectures": ["Gemma3ForConditionalGeneration"], "boi_token_index": 255999,
    "eoi_token_index": 256000, "eos_token_id": [1, 106], "image_token_index": 262144,
    "initializer_range": 0.02, "mm_tokens_per_image": 256, "model_type": "gemma3",
    "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                    "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                    "sliding_window": 1024},
    "torch_dtype": "bfloat16",
    "vision_config": {"hidden_size": 1152, "image_size": 896, "model_type": "siglip_vision_model"}})");
}

std::vector<bool> every_nth_global(int layers, int n) {
  std::vector<bool> sliding;
  for (int l = 0; l < layers; ++l) sliding.push_back((l + 1) % n != 0);
  return sliding;
}

TEST(GemmaConfig, Gemma2AsReleased) {
  const auto c = parse_model_config(gemma2_2b().dump());
  EXPECT_EQ(c.head_dim, 256);  // explicit, ≠ 2304 / 8
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.hidden_act, Activation::gelu_tanh);
  EXPECT_TRUE(c.tie_word_embeddings) << "Gemma2Config's default: the file does not say";
  EXPECT_TRUE(c.unit_offset_norm && c.scale_embeddings && c.sandwich_norms);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias);
  EXPECT_EQ(c.query_pre_attn_scalar, 256.0);
  EXPECT_EQ(c.attn_logit_softcap, 50.0);
  EXPECT_EQ(c.final_logit_softcap, 30.0);
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(c.sliding_layers, every_nth_global(26, 2)) << "the even layers slide";
  EXPECT_EQ(c.window(0), 4096);
  EXPECT_FALSE(c.window(1));
  EXPECT_FALSE(c.local_rope);
  EXPECT_EQ(c.rope.inv_freq(), core::Rope::standard(256, 10000.0).inv_freq());
  EXPECT_EQ(c.eos_token_ids, (std::vector<int>{1, 107}));
  EXPECT_THAT(c.describe(), HasSubstr("sliding-layers=13/26 query_pre_attn_scalar=256 attn-softcap=50 final-softcap=30"));
}

TEST(GemmaConfig, AbsentKeysTakeTheConfigurationClassesDefaults) {
  // configuration_gemma2.py / configuration_gemma3.py __init__ defaults, docs/models.md §9.2.
  const auto g2 = parse_model_config(R"({"model_type": "gemma2"})");
  EXPECT_EQ(g2.vocab_size, 256000);
  EXPECT_EQ(g2.hidden_size, 2304);
  EXPECT_EQ(g2.intermediate_size, 9216);
  EXPECT_EQ(g2.num_layers, 26);
  EXPECT_EQ(g2.num_heads, 8);
  EXPECT_EQ(g2.num_kv_heads, 4);
  EXPECT_EQ(g2.head_dim, 256);
  EXPECT_EQ(g2.max_position_embeddings, 8192);
  EXPECT_EQ(g2.hidden_act, Activation::gelu_tanh);
  EXPECT_EQ(g2.attn_logit_softcap, 50.0);
  EXPECT_EQ(g2.final_logit_softcap, 30.0);
  EXPECT_EQ(g2.bos_token_id, 2);
  EXPECT_EQ(g2.eos_token_ids, std::vector<int>{1});
  const auto g3 = parse_model_config(R"({"model_type": "gemma3_text"})");
  EXPECT_EQ(g3.vocab_size, 262208);
  EXPECT_EQ(g3.max_position_embeddings, 131072);
  EXPECT_TRUE(g3.qk_norm);
  EXPECT_FALSE(g3.attn_logit_softcap);
  EXPECT_FALSE(g3.final_logit_softcap);
  EXPECT_EQ(g3.sliding_layers, every_nth_global(26, 6)) << "sliding_window_pattern 6";
  EXPECT_EQ(g3.rope.inv_freq(), core::Rope::standard(256, 1e6).inv_freq());
  ASSERT_TRUE(g3.local_rope);
  EXPECT_EQ(g3.local_rope->inv_freq(), core::Rope::standard(256, 1e4).inv_freq());
  // An explicit null is None in transformers: no soft-cap.
  const auto uncapped = parse_model_config(R"({"model_type": "gemma2", "attn_logit_softcapping": null})");
  EXPECT_FALSE(uncapped.attn_logit_softcap);
  EXPECT_EQ(uncapped.final_logit_softcap, 30.0);
}

TEST(GemmaConfig, Gemma3ConditionalGenerationReadsItsTextConfig) {
  const auto c = parse_model_config(gemma3_4b().dump());
  EXPECT_EQ(c.model_type, "gemma3");
  EXPECT_EQ(c.hidden_size, 2560);
  EXPECT_EQ(c.num_layers, 34);
  EXPECT_EQ(c.vocab_size, 262208);
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.sliding_window, 1024);
  EXPECT_EQ(c.sliding_layers, every_nth_global(34, 6));
  EXPECT_EQ(c.torch_dtype, "bfloat16");                        // from the top level
  EXPECT_EQ(c.eos_token_ids, (std::vector<int>{1, 106}));      // likewise
  // Global layers: rope_theta 10⁶ (default) with linear ×8, inv_freq / factor as transformers'
  // _compute_linear_scaling_rope_parameters divides the default table; sliding layers: 10⁴, default.
  auto expected = core::Rope::standard(256, 1e6).inv_freq();
  for (auto& x : expected) x = x / 8.0f;
  EXPECT_EQ(c.rope.inv_freq(), expected);
  EXPECT_EQ(c.local_rope->inv_freq(), core::Rope::standard(256, 1e4).inv_freq());
  EXPECT_EQ(&c.rope_of(5), &c.rope);
  EXPECT_EQ(&c.rope_of(4), &*c.local_rope);
  EXPECT_EQ(c.json, gemma3_4b().dump()) << "the file as read, for provenance";
}

TEST(GemmaConfig, V5RopeParametersPerLayerTypeGiveTheSameRopes) {
  // transformers v5 nests both RoPEs in rope_parameters by layer type and writes layer_types.
  json v5 = gemma3_4b()["text_config"];
  v5["model_type"] = "gemma3_text";
  v5.erase("rope_scaling");
  v5["rope_parameters"] = {{"full_attention", {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 1e6}}},
                           {"sliding_attention", {{"rope_type", "default"}, {"rope_theta", 1e4}}}};
  json types = json::array();
  for (int l = 0; l < 34; ++l) types.push_back((l + 1) % 6 ? "sliding_attention" : "full_attention");
  v5["layer_types"] = types;
  const auto a = parse_model_config(gemma3_4b().dump()), b = parse_model_config(v5.dump());
  EXPECT_EQ(a.rope.inv_freq(), b.rope.inv_freq());
  EXPECT_EQ(a.local_rope->inv_freq(), b.local_rope->inv_freq());
  EXPECT_EQ(a.sliding_layers, b.sliding_layers);
  // layer_types decides over the pattern when both are given.
  v5["sliding_window_pattern"] = 2;
  EXPECT_EQ(parse_model_config(v5.dump()).sliding_layers, a.sliding_layers);
}

TEST(GemmaConfig, ErrorsNameTheKey) {
  json j = gemma3_4b();
  j.erase("text_config");
  EXPECT_THAT(error_of(j), HasSubstr("only the text model of a Gemma-3 checkpoint"));
  j = gemma3_4b();
  j["text_config"]["model_type"] = "siglip_vision_model";
  EXPECT_THAT(error_of(j), HasSubstr("text_config.model_type 'siglip_vision_model' is not gemma3_text"));
  j = gemma3_4b();
  j["text_config"]["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 8.0}};
  EXPECT_THAT(error_of(j), HasSubstr("rope type 'yarn' is not supported on gemma3"));
  j = gemma2_2b();
  j["layer_types"] = {"sliding_attention", "full_attention"};
  EXPECT_THAT(error_of(j), HasSubstr("'layer_types' must list one of sliding_attention / full_attention per layer (26 layers)"));
  j["layer_types"] = json::array();
  for (int l = 0; l < 26; ++l) j["layer_types"].push_back(l == 3 ? "chunked_attention" : "full_attention");
  EXPECT_THAT(error_of(j), HasSubstr("layer_types[3] is \"chunked_attention\""));
  j = gemma2_2b();
  j["sliding_window"] = nullptr;
  EXPECT_THAT(error_of(j), HasSubstr("'sliding_window' is null"));
  j = gemma2_2b();
  j["query_pre_attn_scalar"] = nullptr;
  EXPECT_THAT(error_of(j), HasSubstr("'query_pre_attn_scalar' is null"));
  j = gemma2_2b();
  j["final_logit_softcapping"] = -1;
  EXPECT_THAT(error_of(j), HasSubstr("'final_logit_softcapping' must be a positive number or null"));
  j = gemma2_2b();
  j["hidden_activation"] = "gelu_fast";
  EXPECT_THAT(error_of(j), HasSubstr("hidden_activation 'gelu_fast' is not supported"));
  j = gemma2_2b();
  j["hidden_act"] = "silu";  // Gemma2MLP reads hidden_activation only
  EXPECT_EQ(parse_model_config(j.dump()).hidden_act, Activation::gelu_tanh);
  j = json{{"model_type", "gemma3_text"}, {"sliding_window_pattern", 0}};
  EXPECT_THAT(error_of(j), HasSubstr("sliding_window_pattern 0 must be"));
}

}  // namespace
}  // namespace kvlab::harness
