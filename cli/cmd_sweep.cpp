// kvlab sweep: run a grid of compress / eval runs from a YAML file, resumably and in shards.
#include <fmt/format.h>

#include <fmt/ranges.h>

#include <chrono>
#include <limits>
#include <cstdlib>
#include <memory>
#include <optional>

#include "cli/commands.h"
#include "cli/compress_run.h"
#include "cli/output_dir.h"
#include "cli/record_run.h"
#include "core/atomic_file.h"
#include "core/error.h"
#include "results/store.h"
#include "results/sweep_plan.h"
#ifdef KVLAB_HAVE_HARNESS
#include "cli/eval_run.h"
#include "core/stopwatch.h"
#endif

namespace kvlab::cli {
namespace {

namespace fs = std::filesystem;

std::string option(const results::SweepCell& cell, const std::string& key, const std::string& fallback) {
  auto it = cell.options.find(key);
  return it == cell.options.end() ? fallback : it->second;
}

// An integer option or axis value, all of it ("12x" is an error, not 12).
int integer(const std::string& key, const std::string& text) {
  try {
    std::size_t used = 0;
    const long long value = std::stoll(text, &used);
    if (used == text.size() && value >= std::numeric_limits<int>::min() && value <= std::numeric_limits<int>::max())
      return static_cast<int>(value);
  } catch (const std::exception&) {
  }
  fail("{} = '{}' is not an integer", key, text);
}

int int_option(const results::SweepCell& cell, const std::string& key, int fallback) {
  const auto text = option(cell, key, "");
  return text.empty() ? fallback : integer(key, text);
}

std::optional<double> real_option(const results::SweepCell& cell, const std::string& key) {
  const auto text = option(cell, key, "");
  if (text.empty()) return std::nullopt;
  try {
    std::size_t used = 0;
    const double value = std::stod(text, &used);
    if (used == text.size()) return value;
  } catch (const std::exception&) {
  }
  fail("option {} = '{}' is not a number", key, text);
}

std::string describe(const results::SweepCell& cell) {
  std::string s = cell.kind;
  for (const auto& [k, v] : cell.axes)
    if (!v.empty()) s += fmt::format(" {}={}", k, v);
  if (cell.kind == "eval") s += fmt::format(" ({} methods)", cell.methods.size());
  return s;
}

CompressRequest compress_request(const results::SweepCell& cell, const fs::path& out) {
  CompressRequest req;
  req.dump = cell.axes.at("dump");
  req.sample = cell.axes.at("sample");
  req.methods = cell.methods;
  req.device = option(cell, "device", "cpu");
  req.threads = int_option(cell, "threads", 0);
  req.model = option(cell, "model", "");
  req.out = out;
  req.force = true;  // a cell not in the store runs again; files of an earlier try are stale
  req.db.clear();    // recorded by run_cell under the cell's id
  return req;
}

#ifdef KVLAB_HAVE_HARNESS
harness::EvalRequest eval_request(const results::SweepCell& cell, const fs::path& out) {
  harness::EvalRequest req;
  req.model = cell.axes.at("model");
  const auto& task = cell.axes.at("task");
  if (task.rfind("prompts:", 0) == 0) req.prompts = task.substr(8);
  else if (task.rfind("longbench:", 0) == 0) req.longbench = task.substr(10);
  else req.task = task;
  if (cell.axes.count("length")) req.length = integer("length", cell.axes.at("length"));
  req.samples = int_option(cell, "samples", req.samples);
  req.methods = cell.methods;
  req.question = option(cell, "question", req.question);
  req.max_new_tokens = int_option(cell, "max_new_tokens", req.max_new_tokens);
  req.query_window = int_option(cell, "query_window", req.query_window);
  req.recompress_every = int_option(cell, "recompress_every", req.recompress_every);
  req.compress_route = option(cell, "compress_route", req.compress_route);
  req.depth_percent = real_option(cell, "depth");
  req.chat_template = option(cell, "chat_template", req.chat_template);
  req.chat_template_kwargs = option(cell, "chat_template_kwargs", req.chat_template_kwargs);
  req.tokenize = option(cell, "tokenize", req.tokenize);
  req.device = option(cell, "device", req.device);
  req.model_dtype = option(cell, "model_dtype", req.model_dtype);
  req.words = option(cell, "words", "");
  req.essay = option(cell, "essay", "");
  req.qa = option(cell, "qa", "");
  req.out = out;
  return req;
}
#endif

// Runs the cell into `out` and records it in `db` under its id; dry_run: only the checks the
// run would make before computing (specs, inputs, options), writing nothing.
void run_cell(const results::SweepCell& cell, const fs::path& out, const fs::path& db, bool dry_run) {
  if (cell.kind == "compress") {
    const auto req = compress_request(cell, out);
    if (dry_run) return check_compress(req);
    record_compress(db, run_compress(req).report, out / "compress.json", req.device, cell.id);
    return;
  }
#ifdef KVLAB_HAVE_HARNESS
  const auto req = eval_request(cell, out);
  if (dry_run) return check_eval(req);
  record_eval(db, run_eval_into(req, true).report, cell.id);
#else
  (void)out;
  (void)db;
  (void)dry_run;
  fail("eval cells need the harness (this kvlab was built with KVLAB_HARNESS=OFF)");
#endif
}

// A failed cell's error, beside where its folder would be (<out>/<id>.failed.txt), so a long
// sweep's failures outlive the terminal; removed once the cell succeeds.
fs::path failure_file(const fs::path& out, const results::SweepCell& cell) { return out / (cell.id + ".failed.txt"); }

// --shard, else SLURM's array variables, else the whole grid.
std::pair<int, int> shard_of(const std::string& flag) {
  if (!flag.empty()) return results::parse_shard(flag);
  const char* id = std::getenv("SLURM_ARRAY_TASK_ID");
  const char* count = std::getenv("SLURM_ARRAY_TASK_COUNT");
  if (id && count) return results::parse_shard(fmt::format("{}/{}", id, count));
  return {0, 1};
}

struct SweepArgs {
  fs::path file;
  std::string shard;
  fs::path db;
  int max_cells = 0;
  bool dry_run = false;
};

void run_sweep(const SweepArgs& a) {
  const auto plan = results::load_sweep(a.file);
  const auto [index, count] = shard_of(a.shard);
  const auto cells = results::shard_cells(plan, index, count);
  const fs::path db = a.db.empty() ? plan.db : a.db;
  std::error_code ec;
  // A dry run creates nothing: without a store yet, every cell is still to run.
  std::optional<results::Store> store;
  if (!a.dry_run) {
    create_output_directory(plan.out, "sweep out");
    if (!db.parent_path().empty()) create_output_directory(db.parent_path(), "sweep db folder");
    store.emplace(db);
  } else {
    if (fs::exists(plan.out, ec) && !fs::is_directory(plan.out, ec))
      fail("sweep out {}: exists and is not a directory", plan.out.string());
    if (fs::exists(db, ec)) store.emplace(db, true);
  }
  std::vector<const results::SweepCell*> todo;
  for (const auto& c : cells)
    if (!store || !results::find_cell_run(*store, c)) todo.push_back(&c);
  fmt::print("sweep '{}': {} cells, shard {}/{} holds {}, {} already done, {} to run; results in {}\n", plan.name,
             plan.cells.size(), index, count, cells.size(), cells.size() - todo.size(), todo.size(), db.string());
  const auto start = std::chrono::steady_clock::now();
  int ran = 0;
  std::vector<std::string> failed;
  for (std::size_t k = 0; k < todo.size(); ++k) {
    if (a.max_cells > 0 && ran >= a.max_cells) {
      fmt::print("stopping after {} cell(s) (--max-cells); run again to resume\n", ran);
      break;
    }
    const auto& cell = *todo[k];
    fmt::print("[{}/{}] {} {}\n", k + 1, todo.size(), cell.id, describe(cell));
    std::fflush(stdout);
    ++ran;
    // One cell's error (a missing dump, a typo in a spec) must not stop the cells after it, nor
    // every rerun at the same cell: it is reported and recorded, and the sweep goes on.
    try {
      run_cell(cell, plan.out / cell.id, db, a.dry_run);
    } catch (const std::exception& e) {
      const std::string message = dynamic_cast<const Error*>(&e) ? e.what() : fmt::format("internal error: {}", e.what());
      fmt::print("      FAILED: {}\n", message);
      fmt::print(stderr, "kvlab: sweep cell {} failed: {}\n", cell.id, message);
      if (!a.dry_run) core::write_file_atomic(failure_file(plan.out, cell), describe(cell) + "\n" + message + "\n");
      failed.push_back(cell.id);
      continue;
    }
    if (a.dry_run) continue;
    fs::remove(failure_file(plan.out, cell), ec);
    const double elapsed = core::seconds_since(start);
    fmt::print("      done; {:.1f} s so far, about {:.0f} s to go\n", elapsed, elapsed / ran * (todo.size() - k - 1));
  }
  std::fflush(stdout);
  if (failed.empty()) {
    if (a.dry_run) fmt::print("dry run: every cell's specs, inputs and options check out\n");
    return;
  }
  if (a.dry_run) fail("sweep '{}': {} of {} cell(s) would fail: {}", plan.name, failed.size(), ran, fmt::join(failed, ", "));
  fail("sweep '{}': {} of {} cell(s) failed: {} (errors in {}/<cell>.failed.txt; run again to retry them)", plan.name,
       failed.size(), ran, fmt::join(failed, ", "), plan.out.string());
}

}  // namespace

void add_sweep(CLI::App& app, Action& action) {
  auto* cmd = app.add_subcommand("sweep", "Run a grid of compress / eval runs from a YAML file (resumable, shardable)");
  cmd->require_subcommand(1);
  cmd->footer(
      "A sweep file names the grid; each cell (a dump × a method entry for compress, a model × a task ×\n"
      "a length for eval, every method at once) is one run, recorded in the results store under the\n"
      "cell's id. Running again skips finished cells and redoes one that crashed. Example file:\n\n"
      "  name: xkv-ablation\n"
      "  compress:\n"
      "    dumps: [llama-16k.h5]\n"
      "    methods: [\"svd:rk=64..256:64\", \"xkv:g=[2,4],rk=64..256:64\"]\n"
      "  eval:\n"
      "    models: [Llama-3.1-8B-Instruct]\n"
      "    tasks: [ruler:niah_single_1, ruler:vt]\n"
      "    lengths: [4096, 8192]\n"
      "    samples: 20\n"
      "    methods: [full, \"xkv:g=4,rk=384,rv=576\", \"snapkv:keep=0.25\"]\n"
      "    options: {question: in-context, device: cuda}\n\n"
      "See results/sweep_plan.h for every key.");
  auto args = std::make_shared<SweepArgs>();
  auto* run = cmd->add_subcommand("run", "Run the cells not yet in the store (all, or one shard)");
  run->add_option("file", args->file, "Sweep YAML")->required();
  run->add_option("--shard", args->shard, "Run shard i/N (0 ≤ i < N); default: SLURM_ARRAY_TASK_ID/COUNT, else all");
  run->add_option("--db", args->db, "Results store (default: the file's db, or <out>/results.sqlite)");
  run->add_option("--max-cells", args->max_cells, "Stop after N cells (resume later)");
  run->add_flag("--dry-run", args->dry_run,
                "List the cells that would run and check each one's specs, inputs and options (writes nothing)");
  run->callback([args, &action] { action = [args] { run_sweep(*args); }; });

  auto file = std::make_shared<fs::path>();
  auto shards = std::make_shared<int>(1);
  auto out = std::make_shared<fs::path>();
  auto sbatch = std::make_shared<std::vector<std::string>>();
  auto* slurm = cmd->add_subcommand("slurm", "Write an sbatch job-array script, one shard per array task");
  slurm->add_option("file", *file, "Sweep YAML")->required();
  slurm->add_option("--shards", *shards, "Array tasks")->check(positive())->capture_default_str();
  slurm->add_option("--sbatch", *sbatch, "Extra #SBATCH options KEY=VALUE (repeat), e.g. --sbatch time=04:00:00");
  slurm->add_option("--out", *out, "Script to write")->required();
  slurm->callback([=, &action] {
    action = [=] {
      std::map<std::string, std::string> options;
      for (const auto& kv : *sbatch) {
        const auto eq = kv.find('=');
        if (eq == std::string::npos) fail("--sbatch '{}': expected KEY=VALUE", kv);
        options[kv.substr(0, eq)] = kv.substr(eq + 1);
      }
      const auto plan = results::load_sweep(*file);
      std::error_code ec;  // the script calls this very binary
      const auto self = fs::read_symlink("/proc/self/exe", ec);
      core::write_file_atomic(*out, results::slurm_script(plan, *file, *shards, ec ? "kvlab" : self.string(), options));
      fmt::print("wrote {}: {} cells in {} array tasks; submit with sbatch {}\n", out->string(), plan.cells.size(), *shards,
                 out->string());
    };
  });
}

}  // namespace kvlab::cli
