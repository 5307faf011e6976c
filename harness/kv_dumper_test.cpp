// The dump job end to end on tiny checkpoints of each family. Oracles independent of the
// libtorch model: layer 0's attention input recomputed on the CPU from the checkpoint
// (RMSNorm of the embedding rows, in double), and at every layer the dumped keys, values and
// queries equal the dumped attention input times the checkpoint's k/v/q weights (+ bias) —
// so what the dump calls pre-RoPE keys is exactly k_proj(x) + b_k (Qwen3: k_norm of it, RMSNorm
// over each head's D channels, and the root attributes key_norm / query_norm say so).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "compressors/cache_source.h"
#include "compressors/chain.h"
#include "compressors/score.h"
#include "compressors/spec.h"
#include "core/error.h"
#include "core/kv_dump.h"
#include "core/safetensors.h"
#include "harness/dump_job.h"
#include "harness/model_config.h"
#include "harness/tiny_model.h"
#include "linalg/backend.h"
#include "harness/tokenizer/chat_template.h"

namespace kvlab::harness {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class DumpJob : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("kvlab_dumpjob_{}_{}", GetParam(), ::getpid());
    fs::remove_all(dir_);
    TinyModelOptions o;
    o.arch = GetParam();
    o.layers = 3;
    o.layer_similarity = 0.5;
    write_tiny_model(dir_ / "model", o);
    std::ofstream(dir_ / "prompts.jsonl")
        << R"({"id": "a", "context": "kvlab dumps the KV cache of every layer to HDF5.", "question": "What is dumped?"})" "\n"
        << R"({"id": "b", "context": "Cross-layer SVD groups adjacent layers 🙂 and 日本語 text.", "question": "Why?"})" "\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  DumpRequest request() const {
    DumpRequest r;
    r.model = dir_ / "model";
    r.prompts = dir_ / "prompts.jsonl";
    r.query_window = 4;
    r.attn_in = true;
    r.dtype = "f32";
    r.out = dir_ / "x.h5";
    return r;
  }
  fs::path dir_;
};

// y[t, :] = x[t, :] · Wᵀ (+ b), in double.
std::vector<double> project(const core::FloatTensor& x, const core::FloatTensor& w, const core::FloatTensor* b) {
  const auto T = x.shape[0], in = x.shape[1], out = w.shape[0];
  std::vector<double> y(T * out);
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t o = 0; o < out; ++o) {
      double s = b ? b->data[o] : 0.0;
      for (std::int64_t i = 0; i < in; ++i) s += double(x.data[t * in + i]) * w.data[o * in + i];
      y[t * out + o] = s;
    }
  return y;
}

// Qwen3's and Gemma-3's q_norm / k_norm on y [T, heads·D]: RMSNorm over each head's D channels,
// in double; Gemma's scales by (1 + w) (unit_offset 1), Qwen3's by w.
void head_norm(std::vector<double>& y, const core::FloatTensor& weight, double eps, double unit_offset) {
  const auto D = static_cast<std::size_t>(weight.shape[0]);
  for (std::size_t h0 = 0; h0 < y.size(); h0 += D) {
    double ms = 0;
    for (std::size_t e = 0; e < D; ++e) ms += y[h0 + e] * y[h0 + e] / D;
    const double r = 1 / std::sqrt(ms + eps);
    for (std::size_t e = 0; e < D; ++e) y[h0 + e] *= r * (unit_offset + weight.data[e]);
  }
}

