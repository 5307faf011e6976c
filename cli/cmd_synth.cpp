// kvlab synth: a synthetic KV dump whose structure is known (datasets/synth_kv.h).
#include <fmt/format.h>

#include <memory>

#include "cli/commands.h"
#include "datasets/synth_kv.h"

namespace kvlab::cli {
namespace {

void add_synth_options(CLI::App& cmd, datasets::SynthConfig& c, std::string& dtype) {
  cmd.add_option("--layers", c.layers, "Layers L")->check(positive())->capture_default_str();
  cmd.add_option("--kv-heads", c.kv_heads, "KV heads H_kv")->check(positive())->capture_default_str();
  cmd.add_option("--q-heads", c.q_heads, "Query heads H_q (a multiple of H_kv: GQA)")->check(positive())
      ->capture_default_str();
  cmd.add_option("--head-dim", c.head_dim, "Head dimension D")->check(positive())->capture_default_str();
  cmd.add_option("--tokens", c.tokens, "Tokens T per sample")->check(positive())->capture_default_str();
  cmd.add_option("--query-window", c.query_window, "Queries stored for the last W tokens")->capture_default_str();
  cmd.add_option("--samples", c.samples, "Samples (s0, s1, ...)")->check(positive())->capture_default_str();
  cmd.add_option("--key-rank", c.key_rank, "Planted rank of each key layer's signal (0: H·D/4)")->capture_default_str();
  cmd.add_option("--value-rank", c.value_rank, "Planted rank of each value layer's signal (0: H·D/2)")
      ->capture_default_str();
  cmd.add_option("--key-decay", c.key_decay, "Spectral decay of keys: σ_k = decay^k")->capture_default_str();
  cmd.add_option("--value-decay", c.value_decay, "Spectral decay of values")->capture_default_str();
  cmd.add_option("--layer-drift", c.layer_drift,
                 "How far the keys' token subspace moves from one layer to the next (0 = shared, 1 = independent)")
      ->capture_default_str();
  cmd.add_option("--value-drift", c.value_drift, "The same for values")->capture_default_str();
  cmd.add_option("--noise", c.noise, "Isotropic noise floor, relative to the signal RMS (0 = exact planted rank)")
      ->capture_default_str();
  cmd.add_option("--outlier-channels", c.outlier_channels, "Key channels with large magnitude")->capture_default_str();
  cmd.add_option("--outlier-scale", c.outlier_scale, "Scale of their offset and spread relative to typical channels")->capture_default_str();
  cmd.add_option("--sink-tokens", c.sink_tokens, "Leading attention-sink tokens")->capture_default_str();
  cmd.add_option("--sink-scale", c.sink_scale, "Their norm relative to an ordinary key row's expected norm")
      ->capture_default_str();
  cmd.add_option("--query-logit", c.query_logit, "Each query's logit on its target token (attention peak)")
      ->capture_default_str();
  cmd.add_option("--sink-logit", c.sink_logit, "Each query's logit on the sink tokens")->capture_default_str();
  cmd.add_option("--dtype", dtype, "Storage type: f32, f16 or bf16")->check(CLI::IsMember({"f32", "f16", "bf16"}))
      ->capture_default_str();
  cmd.add_option("--seed", c.seed, "Random seed (same seed, same bytes)")->capture_default_str();
}

}  // namespace

void add_synth(CLI::App& app, Action& action) {
  auto config = std::make_shared<datasets::SynthConfig>();
  auto dtype = std::make_shared<std::string>("f16");
  auto out = std::make_shared<std::filesystem::path>();
  auto* cmd = app.add_subcommand("synth", "Write a synthetic KV dump with known structure (the test and demo fixture)");
  cmd->footer(
      "Structure: per-layer planted rank and spectral decay; a token subspace shared by adjacent layers\n"
      "(high CKA, low token-wise cosine, as xKV reports); outlier channels in keys; attention-sink tokens;\n"
      "a query window. Example (the bench input, about 2 GiB):\n"
      "  kvlab synth --layers 32 --kv-heads 8 --head-dim 128 --tokens 16384 --out x.h5");
  add_synth_options(*cmd, *config, *dtype);
  cmd->add_option("--out", *out, "Output dump (.h5); written atomically")->required();
  cmd->callback([=, &action] {
    action = [=] {
      config->dtype = core::parse_dtype(*dtype);
      datasets::write_synthetic_dump(*config, *out);
      fmt::print("wrote {}: {} layers × {} tokens × {} KV heads × {} dims ({}), {} sample(s), seed {}\n", out->string(),
                 config->layers, config->tokens, config->kv_heads, config->head_dim, *dtype, config->samples,
                 config->seed);
    };
  });
}

}  // namespace kvlab::cli
