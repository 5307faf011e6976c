// RULER's cross-length aggregates: every number below is worked out by hand in the comments
// from the accuracies written into a temporary store.
#include "results/ruler_summary.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "results/test_support.h"

namespace kvlab::results {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::TempDir;

constexpr const char* kSnap = "snapkv:keep=0.5,window=32,kernel=7";
constexpr const char* kFeb = "2025-02-01T00:00:00Z";

// provenance["task"] as cli/record_run.cpp writes it.
nlohmann::json ruler_task(const std::string& task, std::int64_t length) {
  return {{"name", "ruler:" + task}, {"length", length}, {"depth_percent", nullptr}, {"samples", 20}, {"seed", 42},
          {"scoring", "official"},   {"metric", "string_match_all"}, {"baseline_accuracy", 0.5}};
}

// An eval run with one whole-run accuracy per method (plus rows the summary must ignore).
RunId write_eval(Store& store, const std::string& model, const nlohmann::json& task, const std::string& created,
                 const std::map<std::string, double>& accuracy, RunKind kind = RunKind::eval) {
  RunInfo info;
  info.kind = kind;
  info.created = created;
  info.model = model;
  info.provenance = {{"task", task}};
  return store.write_run(info, [&](RunWriter& w) {
    for (const auto& [method, value] : accuracy) {
      w.add_metric(method, "accuracy", value);
      w.add_metric(method, "agreement", 0.25);                   // not a RULER score
      w.add_sample_metric(method, "t", "s0", "accuracy", 0.0);  // per-sample rows are not read
    }
  });
}

// Model "model-a", tasks niah_single_1 and vt at 4096 / 8192 / 16384, methods baseline and kSnap
// (accuracies; scores are 100×):
//
//   baseline   niah  vt  → A(L)          kSnap   niah  vt  → A(L)
//   4096       1.00 0.90 → 95            4096    0.95 0.85 → 90
//   8192       0.95 0.85 → 90            8192    0.85 0.75 → 80   (a dip)
//   16384      0.90 0.70 → 80            16384   0.92 0.84 → 88
//
// Plus runs that must lose or not count:
//   run 1  niah@8192, created 2025-01-15 (older), all 0.10       → superseded by the Feb run
//   run 2  vt@4096, created 2025-02-01 like the real one, all 0   → same time, smaller id: superseded
//   run 3  vt@16384, created 2025-03-01, the real values          → wins over run 9 although its id is smaller
//   runs 4–8 the other five cells, created 2025-02-01
//   run 9  vt@16384, created 2025-02-01, all 0                    → older than run 3: superseded
//   run 10 a prompts-file run (task null); run 11 LongBench; run 12 fixed needle depth; run 13 compress
//   model "model-b", baseline only: niah@4096 0.8, vt@4096 0.6, niah@8192 0.5 (8192 lacks vt)
struct Fixture {
  TempDir dir;
  Store store{dir / "r.sqlite"};
  RunId stale = 0, tie = 0, late = 0, loser = 0, prompts = 0, longbench = 0, depth = 0, compress = 0;
  std::map<std::pair<std::string, std::int64_t>, RunId> main;  // model-a (task, length) → the run used

