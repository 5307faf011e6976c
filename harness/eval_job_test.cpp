// kvlab eval end to end on a tiny model. Oracles: a chain that stores the cache exactly (full:
// 16-bit dense) must reproduce the baseline (agreement 1, KL ≈ 0 — only fp16 rounding of an f32
// model's cache remains), one that keeps nothing but two sink tokens must not; the baseline must
// equal an independent greedy decode without any hook.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "datasets/jieba.h"
#include "datasets/longbench.h"
#include "datasets/longbench_metrics.h"
#include "datasets/word_lists.h"
#include "harness/eval_job.h"
#include "harness/model/llama_model.h"
#include "harness/prompts.h"
#include "harness/tiny_model.h"

namespace kvlab::harness {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class EvalJob : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("kvlab_eval_{}_{}",
                                                   ::testing::UnitTest::GetInstance()->current_test_info()->name(), ::getpid());
    fs::remove_all(dir_);
    TinyModelOptions o;
    o.layers = 3;
    o.layer_similarity = 0.5;
    write_tiny_model(dir_ / "model", o);
    std::ofstream(dir_ / "prompts.jsonl")
        << R"({"id": "a", "context": "kvlab dumps the KV cache of every layer to HDF5 and scores compressors on it. The cache grows with the context.", "question": "What grows?"})" "\n"
        << R"({"id": "b", "context": "Cross-layer SVD groups adjacent layers; eviction keeps the tokens that attention needs most.", "question": "What does eviction keep?"})" "\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  EvalRequest request() const {
    EvalRequest r;
    r.model = dir_ / "model";
    r.prompts = dir_ / "prompts.jsonl";
    r.methods = {"full", "streamingllm:budget=2,sinks=2"};
    r.max_new_tokens = 6;
    r.query_window = 8;
    r.out = dir_ / "out";
    return r;
  }
  json report() const {
    std::ifstream in(dir_ / "out" / "eval.json");
    return json::parse(in);
  }
  fs::path dir_;
};

TEST_F(EvalJob, ExactCompressorAgreesAndDestructiveOneDoesNot) {
  for (const char* mode : {"in-context", "after-compression"}) {
    auto r = request();
    r.question = mode;
    run_eval(r);
    const auto j = report();
    ASSERT_EQ(j["methods"].size(), 2u);
    const auto& full = j["methods"][0];
    const auto& sinks = j["methods"][1];
    EXPECT_EQ(full["spec"], "full");
    EXPECT_DOUBLE_EQ(full["agreement"].get<double>(), 1.0) << mode;
    EXPECT_DOUBLE_EQ(full["exact_match"].get<double>(), 1.0) << mode;
    EXPECT_LT(full["kl"].get<double>(), 1e-4) << mode;  // fp16 rounding of the f32 cache only
    EXPECT_NEAR(full["compression_ratio"].get<double>(), 1.0, 1e-12);
    EXPECT_GT(sinks["kl"].get<double>(), 1e-3) << mode;
    EXPECT_GT(sinks["compression_ratio"].get<double>(), 2.0) << mode;
    EXPECT_EQ(j["samples"].size(), 2u);
    EXPECT_EQ(j["options"]["question"], mode);
  }
  EXPECT_TRUE(fs::exists(dir_ / "out" / "methods.csv"));
  EXPECT_TRUE(fs::exists(dir_ / "out" / "samples.csv"));
}

