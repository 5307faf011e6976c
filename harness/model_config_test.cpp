// config.json leniency (docs/models.md §1.2): each rule against a config written the way
// the real checkpoints (or transformers v5) write it; every malformed field an error naming it.
#include "harness/model_config.h"
#include "harness/model_config_error.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace kvlab::harness {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

// Llama-3.1-8B's config.json (docs/models.md §1.1), without head_dim as older saves have it.
json llama31() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "max_position_embeddings": 131072, "tie_word_embeddings": false, "vocab_size": 128256,
    "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16"})");
}

TEST(ModelConfig, Llama31ComputesHeadDimAndReadsLlama3Rope) {
  const auto c = parse_model_config(llama31().dump());
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.n_rep(), 4);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int>{128001, 128008, 128009}));
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.sliding_window);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  // The llama3 rule divides the lowest frequency by 8: inv[63] ≈ 3.0689e-7 (docs/models.md §2.3).
  ASSERT_EQ(c.rope.inv_freq().size(), 64u);
  EXPECT_NEAR(c.rope.inv_freq()[63], 3.0689e-7, 1e-10);
}

TEST(ModelConfig, TypeKeyAndV5RopeParametersGiveTheSameFrequencies) {
  const auto reference = parse_model_config(llama31().dump()).rope.inv_freq();
  json legacy = llama31();
  legacy["rope_scaling"].erase("rope_type");
  legacy["rope_scaling"]["type"] = "llama3";
  EXPECT_EQ(parse_model_config(legacy.dump()).rope.inv_freq(), reference);
  json v5 = llama31();
  v5["rope_parameters"] = v5["rope_scaling"];
  v5["rope_parameters"]["rope_theta"] = 500000.0;
  v5.erase("rope_scaling");
  v5.erase("rope_theta");
  EXPECT_EQ(parse_model_config(v5.dump()).rope.inv_freq(), reference);
}

TEST(ModelConfig, ExplicitHeadDimWinsAndEosMayBeAnInt) {
  json j = llama31();
  j["head_dim"] = 64;  // Mistral-Nemo style: heads · head_dim ≠ hidden_size
  j["eos_token_id"] = 2;
  j.erase("torch_dtype");
  j["dtype"] = "float16";
  const auto c = parse_model_config(j.dump());
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int>{2}));
  EXPECT_EQ(c.torch_dtype, "float16");
}

TEST(ModelConfig, Qwen2HasQkvBiasButNoOutputBiasAndIgnoresAnUnusedWindow) {
  json j = llama31();
  j["model_type"] = "qwen2";
  j["sliding_window"] = 131072;
  j["use_sliding_window"] = false;
  j.erase("rope_scaling");
  const auto c = parse_model_config(j.dump());
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.sliding_window);
  j["use_sliding_window"] = true;
  EXPECT_THAT(error_of(j), HasSubstr("use_sliding_window"));
}

// Qwen3-0.6B's config.json as published (transformers 4.51 save): explicit head_dim 128 ≠
// 1024 / 16, tied embeddings, a sliding_window key that use_sliding_window: false switches off.
json qwen3_06b() {
  return json::parse(R"({
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
    "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
    "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
    "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})");
}

TEST(ModelConfig, Qwen3HasQkNormExplicitHeadDimTiedEmbeddingsAndNoBias) {
  const auto c = parse_model_config(qwen3_06b().dump());
  EXPECT_EQ(c.model_type, "qwen3");
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_NE(c.head_dim, c.hidden_size / c.num_heads);
  EXPECT_EQ(c.n_rep(), 2);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_FALSE(c.sliding_window);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int>{151645}));
  ASSERT_EQ(c.rope.inv_freq().size(), 64u);
  EXPECT_NEAR(c.rope.inv_freq()[1], std::pow(1e6, -2.0 / 128), 1e-7);  // θ = 10⁶ over D = 128, stored as f32
  EXPECT_THAT(c.describe(), HasSubstr("qk-norm"));
  // Other families have no q/k norm.
  EXPECT_FALSE(parse_model_config(llama31().dump()).qk_norm);
  // attention_bias: true biases q, k, v and o (Qwen3Attention passes it to all four).
  json biased = qwen3_06b();
  biased["attention_bias"] = true;
  const auto b = parse_model_config(biased.dump());
  EXPECT_TRUE(b.qkv_bias);
  EXPECT_TRUE(b.o_bias);
  biased["mlp_bias"] = true;  // not a Qwen3 key: Qwen3MLP never has a bias
  EXPECT_FALSE(parse_model_config(biased.dump()).mlp_bias);
  // A window value is ignored while use_sliding_window is false.
  json windowed = qwen3_06b();
  windowed["sliding_window"] = 4096;
  EXPECT_FALSE(parse_model_config(windowed.dump()).sliding_window);
}

