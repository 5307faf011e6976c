#include "core/profile.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "core/stopwatch.h"

namespace kvlab::core {
namespace {

std::atomic<int> g_override{-1};  // -1: the environment decides

bool from_environment() {
  static const bool on = [] {
    const char* v = std::getenv("KVLAB_PROFILE");
    return v && *v && std::strcmp(v, "0") != 0;
  }();
  return on;
}

struct Registry {
  std::mutex mutex;
  std::map<std::string, ProfileEntry> entries;
};

Registry& registry() {
  static Registry* r = new Registry;  // never destroyed: the exit report may run after statics
  return *r;
}

void report_at_exit() {
  const std::string report = profile_report();
  if (!report.empty()) std::fputs(report.c_str(), stderr);
}

}  // namespace

bool profiling() {
  const int o = g_override.load(std::memory_order_relaxed);
  return o < 0 ? from_environment() : o == 1;
}

void set_profiling(bool on) { g_override.store(on ? 1 : 0); }

std::vector<ProfileEntry> profile_entries() {
  auto& r = registry();
  const std::lock_guard lock(r.mutex);
  std::vector<ProfileEntry> out;
  for (const auto& [name, e] : r.entries) out.push_back(e);
  return out;
}

void reset_profile() {
  auto& r = registry();
  const std::lock_guard lock(r.mutex);
  r.entries.clear();
}

std::string profile_report() {
  auto entries = profile_entries();
  if (entries.empty()) return {};
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.seconds > b.seconds; });
  std::size_t width = 6;
  for (const auto& e : entries) width = std::max(width, e.region.size());
  std::string out = fmt::format("profile (KVLAB_PROFILE; inclusive wall time, threads added)\n  {:<{}} {:>8} {:>10} {:>10}\n",
                                "region", width, "calls", "seconds", "ms/call");
  for (const auto& e : entries)
    out += fmt::format("  {:<{}} {:>8} {:>10.3f} {:>10.3f}\n", e.region, width, e.calls, e.seconds,
                       1e3 * e.seconds / static_cast<double>(e.calls));
  return out;
}

ProfileScope::ProfileScope(const char* region) : region_(profiling() ? region : nullptr) {
  if (region_) start_ = std::chrono::steady_clock::now();
}

ProfileScope::~ProfileScope() {
  if (!region_) return;
  const double seconds = seconds_since(start_);
  auto& r = registry();
  const std::lock_guard lock(r.mutex);
  auto& entry = r.entries.try_emplace(region_, ProfileEntry{region_, 0, 0}).first->second;
  entry.calls += 1;
  entry.seconds += seconds;
  [[maybe_unused]] static const bool reported = std::atexit(report_at_exit) == 0;
}

}  // namespace kvlab::core
