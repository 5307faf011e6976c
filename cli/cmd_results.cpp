// kvlab results (ls, show, export, ruler, baseline, merge, import, metrics), kvlab compare and kvlab check:
// the results store and the regression gate (results/). Thin: parse, call results::, print.
// compare and check exit 1 when a metric got worse beyond tolerance (docs/design.md §7, exit codes).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "results/compare.h"
#include "results/import.h"
#include "results/merge.h"
#include "results/metrics.h"
#include "results/ruler_summary.h"
#include "results/snapshot.h"
#include "results/store.h"
#include "results/table.h"

namespace kvlab::cli {

namespace {

namespace fs = std::filesystem;
using results::Store;

constexpr const char* kDbHelp = "Results database (SQLite)";

void add_db_option(CLI::App* cmd, std::string& db) {
  cmd->add_option("--db", db, kDbHelp)->capture_default_str();
}

std::optional<results::RunKind> kind_filter(const std::string& kind) {
  if (kind.empty()) return std::nullopt;
  return results::parse_run_kind(kind);
}

// The metrics table (results/metrics.h), or the entries of `names` (each once); names it lacks
// are an error naming them, so a script can check a store's names against the table.
void list_metrics(const std::vector<std::string>& names) {
  std::vector<const results::MetricInfo*> rows;
  std::vector<std::string> unknown;
  if (names.empty())
    for (const auto& info : results::metric_table()) rows.push_back(&info);
  for (const auto& name : names) {
    const auto* info = results::find_metric(name);
    if (!info) unknown.push_back(name);
    else if (std::find(rows.begin(), rows.end(), info) == rows.end()) rows.push_back(info);
  }
  if (!unknown.empty())
    fail("not in the metrics table: {} (compare and check judge such names by their suffix: results/metrics.h)",
         fmt::join(unknown, ", "));
  fmt::print("{:<30} {:<10} {:<7} {:<16} {}\n", "metric", "unit", "better", "rows", "label");
  for (const auto* info : rows) {
    std::string at;
    for (const auto scope : {results::Scope::run, results::Scope::layer, results::Scope::sample})
      if (info->recorded_at(scope)) at += (at.empty() ? "" : ",") + std::string(results::to_string(scope));
    fmt::print("{:<30} {:<10} {:<7} {:<16} {}\n", info->name, results::to_string(info->unit),
               results::to_string(info->direction), at, info->label);
  }
}

// "attn_kl=0.05" → {"attn_kl": 0.05}.
std::map<std::string, double> parse_tolerances(const std::vector<std::string>& items) {
  std::map<std::string, double> out;
  for (const auto& item : items) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      fail("--tolerance-for '{}': write METRIC=VALUE, e.g. attn_kl=0.05", item);
    std::size_t used = 0;
    double value = 0;
    try {
      value = std::stod(item.substr(eq + 1), &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() - eq - 1 || !(value >= 0))
      fail("--tolerance-for '{}': '{}' is not a tolerance ≥ 0", item, item.substr(eq + 1));
    out[item.substr(0, eq)] = value;
  }
  return out;
}

struct GateOptions {
  double tolerance = 0.02;
  std::vector<std::string> tolerance_for;
  std::uint64_t seed = 0;
  int resamples = 2000;
  results::CheckOptions to_options() const {
    if (!(tolerance >= 0)) fail("--tolerance {} must be ≥ 0", tolerance);
    results::CheckOptions o;
    o.tolerance = tolerance;
    o.tolerance_for = parse_tolerances(tolerance_for);
    o.seed = seed;
    o.resamples = resamples;
    return o;
  }
};

void add_gate_options(CLI::App* cmd, GateOptions& g) {
  cmd->add_option("--tolerance", g.tolerance,
                  "Allowed worsening: relative to the baseline value for whole-run metrics, absolute (0.02 = two "
                  "points) for per-sample metrics judged by the bootstrap")
      ->capture_default_str();
  cmd->add_option("--tolerance-for", g.tolerance_for, "Per-metric tolerance METRIC=VALUE (repeatable)");
  cmd->add_option("--seed", g.seed, "Seed of the paired bootstrap over samples")->capture_default_str();
  cmd->add_option("--resamples", g.resamples, "Bootstrap resamples")->check(positive())->capture_default_str();
}


std::string one_line(const std::string& text, std::size_t at_most) {
  if (text.size() <= at_most) return text;
  return text.substr(0, at_most - 3) + "...";
}

// ---- results ls / show -------------------------------------------------------------------

void list_runs(const std::string& db, const std::string& kind) {
  const Store store(db, /*must_exist=*/true);
  const auto runs = store.runs(kind_filter(kind));
  if (runs.empty()) {
    fmt::print("{} holds no{} runs\n", db, kind.empty() ? "" : " " + kind);
    return;
  }
  fmt::print("{:>5}  {:<8}  {:<20}  {:<12}  {:>7}  {:>7}  {:<8}  {}\n", "id", "kind", "created (UTC)", "revision",
             "methods", "metrics", "uuid", "command");
  for (const auto& r : runs) {
    const auto totals = store.totals(r.id);
    fmt::print("{:>5}  {:<8}  {:<20}  {:<12}  {:>7}  {:>7}  {:<8}  {}\n", r.id, results::to_string(r.kind), r.created,
               one_line(r.revision, 12), totals.methods, totals.metrics, r.uuid.substr(0, 8),
               one_line(r.command_line, 80));
  }
}

void show_run(const std::string& db, const std::string& ref) {
  const Store store(db, /*must_exist=*/true);
  const auto run = store.resolve(ref);
  const auto totals = store.totals(run.id);
  fmt::print("run {} ({}) in {}\n", run.id, run.uuid, db);
  auto field = [](const char* name, const std::string& value) {
    if (!value.empty()) fmt::print("  {:<14}{}\n", name, value);
  };
  field("kind", std::string(results::to_string(run.kind)));
  field("created", run.created);
  field("status", run.status);
  field("kvlab", run.kvlab_version.empty() ? "" : fmt::format("{} ({})", run.kvlab_version, run.revision));
  field("command", run.command_line);
  field("host", run.host);
  field("device", run.device);
  if (run.provenance.contains("blas") && run.provenance["blas"].is_string())
    field("blas", run.provenance["blas"].get<std::string>());
  field("model", run.model + (run.model_hash.empty() ? "" : " #" + run.model_hash));
  field("dump", run.dump + (run.dump_hash.empty() ? "" : " #" + run.dump_hash));
  if (!run.seeds.empty()) field("seeds", fmt::format("{}", fmt::join(run.seeds, ", ")));
  if (!run.tags.empty()) field("tags", fmt::format("{}", fmt::join(run.tags, ", ")));
  field("notes", run.notes);
  field("rows", fmt::format("{} metric rows over {} method(s), {} matrices", totals.metrics, totals.methods,
                            totals.matrices));
  const auto table = results::build_table(store, {run});
  if (!table.rows.empty()) fmt::print("\n{}", results::render_table(table, results::TableFormat::text));
  const auto matrices = store.matrices(run.id);
  if (!matrices.empty()) {
    fmt::print("\nmatrices:");
    for (const auto& m : matrices) fmt::print(" {} [{}×{}]", m.name, m.rows, m.cols);
    fmt::print("\n");
  }
}

// ---- results export / baseline -----------------------------------------------------------

struct ExportRequest {
  std::string db = results::kDefaultDatabase;
  std::vector<std::string> runs;
  std::string format = "markdown";
  std::vector<std::string> metrics;
  std::string out;
};

void export_runs(const ExportRequest& req) {
  const Store store(req.db, /*must_exist=*/true);
  const auto format = results::parse_table_format(req.format);
  std::vector<results::Run> runs;
  for (const auto& ref : req.runs) runs.push_back(store.resolve(ref));
  const auto text = results::render_table(results::build_table(store, runs, req.metrics), format);
  if (req.out.empty()) {
    fmt::print("{}", text);
  } else {
    core::write_file_atomic(req.out, text);
    fmt::print(stderr, "wrote {}\n", req.out);
  }
}

void write_baseline_file(const std::string& db, const std::string& ref, const std::string& out) {
  const Store store(db, /*must_exist=*/true);
  const auto run = store.resolve(ref);
  const auto snapshot = results::snapshot_of(store, run);
  if (snapshot.methods.empty()) fail("run {} of {} has no whole-run, per-task or per-sample metrics", run.id, db);
  results::write_baseline(out, snapshot);
  std::size_t values = 0;
  for (const auto& [spec, m] : snapshot.methods) {
    values += m.points.size();
    for (const auto& [name, rows] : m.samples) values += rows.size();
  }
  fmt::print("wrote {}: baseline of run {} ({}), {} method(s), {} values\n", out, run.id, run.uuid.substr(0, 8),
             snapshot.methods.size(), values);
}

// ---- results ruler ------------------------------------------------------------------------

struct RulerRequest {
  std::string db = results::kDefaultDatabase;
  std::vector<std::string> runs;  // empty: every eval run of the store
  std::string model;
  double threshold = results::kRulerThreshold;
  std::string format = "text";
  std::string tables = "both";
  std::string out;
};

void ruler_summary(const RulerRequest& req) {
  const Store store(req.db, /*must_exist=*/true);
  const auto format = results::parse_table_format(req.format);
  const auto tables = results::parse_ruler_tables(req.tables);
  std::vector<results::Run> runs;
  if (req.runs.empty()) runs = store.runs(results::RunKind::eval);
  for (const auto& ref : req.runs) runs.push_back(store.resolve(ref));
  const auto summary = results::summarize_ruler(store, runs, {req.threshold, req.model});
  if (summary.methods.empty())  // the notes say why the runs read did not count
    fail("{}: no RULER eval runs among the {} run(s) read{} (runs of `kvlab eval --task ruler:<task> --length N`; "
         "`kvlab results ls --kind eval` lists the eval runs)",
         req.db, runs.size(), summary.skipped.empty() ? "" : fmt::format("; {}", fmt::join(results::ruler_notes(summary), "; ")));
  const auto text = results::render_ruler(summary, format, tables);
  if (format == results::TableFormat::csv)  // CSV holds no notes: they go to stderr
    for (const auto& note : results::ruler_notes(summary)) fmt::print(stderr, "note: {}\n", note);
  if (req.out.empty()) {
    fmt::print("{}", text);
  } else {
    core::write_file_atomic(req.out, text);
    fmt::print(stderr, "wrote {}\n", req.out);
  }
}

// ---- compare / check ---------------------------------------------------------------------

void compare_runs(const std::string& db, const std::string& a, const std::string& b, const GateOptions& gate) {
  bool regressed = false;
  {
    const auto options = gate.to_options();
    const Store store(db, /*must_exist=*/true);
    const auto base = results::snapshot_of(store, store.resolve(a));
    const auto cand = results::snapshot_of(store, store.resolve(b));
    const auto comparison = results::compare(base, cand, options);
    fmt::print("{}", results::format_comparison(comparison, /*all_rows=*/true));
    regressed = comparison.regressed();
  }
  if (regressed) set_exit_code(1);  // ran fine, regression found (docs/design.md §7)
}

struct CheckRequest {
  std::string db = results::kDefaultDatabase;
  std::string baseline;
  std::string run = "latest";
  GateOptions gate;
};

void check_run(const CheckRequest& req) {
  bool regressed = false;
  {
    const auto options = req.gate.to_options();
    // FILE_OR_RUN: an existing file is a baseline file; anything else names a run of --db.
    const fs::path as_file(req.baseline);
    const bool from_file = fs::is_regular_file(as_file);
    if (!from_file && as_file.extension() == ".json")
      fail("baseline file {} does not exist (write one with `kvlab results baseline RUN --out {}`)", req.baseline,
           req.baseline);
    const Store store(req.db, /*must_exist=*/true);
    results::Snapshot base;
    std::optional<results::RunId> baseline_run;
    if (from_file) {
      base = results::read_baseline(as_file);
    } else {
      const auto run = store.resolve(req.baseline);
      baseline_run = run.id;
      base = results::snapshot_of(store, run);
    }
    // "latest" means the latest run of the baseline's kind: a newer analyze run must not be
    // checked against a compress baseline.
    const auto candidate = store.resolve(req.run, req.run == "latest" ? std::optional(base.kind) : std::nullopt);
    if (baseline_run && *baseline_run == candidate.id)
      fmt::print("note: the candidate is the baseline run itself ({}); give --run\n", candidate.id);
    const auto comparison = results::compare(base, results::snapshot_of(store, candidate), options);
    fmt::print("{}", results::format_comparison(comparison, /*all_rows=*/false));
    regressed = comparison.regressed();
    fmt::print("{}\n", regressed ? "check: REGRESSION (exit 1)" : "check: ok");
  }
  if (regressed) set_exit_code(1);  // ran fine, regression found (docs/design.md §7)
}

}  // namespace

void add_results(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("results",
                                 "The results store: list, show, export, RULER tables, baseline, merge and import runs");
  cmd->require_subcommand(1);
  cmd->footer(fmt::format(
      "Runs live in one SQLite file (default ./{}, --db to change). Import the reports of\n"
      "`kvlab compress` and `kvlab analyze` with `kvlab results import DIR`.\n\n"
      "RUN is a run id (see `results ls`), 'latest', or a uuid prefix.",
      results::kDefaultDatabase));

  {
    auto db = std::make_shared<std::string>(results::kDefaultDatabase);
    auto kind = std::make_shared<std::string>();
    auto* ls = cmd->add_subcommand("ls", "List the runs");
    add_db_option(ls, *db);
    ls->add_option("--kind", *kind, "Only runs of this kind")
        ->check(CLI::IsMember({"analyze", "compress", "eval", "other"}));
    ls->callback([db, kind, &action] { action = [db, kind] { list_runs(*db, *kind); }; });
  }
  {
    auto db = std::make_shared<std::string>(results::kDefaultDatabase);
    auto run = std::make_shared<std::string>();
    auto* show = cmd->add_subcommand("show", "A run's provenance and its per-method metrics");
    show->add_option("run", *run, "Run id, 'latest' or uuid prefix")->required();
    add_db_option(show, *db);
    show->callback([db, run, &action] { action = [db, run] { show_run(*db, *run); }; });
  }
  {
    auto req = std::make_shared<ExportRequest>();
    auto* ex = cmd->add_subcommand("export", "Method × metric tables of runs: CSV, JSON, Markdown or LaTeX");
    ex->footer(
        "Markdown and LaTeX (booktabs: \\toprule/\\midrule/\\bottomrule) print the best value per column in\n"
        "bold: lowest for errors, KL and bytes, highest for ratios and accuracy. Several runs get a run column.\n"
        "Example: kvlab results export 3 4 --format latex --metric key_error --metric compression_ratio --out t.tex");
    ex->add_option("runs", req->runs, "Runs (ids, 'latest' or uuid prefixes)")->required();
    add_db_option(ex, req->db);
    ex->add_option("--format", req->format, "csv, json, markdown, latex or text")
        ->check(CLI::IsMember({"csv", "json", "markdown", "md", "latex", "tex", "text"}))
        ->capture_default_str();
    ex->add_option("--metric", req->metrics, "Columns, in order (repeatable; default: every whole-run metric)");
    ex->add_option("--out", req->out, "Output file (default: stdout)");
    ex->callback([req, &action] { action = [req] { export_runs(*req); }; });
  }
  {
    auto req = std::make_shared<RulerRequest>();
    auto* ru = cmd->add_subcommand("ruler",
                                   "RULER's tables: task × length scores, per-length averages, wAvg, effective length");
    ru->footer(
        "Reads the eval runs of `kvlab eval --task ruler:<task> --length N` (and of `kvlab sweep run`) and\n"
        "aggregates them per model and method (\"baseline\" = the uncompressed model). The numbers:\n"
        "  score        100 × accuracy of one task at one length (the task's metric, e.g. string_match_all),\n"
        "               printed with 2 decimals like RULER; kept at full precision in CSV and JSON\n"
        "  Avg (row)    A(L): the unweighted mean of the task scores at length L\n"
        "  Avg          the mean of A(L) over the lengths\n"
        "  wAvg inc     sum of w_i × A(L_i), lengths ascending, w_i = i / (1+2+…+n): long contexts weigh most\n"
        "  wAvg dec     the same with w_i = (n+1-i) / (1+2+…+n): short contexts weigh most\n"
        "  Eff. length  the largest L such that A(L) and A of every shorter length are > --threshold\n"
        "               (default 85.6 = Llama-2-7B's 4K score in the RULER paper); '<L' when even the\n"
        "               shortest fails, '≥L' when every tested length passes (a lower bound)\n"
        "A length lacking a task other lengths of the method have is marked '*' (its A(L) is over the\n"
        "tasks present) and that method's Avg, wAvg and effective length are left empty ('–').\n"
        "When several runs hold the same (model, method, task, length), the newest (created time, then\n"
        "run id) is used and a note says which. Runs on a prompts file, LongBench runs, fixed-depth\n"
        "needle runs (--depth) and failed runs are skipped, with a note.\n"
        "Example: kvlab results ruler --model meta-llama/Llama-3.1-8B-Instruct --format latex --out ruler.tex");
    add_db_option(ru, req->db);
    ru->add_option("--run", req->runs,
                   "Only these runs (ids, 'latest' or uuid prefixes; repeatable; default: every eval run)");
    ru->add_option("--model", req->model, "Only runs of this model id (as `kvlab results show` prints it)");
    ru->add_option("--threshold", req->threshold, "Effective-length threshold on A(L), in points (0-100)")
        ->check(CLI::Range(0.0, 100.0))
        ->capture_default_str();
    ru->add_option("--format", req->format, "text, csv, json, markdown or latex")
        ->check(CLI::IsMember({"csv", "json", "markdown", "md", "latex", "tex", "text"}))
        ->capture_default_str();
    ru->add_option("--table", req->tables,
                   "scores (task × length per method), summary (one row per method, like the RULER paper's main "
                   "table) or both; with csv, both = the two tables separated by an empty line")
        ->check(CLI::IsMember({"scores", "summary", "both"}))
        ->capture_default_str();
    ru->add_option("--out", req->out, "Output file, written atomically (default: stdout)");
    ru->callback([req, &action] { action = [req] { ruler_summary(*req); }; });
  }
  {
    auto db = std::make_shared<std::string>(results::kDefaultDatabase);
    auto run = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    auto* bl = cmd->add_subcommand("baseline", "Write a run's metrics as a reviewable baseline file for `kvlab check`");
    bl->add_option("run", *run, "Run id, 'latest' or uuid prefix")->required();
    add_db_option(bl, *db);
    bl->add_option("--out", *out, "Baseline file (JSON, sorted keys: commit it and review its diffs)")->required();
    bl->callback([db, run, out, &action] { action = [db, run, out] { write_baseline_file(*db, *run, *out); }; });
  }
  {
    auto names = std::make_shared<std::vector<std::string>>();
    auto* me = cmd->add_subcommand("metrics", "The metrics kvlab records: unit, which way is better, where, what");
    me->footer("With names (a family like eigen_rank_fraction_g4_e0.9 matches its pattern): only those, and exit 2\n"
               "naming any the table lacks. The table: results/metrics.h.");
    me->add_option("names", *names, "Metric names (default: every one)");
    me->callback([names, &action] { action = [names] { list_metrics(*names); }; });
  }
  {
    auto sources = std::make_shared<std::vector<std::string>>();
    auto out = std::make_shared<std::string>();
    auto* mg = cmd->add_subcommand("merge", "Merge result databases (sweep shards) into one, without duplicates");
    mg->footer("Runs are matched by uuid: merging the same shards again adds nothing.");
    mg->add_option("databases", *sources, "Databases to merge")->required()->check(CLI::ExistingFile);
    mg->add_option("--out", *out, "Destination database (created if missing; may already hold runs)")->required();
    mg->callback([sources, out, &action] {
      action = [sources, out] {
        Store destination(*out);
        for (const auto& source : *sources) {
          const auto count = results::merge_into(destination, source);
          fmt::print("{}: {} run(s) added, {} already present\n", source, count.added, count.skipped);
        }
        const auto total = destination.counts();
        fmt::print("{}: {} runs, {} metric rows, {} matrices\n", *out, total.runs, total.metrics, total.matrices);
      };
    });
  }
  {
    auto db = std::make_shared<std::string>(results::kDefaultDatabase);
    auto paths = std::make_shared<std::vector<std::string>>();
    auto* im = cmd->add_subcommand("import", "Import compress.json / analysis.json reports (files or their directories)");
    im->footer("Importing the same report again is a no-op (runs are identified by the report's content).");
    im->add_option("paths", *paths, "Report files or output directories of kvlab compress/analyze")->required();
    add_db_option(im, *db);
    im->callback([db, paths, &action] {
      action = [db, paths] {
        Store store(*db);
        for (const auto& path : *paths)
          for (const auto& i : results::import_path(store, path))
            fmt::print("{}: {} run {}{}\n", i.source.string(), results::to_string(i.kind), i.run,
                       i.added ? "" : " (already imported)");
      };
    });
  }
}

void add_compare(CLI::App& app, Action& action) {
  auto db = std::make_shared<std::string>(results::kDefaultDatabase);
  auto runs = std::make_shared<std::vector<std::string>>();
  auto gate = std::make_shared<GateOptions>();
  auto* cmd = app.add_subcommand("compare", "Per method × metric deltas of run B against run A; exit 1 if B got worse");
  cmd->footer(
      "Each metric is judged by its direction (errors, KL, bytes: lower is better; ratios, accuracy: higher).\n"
      "Per-sample metrics are compared by a seeded paired bootstrap of the mean difference.\n"
      "Exit codes: 0 nothing worse beyond tolerance, 1 something worse, 2 error.");
  cmd->add_option("runs", *runs, "RUN_A (baseline) RUN_B (candidate)")->required()->expected(2);
  add_db_option(cmd, *db);
  add_gate_options(cmd, *gate);
  cmd->callback([db, runs, gate, &action] {
    action = [db, runs, gate] { compare_runs(*db, (*runs)[0], (*runs)[1], *gate); };
  });
}

void add_check(CLI::App& app, Action& action) {
  auto req = std::make_shared<CheckRequest>();
  auto* cmd = app.add_subcommand("check", "Regression gate for CI: exit 1 when a run got worse than a baseline");
  cmd->footer(
      "Whole-run metrics are worse when they moved the wrong way by more than tolerance × |baseline|.\n"
      "Per-sample metrics (accuracy) are worse only when the whole 95% paired-bootstrap CI of\n"
      "(candidate − baseline) lies beyond the tolerance, so noise at n = 50 is not a regression.\n"
      "Exit codes: 0 ok, 1 regression, 2 error (missing run, methods or metrics that do not match).\n"
      "Example: kvlab results baseline 12 --out baseline.json && kvlab check --baseline baseline.json");
  cmd->add_option("--baseline", req->baseline, "Baseline file (kvlab results baseline) or a run of --db")->required();
  cmd->add_option("--run", req->run, "Candidate run (default: the latest run of the baseline's kind)")
      ->capture_default_str();
  add_db_option(cmd, req->db);
  add_gate_options(cmd, req->gate);
  cmd->callback([req, &action] { action = [req] { check_run(*req); }; });
}

}  // namespace kvlab::cli
