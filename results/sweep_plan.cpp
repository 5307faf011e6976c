#include "results/sweep_plan.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <set>

#include "core/error.h"
#include "core/fnv1a.h"
#include "core/read_file.h"

namespace kvlab::results {
namespace {

namespace fs = std::filesystem;

// A scalar's text; a list or mapping where a value belongs is an error naming `where` (yaml-cpp's
// own "bad conversion" names neither the key nor the file).
std::string scalar(const YAML::Node& node, const std::string& where) {
  if (!node.IsScalar()) fail("{}: expected a single value, not a {}", where, node.IsSequence() ? "list" : "mapping");
  return node.as<std::string>();
}

void check_keys(const YAML::Node& node, const std::set<std::string>& allowed, const std::string& where) {
  if (!node.IsMap()) fail("{}: expected a mapping", where);
  for (const auto& kv : node) {
    const auto key = scalar(kv.first, where + " (a key)");
    if (!allowed.count(key)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      fail("{}: unknown key '{}' (allowed: {})", where, key, list);
    }
  }
}

std::vector<std::string> strings(const YAML::Node& node, const std::string& where) {
  std::vector<std::string> out;
  if (!node) return out;
  if (node.IsScalar()) return {node.as<std::string>()};
  if (!node.IsSequence()) fail("{}: expected a list", where);
  for (const auto& v : node) out.push_back(scalar(v, where + " (an entry)"));
  return out;
}

// A section's options: each key one of `allowed` (a typo would otherwise be ignored silently).
std::map<std::string, std::string> options_of(const YAML::Node& node, const std::set<std::string>& allowed,
                                              const std::string& where) {
  std::map<std::string, std::string> out;
  if (!node) return out;
  check_keys(node, allowed, where);
  for (const auto& kv : node) {
    const auto key = kv.first.as<std::string>();
    out[key] = scalar(kv.second, where + "." + key);
  }
  return out;
}

// The options a section's cells read (cli/cmd_sweep.cpp); samples is eval's own key, kept there.
const std::set<std::string> kCompressOptions = {"device", "model", "threads"};
const std::set<std::string> kEvalOptions = {"chat_template", "chat_template_kwargs", "compress_route", "depth",
                                            "device", "essay", "max_new_tokens", "model_dtype", "qa",
                                            "query_window", "question", "recompress_every", "samples",
                                            "tokenize", "words"};


std::string path_value(const std::string& v, const fs::path& base) {
  const fs::path p(v);
  return p.is_absolute() || base.empty() ? p.string() : (base / p).lexically_normal().string();
}

// What defines a cell, as text: the kind, then "\x1f" key=value per axis, "\x1e" spec per method
// and "\x1d" key=value per option (maps in key order).
std::string canonical_text(const SweepCell& c) {
  std::string text = c.kind;
  for (const auto& [k, v] : c.axes) text += "\x1f" + k + "=" + v;
  for (const auto& m : c.methods) text += "\x1e" + m;
  for (const auto& [k, v] : c.options) text += "\x1d" + k + "=" + v;
  return text;
}

// Ids are FNV-1a 64 (core/fnv1a.h) of the canonical text: stable across runs, machines and
// builds. Builds up to b94864a hashed it from a mistyped offset basis (the reference's with its
// last digit dropped) into "c" + 16 hex digits. Stores hold those ids, so each cell keeps its
// legacy id too and find_cell_run accepts either: recognising them costs one more lookup per
// cell, whereas migrating a store on open would rewrite uuids other shards and merges refer to,
// and part them from the cell folders (<out>/<id>/) named after them. The "c2-" prefix keeps
// old and new apart: a legacy id is "c" and 16 hex digits, never a dash.
constexpr std::uint64_t kLegacyOffset = 1469598103934665603ULL;

void set_ids(SweepCell& c) {
  const std::string text = canonical_text(c);
  c.id = fmt::format("c2-{:016x}", core::fnv1a64(text));
  c.legacy_id = fmt::format("c{:016x}", core::fnv1a64_update(kLegacyOffset, text));
}

// Cells in file order, each once: a dump, method or model listed twice is one cell (its id is
// the same, and a second run under that id would collide with the first in the store).
void add_cell(SweepPlan& plan, SweepCell cell) {
  set_ids(cell);
  const bool duplicate = std::any_of(plan.cells.begin(), plan.cells.end(), [&](const auto& c) { return c.id == cell.id; });
  if (!duplicate) plan.cells.push_back(std::move(cell));
}

}  // namespace

SweepPlan parse_sweep(const std::string& yaml_text, const std::string& source, const fs::path& base) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    fail("{}: not valid YAML ({})", source, e.what());
  }
  check_keys(root, {"name", "out", "db", "compress", "eval"}, source);
  SweepPlan plan;
  plan.name = root["name"] ? scalar(root["name"], source + ": name") : fs::path(source).stem().string();
  plan.out = root["out"] ? fs::path(path_value(scalar(root["out"], source + ": out"), base)) : base / plan.name;
  plan.db = root["db"] ? fs::path(path_value(scalar(root["db"], source + ": db"), base)) : plan.out / "results.sqlite";

  if (const auto c = root["compress"]) {
    const std::string where = source + ": compress";
    check_keys(c, {"dumps", "samples", "methods", "options"}, where);
    const auto dumps = strings(c["dumps"], where + ".dumps");
    const auto methods = strings(c["methods"], where + ".methods");
    auto samples = strings(c["samples"], where + ".samples");
    if (dumps.empty() || methods.empty()) fail("{}: needs dumps and methods", where);
    if (samples.empty()) samples.push_back("");  // the dump's first sample
    const auto options = options_of(c["options"], kCompressOptions, where + ".options");
    for (const auto& d : dumps)
      for (const auto& s : samples)
        for (const auto& m : methods)
          add_cell(plan, {"compress", {{"dump", path_value(d, base)}, {"sample", s}, {"method", m}}, {m}, options, "", ""});
  }
  if (const auto e = root["eval"]) {
    const std::string where = source + ": eval";
    check_keys(e, {"models", "tasks", "prompts", "longbench", "lengths", "samples", "methods", "options"}, where);
    const auto models = strings(e["models"], where + ".models");
    const auto methods = strings(e["methods"], where + ".methods");
    auto tasks = strings(e["tasks"], where + ".tasks");
    for (const auto& p : strings(e["prompts"], where + ".prompts")) tasks.push_back("prompts:" + path_value(p, base));
    for (const auto& f : strings(e["longbench"], where + ".longbench")) tasks.push_back("longbench:" + path_value(f, base));
    auto lengths = strings(e["lengths"], where + ".lengths");
    if (models.empty() || methods.empty() || tasks.empty())
      fail("{}: needs models, methods and tasks, prompts or longbench files", where);
    if (lengths.empty()) lengths.push_back("4096");
    auto options = options_of(e["options"], kEvalOptions, where + ".options");
    if (e["samples"]) options["samples"] = scalar(e["samples"], where + ".samples");
    for (const auto& model : models)
      for (const auto& task : tasks)
        for (const auto& length : lengths) {
          SweepCell cell{"eval", {{"model", path_value(model, base)}, {"task", task}}, methods, options, "", ""};
          if (task.rfind("prompts:", 0) != 0) cell.axes["length"] = length;  // prompts files are not sized
          add_cell(plan, std::move(cell));
        }
  }
  if (plan.cells.empty()) fail("{}: no compress or eval section, nothing to run", source);
  return plan;
}

