// Removal of temporary files when the process is interrupted. A writer that builds
// "<out>.tmp-<pid>" and renames it at the end removes it on errors through RAII, but SIGINT
// (Ctrl-C), SIGTERM (kill, a batch scheduler's time limit) and SIGHUP (a closed terminal) end the
// process without unwinding, so before this every interrupted `synth` or `dump` left its temp file
// (up to hundreds of MB) behind forever. While a TempFileCleanup lives, those signals unlink its
// path, then the signal is re-raised with its previous disposition (the default: the process ends
// with the signal's status, as a shell expects).
#pragma once

#include <filesystem>

namespace kvlab::core {

class TempFileCleanup {
 public:
  // Registers `path` for removal on SIGINT/SIGTERM/SIGHUP; installs the handlers on first use.
  // At most kMaxPaths paths are registered at once (more is an error), each shorter than 4096 bytes.
  explicit TempFileCleanup(const std::filesystem::path& path);
  // Unregisters the path (does not remove the file: the owner renames or removes it).
  ~TempFileCleanup();
  TempFileCleanup(const TempFileCleanup&) = delete;
  TempFileCleanup& operator=(const TempFileCleanup&) = delete;

  static constexpr int kMaxPaths = 16;

 private:
  int slot_ = -1;
};

}  // namespace kvlab::core