// Layer weight "q", "k" or "v" (prefix p = "model.layers.{l}.self_attn."): its own tensor, or its
// rows of Phi-3's fused qkv_proj (q: H_q·D rows, then k and v: H_kv·D each; docs/models.md §8).
core::FloatTensor projection(const core::Checkpoint& ckpt, const ModelConfig& config, const std::string& p, char which) {
  if (!config.fused_projections) return ckpt.tensor(p + which + "_proj.weight");
  const auto fused = ckpt.tensor(p + "qkv_proj.weight");
  const std::int64_t in = fused.shape[1], q_rows = std::int64_t{config.num_heads} * config.head_dim,
                     kv_rows = std::int64_t{config.num_kv_heads} * config.head_dim;
  const std::int64_t first = which == 'q' ? 0 : which == 'k' ? q_rows : q_rows + kv_rows;
  const std::int64_t rows = which == 'q' ? q_rows : kv_rows;
  core::FloatTensor w({rows, in});
  std::copy_n(fused.data.begin() + first * in, rows * in, w.data.begin());
  return w;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<float>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

TEST_P(DumpJob, DumpedTensorsAreTheCheckpointsProjections) {
  const auto summary = run_dump(request());
  EXPECT_THAT(summary, HasSubstr("2 sample(s)"));
  core::DumpReader dump(dir_ / "x.h5");
  const auto& info = dump.info();
  const ModelConfig config = load_model_config(dir_ / "model");
  EXPECT_EQ(info.num_layers, 3);
  EXPECT_EQ(info.num_kv_heads, config.num_kv_heads);
  EXPECT_EQ(info.d_model, config.hidden_size);
  EXPECT_EQ(info.model_config, config.json);
  EXPECT_EQ(info.model_id, "model");
  EXPECT_EQ(info.chat_template, "own");  // auto: every tiny family ships a template (tiny_tokenizer.cpp)
  EXPECT_EQ(info.key_norm, config.qk_norm ? "k_norm before RoPE" : "");
  EXPECT_EQ(info.query_norm, config.qk_norm ? "q_norm before RoPE" : "");
  // Per-layer windows: the tiny Gemmas (3 layers) slide on layers 0 and 2 with max_position / 64
  // = 128 keys (Gemma-2's even layers; Gemma-3's pattern 2 below 6 layers); no other tiny family
  // has a window. Gemma-3's sliding layers rotate with their own RoPE, which the dump says.
  const bool gemma = GetParam() == "gemma2" || GetParam() == "gemma3";
  EXPECT_EQ(info.layer_windows, gemma ? (std::vector<int>{128, 0, 128}) : std::vector<int>());
  EXPECT_EQ(info.layer_rope.empty(), GetParam() != "gemma3");
  ASSERT_EQ(dump.sample_ids(), (std::vector<std::string>{"a", "b"}));

  core::Checkpoint ckpt(dir_ / "model");
  for (const auto& id : dump.sample_ids()) {
    const auto meta = dump.sample(id);
    EXPECT_EQ(meta.query_window, 4);
    EXPECT_GT(meta.context_end, 0);
    EXPECT_LT(meta.context_end, meta.num_tokens);

    // Layer 0's attention input, recomputed from the embedding rows: RMSNorm in double.
    const auto embed = ckpt.tensor("model.embed_tokens.weight");
    const auto norm = ckpt.tensor("model.layers.0.input_layernorm.weight");
    const auto d = config.hidden_size;
    const auto attn_in0 = dump.read_layer(id, 0, core::KvKind::attn_in);
    std::vector<double> expected(meta.num_tokens * d);
    // Gemma: the embedding rows × √d, and the norm's weight used as (1 + w) (docs/models.md §9.3).
    const double scale = config.scale_embeddings ? std::sqrt(double(d)) : 1.0, offset = config.unit_offset_norm;
    for (std::int64_t t = 0; t < meta.num_tokens; ++t) {
      const float* e = &embed.data[meta.tokens[t] * d];
      double ms = 0;
      for (int i = 0; i < d; ++i) ms += scale * e[i] * scale * e[i];
      const double r = 1 / std::sqrt(ms / d + config.rms_norm_eps);
      for (int i = 0; i < d; ++i) expected[t * d + i] = scale * e[i] * r * (offset + norm.data[i]);
    }
    EXPECT_LT(max_abs_diff(expected, attn_in0.data), 1e-4) << id;  // f32 compute vs double

    for (int l = 0; l < config.num_layers; ++l) {
      const auto x = dump.read_layer(id, l, core::KvKind::attn_in);
      const auto p = fmt::format("model.layers.{}.self_attn.", l);
      const auto bias = [&](const char* n) {
        return config.qkv_bias ? std::optional(ckpt.tensor(p + n + "_proj.bias")) : std::nullopt;
      };
      const auto bk = bias("k"), bv = bias("v"), bq = bias("q");
      auto k = project(x, projection(ckpt, config, p, 'k'), bk ? &*bk : nullptr);
      const auto v = project(x, projection(ckpt, config, p, 'v'), bv ? &*bv : nullptr);
      auto q = project(x, projection(ckpt, config, p, 'q'), bq ? &*bq : nullptr);
      if (config.qk_norm) {
        head_norm(k, ckpt.tensor(p + "k_norm.weight"), config.rms_norm_eps, config.unit_offset_norm);
        head_norm(q, ckpt.tensor(p + "q_norm.weight"), config.rms_norm_eps, config.unit_offset_norm);
      }
      EXPECT_LT(max_abs_diff(k, dump.read_layer(id, l, core::KvKind::key).data), 1e-4) << id << " layer " << l;
      EXPECT_LT(max_abs_diff(v, dump.read_layer(id, l, core::KvKind::value).data), 1e-4) << id << " layer " << l;
      // The query window is the last W rows.
      const auto W = meta.query_window, width = config.num_heads * config.head_dim;
      const std::vector<double> q_last(q.end() - W * width, q.end());
      EXPECT_LT(max_abs_diff(q_last, dump.read_layer(id, l, core::KvKind::query).data), 1e-4) << id << " layer " << l;
    }
  }
}

TEST_P(DumpJob, BadInputFailsBeforeWritingAnything) {
  auto r = request();
  r.max_tokens = 3;  // shorter than any question part
  EXPECT_THROW(run_dump(r), Error);
  r = request();
  r.chat_template = "chatml";
  EXPECT_THROW(run_dump(r), Error);
  r = request();
  r.text = dir_ / "prompts.jsonl";  // both sources
  EXPECT_THROW(run_dump(r), Error);
  EXPECT_FALSE(fs::exists(dir_ / "x.h5"));
  for (const auto& e : fs::directory_iterator(dir_)) EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos);
}