SweepPlan load_sweep(const fs::path& file) {
  return parse_sweep(core::read_file(file, "sweep file"), file.string(), file.parent_path());
}

std::optional<Run> find_cell_run(const Store& store, const SweepCell& cell) {
  if (auto run = store.find_uuid(cell.id)) return run;
  return store.find_uuid(cell.legacy_id);
}

std::vector<SweepCell> shard_cells(const SweepPlan& plan, int index, int count) {
  if (count <= 0 || index < 0 || index >= count) fail("shard {}/{}: expected 0 ≤ i < N", index, count);
  std::vector<SweepCell> out;
  for (std::size_t k = 0; k < plan.cells.size(); ++k)
    if (static_cast<int>(k % count) == index) out.push_back(plan.cells[k]);
  return out;
}

std::pair<int, int> parse_shard(const std::string& text) {
  const auto slash = text.find('/');
  try {
    if (slash == std::string::npos) throw std::invalid_argument("no slash");
    std::size_t used_i = 0, used_n = 0;
    const int i = std::stoi(text.substr(0, slash), &used_i), n = std::stoi(text.substr(slash + 1), &used_n);
    if (used_i != slash || used_n != text.size() - slash - 1 || n <= 0 || i < 0 || i >= n) throw std::invalid_argument("range");
    return {i, n};
  } catch (const std::exception&) {
    fail("--shard '{}': expected i/N with 0 ≤ i < N (SLURM_ARRAY_TASK_ID's numbering)", text);
  }
}

std::string slurm_script(const SweepPlan& plan, const fs::path& sweep_file, int shards, const std::string& kvlab_binary,
                         const std::map<std::string, std::string>& sbatch) {
  if (shards <= 0) fail("--shards {} must be positive", shards);
  std::string s = "#!/bin/bash\n";
  s += fmt::format("# kvlab sweep '{}': {} cells in {} shards, one per array task.\n", plan.name, plan.cells.size(), shards);
  s += fmt::format("#SBATCH --job-name=kvlab-{}\n#SBATCH --array=0-{}\n", plan.name, shards - 1);
  for (const auto& [k, v] : sbatch) s += fmt::format("#SBATCH --{}={}\n", k, v);
  s += "set -euo pipefail\n";
  const fs::path db = fs::absolute(plan.db);
  const auto shard_db = (db.parent_path() / (db.stem().string() + "-shard-${SLURM_ARRAY_TASK_ID}.sqlite")).string();
  s += fmt::format("{} --quiet sweep run {} --shard \"${{SLURM_ARRAY_TASK_ID}}/{}\" --db \"{}\"\n", kvlab_binary,
                   fs::absolute(sweep_file).string(), shards, shard_db);
  s += fmt::format("# afterwards: {} results merge {}-shard-*.sqlite --out {}\n", kvlab_binary,
                   (db.parent_path() / db.stem()).string(), db.string());
  return s;
}

}  // namespace kvlab::results
