#include "cli/output_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <system_error>

#include "core/error.h"

namespace kvlab::cli {

namespace fs = std::filesystem;

namespace {

// "x/" and "x/." name x: drop the empty or "." last component so the staging folder is x's sibling.
fs::path normalized(const fs::path& dir) {
  fs::path p = dir.lexically_normal();
  if (!p.has_filename() && p.has_relative_path()) p = p.parent_path();  // lexically_normal keeps "x/"
  if (p.filename().empty() || p.filename() == "." || p.filename() == "..")
    fail("output directory '{}': name a directory to create (not . or ..)", dir.string());
  return p;
}

}  // namespace

void create_output_directory(const fs::path& dir, const std::string& what) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) fail("{} {}: exists and is not a directory", what, dir.string());
  fs::create_directories(dir, ec);
  if (ec) fail("{} {}: cannot create the directory: {}", what, dir.string(), ec.message());
}

OutputDir::OutputDir(fs::path dir, bool replace) : dir_(normalized(dir)) {
  std::error_code ec;
  if (fs::exists(dir_, ec)) {
    if (!fs::is_directory(dir_, ec)) fail("output directory {}: exists and is not a directory", dir_.string());
    if (!replace && !fs::is_empty(dir_, ec))
      fail("output directory {} already holds files: choose another --out, or pass --force to replace it",
           dir_.string());
  }
  if (dir_.has_parent_path())
    create_output_directory(dir_.parent_path(), fmt::format("output directory {}: its parent", dir_.string()));
  staging_ = dir_.string() + ".tmp-" + std::to_string(::getpid());
  fs::remove_all(staging_, ec);  // left by an earlier process with this pid
  if (!fs::create_directory(staging_, ec) || ec)
    fail("output directory {}: cannot create {}: {}", dir_.string(), staging_.string(), ec ? ec.message() : "it exists");
}

OutputDir::~OutputDir() {
  if (committed_) return;
  std::error_code ignored;
  fs::remove_all(staging_, ignored);
}

void OutputDir::commit() {
  std::error_code ec;
  const bool occupied = fs::is_directory(dir_, ec) && !fs::is_empty(dir_, ec);
  if (!occupied) {
    // rename(2) replaces an empty directory (or nothing) atomically.
    fs::rename(staging_, dir_, ec);
    if (ec) fail("cannot move {} into place as {}: {}", staging_.string(), dir_.string(), ec.message());
  } else {
    // Swap in one step, then delete the old files, now under the staging name.
    if (::renameat2(AT_FDCWD, staging_.c_str(), AT_FDCWD, dir_.c_str(), RENAME_EXCHANGE) != 0)
      fail("cannot replace {} with {}: {}", dir_.string(), staging_.string(), std::strerror(errno));
    committed_ = true;
    fs::remove_all(staging_, ec);
    if (ec) fail("replaced {}, but cannot delete its old files (now in {}): {}", dir_.string(), staging_.string(), ec.message());
  }
  committed_ = true;
}

}  // namespace kvlab::cli
