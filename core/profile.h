// Wall-clock totals of named code regions, for finding where a run's time goes on a machine
// without a profiler (the GPU image has no nsys). Off unless the environment sets
// KVLAB_PROFILE (to anything but "0"); then every region's calls and seconds go to stderr when
// the process exits. Regions may nest (each total is inclusive) and may run on several threads
// at once (the totals then add the threads' times). CUDA work is counted where the host waits
// for it: most backend calls return with their results on the host, but resident_gemm (and
// torch's copies) only queue work, which the next call that waits (resident_gram_top, the
// hook's final synchronise) then pays for.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace kvlab::core {

bool profiling();                     // KVLAB_PROFILE, read once
void set_profiling(bool on);          // overrides the environment (tests)

struct ProfileEntry {
  std::string region;
  std::int64_t calls = 0;
  double seconds = 0;
};
std::vector<ProfileEntry> profile_entries();  // sorted by region
void reset_profile();
// "profile (KVLAB_PROFILE): region  calls  seconds  ms/call" lines, longest first.
std::string profile_report();

// Times its own lifetime into `region` (a string literal: kept by pointer) when profiling.
class ProfileScope {
 public:
  explicit ProfileScope(const char* region);
  ~ProfileScope();
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  const char* region_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace kvlab::core