TEST(ModelConfig, Qwen3DefaultsAreQwen3ConfigsNotTheLlamaRules) {
  // configuration_qwen3.py: head_dim defaults to 128 and num_key_value_heads to 32, constants,
  // not hidden_size / num_attention_heads and num_attention_heads.
  json j = qwen3_06b();
  j.erase("head_dim");
  j["num_attention_heads"] = 64;
  j.erase("num_key_value_heads");
  const auto c = parse_model_config(j.dump());
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.num_kv_heads, 32);
  j["num_attention_heads"] = 16;
  EXPECT_THAT(error_of(j), HasSubstr("num_key_value_heads 32 (absent: Qwen3Config's default) must divide "
                                     "num_attention_heads 16"));
}

TEST(ModelConfig, Qwen3ErrorsNameTheMissingKeyAndRefuseSlidingWindows) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads"}) {
    json j = qwen3_06b();
    j.erase(key);
    EXPECT_THAT(error_of(j), HasSubstr(fmt::format("'{}' is missing", key))) << key;
  }
  json j = qwen3_06b();
  j.erase("model_type");
  EXPECT_THAT(error_of(j), HasSubstr("model_type '' is not supported (llama, qwen2, mistral, qwen3, mixtral, qwen3_moe, phi3, gemma2"));
  j = qwen3_06b();
  j["model_type"] = "qwen2_moe";  // Qwen2-MoE's shared expert is not modelled
  EXPECT_THAT(error_of(j), HasSubstr("model_type 'qwen2_moe' is not supported"));
  j = qwen3_06b();
  j["head_dim"] = 127;
  EXPECT_THAT(error_of(j), HasSubstr("head_dim 127 must be positive and even"));
  j = qwen3_06b();
  j["use_sliding_window"] = true;
  j["sliding_window"] = 4096;
  const auto error = error_of(j);
  EXPECT_THAT(error, HasSubstr("use_sliding_window: true is not supported for qwen3"));
  EXPECT_THAT(error, HasSubstr("separate item"));
  j["use_sliding_window"] = "yes";
  EXPECT_THAT(error_of(j), HasSubstr("'use_sliding_window' must be true or false"));
}

TEST(ModelConfig, MistralV01KeepsItsSlidingWindowAndMhaWhenKvHeadsAbsent) {
  json j = llama31();
  j["model_type"] = "mistral";
  j["sliding_window"] = 4096;
  j.erase("num_key_value_heads");
  j.erase("rope_scaling");
  const auto c = parse_model_config(j.dump());
  EXPECT_EQ(c.sliding_window, 4096);
  EXPECT_EQ(c.num_kv_heads, 32);
  EXPECT_EQ(c.n_rep(), 1);
}

// A Phi-3-mini-4k-instruct-style config.json (its published fields: MHA 32/32, sliding_window
// 2047, rope_scaling null, untied; docs/models.md §8.1).
json phi3_mini_4k() {
  return json::parse(R"({
    "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 3072,
    "intermediate_size": 8192, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 32, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "rope_scaling": null,
    "sliding_window": 2047, "max_position_embeddings": 4096, "original_max_position_embeddings": 4096,
    "attention_bias": false, "hidden_act": "silu", "tie_word_embeddings": false, "vocab_size": 32064,
    "bos_token_id": 1, "eos_token_id": 32000, "pad_token_id": 32000, "torch_dtype": "bfloat16"})");
}

TEST(ModelConfig, Phi3HasFusedProjectionsItsWindowAndNoBias) {
  const auto c = parse_model_config(phi3_mini_4k().dump());
  EXPECT_TRUE(c.fused_projections);
  EXPECT_EQ(c.head_dim, 96);
  EXPECT_EQ(c.num_kv_heads, 32);
  EXPECT_EQ(c.sliding_window, 2047);  // Phi3Model masks every layer with it
  EXPECT_FALSE(c.qkv_bias || c.o_bias || c.mlp_bias || c.qk_norm || c.moe);
  EXPECT_EQ(c.rope.rotary_dim(), 96);
  EXPECT_NE(c.describe().find("fused-qkv/gate-up"), std::string::npos) << c.describe();
  // Phi3Attention / Phi3MLP have bias=False whatever attention_bias / mlp_bias say.
  json j = phi3_mini_4k();
  j["attention_bias"] = j["mlp_bias"] = true;
  const auto b = parse_model_config(j.dump());
  EXPECT_FALSE(b.qkv_bias || b.o_bias || b.mlp_bias);
  // Phi3Config's defaults: num_key_value_heads → num_attention_heads, rms_norm_eps 1e-5, θ 10⁴.
  j = phi3_mini_4k();
  for (const char* key : {"num_key_value_heads", "rms_norm_eps", "rope_theta", "sliding_window"}) j.erase(key);
  const auto d = parse_model_config(j.dump());
  EXPECT_EQ(d.num_kv_heads, 32);
  EXPECT_EQ(d.rms_norm_eps, 1e-5);
  EXPECT_EQ(d.rope.inv_freq(), core::torch_default_inv_freq(96, 10000.0));
  EXPECT_FALSE(d.sliding_window);
  // Phi-4-mini's attention: GQA 24/8, partial_rotary_factor 0.75 → 96 of D = 128 channels rotate.
  j = phi3_mini_4k();
  j["num_attention_heads"] = 24;
  j["num_key_value_heads"] = 8;
  j["partial_rotary_factor"] = 0.75;
  const auto p = parse_model_config(j.dump());
  EXPECT_EQ(p.head_dim, 128);
  EXPECT_EQ(p.rope.rotary_dim(), 96);
  EXPECT_EQ(p.rope.inv_freq(), core::torch_default_inv_freq(96, 10000.0));
}