// --recompress-every: the chain runs again on the exact copy of everything cached so far.
// Oracles: an exact chain still reproduces the baseline; a period longer than the answer never
// re-runs, so the report equals the plain run's (the exact-copy path compresses the same
// tokens); a fixed-budget eviction stores the same bytes while the dense size it covers grows by
// exactly the answer tokens fed back (n − 1 of the baseline's n, teacher-forced).
TEST_F(EvalJob, RecompressingGeneratedTokens) {
  auto r = request();
  run_eval(r);
  const auto plain = report();
  fs::remove_all(dir_ / "out");
  r.recompress_every = 1000;
  run_eval(r);
  auto never = report();
  for (std::size_t m = 0; m < plain["methods"].size(); ++m)
    for (const char* key : {"agreement", "kl", "bytes", "compression_ratio"})
      EXPECT_EQ(never["methods"][m][key], plain["methods"][m][key]) << key;
  fs::remove_all(dir_ / "out");
  r.recompress_every = 1;
  run_eval(r);
  const auto every = report();
  EXPECT_EQ(every["options"]["recompress_every"], 1);
  const auto& full = every["methods"][0];
  EXPECT_DOUBLE_EQ(full["agreement"].get<double>(), 1.0);
  EXPECT_LT(full["kl"].get<double>(), 1e-4);
  for (std::size_t i = 0; i < every["samples"].size(); ++i) {
    const auto& s = every["samples"][i];
    const auto& p = plain["samples"][i];
    const auto answer = s["baseline"]["tokens"].size();
    const double context = s["prompt_tokens"].get<double>();  // in-context: the whole prompt is compressed
    const auto& sinks_now = s["methods"][1];
    const auto& sinks_before = p["methods"][1];
    EXPECT_EQ(sinks_now["bytes"], sinks_before["bytes"]) << "sinks + budget: a fixed number of tokens";
    EXPECT_NEAR(sinks_now["compression_ratio"].get<double>() / sinks_before["compression_ratio"].get<double>(),
                (context + static_cast<double>(answer) - 1) / context, 1e-12);
  }
}

// Transforms compress the whole cache before any layer is written back (per-layer chains write
// each layer as they go): full-rank SVD and cross-layer SVD reproduce the baseline up to their
// fp16 factors. The tiny model's KV rows are H_kv·D = 2·16 = 32 wide.
// Both compression routes: auto keeps svd/xkv on the model's tensors wherever the prompt has at
// least a group's columns of tokens (32 for svd, 96 for xkv:g=3), host never does.
TEST_F(EvalJob, FullRankTransformsReproduceTheBaseline) {
  for (const char* route : {"auto", "host"}) {
    SCOPED_TRACE(route);
    auto r = request();
    r.methods = {"svd:rk=32,rv=32", "xkv:g=3,rk=96,rv=96"};
    r.compress_route = route;
    fs::remove_all(r.out);
    run_eval(r);
    const auto j = report();
    EXPECT_EQ(j["options"]["compress_route"], route);
    for (const auto& m : j["methods"]) {
      EXPECT_DOUBLE_EQ(m["agreement"].get<double>(), 1.0) << m["spec"];
      EXPECT_LT(m["kl"].get<double>(), 1e-3) << m["spec"];
    }
    bool any_resident = false;
    for (const auto& s : j["samples"])
      for (std::size_t m = 0; m < 2; ++m) {
        const int columns = m == 0 ? 32 : 96;
        const bool resident = std::string(route) == "auto" && s["prompt_tokens"].get<int>() >= columns;
        EXPECT_EQ(s["methods"][m]["compress_route"], resident ? "resident" : "host") << s["prompt_tokens"];
        any_resident |= resident;
      }
    EXPECT_EQ(any_resident, std::string(route) == "auto");
  }
}

// Eviction (alone, followed by KIVI or by a low-rank stage), KIVI, MiniCache and CommonKV on the
// resident route (forced, so that all take it on the CPU too) and on the host route, compressing again every 2 generated tokens from the
// exact copy: the same bytes for every sample, each route recorded, and decodes that agree to
// the difference the fp16 store of the host route makes (the KL within 5 %).
TEST_F(EvalJob, ResidentAndHostRoutesAgreeForEveryMethodAlone) {
  std::vector<json> reports;
  for (const char* route : {"resident", "host"}) {
    auto r = request();
    r.methods = {"snapkv:keep=0.5,window=4,kernel=3", "h2o:keep=0.4", "kivi:bits=4,group=8,residual=4",
                 "minicache:start=0,gamma=0.1", "commonkv:g=2,keep=0.5,sinks=1,recent=2",
                 "snapkv:keep=0.5,window=4,kernel=3+kivi:bits=4,group=8,residual=4",
                 "streamingllm:keep=0.5+svd:rk=8,solver=randomized"};
    r.recompress_every = 2;
    r.compress_route = route;
    fs::remove_all(r.out);
    run_eval(r);
    reports.push_back(report());
    for (const auto& s : reports.back()["samples"])
      for (const auto& m : s["methods"]) EXPECT_EQ(m["compress_route"], route);
  }
  const auto& resident = reports[0];
  const auto& host = reports[1];
  for (std::size_t m = 0; m < 7; ++m) {
    SCOPED_TRACE(resident["methods"][m]["spec"].get<std::string>());
    const double a = resident["methods"][m]["kl"].get<double>(), b = host["methods"][m]["kl"].get<double>();
    EXPECT_GT(b, 0.0);
    EXPECT_NEAR(a, b, 0.05 * b);
    for (std::size_t i = 0; i < resident["samples"].size(); ++i)
      EXPECT_EQ(resident["samples"][i]["methods"][m]["bytes"], host["samples"][i]["methods"][m]["bytes"]);
  }
}

