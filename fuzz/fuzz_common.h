// Shared by the libFuzzer targets of fuzz/ (docs/fuzzing.md).
//
// A parser of outside input either returns or throws kvlab::Error (a clean rejection, whose
// message names the input). Anything else — another exception (std::bad_alloc,
// std::out_of_range, nlohmann::json::type_error, ...), an ASan or UBSan report, a leak — is a
// bug: kvlab_fuzz::run prints the stray exception and aborts, which libFuzzer records as a crash.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <typeinfo>

#include "core/error.h"

namespace kvlab_fuzz {

inline std::string_view bytes(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Runs `parse`; kvlab::Error is a clean rejection, any other exception aborts.
template <typename F>
void run(F&& parse) {
  try {
    parse();
  } catch (const kvlab::Error&) {
    // rejected with kvlab's one error type: fine
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvlab fuzz: the parser threw %s, not kvlab::Error: %s\n", typeid(e).name(), e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "kvlab fuzz: the parser threw a non-std exception\n");
    std::abort();
  }
}

// For parsers whose only API takes a path: one scratch folder per process (in $TMPDIR, else
// /dev/shm when it exists, else /tmp), removed at exit.
class ScratchDir {
 public:
  ScratchDir() {
    const char* env = std::getenv("TMPDIR");
    std::string base = env && *env ? env : (std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp");
    std::string pattern = base + "/kvlab-fuzz-XXXXXX";
    if (!mkdtemp(pattern.data())) {
      std::perror("kvlab fuzz: mkdtemp");
      std::abort();
    }
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // Writes `content` to <dir>/<name> (replacing it) and returns its path.
  std::filesystem::path write(const std::string& name, std::string_view content) const {
    const auto file = path_ / name;
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    out.close();
    if (!out) {
      std::fprintf(stderr, "kvlab fuzz: cannot write %s\n", file.c_str());
      std::abort();
    }
    return file;
  }
  void remove(const std::string& name) const {
    std::error_code ec;
    std::filesystem::remove(path_ / name, ec);
  }

 private:
  std::filesystem::path path_;
};

// The process's scratch folder (created on first use).
inline const ScratchDir& scratch() {
  static const ScratchDir dir;
  return dir;
}

}  // namespace kvlab_fuzz