TEST_P(DumpJob, MaxTokensAndTextInput) {
  std::ofstream(dir_ / "essay.txt") << std::string(40, 'a') + " kvlab streams layers to disk as the prefill runs. "
                                       "Each layer's keys are stored before RoPE. ";
  auto r = request();
  r.prompts.clear();
  r.text = dir_ / "essay.txt";
  r.question = "Where are keys stored?";
  r.max_tokens = 24;
  r.chat_template = "none";
  r.attn_in = false;
  r.dtype = "f16";
  EXPECT_THAT(run_dump(r), HasSubstr("dropped"));
  core::DumpReader dump(r.out);
  const auto meta = dump.sample("s0");
  EXPECT_EQ(meta.num_tokens, 24);
  EXPECT_FALSE(meta.has_attn_in);
  EXPECT_EQ(dump.info().chat_template, "none");
}

// --chat-template own: each sample holds the tokens of the checkpoint's own template (every tiny
// family ships one, tiny_tokenizer.cpp), rendered and cut as chat_template.h says.
TEST_P(DumpJob, OwnChatTemplateIsTheCheckpointsJinja) {
  auto r = request();
  r.chat_template = "own";
  run_dump(r);
  core::DumpReader dump(r.out);
  EXPECT_EQ(dump.info().chat_template, "own");
  const auto tokenizer = load_tokenizer(r.model);
  const ChatFormat own = choose_chat_format(r.model, "own");
  const ChatParts parts = render_chat(own, "kvlab dumps the KV cache of every layer to HDF5.", "What is dumped?");
  std::int64_t context_end = 0;
  const auto ids = encode_chat(*tokenizer, own, parts, &context_end);
  const auto meta = dump.sample("a");
  EXPECT_EQ(meta.num_tokens, static_cast<std::int64_t>(ids.size()));
  EXPECT_EQ(meta.context_end, context_end);
}

