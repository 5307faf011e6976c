// Whole-file reads for the small text inputs kvlab takes (configs, tokenizers, prompts, reports):
// one place that opens, reads and names the file in its error.
#pragma once

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include "core/error.h"

namespace kvlab::core {

// The file's bytes. `what` names it in errors: "<path>: cannot open the <what> (<reason>)".
inline std::string read_file(const std::filesystem::path& path, std::string_view what = "file") {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open the {} ({})", path.string(), what, std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("{}: read error in the {}", path.string(), what);
  return text.str();
}

}  // namespace kvlab::core
