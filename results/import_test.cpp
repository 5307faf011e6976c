#include "results/import.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "results/test_support.h"

namespace kvlab::results {
namespace {

using ::testing::HasSubstr;
using testing::fixture;
using testing::TempDir;

constexpr const char* kSvd4 = "svd:rk=4,rv=6,part=both,solver=exact,oversample=10,iters=2,precision=f64,seed=0";
constexpr const char* kSnapKivi =
    "snapkv:keep=0.5,budget=0,window=4,kernel=7,pool=max,agg=mean+kivi:bits=4,group=32,residual=128";

nlohmann::json load(const std::filesystem::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

double metric(const Store& store, RunId run, const std::string& method, const std::string& name,
              Scope scope = Scope::run, int layer = -1) {
  for (const auto& m : store.metrics(run, {.scope = scope, .method = method, .name = name}))
    if (m.layer == layer) return m.value;
  ADD_FAILURE() << "no " << name << " of " << method;
  return 0;
}

TEST(Import, ACompressReportBecomesOneRunWithMethodAndLayerRows) {
  TempDir dir;
  Store store(dir / "r.sqlite");
  const RunId id = import_compress_json(store, fixture("compress.json"));
  const auto run = *store.find_run(id);
  const auto doc = load(fixture("compress.json"));
  EXPECT_EQ(run.kind, RunKind::compress);
  EXPECT_EQ(run.revision, "7c9327ce2abc");
  EXPECT_EQ(run.kvlab_version, "0.1.0");
  EXPECT_EQ(run.command_line, doc["input"]["command_line"]);
  EXPECT_EQ(run.dump, "a.h5");
  EXPECT_EQ(run.provenance["input"]["sample"], "s0");
  EXPECT_EQ(run.provenance["shape"]["layers"], 3);
  EXPECT_EQ(run.provenance["typed"][kSvd4], "svd:rk=[4,8]");

  // Values straight from the file.
  EXPECT_DOUBLE_EQ(metric(store, id, kSvd4, "key_error"), 0.1289995652915975);
  EXPECT_DOUBLE_EQ(metric(store, id, kSvd4, "attn_kl"), 3.974328253618427);
  EXPECT_DOUBLE_EQ(metric(store, id, kSvd4, "compression_ratio"), 2.56);
  EXPECT_DOUBLE_EQ(metric(store, id, kSvd4, "authors_ratio"), 2.56);
  EXPECT_DOUBLE_EQ(metric(store, id, kSvd4, "bytes"), 4800);
  EXPECT_DOUBLE_EQ(metric(store, id, kSvd4, "dense_fp16_bytes"), 12288);
  EXPECT_DOUBLE_EQ(metric(store, id, kSvd4, "key_error", Scope::layer, 1), 0.1346331883824368);
  EXPECT_DOUBLE_EQ(metric(store, id, kSnapKivi, "attn_kl"), 0.16465871891740066);
  EXPECT_DOUBLE_EQ(metric(store, id, "full", "compression_ratio"), 1.0);
  // snapkv+kivi has no authors' formula: no row rather than a made-up one.
  EXPECT_TRUE(store.metrics(id, {.method = kSnapKivi, .name = "authors_ratio"}).empty());

  // 4 methods; per method 8 run metrics + 2 timings (+ authors_ratio for the two svd specs);
  // per layer 5 metrics × 3 layers.
  EXPECT_EQ(store.metrics(id, {.scope = Scope::run}).size(), 4u * 10 + 2);
  EXPECT_EQ(store.metrics(id, {.scope = Scope::layer}).size(), 4u * 5 * 3);
}

TEST(Import, ImportingTheSameReportTwiceIsANoOp) {
  TempDir dir;
  Store store(dir / "r.sqlite");
  const RunId first = import_compress_json(store, fixture("compress.json"));
  const auto counts = store.counts();
  EXPECT_EQ(import_compress_json(store, fixture("compress.json")), first);
  const auto again = import_path(store, fixture("compress.json"));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_FALSE(again[0].added);
  EXPECT_EQ(store.counts().runs, counts.runs);
  EXPECT_EQ(store.counts().metrics, counts.metrics);
}

TEST(Import, AnAnalysisReportBecomesMetricsAndMatrices) {
  TempDir dir;
  Store store(dir / "r.sqlite");
  const RunId id = import_analysis_json(store, fixture("analysis.json"));
  const auto run = *store.find_run(id);
  EXPECT_EQ(run.kind, RunKind::analyze);
  EXPECT_EQ(run.model, "synthetic");
  const auto doc = load(fixture("analysis.json"));
  const auto& cka = doc["kinds"]["key"]["cka"];

  const double adjacent = (cka[0][1].get<double>() + cka[1][2].get<double>()) / 2;
  EXPECT_DOUBLE_EQ(metric(store, id, "key", "cka_adjacent"), adjacent);
  EXPECT_DOUBLE_EQ(metric(store, id, "key", "cka_next", Scope::layer, 1), cka[1][2].get<double>());
  EXPECT_DOUBLE_EQ(metric(store, id, "key", "eigen_rank_fraction_g2_e0.95"), 0.125);
  EXPECT_DOUBLE_EQ(metric(store, id, "key", "eigen_rank_fraction_g1_e0.99", Scope::layer, 2), 0.3125);
  EXPECT_DOUBLE_EQ(metric(store, id, "key", "min_kept_sigma_ratio"), 0.1078725089261061);
  EXPECT_DOUBLE_EQ(metric(store, id, "value", "zero_rows"), 0);

  const auto matrices = store.matrices(id);
  // key and value: token_cosine, channel_cosine, cka and 2 per-head token cosines each.
  EXPECT_EQ(matrices.size(), 10u);
  const auto it = std::find_if(matrices.begin(), matrices.end(), [](const Matrix& m) { return m.name == "key.cka"; });
  ASSERT_NE(it, matrices.end());
  EXPECT_EQ(it->rows, 3);
  EXPECT_EQ(it->cols, 3);
  EXPECT_DOUBLE_EQ(it->data[5], cka[1][2].get<double>());
  EXPECT_EQ(run.provenance["kinds"]["value"]["shape"]["tokens"], 64);
}

TEST(Import, ADirectoryImportsTheReportsItHolds) {
  TempDir dir;
  std::filesystem::copy_file(fixture("compress.json"), dir / "compress.json");
  std::filesystem::copy_file(fixture("analysis.json"), dir / "analysis.json");
  Store store(dir / "r.sqlite");
  const auto imported = import_path(store, dir.path());
  ASSERT_EQ(imported.size(), 2u);
  EXPECT_EQ(imported[0].kind, RunKind::analyze);
  EXPECT_EQ(imported[1].kind, RunKind::compress);
  EXPECT_TRUE(imported[0].added && imported[1].added);
  EXPECT_THAT([&] { import_path(store, dir / "nothing-here"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("nothing-here")));
}

TEST(Import, AReportBrokenHalfWayLeavesNoHalfRun) {
  TempDir dir;
  auto doc = load(fixture("compress.json"));
  doc["methods"][2]["layers"][1]["key_error"] = "garbage";  // rows of methods 0 and 1 were already added
  const auto path = dir / "compress.json";
  std::ofstream(path) << doc.dump();
  Store store(dir / "r.sqlite");
  try {
    import_compress_json(store, path);
    FAIL() << "a malformed report was imported";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(path.string()));
    EXPECT_THAT(e.what(), HasSubstr("snapkv"));
    EXPECT_THAT(e.what(), HasSubstr("key_error"));
  }
  EXPECT_EQ(store.counts().runs, 0);
  EXPECT_EQ(store.counts().metrics, 0);
}

TEST(Import, AFileOfAnotherKindIsNamed) {
  TempDir dir;
  const auto path = dir / "other.json";
  std::ofstream(path) << R"({"hello": 1})";
  Store store(dir / "r.sqlite");
  EXPECT_THAT([&] { import_path(store, path); }, ::testing::ThrowsMessage<Error>(HasSubstr("other.json")));
  EXPECT_THAT([&] { import_compress_json(store, path); }, ::testing::ThrowsMessage<Error>(HasSubstr("methods")));
}

TEST(Import, ContentUuidIsStableAndDiscriminates) {
  EXPECT_EQ(content_uuid("abc"), content_uuid("abc"));
  EXPECT_NE(content_uuid("abc"), content_uuid("abd"));
  EXPECT_NE(content_uuid("ab"), content_uuid("ba"));
  EXPECT_EQ(content_uuid("").size(), 36u);
}

}  // namespace
}  // namespace kvlab::results

namespace kvlab::results {
namespace {

// Spectra (recorded since reports carry them): one matrix per kind and group size, a row per group.
TEST(Import, AnalysisSpectraBecomeOneMatrixPerGroupSize) {
  TempDir dir;
  auto doc = load(fixture("analysis.json"));
  for (auto& entry : doc["kinds"]["key"]["eigen_rank"]) {
    const int g = entry["group_size"].get<int>();
    for (auto& group : entry["groups"]) {
      std::vector<double> spectrum(static_cast<std::size_t>(g * 16), 0.0);  // G·H·D = G·2·8 eigenvalues
      spectrum[0] = 10.0 + group["first_layer"].get<int>();
      spectrum[1] = 1.0;
      group["spectrum"] = spectrum;
    }
  }
  const auto path = dir / "analysis.json";
  std::ofstream(path) << doc.dump();
  Store store(dir / "r.sqlite");
  const RunId id = import_analysis_json(store, path);
  std::map<std::string, Matrix> by_name;
  for (auto& m : store.matrices(id)) by_name[m.name] = m;
  ASSERT_TRUE(by_name.count("key.spectrum.g1"));
  ASSERT_TRUE(by_name.count("key.spectrum.g2"));
  EXPECT_FALSE(by_name.count("value.spectrum.g1")) << "the value kind carries no spectra in this report";
  const auto& g1 = by_name["key.spectrum.g1"];
  EXPECT_EQ(g1.rows, 3);  // layers 0, 1, 2
  EXPECT_EQ(g1.cols, 16);
  EXPECT_DOUBLE_EQ(g1.data[2 * 16 + 0], 12.0);  // group at first_layer 2, largest eigenvalue
  EXPECT_DOUBLE_EQ(g1.data[2 * 16 + 1], 1.0);
  const auto& g2 = by_name["key.spectrum.g2"];
  EXPECT_EQ(g2.rows, 1);  // layer 2 does not fill a second group of two
  EXPECT_EQ(g2.cols, 32);
}

}  // namespace
}  // namespace kvlab::results