TEST(ModelConfig, Phi3LongRopeUnderEachNameAndTypeKey) {
  // Phi-3-mini-128k's layout: max_position_embeddings 131072, original 4096, rope_scaling with
  // 48 short and 48 long factors (head_dim 96). Phi3Config reads "su" and "yarn" as LongRoPE.
  std::vector<double> short_f, long_f;
  for (int i = 0; i < 48; ++i) short_f.push_back(1.0 + 0.01 * i), long_f.push_back(1.0 + 1.1 * i);
  const auto powers = core::torch_rope_powers(96, 10000.0);
  for (const char* type : {"longrope", "su", "yarn"})
    for (const char* key : {"rope_type", "type"}) {
      json j = phi3_mini_4k();
      j["max_position_embeddings"] = 131072;
      j["rope_scaling"] = {{key, type}, {"short_factor", short_f}, {"long_factor", long_f}};
      const auto c = parse_model_config(j.dump());
      ASSERT_TRUE(c.rope.is_length_dependent()) << type;
      EXPECT_EQ(c.rope.original_max_position(), 4096);
      // attention_factor = sqrt(1 + ln(131072 / 4096) / ln(4096)) (_compute_longrope_parameters)
      EXPECT_EQ(c.rope.attention_factor(), static_cast<float>(std::sqrt(1.0 + std::log(32.0) / std::log(4096.0))));
      for (int i = 0; i < 48; ++i) {  // 1.0 / (ext_factors * base**inv_freq_shape), each op in f32
        EXPECT_EQ(c.rope.for_length(4096).inv_freq()[i], 1.0f / (static_cast<float>(short_f[i]) * powers[i])) << i;
        EXPECT_EQ(c.rope.for_length(4097).inv_freq()[i], 1.0f / (static_cast<float>(long_f[i]) * powers[i])) << i;
      }
    }
  // transformers v5's rope_parameters, original_max inside it; Phi3Config's defaults (4096 for
  // both lengths: factor 1, attention factor 1) when the config leaves them out.
  json j = phi3_mini_4k();
  j.erase("original_max_position_embeddings");
  j.erase("max_position_embeddings");
  j["rope_parameters"] = {{"rope_type", "longrope"}, {"rope_theta", 10000.0}, {"short_factor", short_f},
                          {"long_factor", long_f}, {"original_max_position_embeddings", 2048}};
  auto c = parse_model_config(j.dump());
  EXPECT_EQ(c.rope.original_max_position(), 2048);
  EXPECT_EQ(c.rope.attention_factor(), static_cast<float>(std::sqrt(1.0 + std::log(2.0) / std::log(2048.0))));
  j["rope_parameters"].erase("original_max_position_embeddings");
  c = parse_model_config(j.dump());
  EXPECT_EQ(c.rope.original_max_position(), 4096);
  EXPECT_EQ(c.rope.attention_factor(), 1.0f);
  // A factor list of the wrong length is an error naming it.
  j["rope_parameters"]["long_factor"] = std::vector<double>(47, 1.0);
  EXPECT_THAT(error_of(j), HasSubstr("long_factor has 47 entries"));
  // Phi3Config.validate_rope accepts no other type (kvlab would otherwise run linear scaling).
  j = phi3_mini_4k();
  j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 2.0}};
  try {
    parse_model_config(j.dump());
    ADD_FAILURE() << "accepted linear scaling on phi3";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("rope_scaling.rope_type 'linear' is not a phi3 rope type"));
  }
  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(parse_model_config(j.dump()).rope.inv_freq(), core::torch_default_inv_freq(96, 10000.0));
}

