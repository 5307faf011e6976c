#include "results/snapshot.h"


#include "core/atomic_file.h"
#include "core/error.h"
#include "core/read_file.h"

namespace kvlab::results {

namespace {
using json = nlohmann::json;
constexpr int kBaselineFormat = 1;
}  // namespace

Snapshot snapshot_of(const Store& store, const Run& run) {
  Snapshot s;
  s.label = fmt::format("run {} ({}) in {}", run.id, run.uuid.substr(0, 8), store.path().string());
  s.kind = run.kind;
  s.source = {{"database", store.path().string()}, {"run", run.id},          {"uuid", run.uuid},
              {"kind", to_string(run.kind)},      {"created", run.created},  {"revision", run.revision},
              {"kvlab_version", run.kvlab_version}, {"command_line", run.command_line},
              {"model", run.model},               {"dump", run.dump}};
  for (const auto& m : store.metrics(run.id)) {
    auto& values = s.methods[m.method];
    switch (m.scope) {
      case Scope::run: values.points[{"", m.name}] = m.value; break;
      case Scope::task: values.points[{m.task, m.name}] = m.value; break;
      case Scope::sample: values.samples[m.name][{m.task, m.sample}] = m.value; break;
      case Scope::layer: break;  // see snapshot.h
    }
  }
  return s;
}

json baseline_json(const Snapshot& snapshot) {
  json methods = json::object();
  for (const auto& [spec, values] : snapshot.methods) {
    json m = {{"metrics", json::object()}, {"tasks", json::object()}, {"samples", json::object()}};
    for (const auto& [key, v] : values.points) {
      if (key.task.empty()) m["metrics"][key.name] = v;
      else m["tasks"][key.task][key.name] = v;
    }
    for (const auto& [name, rows] : values.samples) {
      json list = json::array();
      for (const auto& [key, v] : rows) list.push_back({{"task", key.task}, {"sample", key.sample}, {"value", v}});
      m["samples"][name] = std::move(list);
    }
    methods[spec] = std::move(m);
  }
  return {{"kvlab_baseline", kBaselineFormat},
          {"kind", to_string(snapshot.kind)},
          {"source", snapshot.source},
          {"methods", std::move(methods)}};
}

Snapshot snapshot_from_baseline(const json& doc, const std::string& origin) {
  if (!doc.is_object() || !doc.contains("kvlab_baseline"))
    fail("{} is not a kvlab baseline (no \"kvlab_baseline\" key; write one with `kvlab results baseline RUN --out "
         "FILE`)",
         origin);
  if (doc["kvlab_baseline"] != kBaselineFormat)
    fail("{}: baseline format {} is not supported (this kvlab reads format {})", origin, doc["kvlab_baseline"].dump(),
         kBaselineFormat);
  Snapshot s;
  s.label = origin;
  try {
    s.kind = parse_run_kind(doc.value("kind", "other"));
    s.source = doc.value("source", json::object());
    for (const auto& [spec, m] : doc.at("methods").items()) {
      auto& values = s.methods[spec];
      // Named locals: a range-for over .items() of a temporary would dangle.
      const json metrics = m.value("metrics", json::object()), tasks = m.value("tasks", json::object()),
                 samples = m.value("samples", json::object());
      for (const auto& [name, v] : metrics.items()) values.points[{"", name}] = v.get<double>();
      for (const auto& [task, per_task] : tasks.items())
        for (const auto& [name, v] : per_task.items()) values.points[{task, name}] = v.get<double>();
      for (const auto& [name, rows] : samples.items())
        for (const auto& row : rows)
          values.samples[name][{row.value("task", ""), row.at("sample").get<std::string>()}] =
              row.at("value").get<double>();
    }
  } catch (const json::exception& e) {
    fail("{}: malformed baseline: {}", origin, e.what());
  }
  return s;
}

void write_baseline(const std::filesystem::path& path, const Snapshot& snapshot) {
  core::write_file_atomic(path, baseline_json(snapshot).dump(1) + "\n");
}

Snapshot read_baseline(const std::filesystem::path& path) {
  auto doc = json::parse(core::read_file(path, "baseline"), nullptr, false);
  if (doc.is_discarded()) fail("baseline {} is not valid JSON", path.string());
  return snapshot_from_baseline(doc, path.string());
}

}  // namespace kvlab::results
