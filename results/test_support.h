// Shared by the results tests: a fresh temporary directory per test, removed afterwards,
// and the path of the checked-in report fixtures.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>

namespace kvlab::results::testing {

class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            ("kvlab_results_" + std::string(info->test_suite_name()) + "_" + info->name() + "_" +
             std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Reports written by the real `kvlab compress` / `kvlab analyze` (3-layer synthetic dump;
// see testdata/README.md for the commands).
inline std::filesystem::path fixture(const std::string& name) {
  return std::filesystem::path(KVLAB_SOURCE_DIR) / "results" / "testdata" / name;
}

}  // namespace kvlab::results::testing