  Fixture() {
    stale = write_eval(store, "model-a", ruler_task("niah_single_1", 8192), "2025-01-15T00:00:00Z",
                       {{"baseline", 0.10}, {kSnap, 0.10}});
    tie = write_eval(store, "model-a", ruler_task("vt", 4096), kFeb, {{"baseline", 0.0}, {kSnap, 0.0}});
    late = write_eval(store, "model-a", ruler_task("vt", 16384), "2025-03-01T00:00:00Z",
                      {{"baseline", 0.70}, {kSnap, 0.84}});
    main[{"vt", 16384}] = late;
    const std::vector<std::tuple<std::string, std::int64_t, double, double>> cells{
        {"niah_single_1", 4096, 1.00, 0.95}, {"vt", 4096, 0.90, 0.85},          {"niah_single_1", 8192, 0.95, 0.85},
        {"vt", 8192, 0.85, 0.75},            {"niah_single_1", 16384, 0.90, 0.92}};
    for (const auto& [task, length, base, snap] : cells)
      main[{task, length}] = write_eval(store, "model-a", ruler_task(task, length), kFeb, {{"baseline", base}, {kSnap, snap}});
    loser = write_eval(store, "model-a", ruler_task("vt", 16384), kFeb, {{"baseline", 0.0}, {kSnap, 0.0}});
    prompts = write_eval(store, "model-a", nullptr, kFeb, {{"baseline", 0.0}, {kSnap, 0.0}});
    longbench = write_eval(store, "model-a", {{"name", "longbench:qasper"}, {"length", 4096}}, kFeb, {{"baseline", 0.0}});
    auto needle = ruler_task("niah_single_1", 4096);
    needle["depth_percent"] = 50;
    depth = write_eval(store, "model-a", needle, kFeb, {{"baseline", 0.0}});
    compress = write_eval(store, "model-a", ruler_task("vt", 4096), kFeb, {{"baseline", 0.0}}, RunKind::compress);
    write_eval(store, "model-b", ruler_task("niah_single_1", 4096), kFeb, {{"baseline", 0.8}});
    write_eval(store, "model-b", ruler_task("vt", 4096), kFeb, {{"baseline", 0.6}});
    write_eval(store, "model-b", ruler_task("niah_single_1", 8192), kFeb, {{"baseline", 0.5}});
  }
  RulerSummary summarize(const RulerOptions& options = {}) const { return summarize_ruler(store, store.runs(), options); }
};

const RulerMethod& find(const RulerSummary& s, const std::string& model, const std::string& method) {
  for (const auto& m : s.methods)
    if (m.model == model && m.method == method) return m;
  throw std::runtime_error("no table for " + model + " / " + method);
}

TEST(RulerSummary, ScoreTableAndPerLengthAverages) {
  const Fixture f;
  const auto s = f.summarize();
  ASSERT_EQ(s.methods.size(), 3u);  // model-a baseline, model-a kSnap, model-b baseline: baseline first
  EXPECT_EQ(s.methods[0].method, "baseline");
  EXPECT_EQ(s.methods[1].method, kSnap);
  EXPECT_EQ(s.methods[2].model, "model-b");
  const auto& base = find(s, "model-a", "baseline");
  EXPECT_THAT(base.tasks, ElementsAre("niah_single_1", "vt"));  // RULER's order
  ASSERT_EQ(base.lengths.size(), 3u);
  EXPECT_EQ(base.lengths[0].length, 4096);
  EXPECT_EQ(base.lengths[2].length, 16384);
  EXPECT_NEAR(base.lengths[0].scores.at("niah_single_1").score, 100.0, 1e-12);
  EXPECT_NEAR(base.lengths[0].scores.at("vt").score, 90.0, 1e-12);
  EXPECT_NEAR(base.lengths[0].average, 95.0, 1e-12);  // (100 + 90) / 2
  EXPECT_NEAR(base.lengths[1].average, 90.0, 1e-12);  // (95 + 85) / 2
  EXPECT_NEAR(base.lengths[2].average, 80.0, 1e-12);  // (90 + 70) / 2
  const auto& snap = find(s, "model-a", kSnap);
  EXPECT_NEAR(snap.lengths[0].average, 90.0, 1e-12);  // (95 + 85) / 2
  EXPECT_NEAR(snap.lengths[1].average, 80.0, 1e-12);  // (85 + 75) / 2
  EXPECT_NEAR(snap.lengths[2].average, 88.0, 1e-12);  // (92 + 84) / 2
  EXPECT_TRUE(base.complete);
  EXPECT_TRUE(snap.complete);
}

TEST(RulerSummary, AverageAndWeightedAverages) {
  const Fixture f;
  const auto s = f.summarize();
  const auto& base = find(s, "model-a", "baseline");
  // A = 95, 90, 80; weights inc 1,2,3 / 6, dec 3,2,1 / 6.
  EXPECT_NEAR(*base.average, 265.0 / 3, 1e-12);   // 88.333…
  EXPECT_NEAR(*base.wavg_inc, 515.0 / 6, 1e-12);  // (95 + 180 + 240) / 6 = 85.833…
  EXPECT_NEAR(*base.wavg_dec, 545.0 / 6, 1e-12);  // (285 + 180 + 80) / 6 = 90.833…
  const auto& snap = find(s, "model-a", kSnap);
  // A = 90, 80, 88.
  EXPECT_NEAR(*snap.average, 86.0, 1e-12);        // 258 / 3
  EXPECT_NEAR(*snap.wavg_inc, 514.0 / 6, 1e-12);  // (90 + 160 + 264) / 6 = 85.666…
  EXPECT_NEAR(*snap.wavg_dec, 518.0 / 6, 1e-12);  // (270 + 160 + 88) / 6 = 86.333…
  // The helpers on their own; one length: both weighted averages are that length's average.
  EXPECT_NEAR(ruler_weighted_average({95, 90, 80}, true), 515.0 / 6, 1e-12);
  EXPECT_NEAR(ruler_weighted_average({95, 90, 80}, false), 545.0 / 6, 1e-12);
  EXPECT_DOUBLE_EQ(ruler_weighted_average({42}, true), 42);
  // Four lengths: weights 1..4 / 10.
  EXPECT_NEAR(ruler_weighted_average({10, 20, 30, 40}, true), 30.0, 1e-12);   // (10+40+90+160)/10
  EXPECT_NEAR(ruler_weighted_average({10, 20, 30, 40}, false), 20.0, 1e-12);  // (40+60+60+40)/10
}

TEST(RulerSummary, EffectiveLengthStopsAtTheFirstDip) {
  const Fixture f;
  const auto s = f.summarize();  // threshold 85.6
  // baseline 95 > 85.6, 90 > 85.6, 80 ≤ 85.6 → 8192.
  EXPECT_EQ(find(s, "model-a", "baseline").effective_length, 8192);
  // kSnap 90 passes, 80 dips, 88 passes again: the 16384 pass does not count → 4096.
  EXPECT_EQ(find(s, "model-a", kSnap).effective_length, 4096);
  EXPECT_EQ(ruler_effective_index({90, 80, 88}, 85.6), 0u);
  EXPECT_EQ(ruler_effective_index({85.6, 90}, 85.6), std::nullopt);  // strictly above
  // Other thresholds on baseline (95, 90, 80): 91 → 4096; 79 → every length (16384); 96 → none.
  EXPECT_EQ(find(f.summarize({.threshold = 91}), "model-a", "baseline").effective_length, 4096);
  EXPECT_EQ(find(f.summarize({.threshold = 79}), "model-a", "baseline").effective_length, 16384);
  const auto none = f.summarize({.threshold = 96});
  EXPECT_TRUE(find(none, "model-a", "baseline").complete);
  EXPECT_EQ(find(none, "model-a", "baseline").effective_length, std::nullopt);
  EXPECT_DOUBLE_EQ(none.threshold, 96);
  EXPECT_THROW(f.summarize({.threshold = std::nan("")}), Error);
}

TEST(RulerSummary, TheNewestRunWinsAndTheOthersAreListed) {
  const Fixture f;
  const auto s = f.summarize();
  const auto& base = find(s, "model-a", "baseline");
  // niah@8192: the Feb run beats the January one (whose 0.10 would give 10).
  const auto& niah8k = base.lengths[1].scores.at("niah_single_1");
  EXPECT_EQ(niah8k.run, (f.main.at({"niah_single_1", 8192})));
  EXPECT_THAT(niah8k.superseded, ElementsAre(f.stale));
  EXPECT_NEAR(niah8k.score, 95.0, 1e-12);
  // vt@4096: the same created time; the larger id wins.
  const auto& vt4k = base.lengths[0].scores.at("vt");
  EXPECT_EQ(vt4k.run, (f.main.at({"vt", 4096})));
  EXPECT_THAT(vt4k.superseded, ElementsAre(f.tie));
  // vt@16384: the March run wins over a later-written (larger id) February one.
  const auto& vt16k = find(s, "model-a", kSnap).lengths[2].scores.at("vt");
  EXPECT_EQ(vt16k.run, f.late);
  EXPECT_EQ(vt16k.created, "2025-03-01T00:00:00Z");
  EXPECT_THAT(vt16k.superseded, ElementsAre(f.loser));
  EXPECT_NEAR(vt16k.score, 84.0, 1e-12);
  const auto notes = ruler_notes(s);
  const std::string all = fmt::format("{}", fmt::join(notes, "\n"));
  EXPECT_THAT(all, HasSubstr(fmt::format("ruler:niah_single_1 at 8192 (model-a): newest run {} (2025-02-01T00:00:00Z) "
                                         "used over run(s) {}, for baseline, {}",
                                         f.main.at({"niah_single_1", 8192}), f.stale, kSnap)));
  EXPECT_THAT(all, HasSubstr(fmt::format("newest run {} (2025-03-01T00:00:00Z) used over run(s) {}", f.late, f.loser)));
}

TEST(RulerSummary, RunsThatAreNotRulerAreSkippedWithAReason) {
  const Fixture f;
  const auto s = f.summarize();
  std::map<RunId, std::string> reasons;
  for (const auto& k : s.skipped) reasons[k.run] = k.reason;
  ASSERT_EQ(reasons.size(), 4u);
  EXPECT_EQ(reasons.at(f.prompts), "prompts file (no task)");
  EXPECT_THAT(reasons.at(f.longbench), HasSubstr("not a RULER task (longbench:qasper)"));
  EXPECT_THAT(reasons.at(f.depth), HasSubstr("fixed needle depth 50"));
  EXPECT_EQ(reasons.at(f.compress), "a compress run, not eval");
  // The prompts-file run's 0.0 accuracies would have dragged 4096 down: nothing of it counts.
  EXPECT_NEAR(find(s, "model-a", "baseline").lengths[0].average, 95.0, 1e-12);
  EXPECT_THAT(fmt::format("{}", fmt::join(ruler_notes(s), "\n")),
              HasSubstr(fmt::format("skipped run {}: prompts file (no task)", f.prompts)));
  // The eval runs only (what the CLI reads by default): no compress run to skip.
  const auto evals = summarize_ruler(f.store, f.store.runs(RunKind::eval));
  EXPECT_EQ(evals.skipped.size(), 3u);
}

TEST(RulerSummary, AnIncompleteLengthIsFlaggedNotAveragedAcross) {
  const Fixture f;
  const auto s = f.summarize();
  const auto& b = find(s, "model-b", "baseline");
  EXPECT_THAT(b.tasks, ElementsAre("niah_single_1", "vt"));
  ASSERT_EQ(b.lengths.size(), 2u);
  EXPECT_TRUE(b.lengths[0].complete());
  EXPECT_NEAR(b.lengths[0].average, 70.0, 1e-12);  // (80 + 60) / 2
  EXPECT_FALSE(b.lengths[1].complete());
  EXPECT_THAT(b.lengths[1].missing, ElementsAre("vt"));
  EXPECT_NEAR(b.lengths[1].average, 50.0, 1e-12);  // niah alone
  EXPECT_FALSE(b.complete);
  EXPECT_EQ(b.average, std::nullopt);  // not (70 + 50) / 2 = 60
  EXPECT_EQ(b.wavg_inc, std::nullopt);
  EXPECT_EQ(b.wavg_dec, std::nullopt);
  EXPECT_EQ(b.effective_length, std::nullopt);
  EXPECT_THAT(fmt::format("{}", fmt::join(ruler_notes(s), "\n")),
              HasSubstr("model-b / baseline: incomplete (8192 lacks vt)"));
}

TEST(RulerSummary, AModelFilterKeepsOneModel) {
  const Fixture f;
  const auto b = f.summarize({.model = "model-b"});
  ASSERT_EQ(b.methods.size(), 1u);
  EXPECT_EQ(b.methods[0].model, "model-b");
  EXPECT_TRUE(b.skipped.empty());  // model-a's prompts-file, LongBench, … runs are not even notes
  const auto a = f.summarize({.model = "model-a"});
  ASSERT_EQ(a.methods.size(), 2u);
  EXPECT_EQ(a.methods[0].model, "model-a");
  EXPECT_EQ(a.methods[1].model, "model-a");
  try {
    f.summarize({.model = "model-c"});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("no RULER eval run of model 'model-c' (models with RULER runs: model-a, model-b)"));
  }
}

