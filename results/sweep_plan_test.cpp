// Sweep plans: the grid a YAML file names, cell identities that are stable and distinct, and
// shards that partition the cells exactly (every cell in one shard, none twice).
#include "results/sweep_plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "core/error.h"
#include "core/read_file.h"
#include "results/test_support.h"

namespace kvlab::results {
namespace {

using ::testing::HasSubstr;

const char* kSweep = R"(
name: ablation
compress:
  dumps: [a.h5, b.h5]
  methods: ["svd:rk=[8,16]", "xkv:g=2,rk=8", kivi]
eval:
  models: [tiny]
  tasks: [ruler:niah_single_1, ruler:vt]
  prompts: [p.jsonl]
  lengths: [512, 1024]
  samples: 3
  methods: [full, "snapkv:keep=0.5"]
  options: {question: after-compression}
)";

TEST(SweepPlan, GridAxesAndDefaults) {
  const auto plan = parse_sweep(kSweep, "s.yaml", "/base");
  EXPECT_EQ(plan.name, "ablation");
  EXPECT_EQ(plan.out, "/base/ablation");
  EXPECT_EQ(plan.db, "/base/ablation/results.sqlite");
  // 2 dumps × 3 method entries; 1 model × (2 tasks × 2 lengths + 1 prompts file, which has no length).
  ASSERT_EQ(plan.cells.size(), 6u + 5u);
  EXPECT_EQ(plan.cells[0].kind, "compress");
  EXPECT_EQ(plan.cells[0].axes.at("dump"), "/base/a.h5");
  EXPECT_EQ(plan.cells[0].methods, (std::vector<std::string>{"svd:rk=[8,16]"}));
  const auto& e = plan.cells[6];
  EXPECT_EQ(e.kind, "eval");
  EXPECT_EQ(e.methods.size(), 2u);
  EXPECT_EQ(e.options.at("samples"), "3");
  EXPECT_EQ(e.options.at("question"), "after-compression");
  EXPECT_EQ(plan.cells.back().axes.at("task"), "prompts:/base/p.jsonl");
  EXPECT_EQ(plan.cells.back().axes.count("length"), 0u);
}

TEST(SweepPlan, LongBenchFilesAreTasksSizedByLength) {
  const auto plan = parse_sweep("eval: {models: [m], longbench: [lb/hotpotqa.jsonl], lengths: [1024, 2048], methods: [full]}",
                                "s.yaml", "/base");
  ASSERT_EQ(plan.cells.size(), 2u);
  EXPECT_EQ(plan.cells[0].axes.at("task"), "longbench:/base/lb/hotpotqa.jsonl");
  EXPECT_EQ(plan.cells[1].axes.at("length"), "2048");
}

TEST(SweepPlan, CellIdsAreStableAndDistinct) {
  const auto a = parse_sweep(kSweep, "s.yaml", "/base"), b = parse_sweep(kSweep, "s.yaml", "/base");
  std::set<std::string> ids, legacy;
  for (std::size_t i = 0; i < a.cells.size(); ++i) {
    EXPECT_EQ(a.cells[i].id, b.cells[i].id);
    EXPECT_EQ(a.cells[i].legacy_id, b.cells[i].legacy_id);
    EXPECT_EQ(a.cells[i].id.size(), 19u);
    EXPECT_TRUE(a.cells[i].id.starts_with("c2-"));
    EXPECT_EQ(a.cells[i].legacy_id.size(), 17u);
    ids.insert(a.cells[i].id);
    legacy.insert(a.cells[i].legacy_id);
  }
  EXPECT_EQ(ids.size(), a.cells.size());
  EXPECT_EQ(legacy.size(), a.cells.size());
  // An option is part of the identity: a different question mode is a different cell.
  std::string other = kSweep;
  other.replace(other.find("after-compression"), 17, "in-context");
  EXPECT_NE(parse_sweep(other, "s.yaml", "/base").cells[6].id, a.cells[6].id);
}

// A store written by kvlab b94864a (ids from the mistyped basis; testdata/README.md says how)
// resumes with every cell done: each cell finds its own run under its legacy id, and no two
// cells find the same run. results/cli_test.sh resumes it through `kvlab sweep run`.
TEST(SweepPlan, AStoreWithLegacyIdsResumesWithEveryCellDone) {
  testing::TempDir dir;
  std::filesystem::copy_file(testing::fixture("legacy-sweep/legacy.sqlite"), dir / "legacy.sqlite");
  const Store store(dir / "legacy.sqlite", /*must_exist=*/true);
  // As `kvlab sweep run sweep.yaml` in the store's folder reads it: relative paths stay relative.
  const auto plan = parse_sweep(core::read_file(testing::fixture("legacy-sweep/sweep.yaml"), "sweep"), "sweep.yaml", "");
  ASSERT_EQ(plan.cells.size(), 4u);  // 2 compress methods; 1 model × (a RULER task at one length + a prompts file)
  ASSERT_EQ(store.runs().size(), plan.cells.size());
  std::set<RunId> found;
  for (const auto& cell : plan.cells) {
    EXPECT_FALSE(store.find_uuid(cell.id)) << cell.id;  // found through the legacy id only
    const auto run = find_cell_run(store, cell);
    ASSERT_TRUE(run) << cell.legacy_id;
    EXPECT_EQ(run->uuid, cell.legacy_id);
    EXPECT_EQ(to_string(run->kind), cell.kind);
    found.insert(run->id);
  }
  EXPECT_EQ(found.size(), plan.cells.size());
}

// A cell recorded under its new id is found by it; a cell in neither form is still to run.
TEST(SweepPlan, FindsCellsUnderTheirNewIdAndMissesAbsentOnes) {
  testing::TempDir dir;
  Store store(dir / "r.sqlite");
  const auto plan = parse_sweep("compress: {dumps: [a.h5], methods: [svd, kivi]}", "s.yaml", "");
  RunInfo info = current_run_info(RunKind::compress, "test");
  info.uuid = plan.cells[0].id;
  store.write_run(info, [](RunWriter&) {});
  EXPECT_EQ(find_cell_run(store, plan.cells[0])->uuid, plan.cells[0].id);
  EXPECT_FALSE(find_cell_run(store, plan.cells[1]));
}

TEST(SweepPlan, ShardsPartitionTheGridExactly) {
  const auto plan = parse_sweep(kSweep, "s.yaml", "/base");
  for (int n : {1, 2, 3, 4, 11, 20}) {
    std::multiset<std::string> seen;
    for (int i = 0; i < n; ++i)
      for (const auto& c : shard_cells(plan, i, n)) seen.insert(c.id);
    EXPECT_EQ(seen.size(), plan.cells.size()) << n;
    for (const auto& c : plan.cells) EXPECT_EQ(seen.count(c.id), 1u) << n;
  }
  EXPECT_EQ(parse_shard("2/5"), (std::pair{2, 5}));
  EXPECT_THROW(parse_shard("5/5"), Error);
  EXPECT_THROW(parse_shard("1-5"), Error);
  EXPECT_THROW(parse_shard("a/5"), Error);
}

TEST(SweepPlan, ErrorsNameTheKey) {
  const auto error_of = [](const std::string& text) {
    try {
      parse_sweep(text, "s.yaml", "");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_THAT(error_of("compres: {}"), HasSubstr("unknown key 'compres'"));
  EXPECT_THAT(error_of("compress: {dumps: [a.h5], method: [svd]}"), HasSubstr("unknown key 'method'"));
  EXPECT_THAT(error_of("compress: {dumps: [a.h5]}"), HasSubstr("needs dumps and methods"));
  EXPECT_THAT(error_of("name: x"), HasSubstr("nothing to run"));
  EXPECT_THAT(error_of("compress: [1, 2"), HasSubstr("not valid YAML"));
  // A list or mapping where one value belongs: named, not yaml-cpp's bare "bad conversion".
  EXPECT_THAT(error_of("name: [a]\ncompress: {dumps: [a.h5], methods: [svd]}"), HasSubstr("s.yaml: name: expected a single value"));
  EXPECT_THAT(error_of("eval: {models: [m], tasks: [ruler:vt], methods: [full], samples: {a: 1}}"),
              HasSubstr("eval.samples: expected a single value"));
  EXPECT_THAT(error_of("compress: {dumps: [[a.h5]], methods: [svd]}"), HasSubstr("compress.dumps (an entry)"));
  EXPECT_THAT(error_of("{? [a] : 1}"), HasSubstr("(a key)"));
  // An option no cell reads is a typo, not something to ignore.
  EXPECT_THAT(error_of("eval: {models: [m], tasks: [ruler:vt], methods: [full], options: {max_new_token: 4}}"),
              HasSubstr("unknown key 'max_new_token'"));
  EXPECT_THAT(error_of("compress: {dumps: [a.h5], methods: [svd], options: {question: in-context}}"),
              HasSubstr("unknown key 'question'"));
}

TEST(SweepPlan, EntriesListedTwiceAreOneCell) {
  // Two cells with one id: the first run recorded the id twice (an error), a rerun found it done.
  const auto plan = parse_sweep(
      "compress: {dumps: [a.h5, a.h5], samples: [s0, s0], methods: [svd, kivi, svd]}\n"
      "eval: {models: [m, m], tasks: [ruler:vt, ruler:vt], lengths: [512, 512], methods: [full]}",
      "s.yaml", "/base");
  std::set<std::string> ids;
  for (const auto& c : plan.cells) ids.insert(c.id);
  EXPECT_EQ(ids.size(), plan.cells.size());
  ASSERT_EQ(plan.cells.size(), 2u + 1u);  // a.h5 × s0 × {svd, kivi}; m × vt × 512
  EXPECT_EQ(plan.cells[0].axes.at("method"), "svd");
  EXPECT_EQ(plan.cells[1].axes.at("method"), "kivi");
}

TEST(SweepPlan, SlurmScriptRunsOneShardPerArrayTask) {
  const auto plan = parse_sweep(kSweep, "s.yaml", "/base");
  const auto script = slurm_script(plan, "/base/s.yaml", 4, "/opt/kvlab", {{"time", "02:00:00"}, {"gres", "gpu:1"}});
  EXPECT_THAT(script, HasSubstr("#SBATCH --array=0-3"));
  EXPECT_THAT(script, HasSubstr("#SBATCH --gres=gpu:1"));
  EXPECT_THAT(script, HasSubstr("--shard \"${SLURM_ARRAY_TASK_ID}/4\""));
  EXPECT_THAT(script, HasSubstr("results-shard-${SLURM_ARRAY_TASK_ID}.sqlite"));
  EXPECT_THAT(script, HasSubstr("results merge"));
}

}  // namespace
}  // namespace kvlab::results
