#include "core/progress.h"

#include <unistd.h>

#include <cstdio>
#include <fmt/format.h>

#include "core/stopwatch.h"

namespace kvlab::core {

namespace {
bool g_quiet = false;
}

void set_quiet(bool quiet) { g_quiet = quiet; }
bool progress_enabled() { return !g_quiet && isatty(STDERR_FILENO) != 0; }

Progress::Progress(std::string label, std::int64_t total)
    : label_(std::move(label)), total_(total), enabled_(progress_enabled()),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

Progress::~Progress() {
  if (enabled_) draw(true);
}

void Progress::set_label(std::string label) { label_ = std::move(label); }

void Progress::advance(std::int64_t units) {
  done_ += units;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ > std::chrono::milliseconds(200) || done_ >= total_) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::draw(bool final) {
  double elapsed = seconds_since(start_);
  double fraction = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  if (fraction > 1.0) fraction = 1.0;
  constexpr int kWidth = 30;
  int filled = static_cast<int>(fraction * kWidth);
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::string eta = fraction > 0 && !final ? fmt::format(" ETA {:.0f}s", elapsed * (1 - fraction) / fraction) : "";
  fmt::print(stderr, "\r{:<28} [{}] {:5.1f}% {:.1f}s{}\033[K", label_, bar, 100 * fraction, elapsed, eta);
  if (final) fmt::print(stderr, "\n");
  std::fflush(stderr);
}

}  // namespace kvlab::core
