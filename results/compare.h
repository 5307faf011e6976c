// The regression gate behind `kvlab compare` and `kvlab check`: every metric of every
// baseline method, candidate against baseline, judged by the metric's direction.
//
// Whole-run and per-task values (point metrics): worse when the change in the worse direction
// exceeds tolerance × |baseline| (a relative tolerance: errors span orders of magnitude), plus
// an absolute floor of 1e-9 so an exact zero (the uncompressed method) does not turn rounding
// into a regression.
// Per-sample metrics (accuracy from eval): a seeded paired bootstrap over the sample ids both
// runs share, of the mean difference candidate − baseline. Worse only when the whole CI lies
// beyond −tolerance in the worse direction (an absolute tolerance: accuracy is already a
// fraction, 0.02 = two points); better when it lies beyond +tolerance. A metric with sample
// rows is judged this way for the whole run (all samples) and per task (when the samples span
// several tasks, or the run stores a per-task value) — even where the run also stores a point
// value for it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "results/bootstrap.h"
#include "results/metrics.h"
#include "results/snapshot.h"

namespace kvlab::results {

struct CheckOptions {
  double tolerance = 0.02;
  std::map<std::string, double> tolerance_for;  // per metric name, overrides `tolerance`
  std::uint64_t seed = 0;                       // of the bootstrap
  int resamples = 2000;
  double confidence = 0.95;
};

enum class Verdict { better, worse, within, info };  // info: the metric has no direction
std::string_view to_string(Verdict verdict);

struct Delta {
  std::string method, task, metric;  // task "" = whole run
  Direction direction = Direction::none;
  double baseline = 0, candidate = 0;  // values (means over the shared samples when paired)
  double delta = 0;                    // candidate − baseline
  double relative = 0;                 // delta / |baseline|; NaN when the baseline is 0
  double tolerance = 0;
  bool paired = false;    // judged by the bootstrap
  std::size_t samples = 0;  // shared sample ids (paired only)
  Interval ci;              // 95% CI of the mean difference (paired only)
  Verdict verdict = Verdict::info;
};

struct Comparison {
  std::string baseline_label, candidate_label;
  double confidence = 0.95;         // of the bootstrap CIs
  std::vector<Delta> deltas;        // baseline order: method, task, metric
  std::vector<std::string> notes;   // what was not compared and why
  std::size_t count(Verdict v) const;
  bool regressed() const { return count(Verdict::worse) > 0; }
};

// Throws (exit code 2 in the CLI) when the candidate lacks a method or a metric of the
// baseline, or shares no sample ids with it for a per-sample metric: those are not results,
// they are a mismatch. Methods and metrics only the candidate has are listed in `notes`.
Comparison compare(const Snapshot& baseline, const Snapshot& candidate, const CheckOptions& options);

// A table per method. all_rows = false lists only worse/better rows (for `check`).
std::string format_comparison(const Comparison& comparison, bool all_rows);

}  // namespace kvlab::results
