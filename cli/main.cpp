// kvlab: one binary, subcommands that mirror the pipeline (docs/design.md §1).
// Exit codes: 0 success, 1 "ran fine, regression found" (compare/check), 2 any error.
#include <fmt/format.h>

#include <malloc.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>

#include "cli/commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "core/version.h"
#include "linalg/cpu/blas_core.h"

namespace {

// The command the user reached ("kvlab sweep run"): the chain of parsed subcommands.
const CLI::App* deepest_command(const CLI::App& app, std::string& name) {
  name = "kvlab";
  const CLI::App* at = &app;
  for (auto subs = at->get_subcommands(); !subs.empty(); subs = at->get_subcommands()) {
    at = subs.front();
    name += " " + at->get_name();
  }
  return at;
}

// A parse error as every other kvlab error: one line on stderr, exit code 2. A word where a
// command belongs is named as an unknown command (CLI11 would say "A subcommand is required").
int parse_error(const CLI::App& app, const CLI::ParseError& e) {
  std::string name;
  const CLI::App* command = deepest_command(app, name);
  std::string message = e.what();
  const auto extras = app.remaining(true);
  if (command->get_require_subcommand_min() > 0 && command->get_subcommands().empty() && !extras.empty()) {
    std::string known;
    for (const auto* sub : command->get_subcommands({}))
      known += (known.empty() ? "" : ", ") + sub->get_name();
    message = fmt::format("unknown command '{}' (`{}` takes one of: {})", extras.front(), name, known);
  }
  for (auto& c : message)
    if (c == '\n') c = ' ';
  fmt::print(stderr, "kvlab: error: {} (see `{} --help`)\n", message, name);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // Before any work: run the BLAS kernels this CPU supports when OpenBLAS fell back to older
  // ones (restarts the program; linalg/cpu/blas_core.h). --quiet also silences its notice.
  bool quiet_flag = false;
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "-q" || std::string_view(argv[i]) == "--quiet") quiet_flag = true;
  kvlab::linalg::blas::restart_with_best_core(argv, quiet_flag);
  // Layers are read, rebuilt and scored one after another in buffers of MiBs: keep freed memory
  // for the next layer instead of handing it back to the kernel and faulting fresh zeroed pages
  // in every time (glibc's largest heap-allocation threshold, 32 MiB on 64-bit; trimming above
  // 1 GiB of free heap; docs/performance.md §10).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  kvlab::cli::set_command_line(argc, argv);
  CLI::App app{fmt::format(
      "kvlab {} ({}): measure and compress the KV caches of LLMs.\n\n"
      "Start with `kvlab demo` (no arguments, no download), then see `kvlab <command> --help`.",
      kvlab::kVersion, kvlab::kGitRevision)};
  app.require_subcommand(1);
  bool quiet = false;
  app.add_flag("-q,--quiet", quiet, "No progress bars (they are also off when stderr is not a terminal)");
  app.set_version_flag("--version", fmt::format("kvlab {} ({})\nBLAS: {}", kvlab::kVersion, kvlab::kGitRevision,
                                                kvlab::linalg::blas::summary()));
  kvlab::cli::Action action;
  kvlab::cli::add_demo(app, action);
#ifdef KVLAB_HAVE_HARNESS
  kvlab::cli::add_make_tiny_model(app, action);
  kvlab::cli::add_dump(app, action);
  kvlab::cli::add_eval(app, action);
  kvlab::cli::add_tokenize(app, action);
#endif
  kvlab::cli::add_synth(app, action);
  kvlab::cli::add_analyze(app, action);
  kvlab::cli::add_compress(app, action);
  kvlab::cli::add_results(app, action);
  kvlab::cli::add_compare(app, action);
  kvlab::cli::add_check(app, action);
  kvlab::cli::add_sweep(app, action);
  kvlab::cli::add_plot(app, action);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return parse_error(app, e);
  }
  kvlab::core::set_quiet(quiet);
  try {
    action();
  } catch (const kvlab::Error& e) {
    fmt::print(stderr, "kvlab: error: {}\n", e.what());
    return 2;
  } catch (const std::filesystem::filesystem_error& e) {
    // A path the user gave that the system refuses (a file where a folder belongs, no permission):
    // the message names the path. Commands check the paths they know of first, with clearer words.
    fmt::print(stderr, "kvlab: error: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "kvlab: internal error: {}\n", e.what());
    return 2;
  }
  return kvlab::cli::exit_code();
}
