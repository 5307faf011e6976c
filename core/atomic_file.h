// Whole-file writes that never leave a half-written file: write "<path>.tmp-<pid>", then
// rename over `path` (atomic on POSIX within one filesystem).
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string_view>

#include "core/error.h"

namespace kvlab::core {

inline void write_file_atomic(const std::filesystem::path& path, std::string_view content) {
  const std::filesystem::path tmp = path.string() + ".tmp-" + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail("cannot create {}", tmp.string());
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.close();
    if (!out) {
      std::error_code ignored;
      std::filesystem::remove(tmp, ignored);
      fail("cannot write {} (disk full?)", tmp.string());
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    fail("cannot move {} into place: {}", path.string(), ec.message());
  }
}

}  // namespace kvlab::core