TEST_F(EvalJob, BaselineIsThePlainGreedyDecode) {
  auto r = request();
  r.methods = {"full"};
  r.question = "after-compression";
  r.chat_template = "none";
  run_eval(r);
  const auto j = report();
  const auto model = LlamaModel::load(dir_ / "model", {});
  const auto tokenizer = load_tokenizer(dir_ / "model");
  const auto prompts = load_prompts_jsonl(dir_ / "prompts.jsonl");
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    const auto t = tokenize_prompt(*tokenizer, ChatTemplate::none, prompts[i], 0, Truncation::end);
    const std::span<const std::int32_t> all(t.tokens);
    const auto g = generate_greedy(model, all.first(t.context_end), all.subspan(t.context_end), 6);
    EXPECT_EQ(j["samples"][i]["baseline"]["tokens"].get<std::vector<std::int32_t>>(), g.tokens);
    EXPECT_EQ(j["samples"][i]["context_tokens"].get<std::int64_t>(), t.context_end);
  }
}

TEST_F(EvalJob, GeneratedTaskIsSizedAndEveryPredictionScored) {
  {  // a word list of our own: the tests do not rely on wamerican being installed
    std::ofstream words(dir_ / "words.txt");
    for (const auto& w : datasets::pseudo_words(400, 1)) words << w << "\n";
  }
  auto r = request();
  r.prompts.clear();
  r.task = "ruler:niah_single_1";
  r.length = 400;
  r.samples = 3;
  r.words = dir_ / "words.txt";
  r.max_new_tokens = 8;
  r.methods = {"full", "streamingllm:budget=4,sinks=2"};
  run_eval(r);
  const auto j = report();
  EXPECT_EQ(j["task"]["name"], "ruler:niah_single_1");
  EXPECT_EQ(j["task"]["metric"], "string_match_all");
  ASSERT_EQ(j["samples"].size(), 3u);
  // RULER's string_match_all by hand: the share of references found in the lower-cased prediction.
  const auto match_all = [](std::string prediction, const std::vector<std::string>& refs) {
    std::transform(prediction.begin(), prediction.end(), prediction.begin(), ::tolower);
    double found = 0;
    for (auto ref : refs) {
      std::transform(ref.begin(), ref.end(), ref.begin(), ::tolower);
      found += prediction.find(ref) != std::string::npos;
    }
    return found / refs.size();
  };
  double baseline_sum = 0;
  for (const auto& s : j["samples"]) {
    EXPECT_LE(s["prompt_tokens"].get<std::int64_t>() + 8, 400);  // sized with the model's tokenizer
    EXPECT_GT(s["prompt_tokens"].get<std::int64_t>(), 200);
    const auto answers = s["answers"].get<std::vector<std::string>>();
    ASSERT_FALSE(answers.empty());
    EXPECT_DOUBLE_EQ(s["baseline"]["score"].get<double>(), match_all(s["baseline"]["text"], answers));
    baseline_sum += s["baseline"]["score"].get<double>();
    for (const auto& m : s["methods"]) EXPECT_DOUBLE_EQ(m["score"].get<double>(), match_all(m["text"], answers));
  }
  EXPECT_DOUBLE_EQ(j["task"]["baseline_accuracy"].get<double>(), baseline_sum / 3);
  EXPECT_TRUE(j["methods"][0].contains("accuracy"));
}

