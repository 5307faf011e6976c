// RULER's cross-length aggregates from the eval runs of the results store: for each
// (model, method), the task × length score table, the per-length averages, the across-length
// average, RULER's weighted averages wAvg (inc) / wAvg (dec) and the effective length.
//
// What counts. An eval run (RunKind::eval, status "ok") of `kvlab eval --task ruler:<task>
// --length N` (or of a sweep cell) whose provenance["task"] is {"name": "ruler:<task>",
// "length": N, …}. Each of its whole-run "accuracy" rows (Scope::run, in [0, 1]) is one cell
// (model = Run::model, method = Metric::method, "baseline" being the uncompressed model;
// task = the name without "ruler:"; length = N). Skipped, with a note saying why: runs of
// another kind, failed runs, runs on a prompts file (provenance task null), tasks not named
// "ruler:*" (LongBench), fixed-depth needle runs (provenance task.depth_percent set by
// `--depth`: one depth is not RULER's depth sweep), and runs without accuracy rows.
//
// Definitions (scores in points; nothing is rounded inside, renderers print 2 decimals like
// RULER's round(100 · mean, 2)):
//   score(task, L)  100 · accuracy of that (model, method, task, length).
//   newest run      when several runs hold the same (model, method, task, length), the cell
//                   comes from the newest: latest Run::created (ISO 8601 UTC, compared as
//                   text), ties broken by the larger run id. The others are listed as
//                   superseded and the notes say so.
//   A(L)            per-length average: the unweighted mean of score(task, L) over the tasks
//                   present at L.
//   complete        the method's tasks are the union of its tasks over all its lengths; a
//                   length lacking one of them is incomplete (RulerLength::missing names them).
//                   Its A(L) is still computed over the tasks it has, but it is flagged, and
//                   every across-length aggregate below is left undefined (nullopt) for that
//                   method: averaging lengths over different task sets would silently compare
//                   different things.
//   average         the unweighted mean of A(L) over the n lengths (the RULER "Avg." column).
//   wAvg (inc)      Σ_i w_i · A(L_i) with L_1 < … < L_n and w_i = i / (1 + 2 + … + n): the
//                   longest length weighs most (RULER paper: weights linearly increasing).
//   wAvg (dec)      the same with w_i = (n + 1 − i) / (1 + 2 + … + n): the shortest weighs most.
//   effective len.  the largest L_k such that A(L_j) > threshold (strictly) for every j ≤ k,
//                   i.e. the end of the passing prefix: a length that passes after a shorter
//                   one failed does not count. nullopt when A(L_1) ≤ threshold (RULER prints
//                   "<4K"). When every length passes it is the longest tested length, a lower
//                   bound (RULER prints ">128K"). Default threshold 85.6: the Llama-2-7B score
//                   at 4K in the RULER paper.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "results/store.h"
#include "results/table.h"

namespace kvlab::results {

inline constexpr double kRulerThreshold = 85.6;  // Llama-2-7B at 4K (RULER paper), in points

struct RulerOptions {
  double threshold = kRulerThreshold;  // effective length: A(L) must exceed it (points, 0–100)
  std::string model;                   // only runs of this Run::model ("" every model)
};

// One (model, method, task, length).
struct RulerCell {
  double score = 0;               // 100 · accuracy, full precision
  RunId run = 0;                  // the run it came from: the newest holding it
  std::string created;            // that run's Run::created
  std::string scoring;            // provenance task.scoring ("official", "xkv"; "" unknown)
  std::vector<RunId> superseded;  // older runs with the same cell, ignored (newest first)
};

struct RulerLength {
  std::int64_t length = 0;                  // tokens (`kvlab eval --length`)
  std::map<std::string, RulerCell> scores;  // task ("niah_single_1", no "ruler:") → cell
  double average = 0;                       // A(L): mean of `scores` (the tasks present)
  std::vector<std::string> missing;         // the method's tasks absent here (table order)
  bool complete() const { return missing.empty(); }
};

// The table of one (model, method).
struct RulerMethod {
  std::string model;
  std::string method;                // canonical compressor spec, or "baseline"
  std::vector<std::string> tasks;    // union over lengths, in RULER's task order, then others A–Z
  std::vector<RulerLength> lengths;  // ascending
  bool complete = true;              // every length has every task
  // Undefined (nullopt) when !complete; effective_length also when A(L_1) ≤ threshold.
  std::optional<double> average, wavg_inc, wavg_dec;
  std::optional<std::int64_t> effective_length;
};

struct RulerSkip {
  RunId run = 0;
  std::string reason;  // "prompts file (no task)", "not a RULER task (longbench:qasper)", …
};

struct RulerSummary {
  double threshold = kRulerThreshold;
  std::vector<RulerMethod> methods;  // by model, then "baseline" first and the other methods A–Z
  std::vector<RulerSkip> skipped;    // runs given that do not count, in the order given
};

// Reads the "accuracy" rows of `runs` (e.g. store.runs(RunKind::eval)) and aggregates them.
// A model filter matching no RULER run is an error listing the models that have some; so is
// an accuracy outside [0, 1], a RULER task without an integer length > 0, or a threshold that
// is not finite. No RULER run at all is not an error here: `methods` is empty.
RulerSummary summarize_ruler(const Store& store, const std::vector<Run>& runs, const RulerOptions& options = {});

// The aggregates of one method's per-length averages (exposed for tests and plots):
// `averages` are A(L_1..L_n) in ascending length order.
double ruler_weighted_average(const std::vector<double>& averages, bool increasing);
// Index k of the effective length (the last index of the prefix with A > threshold); nullopt
// when the first length does not pass.
std::optional<std::size_t> ruler_effective_index(const std::vector<double>& averages, double threshold);

// Human-readable remarks: cells taken from the newest of several runs, skipped runs grouped
// by reason, incomplete methods, methods whose cells mix scoring variants.
std::vector<std::string> ruler_notes(const RulerSummary& summary);

// Which tables to render.
//   scores   rows (model, method, length), columns the tasks and "Avg" (A(L); '*' marks an
//            incomplete length in text/Markdown/LaTeX, a `complete` column in CSV)
//   summary  rows (model, method), columns the task count, A(L) per length, Avg, wAvg inc,
//            wAvg dec and the effective length (the RULER paper's main table)
enum class RulerTables { scores, summary, both };
RulerTables parse_ruler_tables(std::string_view text);  // "scores" | "summary" | "both"

// text / Markdown / LaTeX print scores with 2 decimals and end with the notes (LaTeX as %
// comments). JSON holds everything at full precision, whatever `tables` says: every cell with
// its run and superseded runs, the aggregates, the skipped runs and the notes. CSV holds full
// precision and no notes; with `both` it is the scores table, one empty line, then the summary
// table (ask for one table to get a single CSV table). The model column appears when there are
// several models. Missing values: "–" (text, Markdown), "--" (LaTeX), empty (CSV), null (JSON).
std::string render_ruler(const RulerSummary& summary, TableFormat format, RulerTables tables = RulerTables::both);

}  // namespace kvlab::results
