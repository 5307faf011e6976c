#include <fmt/format.h>

#include <algorithm>

#include "cli/commands.h"
#include "core/error.h"

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