TEST_F(EvalJob, LongBenchFileIsScoredWithEachDatasetsMetric) {
  auto r = request();
  r.prompts.clear();
  r.longbench = fs::path(KVLAB_SOURCE_DIR) / "datasets/testdata/longbench_tiny.jsonl";
  r.length = 64;  // forces LongBench's middle truncation on the longer records
  r.chat_template = "none";
  r.max_new_tokens = 4;
  r.methods = {"full"};
  run_eval(r);
  const auto j = report();
  const auto records = datasets::load_longbench_jsonl(r.longbench);
  ASSERT_EQ(j["samples"].size(), records.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    const auto& s = j["samples"][i];
    EXPECT_EQ(s["id"], records[i].id);
    // Cut to 64 tokens; + BOS, + 1 where context and question re-tokenize apart.
    EXPECT_LE(s["prompt_tokens"].get<std::int64_t>(), 64 + 2);
    // The dataset's own scorer on the baseline's text gives the recorded score.
    const double expected = datasets::longbench_score(records[i].dataset, s["baseline"]["text"].get<std::string>(),
                                                      records[i].answers, records[i].all_classes.value_or(std::vector<std::string>{}));
    EXPECT_DOUBLE_EQ(s["baseline"]["score"].get<double>(), expected) << records[i].dataset;
  }
}

// LongBench's Chinese datasets score with jieba's segmentation: the recorded score is the dataset's
// metric with the jieba segmenter, and a missing jieba fails before any decoding or output.
TEST_F(EvalJob, ChineseLongBenchScoresWithJieba) {
  if (!fs::exists(datasets::default_jieba_dir() / "dict.txt")) GTEST_SKIP() << "python3-jieba is not installed";
  std::ofstream(dir_ / "zh.jsonl")
      << R"({"input": "文章提到了哪条河？", "context": "马洛渡口是一个位于雷恩河畔的集镇。", "answers": ["雷恩河"], "length": 17, "dataset": "multifieldqa_zh", "language": "zh", "all_classes": null, "_id": "zh-0"})" "\n";
  auto r = request();
  r.prompts.clear();
  r.longbench = dir_ / "zh.jsonl";
  r.chat_template = "none";
  r.max_new_tokens = 4;
  r.methods = {"full"};
  // First, before this process loads jieba (the default segmenter is loaded once and kept).
  ::setenv("KVLAB_JIEBA_DIR", (dir_ / "no-jieba").c_str(), 1);
  try {
    run_eval(r);
    ADD_FAILURE() << "ran without jieba";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("python3-jieba"));
  }
  ::unsetenv("KVLAB_JIEBA_DIR");
  EXPECT_FALSE(fs::exists(dir_ / "out" / "eval.json"));
  run_eval(r);
  const auto s = report()["samples"][0];
  const auto segment = datasets::jieba_segmenter();
  EXPECT_DOUBLE_EQ(s["baseline"]["score"].get<double>(),
                   datasets::qa_f1_zh_score(s["baseline"]["text"].get<std::string>(), "雷恩河", segment));
  // The reference scores itself 1 with the same scorer (F1 of identical token bags).
  EXPECT_DOUBLE_EQ(datasets::longbench_score("multifieldqa_zh", "雷恩河", {"雷恩河"}, {}, &segment), 1.0);
}