TEST(ModelConfig, ErrorsNameTheField) {
  json j = llama31();
  j.erase("num_hidden_layers");
  EXPECT_THAT(error_of(j), HasSubstr("num_hidden_layers"));
  j = llama31();
  j["num_key_value_heads"] = 5;
  EXPECT_THAT(error_of(j), HasSubstr("num_key_value_heads 5 must divide"));
  j = llama31();
  j["model_type"] = "gemma";  // Gemma-1 is not modelled
  EXPECT_THAT(error_of(j), HasSubstr("gemma"));
  j = llama31();
  j["eos_token_id"] = "x";
  EXPECT_THAT(error_of(j), HasSubstr("eos_token_id"));
  j = llama31();
  j["rope_scaling"]["rope_type"] = "yarn";
  EXPECT_THAT(error_of(j), HasSubstr("yarn"));
  EXPECT_THAT([] {
    try {
      parse_model_config("{not json", "x/config.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }(), HasSubstr("x/config.json"));
}

TEST(ModelConfig, EveryIntegerIsCheckedAgainstIntsRangeByName) {
  // 2**40 passed a 64-bit positivity check, then wrapped to 0 as an int (a division by zero, or
  // "head_dim 0"); 2**31 is the first value past int's maximum, -2**31 - 1 the first below its minimum.
  const long long two40 = 1LL << 40, past_max = 1LL << 31, past_min = -(1LL << 31) - 1;
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                          "num_key_value_heads", "head_dim", "max_position_embeddings", "bos_token_id",
                          "eos_token_id", "sliding_window"}) {
    for (long long bad : {two40, past_max, past_min}) {
      json j = llama31();
      j["model_type"] = "mistral";  // reads sliding_window
      j[key] = bad;
      EXPECT_THAT(error_of(j), HasSubstr(fmt::format("'{}' = {} is outside the range", key, bad))) << key;
    }
  }
  json j = llama31();
  j["eos_token_id"] = json::array({128001, two40});
  EXPECT_THAT(error_of(j), HasSubstr("'eos_token_id' = 1099511627776 is outside"));
  j = llama31();
  j.erase("num_key_value_heads");
  j["num_attention_heads"] = 2147483647;  // in range: checked by the divisibility rule instead
  EXPECT_THAT(error_of(j), HasSubstr("not divisible by num_attention_heads 2147483647"));
}

TEST(ModelConfig, FieldsOfTheWrongJsonTypeAreNamed) {
  json j = llama31();
  j["model_type"] = 7;
  EXPECT_THAT(error_of(j), HasSubstr("'model_type' must be a string"));
  j = llama31();
  j["torch_dtype"] = 16;
  EXPECT_THAT(error_of(j), HasSubstr("'torch_dtype' must be a string"));
  j = llama31();
  j["hidden_act"] = json::array({"silu"});
  EXPECT_THAT(error_of(j), HasSubstr("'hidden_act' must be a string"));
  j = llama31();
  j["num_attention_heads"] = 32.5;
  EXPECT_THAT(error_of(j), HasSubstr("'num_attention_heads' must be an integer"));
}

TEST(ModelConfig, HiddenActNamesTransformersActivationsAndRefusesOthers) {
  json j = llama31();
  EXPECT_EQ(parse_model_config(j.dump()).hidden_act, Activation::silu);  // absent: LlamaConfig's default
  const std::pair<const char*, Activation> known[] = {
      {"silu", Activation::silu}, {"swish", Activation::silu}, {"gelu", Activation::gelu},
      {"gelu_new", Activation::gelu_tanh}, {"gelu_pytorch_tanh", Activation::gelu_tanh}, {"relu", Activation::relu}};
  for (const auto& [name, act] : known) {
    j["hidden_act"] = name;
    EXPECT_EQ(parse_model_config(j.dump()).hidden_act, act) << name;
  }
  j["hidden_act"] = "gelu";
  EXPECT_THAT(parse_model_config(j.dump()).describe(), HasSubstr("act=gelu"));
  j["hidden_act"] = "quick_gelu";
  const auto message = error_of(j);
  EXPECT_THAT(message, HasSubstr("hidden_act 'quick_gelu' is not supported"));
  EXPECT_THAT(message, HasSubstr("gelu_pytorch_tanh"));
}

TEST(ModelConfig, LoadMergesGenerationConfigStopTokens) {
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("kvlab_cfg_{}", ::getpid());
  std::filesystem::create_directories(dir);
  json j = llama31();
  j["eos_token_id"] = 128001;
  std::ofstream(dir / "config.json") << j.dump();
  std::ofstream(dir / "generation_config.json") << R"({"eos_token_id": [128001, 128009]})";
  const auto c = load_model_config(dir);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int>{128001, 128009}));
  std::filesystem::remove_all(dir);
  try {
    load_model_config(dir);
    ADD_FAILURE() << "loaded a missing folder";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("config.json"));
  }
}

}  // namespace
}  // namespace kvlab::harness
