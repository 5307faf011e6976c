// Progress for long work: a one-line bar with rate and ETA on stderr when stderr is a TTY,
// nothing otherwise (CI, pipes) or when quiet. Not thread-safe: advance from one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace kvlab::core {

// Global switch set by the CLI's --quiet; progress is also off whenever stderr is no TTY.
void set_quiet(bool quiet);
bool progress_enabled();

class Progress {
 public:
  Progress(std::string label, std::int64_t total);  // total units of work (e.g. bytes, layers)
  ~Progress();                                       // finishes the line
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(std::int64_t units = 1);
  void set_label(std::string label);

 private:
  void draw(bool final);
  std::string label_;
  std::int64_t total_;
  std::int64_t done_ = 0;
  bool enabled_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace kvlab::core