// Quest decodes through its page selection at every step (harness/paged_selection.h). With a
// page budget no cache reaches, it attends everything and decodes as `full` does (the same fp16
// cells); with a budget of two pages it attends less, departs from the baseline more and reads
// fewer bytes per step than it stores.
TEST_F(EvalJob, QuestSelectsPagesAtEveryDecodeStep) {
  for (const char* mode : {"in-context", "after-compression"}) {
    auto r = request();
    r.question = mode;
    r.methods = {"full", "quest:budget=4096,page_size=4", "quest:budget=8,page_size=4,skip_layers=0"};
    fs::remove_all(dir_ / "out");
    run_eval(r);
    const auto j = report();
    const auto& full = j["methods"][0];
    const auto& wide = j["methods"][1];
    const auto& narrow = j["methods"][2];
    EXPECT_EQ(wide["kl"].get<double>(), full["kl"].get<double>()) << mode;
    EXPECT_EQ(wide["agreement"].get<double>(), full["agreement"].get<double>()) << mode;
    EXPECT_GT(narrow["kl"].get<double>(), full["kl"].get<double>() + 1e-6) << mode;
    EXPECT_EQ(full["loaded_bytes_per_step"].get<double>(), full["bytes"].get<double>()) << "every stored byte";
    EXPECT_LT(narrow["loaded_bytes_per_step"].get<double>(), 0.8 * narrow["bytes"].get<double>()) << mode;
    EXPECT_GT(wide["bytes"].get<double>(), full["bytes"].get<double>()) << "the page metadata is stored too";
  }
}

// Phi-3's partial rotary (0.75 of head_dim) on every route: the device paths rotate the first
// rotary_dim channels and pass the rest through, as the model does.
TEST_F(EvalJob, PartialRotaryModelsCompressOnEveryRoute) {
  TinyModelOptions o;
  o.arch = "phi3";
  o.layers = 2;
  o.dtype = "float32";
  write_tiny_model(dir_ / "phi3", o);
  for (const char* route : {"host", "resident"}) {
    auto r = request();
    r.model = dir_ / "phi3";
    r.compress_route = route;
    r.methods = {"full", "snapkv:keep=0.5,window=4,kernel=3", "kivi:bits=4,group=8,residual=4"};
    fs::remove_all(dir_ / "out");
    run_eval(r);
    const auto j = report();
    EXPECT_LT(j["methods"][0]["kl"].get<double>(), 1e-4) << route;
    for (const auto& m : j["methods"]) EXPECT_TRUE(std::isfinite(m["kl"].get<double>())) << route << " " << m["spec"];
  }
}

// The representation methods decode in eval too, alone and after eviction, compressing again every
// 2 generated tokens: each stores less than the 16-bit cache and moves the answer's distribution.
TEST_F(EvalJob, RepresentationMethodsDecodeFromTheirStoredForms) {
  auto r = request();
  r.methods = {"kvquant:bits=2", "snapkv:keep=0.5,window=4,kernel=3+kvquant:bits=4", "gear:bits=2,group=8",
               "think:ratio=0.5,window=4,recent=4"};
  r.recompress_every = 2;
  run_eval(r);
  const auto j = report();
  ASSERT_EQ(j["methods"].size(), 4u);
  for (const auto& m : j["methods"]) {
    SCOPED_TRACE(m["spec"].get<std::string>());
    EXPECT_GT(m["compression_ratio"].get<double>(), 1.0);
    EXPECT_GT(m["kl"].get<double>(), 1e-6);
    EXPECT_TRUE(std::isfinite(m["kl"].get<double>()));
  }
}

// SnapKV per query head (the SnapKV repository's layout) decodes in eval, with the question after
// compression and while recompressing: at the same ratio it stores each KV head's cells once per
// query head of its group (H_q/H_kv times the per-KV-head bytes, summed over the samples), and the
// model attends per query head, so the answers' distributions differ from the per-KV-head run.
TEST_F(EvalJob, PerQueryHeadEvictionDecodesFromHqHeadsOfCells) {
  for (const int recompress : {0, 2}) {
    SCOPED_TRACE(recompress);
    auto r = request();
    r.methods = {"snapkv:keep=0.5,window=4", "snapkv:keep=0.5,window=4,granularity=query_head"};
    r.question = "after-compression";
    r.recompress_every = recompress;
    fs::remove_all(dir_ / "out");
    run_eval(r);
    const auto j = report();
    ASSERT_EQ(j["methods"].size(), 2u);
    const auto& kv_head = j["methods"][0];
    const auto& query_head = j["methods"][1];
    const auto config = load_model_config(dir_ / "model");
    ASSERT_GT(config.n_rep(), 1);
    EXPECT_EQ(query_head["bytes"].get<std::int64_t>(), config.n_rep() * kv_head["bytes"].get<std::int64_t>());
    EXPECT_EQ(query_head["loaded_bytes_per_step"], query_head["bytes"]);
    EXPECT_TRUE(std::isfinite(query_head["kl"].get<double>()));
    EXPECT_NE(query_head["kl"].get<double>(), kv_head["kl"].get<double>());
  }
}

