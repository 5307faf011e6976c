// A command's output directory, written whole: every file goes into "<dir>.tmp-<pid>" and
// commit() moves that folder onto `dir` in one rename, so a reader (or a kill) sees the previous
// directory or the new one, never a mix, and no file of an earlier run survives in it. A
// directory already holding files is refused unless the user passed --force (it may be theirs:
// `--out .` must not empty the current directory).
#pragma once

#include <filesystem>
#include <string>

namespace kvlab::cli {

class OutputDir {
 public:
  // Fails (kvlab::Error naming `dir`) when `dir` is a file, a non-empty directory and !replace,
  // or its parent cannot be created; then creates the staging folder beside it.
  OutputDir(std::filesystem::path dir, bool replace);
  ~OutputDir();  // removes the staging folder unless committed
  OutputDir(const OutputDir&) = delete;
  OutputDir& operator=(const OutputDir&) = delete;

  const std::filesystem::path& staging() const { return staging_; }  // write the files here
  const std::filesystem::path& path() const { return dir_; }          // where they end up
  // Moves the staging folder onto path(): an atomic exchange with a directory already there
  // (whose old files are then deleted), a plain rename otherwise.
  void commit();

 private:
  std::filesystem::path dir_, staging_;
  bool committed_ = false;
};

// Creates `dir` and its parents, failing (kvlab::Error naming it) when `dir` or one of its
// parents is a file or cannot be created; `what` says what it is for ("--out").
void create_output_directory(const std::filesystem::path& dir, const std::string& what);

}  // namespace kvlab::cli
