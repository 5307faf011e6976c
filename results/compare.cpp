#include "results/compare.h"

#include <cmath>
#include <limits>
#include <set>

#include "core/error.h"

namespace kvlab::results {

namespace {

constexpr double kAbsoluteFloor = 1e-9;  // see compare.h: exact zeros stay exact

std::string join(const std::vector<std::string>& items, std::size_t at_most = 6) {
  std::string out;
  for (std::size_t i = 0; i < items.size() && i < at_most; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > at_most) out += fmt::format(" and {} more", items.size() - at_most);
  return out;
}

std::string key_name(const std::string& method, const PointKey& key) {
  return key.task.empty() ? fmt::format("{} of {}", key.name, method)
                          : fmt::format("{} (task {}) of {}", key.name, key.task, method);
}

double tolerance_of(const CheckOptions& options, const std::string& metric) {
  const auto it = options.tolerance_for.find(metric);
  return it != options.tolerance_for.end() ? it->second : options.tolerance;
}

Delta point_delta(const std::string& method, const PointKey& key, double a, double b, const CheckOptions& options) {
  Delta d;
  d.method = method;
  d.task = key.task;
  d.metric = key.name;
  d.direction = metric_direction(key.name);
  d.baseline = a;
  d.candidate = b;
  d.delta = b - a;
  d.tolerance = tolerance_of(options, key.name);
  d.relative = a != 0 ? d.delta / std::fabs(a) : std::numeric_limits<double>::quiet_NaN();
  if (d.direction == Direction::none) return d;
  const double improvement = d.direction == Direction::higher_better ? d.delta : -d.delta;
  const double allowed = d.tolerance * std::fabs(a) + kAbsoluteFloor;
  d.verdict = improvement < -allowed ? Verdict::worse : improvement > allowed ? Verdict::better : Verdict::within;
  return d;
}

// Paired over the (task, sample) ids both runs hold; `task` "" pools every task.
Delta paired_delta(const std::string& method, const PointKey& key, const std::map<SampleKey, double>& base,
                   const std::map<SampleKey, double>& cand, const CheckOptions& options, std::vector<std::string>& notes) {
  std::vector<double> diffs;
  double sum_a = 0, sum_b = 0;
  std::size_t in_baseline = 0;
  for (const auto& [id, a] : base) {
    if (!key.task.empty() && id.task != key.task) continue;
    ++in_baseline;
    const auto it = cand.find(id);
    if (it == cand.end()) continue;
    diffs.push_back(it->second - a);
    sum_a += a;
    sum_b += it->second;
  }
  if (diffs.empty())
    fail("{}: the candidate shares no sample ids with the baseline ({} baseline samples); were they run on the same "
         "data?",
         key_name(method, key), in_baseline);
  if (diffs.size() < in_baseline)
    notes.push_back(fmt::format("{}: paired on the {} of {} baseline samples the candidate also has",
                                key_name(method, key), diffs.size(), in_baseline));
  const double n = static_cast<double>(diffs.size());
  Delta d;
  d.method = method;
  d.task = key.task;
  d.metric = key.name;
  d.direction = metric_direction(key.name);
  d.baseline = sum_a / n;
  d.candidate = sum_b / n;
  d.tolerance = tolerance_of(options, key.name);
  const auto boot = bootstrap_mean(diffs, options.seed, options.resamples, options.confidence);
  d.delta = boot.mean;
  d.relative = d.baseline != 0 ? d.delta / std::fabs(d.baseline) : std::numeric_limits<double>::quiet_NaN();
  d.paired = true;
  d.samples = diffs.size();
  d.ci = boot.ci;
  if (d.direction == Direction::none) return d;
  // The CI of the improvement (positive = better), whatever the direction.
  const Interval gain = d.direction == Direction::higher_better ? boot.ci : Interval{-boot.ci.high, -boot.ci.low};
  d.verdict = gain.high < -d.tolerance ? Verdict::worse : gain.low > d.tolerance ? Verdict::better : Verdict::within;
  return d;
}

std::string number(double v) {
  if (std::isnan(v)) return "-";
  return fmt::format("{:.6g}", v);
}

std::string signed_number(double v) {
  if (std::isnan(v)) return "-";
  return fmt::format("{:+.4g}", v);
}

}  // namespace

std::string_view to_string(Verdict verdict) {
  switch (verdict) {
    case Verdict::better: return "better";
    case Verdict::worse: return "WORSE";
    case Verdict::within: return "same";
    case Verdict::info: return "";
  }
  return "";
}

std::size_t Comparison::count(Verdict v) const {
  std::size_t n = 0;
  for (const auto& d : deltas) n += d.verdict == v;
  return n;
}

Comparison compare(const Snapshot& baseline, const Snapshot& candidate, const CheckOptions& options) {
  if (baseline.kind != candidate.kind && baseline.kind != RunKind::other && candidate.kind != RunKind::other)
    fail("{} is a {} run but the baseline {} is a {} run", candidate.label, to_string(candidate.kind), baseline.label,
         to_string(baseline.kind));
  Comparison out{baseline.label, candidate.label, options.confidence, {}, {}};
  std::vector<std::string> missing_methods;
  for (const auto& [spec, values] : baseline.methods)
    if (!candidate.methods.contains(spec)) missing_methods.push_back(spec);
  if (!missing_methods.empty())
    fail("{} lacks {} method(s) of the baseline {}: {}", candidate.label, missing_methods.size(), baseline.label,
         join(missing_methods));
  for (const auto& [spec, values] : candidate.methods)
    if (!baseline.methods.contains(spec)) out.notes.push_back(fmt::format("method {} is not in the baseline", spec));

  std::vector<std::string> missing_metrics;
  for (const auto& [spec, base] : baseline.methods) {
    const auto& cand = candidate.methods.at(spec);
    std::map<PointKey, Delta> rows;
    for (const auto& [name, samples] : base.samples) {
      std::set<std::string> tasks;
      for (const auto& [id, v] : samples) tasks.insert(id.task);
      // The whole run, and each task when there are several or the run stores a value for it
      // (a per-task point value must not escape the bootstrap).
      std::vector<PointKey> keys{{"", name}};
      for (const auto& t : tasks)
        if (!t.empty() && (tasks.size() > 1 || base.points.contains({t, name}))) keys.push_back({t, name});
      for (const auto& key : keys) {
        if (cand.samples.contains(name)) {
          rows.emplace(key, paired_delta(spec, key, samples, cand.samples.at(name), options, out.notes));
        } else if (cand.points.contains(key) && base.points.contains(key)) {
          out.notes.push_back(fmt::format("{}: the candidate has no per-sample rows; compared the point values",
                                          key_name(spec, key)));
          rows.emplace(key, point_delta(spec, key, base.points.at(key), cand.points.at(key), options));
        } else {
          missing_metrics.push_back(key_name(spec, key) + " (per sample)");
        }
      }
    }
    for (const auto& [key, a] : base.points) {
      if (rows.contains(key)) continue;  // judged by the bootstrap above
      const auto it = cand.points.find(key);
      if (it == cand.points.end()) {
        missing_metrics.push_back(key_name(spec, key));
        continue;
      }
      rows.emplace(key, point_delta(spec, key, a, it->second, options));
    }
    for (const auto& [key, b] : cand.points)
      if (!base.points.contains(key) && !rows.contains(key))
        out.notes.push_back(fmt::format("{} is not in the baseline", key_name(spec, key)));
    for (auto& [key, d] : rows) out.deltas.push_back(std::move(d));
  }
  if (!missing_metrics.empty())
    fail("{} lacks {} metric(s) of the baseline {}: {}", candidate.label, missing_metrics.size(), baseline.label,
         join(missing_metrics));
  return out;
}

std::string format_comparison(const Comparison& c, bool all_rows) {
  std::string out = fmt::format("baseline:  {}\ncandidate: {}\n", c.baseline_label, c.candidate_label);
  std::string current;
  for (const auto& d : c.deltas) {
    if (!all_rows && d.verdict != Verdict::worse && d.verdict != Verdict::better) continue;
    if (d.method != current) {
      current = d.method;
      out += fmt::format("\n{}\n  {:<34} {:>12} {:>12} {:>11} {:>9}  {}\n", d.method.empty() ? "(no method)" : d.method,
                         "metric", "baseline", "candidate", "delta", "rel", "verdict");
    }
    std::string label = d.metric;
    if (const auto arrow = direction_arrow(d.direction); !arrow.empty()) label += fmt::format(" {}", arrow);
    if (!d.task.empty()) label += fmt::format(" [{}]", d.task);
    std::string verdict(to_string(d.verdict));
    if (d.paired)
      verdict += fmt::format("{}n={} {:g}% CI [{:+.4g}, {:+.4g}]", verdict.empty() ? "" : "  ", d.samples, 100 * c.confidence,
                             d.ci.low, d.ci.high);
    const std::string rel = std::isnan(d.relative) ? "-" : fmt::format("{:+.2f}%", 100 * d.relative);
    // fmt pads by display width, so the 3-byte arrows line up.
    out += fmt::format("  {:<34} {:>12} {:>12} {:>11} {:>9}  {}\n", label, number(d.baseline),
                       number(d.candidate), signed_number(d.delta), rel, verdict);
  }
  if (!c.notes.empty()) {
    out += "\nnotes:\n";
    for (const auto& n : c.notes) out += "  " + n + "\n";
  }
  out += fmt::format("\n{} metric(s) compared: {} worse, {} better, {} within tolerance, {} informational\n",
                     c.deltas.size(), c.count(Verdict::worse), c.count(Verdict::better), c.count(Verdict::within),
                     c.count(Verdict::info));
  return out;
}

}  // namespace kvlab::results
