// kvlab make-tiny-model: a small Llama-family checkpoint folder with seeded random weights and a
// tokenizer trained on kvlab's own text, for tests, the demo and trying `kvlab dump` offline.
#include <fmt/format.h>

#include <memory>

#include "cli/commands.h"
#include "cli/output_dir.h"
#include "harness/tiny_model.h"

namespace kvlab::cli {

void add_make_tiny_model(CLI::App& app, Action& action) {
  auto o = std::make_shared<harness::TinyModelOptions>();
  auto out = std::make_shared<std::filesystem::path>();
  auto* cmd = app.add_subcommand("make-tiny-model",
                                 "Write a tiny Hugging Face-style checkpoint (random weights, trained tokenizer)");
  cmd->footer(
      "The folder holds config.json, generation_config.json, model.safetensors and the family's\n"
      "tokenizer files (llama, qwen2, qwen3, qwen3_moe: a byte-level BPE tokenizer.json; mistral,\n"
      "mixtral, phi3, gemma2, gemma3: a sentencepiece tokenizer.model), so `kvlab dump` loads it exactly as a downloaded\n"
      "checkpoint. mixtral and qwen3_moe have a sparse mixture-of-experts MLP (--experts,\n"
      "--experts-per-token; qwen3_moe's experts are --moe-intermediate wide). Weights are\n"
      "seeded (same options, same bytes); --layer-similarity > 0 makes adjacent layers alike, so the\n"
      "cross-layer structure xKV exploits appears in the dumped caches.\n\n"
      "Example: kvlab make-tiny-model --arch qwen2 --layers 8 --layer-similarity 0.8 --out tiny-qwen");
  cmd->add_option("--arch", o->arch,
                  "Family: llama (llama3 RoPE), qwen2 (q/k/v bias, NFC), mistral (sentencepiece), "
                  "qwen3 (q/k norm, head_dim 2·hidden/heads, tied embeddings), mixtral (mistral with sparse "
                  "MoE), qwen3_moe (qwen3's attention with sparse MoE, norm_topk_prob, untied), phi3 (fused "
                  "qkv_proj / gate_up_proj, partial rotary 0.75, tied embeddings), gemma2 (soft-capping, even layers "
                  "sliding), gemma3 (q/k norm, local RoPE on sliding layers, linear RoPE x8 on global ones)")
      ->check(CLI::IsMember({"llama", "qwen2", "mistral", "qwen3", "mixtral", "qwen3_moe", "phi3", "gemma2", "gemma3"}))
      ->capture_default_str();
  cmd->add_option("--layers", o->layers, "Decoder layers")->check(positive())->capture_default_str();
  cmd->add_option("--hidden", o->hidden, "Model width d_model")->check(positive())->capture_default_str();
  cmd->add_option("--heads", o->heads, "Query heads H_q")->check(positive())->capture_default_str();
  cmd->add_option("--kv-heads", o->kv_heads, "Key/value heads H_kv (divides --heads: GQA)")->check(positive())
      ->capture_default_str();
  cmd->add_option("--head-dim", o->head_dim, "Head dimension D (0: hidden / heads)")->capture_default_str();
  cmd->add_option("--intermediate", o->intermediate, "MLP width (mixtral: each expert's)")->check(positive())
      ->capture_default_str();
  cmd->add_option("--experts", o->experts, "mixtral, qwen3_moe: experts per sparse layer")->check(positive())
      ->capture_default_str();
  cmd->add_option("--experts-per-token", o->experts_per_token, "mixtral, qwen3_moe: experts each token routes to (top-k)")
      ->check(positive())->capture_default_str();
  cmd->add_option("--moe-intermediate", o->moe_intermediate, "qwen3_moe: each expert's MLP width (moe_intermediate_size)")
      ->check(positive())->capture_default_str();
  cmd->add_option("--vocab", o->vocab, "Tokenizer vocabulary size to train")->check(CLI::Range(300, 100000))
      ->capture_default_str();
  cmd->add_option("--layer-similarity", o->layer_similarity,
                  "Correlation of adjacent layers' weights, in [0, 1) (0: independent layers)")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "Storage dtype of model.safetensors")
      ->check(CLI::IsMember({"bfloat16", "float16", "float32"}))->capture_default_str();
  cmd->add_option("--max-position", o->max_position_embeddings, "max_position_embeddings")
      ->check(positive())->capture_default_str();
  cmd->add_option("--longrope-original-max", o->longrope_original_max,
                  "phi3: LongRoPE with this original_max_position_embeddings (prompts longer than it use the long "
                  "factors; 0: no rope_scaling)")->capture_default_str();
  cmd->add_option("--out", *out, "Output folder (created; kvlab's files in it replaced)")->required();
  cmd->callback([=, &action] {
    action = [=] {
      create_output_directory(*out, "--out");  // kvlab's files in it are replaced, others kept
      const auto config = harness::write_tiny_model(*out, *o);
      fmt::print("wrote {}: {}\n", out->string(), config.describe());
    };
  });
}

}  // namespace kvlab::cli