// A Gemma dump whose sample is longer than the sliding window (4 keys at max_position 256) and,
// for Gemma-3, whose sliding layers rotate with rope_local_base_freq: the compressors and the
// scorer take it (kvlab before issue 22 refused both), with each layer's RoPE and window as the
// model's own config gives them — read back from the dump's layer_rope_config and layer_windows,
// checked against load_model_config, which the model runs with — and snapkv compresses and scores.
TEST(DumpJobGemma, CompressorsTakeSlidingLayersAndTheirOwnRope) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("kvlab_dumpjob_gemma_{}", ::getpid());
  fs::remove_all(dir);
  std::ofstream(fs::create_directories(dir) ? dir / "prompts.jsonl" : dir / "prompts.jsonl")
      << R"({"id": "a", "context": "kvlab dumps the KV cache of every layer to HDF5.", "question": "What is dumped?"})" "\n";
  for (const std::string arch : {"gemma2", "gemma3"}) {
    TinyModelOptions o;
    o.arch = arch;
    o.layers = 2;
    o.max_position_embeddings = 256;  // a window of 4 keys on layer 0
    const auto model = dir / arch;
    write_tiny_model(model, o);
    DumpRequest r;
    r.model = model;
    r.prompts = dir / "prompts.jsonl";
    r.query_window = 4;
    r.dtype = "f32";
    r.out = model / "x.h5";
    run_dump(r);
    const core::DumpReader dump(r.out);
    ASSERT_GT(dump.sample("a").num_tokens, 4);
    EXPECT_EQ(dump.info().layer_rope_configs.empty(), arch != "gemma3");
    const compressors::DumpCache cache(dump, "a");
    const ModelConfig config = load_model_config(model);
    for (int l = 0; l < 2; ++l) {
      EXPECT_EQ(cache.window(l), config.window(l).value_or(0)) << arch << " layer " << l;
      EXPECT_EQ(cache.rope(l).inv_freq(), config.rope_of(l).inv_freq()) << arch << " layer " << l;
      EXPECT_EQ(cache.rope(l).describe(), config.rope_of(l).describe()) << arch << " layer " << l;
    }
    EXPECT_EQ(cache.window(0), 4);
    if (arch == "gemma3") {
      EXPECT_NE(cache.rope(0).inv_freq(), cache.rope(1).inv_freq());
    }
    const compressors::CompressContext ctx{cache, linalg::cpu_backend(), nullptr};
    const auto compressed = compressors::compress_chain(ctx, compressors::parse_spec("snapkv:keep=0.5,window=4"));
    const auto sc = compressors::score(cache, *compressed, linalg::cpu_backend());
    EXPECT_TRUE(std::isfinite(sc.attn_kl)) << arch;
    EXPECT_TRUE(std::isfinite(sc.attn_output_error)) << arch;
    EXPECT_LT(sc.kept_fraction, 1.0) << arch;
    // The full cache (fp16 storage) scores as exact up to its rounding under the same masks and
    // RoPEs: relative 2⁻¹¹ on keys moves logits of a few units by ~1e-3, KL ~ (1e-3)² ≪ 1e-5; a
    // layer rotated or masked differently on one side gives KL of order 0.1.
    const auto full = compressors::compress_chain(ctx, compressors::parse_spec("full"));
    EXPECT_LT(compressors::score(cache, *full, linalg::cpu_backend()).attn_kl, 1e-5) << arch;
  }
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Archs, DumpJob, ::testing::Values("llama", "qwen2", "mistral", "qwen3", "mixtral", "qwen3_moe", "phi3",
                                                           "gemma2", "gemma3"));

}  // namespace
}  // namespace kvlab::harness
