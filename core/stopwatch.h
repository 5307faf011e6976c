// Seconds on the steady clock, for the timings runs report (never for a test's verdict).
#pragma once

#include <chrono>

namespace kvlab::core {

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace kvlab::core
