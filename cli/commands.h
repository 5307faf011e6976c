// Each kvlab subcommand registers itself on the root CLI11 app. Subcommand code is thin:
// parse, call a library, print. Errors are thrown as kvlab::Error and reported by main.
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "linalg/backend.h"

namespace kvlab::core {
class DumpReader;
}

namespace kvlab::cli {

// The command to run after parsing (set by the subcommand's callback).
using Action = std::function<void()>;

void add_synth(CLI::App& app, Action& action);
void add_analyze(CLI::App& app, Action& action);
void add_demo(CLI::App& app, Action& action);
void add_compress(CLI::App& app, Action& action);
void add_dump(CLI::App& app, Action& action);
void add_eval(CLI::App& app, Action& action);
void add_make_tiny_model(CLI::App& app, Action& action);
void add_tokenize(CLI::App& app, Action& action);

void add_results(CLI::App& app, Action& action);
void add_compare(CLI::App& app, Action& action);
void add_check(CLI::App& app, Action& action);
void add_sweep(CLI::App& app, Action& action);
void add_plot(CLI::App& app, Action& action);

// The exit code of an action that returns: 0, or 1 for "ran fine, regression found"
// (compare/check). Errors are exceptions and exit 2.
void set_exit_code(int code);
int exit_code();

// The command line as typed, for provenance.
const std::string& command_line();
void set_command_line(int argc, char** argv);

// CLI::PositiveNumber with a readable message: "--samples: must be positive (got 0)" rather than
// a range ending in DBL_MAX written out in 309 digits.
const CLI::Validator& positive();

// Fails naming `dump` when it is a directory (HDF5 would say "no such file").
void check_dump_path(const std::filesystem::path& dump);
// `requested`, or the dump's first sample when empty; fails naming the dump when it lacks it.
std::string choose_sample(const core::DumpReader& dump, const std::string& requested);

// Parses "1,2,4" / "0.9,0.95" lists (CLI11 splits on ',', this validates ranges).
std::vector<int> parse_group_sizes(const std::vector<int>& values, int layers, bool user_given);

}  // namespace kvlab::cli
