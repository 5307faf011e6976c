#include <fmt/format.h>

#include <algorithm>

#include "cli/commands.h"
#include "core/error.h"
#include "core/kv_dump.h"

namespace kvlab::cli {

namespace {
std::string g_command_line;
}

const std::string& command_line() { return g_command_line; }

namespace {
int g_exit_code = 0;
}
void set_exit_code(int code) { g_exit_code = code; }
int exit_code() { return g_exit_code; }

void set_command_line(int argc, char** argv) {
  g_command_line.clear();
  for (int i = 0; i < argc; ++i) g_command_line += (i ? " " : "") + std::string(argv[i]);
}

const CLI::Validator& positive() {
  static const CLI::Validator validator(
      [](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value) || !(value > 0)) return "must be positive (got " + text + ")";
        return {};
      },
      "POSITIVE");
  return validator;
}

void check_dump_path(const std::filesystem::path& dump) {
  std::error_code ec;
  if (std::filesystem::is_directory(dump, ec))
    fail("{}: is a directory, not a KV dump (the HDF5 file `kvlab dump` or `kvlab synth` writes)", dump.string());
}

std::string choose_sample(const core::DumpReader& dump, const std::string& requested) {
  const auto ids = dump.sample_ids();
  if (ids.empty()) fail("{} holds no samples", dump.path().string());
  const std::string sample = requested.empty() ? ids.front() : requested;
  if (std::find(ids.begin(), ids.end(), sample) == ids.end())
    fail("{} has no sample '{}' (it has {} samples, e.g. '{}')", dump.path().string(), sample, ids.size(), ids.front());
  return sample;
}

std::vector<int> parse_group_sizes(const std::vector<int>& values, int layers, bool user_given) {
  std::vector<int> sizes;
  for (int g : values) {
    if (g >= 1 && g <= layers) {
      sizes.push_back(g);
    } else if (user_given) {
      fail("--groups: group size {} is outside 1..{} (the dump has {} layers)", g, layers, layers);
    }
  }
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  return sizes;
}

}  // namespace kvlab::cli
