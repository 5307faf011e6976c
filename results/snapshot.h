// A run reduced to what compare/check look at: per method, the whole-run and per-task metric
// values and the per-sample values. Built from a stored run or read from a baseline file, so
// `kvlab check` treats "--baseline RUN" and "--baseline baseline.json" the same way.
// Per-layer rows are left out: they are diagnostics, and gating on every layer of every
// method would turn noise into failures.
#pragma once

#include <compare>
#include <filesystem>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "results/store.h"

namespace kvlab::results {

// A whole-run value has task "".
struct PointKey {
  std::string task, name;
  auto operator<=>(const PointKey&) const = default;
};

struct SampleKey {
  std::string task, sample;
  auto operator<=>(const SampleKey&) const = default;
};

struct MethodValues {
  std::map<PointKey, double> points;                              // scope run and task
  std::map<std::string, std::map<SampleKey, double>> samples;     // metric → scope sample rows
};

struct Snapshot {
  std::string label;  // "run 12 (3f2a…) in kvlab-results.sqlite" or "baseline.json", for messages
  RunKind kind = RunKind::other;
  nlohmann::json source = nlohmann::json::object();  // provenance of the run it came from
  std::map<std::string, MethodValues> methods;       // by canonical spec
};

Snapshot snapshot_of(const Store& store, const Run& run);

// The baseline file: stable key order (sorted), one value per line when pretty-printed, so a
// reviewer reads its diff. Format version 1:
//   {"kvlab_baseline": 1, "kind": "compress", "source": {…provenance…},
//    "methods": {SPEC: {"metrics": {NAME: v}, "tasks": {TASK: {NAME: v}},
//                       "samples": {NAME: [{"task": T, "sample": S, "value": v}, …]}}}}
nlohmann::json baseline_json(const Snapshot& snapshot);
Snapshot snapshot_from_baseline(const nlohmann::json& doc, const std::string& origin);

void write_baseline(const std::filesystem::path& path, const Snapshot& snapshot);
Snapshot read_baseline(const std::filesystem::path& path);

}  // namespace kvlab::results
