// ModelProbe: a probe run after a tiny model's cache sees, per layer, the queries and keys that a
// forward over cached + probe tokens with no cache at all computes for the probe's tokens (a
// second path through the model: one forward from scratch), at the positions right after the
// cache, and leaves the cache exactly as it was; kvzip then runs in eval through it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include <fmt/format.h>

#include "core/error.h"
#include "compressors/compressor.h"
#include "compressors/spec.h"
#include "harness/compression_hook.h"
#include "harness/dump_job.h"
#include "harness/dump_live_model.h"
#include "harness/kv_cache_source.h"
#include "harness/live_model_probe.h"
#include "linalg/select_backend.h"
#include "harness/tiny_model.h"
#include "harness/tokenizer/tokenizer.h"

namespace kvlab::harness {
namespace {

namespace fs = std::filesystem;

class LiveModelProbe : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("kvlab_probe_{}", ::getpid());
    fs::remove_all(dir_);
    TinyModelOptions o;
    o.layers = 3;
    o.dtype = "float32";
    write_tiny_model(dir_, o);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

std::vector<std::int32_t> seeded_tokens(int n, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<std::int32_t> out(static_cast<std::size_t>(n));
  for (auto& t : out) t = static_cast<std::int32_t>(rng() % 200 + 10);
  return out;
}

double relative(const at::Tensor& got, const at::Tensor& want) {
  return ((got.to(at::kDouble) - want.to(at::kDouble)).norm() / want.to(at::kDouble).norm()).item<double>();
}

TEST_F(LiveModelProbe, SeesWhatOneForwardFromScratchComputesAndLeavesTheCacheAsItWas) {
  const auto model = LlamaModel::load(dir_, {});
  const auto tokenizer = load_tokenizer(dir_);
  const auto context = seeded_tokens(40, 1), probe = seeded_tokens(12, 2);
  Prefill start = prefill(model, context, 48);
  const KvCache before = start.cache.clone();

  std::vector<std::int32_t> all(context);
  all.insert(all.end(), probe.begin(), probe.end());
  std::vector<at::Tensor> want_q, want_k;
  model.forward(at::tensor(std::vector<std::int64_t>(all.begin(), all.end()), at::kLong), nullptr,
                [&](const LayerTap& tap) {
                  want_q.push_back(tap.query.narrow(0, 40, 12).clone());
                  want_k.push_back(tap.key.narrow(0, 40, 12).clone());
                });

  const ModelProbe live(model, start.cache, context, *tokenizer, ChatFormat{});
  EXPECT_EQ(live.cached_tokens(), context);
  int layers_seen = 0;
  live.probe(probe, [&](const compressors::LiveModel::ProbeLayer& p) {
    ASSERT_EQ(p.layer, layers_seen++);
    const auto q = at::from_blob(const_cast<float*>(p.queries.data.data()), {12, model.config().num_heads, model.config().head_dim});
    const auto k = at::from_blob(const_cast<float*>(p.keys.data.data()), {12, model.config().num_kv_heads, model.config().head_dim});
    // f32 through different attention chunkings: a few ulps of the activations.
    EXPECT_LT(relative(q, want_q[static_cast<std::size_t>(p.layer)]), 1e-5) << "layer " << p.layer;
    EXPECT_LT(relative(k, want_k[static_cast<std::size_t>(p.layer)]), 1e-5) << "layer " << p.layer;
    ASSERT_EQ(p.positions.size(), 12u);
    for (std::size_t i = 0; i < 12; ++i) EXPECT_EQ(p.positions[i], 40 + static_cast<std::int64_t>(i));
  });
  EXPECT_EQ(layers_seen, model.config().num_layers);

  ASSERT_EQ(start.cache.length(), before.length());
  EXPECT_EQ(start.cache.next_position(), before.next_position());
  EXPECT_TRUE(at::equal(start.cache.positions(), before.positions()));
  for (int l = 0; l < model.config().num_layers; ++l) {
    EXPECT_TRUE(at::equal(start.cache.key(l), before.key(l))) << l;
    EXPECT_TRUE(at::equal(start.cache.value(l), before.value(l))) << l;
    EXPECT_TRUE(at::equal(start.cache.rotated_key(l), before.rotated_key(l))) << l;
  }
  // A model without a chat template answers after "\n" (kvpress's KVzipPress default).
  EXPECT_EQ(live.answer_start(), tokenizer->encode_continuation("\n"));
}

TEST_F(LiveModelProbe, TruncateDropsTheLastTokensAndTheirPositions) {
  const auto model = LlamaModel::load(dir_, {});
  Prefill start = prefill(model, seeded_tokens(20, 3), 20);
  const KvCache whole = start.cache.clone();
  start.cache.truncate(15);
  EXPECT_EQ(start.cache.length(), 15);
  EXPECT_EQ(start.cache.next_position(), 15);
  for (int l = 0; l < model.config().num_layers; ++l)
    EXPECT_TRUE(at::equal(start.cache.key(l), whole.key(l).narrow(1, 0, 15)));
  EXPECT_THROW(start.cache.truncate(16), Error);
  EXPECT_THROW(start.cache.truncate(-1), Error);
}

// `kvlab compress DUMP --model DIR --method kvzip`: the model's cache rebuilt from an f32 dump
// (keys rotated again at the dumped positions) and probed keeps exactly the cells kvzip keeps on
// the model's own prefill of the same tokens (the eval path), at every level.
TEST_F(LiveModelProbe, KvzipOnADumpKeepsWhatItKeepsOnTheModelsOwnCache) {
  std::ofstream(dir_ / "prompts.jsonl")
      << R"({"id": "a", "context": "kvlab dumps the KV cache of every layer to HDF5 and scores compressors on it.", "question": "What is dumped?"})"
      << "\n";
  DumpRequest r;
  r.model = dir_;
  r.prompts = dir_ / "prompts.jsonl";
  r.query_window = 4;
  r.dtype = "f32";
  r.out = dir_ / "x.h5";
  run_dump(r);
  const core::DumpReader dump(r.out);
  const auto live = live_model_for_dump(dir_, dump, "a");
  const compressors::DumpCache dumped(dump, "a");

  const auto model = LlamaModel::load(dir_, {});
  const auto tokenizer = load_tokenizer(dir_);
  const auto tokens = dump.sample("a").tokens;
  ContextCapture capture(model.config().num_layers, 4, false);
  Prefill start = prefill(model, tokens, static_cast<std::int64_t>(tokens.size()), capture.observer());
  const KvCacheSource own(start.cache, nullptr, capture, model.config());
  const ModelProbe probe(model, start.cache, tokens, *tokenizer, choose_chat_format(dir_, "auto"));  // as the dump chose
  EXPECT_EQ(live->cached_tokens(), tokens);
  EXPECT_EQ(live->answer_start(), probe.answer_start());
  for (const char* spec : {"kvzip:keep=0.5,chunk=8", "kvzip:keep=0.3,level=head,sink=0", "kvzip:budget=5,level=layer"}) {
    const auto stage = compressors::parse_spec(spec).stages.front();
    const auto from_dump = compressors::make_eviction(stage)->select({dumped, linalg::cpu_backend(), nullptr, live.get()});
    const auto from_model = compressors::make_eviction(stage)->select({own, linalg::cpu_backend(), nullptr, &probe});
    EXPECT_EQ(from_dump, from_model) << spec;
  }
  EXPECT_THROW(live_model_for_dump(dir_, dump, "b"), Error);
}

}  // namespace
}  // namespace kvlab::harness