TEST(RulerSummary, AnAccuracyOutsideZeroOneIsAnError) {
  TempDir dir;
  Store store(dir / "r.sqlite");
  const RunId id = write_eval(store, "m", ruler_task("vt", 4096), kFeb, {{"baseline", 1.5}});
  try {
    summarize_ruler(store, store.runs());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(fmt::format("run {} (ruler:vt at 4096), method 'baseline': accuracy 1.5", id)));
  }
  auto bad = ruler_task("vt", 4096);
  bad.erase("length");
  write_eval(store, "m", bad, kFeb, {{"baseline", 0.5}});
  EXPECT_THROW(summarize_ruler(store, {store.runs().back()}), Error);
  EXPECT_TRUE(summarize_ruler(store, {}).methods.empty());  // nothing to read is not an error here
}

TEST(RulerSummary, MixedScoringVariantsAreNoted) {
  TempDir dir;
  Store store(dir / "r.sqlite");
  auto xkv = ruler_task("vt", 4096);
  xkv["scoring"] = "xkv";
  write_eval(store, "m", ruler_task("niah_single_1", 4096), kFeb, {{"baseline", 1.0}});
  write_eval(store, "m", xkv, kFeb, {{"baseline", 0.5}});
  const auto s = summarize_ruler(store, store.runs());
  ASSERT_EQ(s.methods.size(), 1u);
  EXPECT_NEAR(*s.methods[0].average, 75.0, 1e-12);  // (100 + 50) / 2: still computed, but noted
  EXPECT_THAT(fmt::format("{}", fmt::join(ruler_notes(s), "\n")),
              HasSubstr("m / baseline: its cells mix scoring variants (official, xkv)"));
}

