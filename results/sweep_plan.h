// A sweep: a grid of runs read from YAML, split into cells that are each one `kvlab compress`
// run (a dump × a method entry; a method's own rank sweep stays inside its cell, sharing one
// decomposition) or one `kvlab eval` run (a model × a task or prompts file × a length, with every
// method and the baseline). A cell's identity is a hash of everything that defines it, recorded
// as the run's uuid, so a finished cell is found in the store and skipped on resume, and a cell
// that crashed (no run recorded: runs are written in one transaction) is redone. Stores written
// before the ids were versioned ("c" + 16 hex digits) resume too: see find_cell_run.
//
//   name: xkv-ablation
//   out: sweeps/xkv                 # cell outputs: <out>/<cell id>/; default: the YAML's stem
//   db: sweeps/xkv.sqlite           # default: <out>/results.sqlite
//   compress:
//     dumps: [llama-16k.h5]
//     samples: [s0]                 # optional; default: each dump's first sample
//     methods: ["svd:rk=64..256:64", "xkv:g=[2,4],rk=64..256:64"]
//     options: {device: cpu}         # also: threads, model (checkpoint, for commonkv)
//   eval:
//     models: [Llama-3.1-8B-Instruct]
//     tasks: [ruler:niah_single_1, ruler:vt]   # and/or
//     prompts: [mine.jsonl]                    # and/or LongBench-format files, cut to each length:
//     longbench: [hotpotqa.jsonl]
//     lengths: [4096, 8192]
//     samples: 20
//     methods: [full, "xkv:g=4,rk=384,rv=576", "snapkv:keep=0.25"]
//     options: {question: in-context, max_new_tokens: 0, device: cuda}   # also: query_window,
//              recompress_every, compress_route, depth (niah needle depth, percent), chat_template,
//              chat_template_kwargs (a JSON object as a string: '{"enable_thinking": false}'),
//              tokenize (apart | whole), model_dtype, words, essay, qa, samples
//
// Unknown keys, options included, are errors; so is a list or mapping where a value belongs. An
// entry listed twice (a dump, a method, a model) gives one cell, not two cells with one id.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "results/store.h"

namespace kvlab::results {

struct SweepCell {
  std::string kind;                           // "compress" | "eval"
  std::map<std::string, std::string> axes;    // named axis values: dump/sample/method or model/task/length
  std::vector<std::string> methods;           // the compressor specs the run takes
  std::map<std::string, std::string> options; // the section's options (device, question, ...)
  std::string id;                             // FNV-1a 64 of kind, axes, methods, options: "c2-" + 16 hex
  std::string legacy_id;                      // its id up to b94864a: "c" + 16 hex (read, never written)
};

struct SweepPlan {
  std::string name;
  std::filesystem::path out;
  std::filesystem::path db;
  std::vector<SweepCell> cells;  // in file order: sections, then the axes' nested order
};

// Parses the YAML text; `source` names it in errors, relative paths resolve against `base`.
// Unknown keys are errors listing the allowed ones.
SweepPlan parse_sweep(const std::string& yaml_text, const std::string& source, const std::filesystem::path& base);
SweepPlan load_sweep(const std::filesystem::path& file);

// The run that recorded `cell` in `store`, under its id or its legacy id (a store written before
// ids were true FNV-1a, see sweep_plan.cpp); nullopt: the cell is still to run.
std::optional<Run> find_cell_run(const Store& store, const SweepCell& cell);

// The cells of shard `index` of `count`: cell k belongs to shard k mod count, so shards
// partition the grid exactly and a cell's shard never depends on which others finished.
std::vector<SweepCell> shard_cells(const SweepPlan& plan, int index, int count);
// "i/N" with 0 ≤ i < N (SLURM_ARRAY_TASK_ID's numbering).
std::pair<int, int> parse_shard(const std::string& text);

// An sbatch job-array script running one shard per array task, each into its own database
// (<db stem>-shard-<i>.sqlite next to the plan's db), merged afterwards with `kvlab results merge`.
std::string slurm_script(const SweepPlan& plan, const std::filesystem::path& sweep_file, int shards,
                         const std::string& kvlab_binary, const std::map<std::string, std::string>& sbatch);

}  // namespace kvlab::results
