// The libtorch decoder against oracles that do not share its code path: core::Rope (the CPU
// RoPE), recomputation without the cache, the same model with MHA weights built by
// repeat-interleave, causality and receptive-field arguments, and f32 as the reference for bf16.
// Tolerances: f32 paths that differ only in summation order agree to 1e-4 (logits are O(1–10)).
#include "harness/model/llama_model.h"

#include <fmt/ranges.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <numeric>
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

at::Tensor ids(std::vector<std::int64_t> v) { return at::tensor(v, at::kLong); }

std::vector<std::int64_t> random_ids(int n, unsigned seed) {
  std::vector<std::int64_t> v(n);
  std::uint64_t s = seed * 2654435761u + 1;
  for (auto& x : v) x = static_cast<std::int64_t>((s = s * 6364136223846793005ull + 1442695040888963407ull) >> 33) % kVocab;
  return v;
}

double max_diff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

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
  for (const char* arch : {"llama", "qwen2", "mistral"}) {
    const auto o = small(arch);
    const ModelDir dir(std::string("incr_") + arch, config_json(o), weights_for(config_json(o), o));
    const auto model = dir.load();
    const auto tokens = random_ids(10, 2);
    const auto full = model.forward(ids(tokens), nullptr, {}, true);  // [10, V]
    KvCache cache(o.layers);
    const auto prefill = model.forward(ids({tokens.begin(), tokens.begin() + 4}), &cache, {}, true);
    EXPECT_LT(max_diff(prefill, full.narrow(0, 0, 4)), 1e-4) << arch;
    for (int t = 4; t < 10; ++t) {
      const auto step = model.forward(ids({tokens[t]}), &cache);
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
  const auto o = small();
  const ModelDir dir("chunk", config_json(o), weights_for(config_json(o), o));
  RunOptions chunked;
  chunked.max_chunk_tokens = 3;
  const auto tokens = ids(random_ids(11, 9));
  EXPECT_LT(max_diff(dir.load().forward(tokens, nullptr, {}, true), dir.load(chunked).forward(tokens, nullptr, {}, true)),
            1e-5);
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
  const auto same = generate_greedy(model, c32, q32, 6, [](KvCache& cache, std::int64_t n) {
    EXPECT_EQ(n, 12);
    for (int l = 0; l < cache.num_layers(); ++l)
      cache.replace(l, cache.key(l).clone(), cache.value(l).clone(),
                    at::ones({cache.key(l).size(0), cache.length()}, at::kBool));
  });
  EXPECT_EQ(same.tokens, base.tokens);
  EXPECT_LT(max_diff(same.step_logits, base.step_logits), 1e-4);
  // Keeping only the first two context tokens (sinks) changes the distribution.
  const auto evicted = generate_greedy(model, c32, q32, 6, [](KvCache& cache, std::int64_t) {
    for (int l = 0; l < cache.num_layers(); ++l) {
      auto keep = at::zeros({cache.key(l).size(0), cache.length()}, at::kBool);
      keep.narrow(1, 0, 2).fill_(true);
      cache.replace(l, cache.key(l), cache.value(l), keep);
    }
  });
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

// A second implementation: reference_llama.py, HF's eager forward written in PyTorch, reading
// the checkpoint with json + numpy. Skips where /usr/bin/python3 has no torch (python3-torch).
TEST(LlamaModel, LogitsMatchThePythonReference) {
  if (std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 has no torch (Debian: python3-torch)";
  for (const char* arch : {"llama", "qwen2", "mistral"}) {
    auto o = small(arch);
    o.dtype = "bfloat16";  // stored bf16, computed in f32 on both sides
    json config = config_json(o);
    if (std::string(arch) == "mistral") config["sliding_window"] = 5;  // v0.1-style window
    const ModelDir dir(std::string("ref_") + arch, config, weights_for(config, o));
    const auto tokens = random_ids(13, 20);
    const std::string list = fmt::format("{}", fmt::join(tokens, ","));
    const auto out = dir.path() / "reference.f32";
    const auto command = fmt::format("/usr/bin/python3 {}/harness/model/reference_llama.py {} {} {}", KVLAB_SOURCE_DIR,
                                     dir.path().string(), list, out.string());
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
    std::vector<float> reference(tokens.size() * kVocab);
    std::ifstream(out, std::ios::binary).read(reinterpret_cast<char*>(reference.data()), reference.size() * 4);
    const auto ours = dir.load().forward(ids(tokens), nullptr, {}, true);
    EXPECT_LT(max_diff(ours, at::tensor(reference).view({13, kVocab})), 1e-4) << arch;
  }
}

TEST(LlamaModel, LoadErrorsNameTheTensor) {
  const auto o = small();
  const json config = config_json(o);
  auto w = weights_for(config, o);
  w.erase("model.layers.1.mlp.up_proj.weight");
  try {
    ModelDir("missing", config, w).load();
    ADD_FAILURE() << "loaded a checkpoint without up_proj";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("model.layers.1.mlp.up_proj.weight' is missing"));
  }
  w = weights_for(config, o);
  w["model.layers.0.self_attn.k_proj.weight"].shape = {8, 64};  // the same 512 values, the wrong shape
  try {
    ModelDir("shape", config, w).load();
    ADD_FAILURE() << "loaded a misshaped k_proj";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("model.layers.0.self_attn.k_proj.weight' has shape [8, 64]"));
  }
}

}  // namespace
}  // namespace kvlab::harness