TEST(RulerSummary, RendersTheTablesInEveryFormat) {
  const Fixture f;
  const auto s = f.summarize({.model = "model-a"});
  const auto text = render_ruler(s, TableFormat::text);
  EXPECT_THAT(text, HasSubstr("niah_single_1"));
  EXPECT_THAT(text, HasSubstr("wAvg inc"));
  EXPECT_THAT(text, HasSubstr("88.33"));  // baseline Avg 88.333…
  EXPECT_THAT(text, HasSubstr("85.83"));  // wAvg inc 85.833…
  EXPECT_THAT(text, HasSubstr("90.83"));  // wAvg dec 90.833…
  EXPECT_THAT(text, HasSubstr("85.67"));  // kSnap wAvg inc 85.666…
  EXPECT_THAT(text, HasSubstr("note: ruler:niah_single_1 at 8192 (model-a): newest run"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("Model")));  // one model: no model column
  // The summary row of baseline: tasks, A(L) per length, Avg, wAvg inc, wAvg dec, effective length.
  EXPECT_THAT(text, ::testing::ContainsRegex("baseline +2 +95\\.00 +90\\.00 +80\\.00 +88\\.33 +85\\.83 +90\\.83 +8192"));

  const auto all = render_ruler(f.summarize(), TableFormat::text);
  EXPECT_THAT(all, HasSubstr("Model"));
  EXPECT_THAT(all, HasSubstr("50.00*"));  // model-b's incomplete 8192
  EXPECT_THAT(all, ::testing::ContainsRegex("model-b +baseline +2 +70\\.00 +50\\.00\\* +– +– +– +–"));
  EXPECT_EQ(render_ruler(f.summarize({.threshold = 79}), TableFormat::text).find("≥16384") != std::string::npos, true);
  EXPECT_THAT(render_ruler(f.summarize({.threshold = 96}), TableFormat::text), HasSubstr("<4096"));

  const auto json = nlohmann::json::parse(render_ruler(s, TableFormat::json));
  EXPECT_DOUBLE_EQ(json["threshold"].get<double>(), 85.6);
  EXPECT_EQ(json["methods"][0]["method"], "baseline");
  EXPECT_NEAR(json["methods"][0]["wavg_inc"].get<double>(), 515.0 / 6, 1e-12);  // full precision
  EXPECT_EQ(json["methods"][0]["effective_length"], 8192);
  EXPECT_EQ(json["methods"][0]["lengths"][1]["scores"]["niah_single_1"]["superseded"][0], f.stale);

  const auto csv = render_ruler(s, TableFormat::csv, RulerTables::summary);
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "method,tasks,4096,8192,16384,avg,wavg_inc,wavg_dec,effective_length,complete");
  EXPECT_THAT(csv, HasSubstr("baseline,2,95,90,80,"));
  const auto scores_csv = render_ruler(s, TableFormat::csv, RulerTables::scores);
  EXPECT_EQ(scores_csv.substr(0, scores_csv.find('\n')), "method,length,niah_single_1,vt,avg,complete");
  EXPECT_THAT(scores_csv, HasSubstr("baseline,4096,100,90,95,true"));

  const auto md = render_ruler(s, TableFormat::markdown);
  EXPECT_THAT(md, HasSubstr("| Method | Length | niah\\_single\\_1 | vt | Avg |"));
  const auto tex = render_ruler(s, TableFormat::latex);
  EXPECT_THAT(tex, HasSubstr("\\toprule"));
  EXPECT_THAT(tex, HasSubstr("niah\\_single\\_1"));
  EXPECT_THAT(tex, HasSubstr("% note: "));
  EXPECT_THAT(render_ruler(f.summarize({.threshold = 79, .model = "model-a"}), TableFormat::latex, RulerTables::summary),
              HasSubstr("& $\\geq$16384 \\\\"));  // every length passes: a lower bound
  EXPECT_THAT(md, HasSubstr("\n- note: ruler:niah\\_single\\_1 at 8192"));
  EXPECT_EQ(parse_ruler_tables("summary"), RulerTables::summary);
  EXPECT_THROW(parse_ruler_tables("all"), Error);
}

}  // namespace
}  // namespace kvlab::results