// KVzip runs the model on the prefill's cache (harness::ModelProbe): at every level it keeps the
// same number of cells as SnapKV at the same ratio (L·H_kv·budget, spread differently), so the
// bytes are equal; a re-compression, which would need the generated tokens' ids, is refused up
// front.
TEST_F(EvalJob, KvzipProbesTheLiveModelAndKeepsTheBudget) {
  auto r = request();
  r.methods = {"snapkv:keep=0.5,window=4", "kvzip:keep=0.5,sink=2,chunk=16", "kvzip:keep=0.5,level=head"};
  r.question = "after-compression";
  run_eval(r);
  const auto j = report();
  ASSERT_EQ(j["methods"].size(), 3u);
  for (std::size_t m = 1; m < 3; ++m) {
    SCOPED_TRACE(j["methods"][m]["spec"].get<std::string>());
    EXPECT_EQ(j["methods"][m]["bytes"], j["methods"][0]["bytes"]);
    EXPECT_TRUE(std::isfinite(j["methods"][m]["kl"].get<double>()));
    EXPECT_GT(j["methods"][m]["kl"].get<double>(), 0.0);
  }
  r.recompress_every = 2;
  fs::remove_all(dir_ / "out");
  try {
    run_eval(r);
    ADD_FAILURE() << "kvzip ran with --recompress-every";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("--recompress-every"));
  }
}

TEST_F(EvalJob, BadSpecFailsBeforeAnythingIsWritten) {
  auto r = request();
  r.methods = {"snapkv:kep=0.5"};
  EXPECT_THROW(run_eval(r), Error);
  r = request();
  r.question = "before";
  EXPECT_THROW(run_eval(r), Error);
  r = request();
  r.compress_route = "device";
  try {
    run_eval(r);
    ADD_FAILURE() << "an unknown compress route ran";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("expected auto (what is faster where the model runs), resident"));
  }
  r = request();
  r.methods = {"snapkv:keep=0.5,window=32"};  // the request's query window is 8
  try {
    run_eval(r);
    ADD_FAILURE() << "a window beyond --query-window ran";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("exceeds --query-window 8"));
  }
  EXPECT_FALSE(fs::exists(dir_ / "out"));
}

// A windowed or two-RoPE model (Gemma-2, Gemma-3) evaluates with prompts longer than its window
// and with --recompress-every letting generated tokens pass it (kvlab before issue 22 refused
// both in the plan): the hook's cache source gives each layer its window and RoPE
// (compression_hook_test.cpp checks what it keeps).
TEST_F(EvalJob, WindowedModelsEvaluatePastTheirWindows) {
  const auto error_of_request = [&](const EvalRequest& r) {
    try {
      run_eval(r);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  for (const std::string arch : {"gemma2", "gemma3"}) {
    TinyModelOptions o;
    o.arch = arch;
    o.layers = 2;
    o.dtype = "float32";
    o.max_position_embeddings = 1024;  // window 1024 / 64 = 16 on the sliding layers
    write_tiny_model(dir_ / arch, o);
    auto r = request();
    r.model = dir_ / arch;
    fs::remove_all(dir_ / "out");
    EXPECT_EQ(error_of_request(r), "") << arch;
    EXPECT_TRUE(fs::exists(dir_ / "out")) << arch;
  }
  std::ofstream(dir_ / "short.jsonl") << R"({"id": "s", "context": "KV", "question": "?"})" "\n";
  auto r = request();
  r.model = dir_ / "gemma3";
  r.prompts = dir_ / "short.jsonl";
  r.question = "after-compression";
  r.max_new_tokens = 16;
  r.recompress_every = 2;
  fs::remove_all(dir_ / "out");
  EXPECT_EQ(error_of_request(r), "") << "generated tokens past the window recompress";
  EXPECT_TRUE(fs::exists(dir_ / "out"));
}

}  // namespace
}  // namespace kvlab::harness
