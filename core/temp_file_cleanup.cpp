#include "core/temp_file_cleanup.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <csignal>
#include <cstring>
#include <mutex>

#include "core/error.h"

namespace kvlab::core {
namespace {

// Everything the handler touches is preallocated and lock-free: a handler may only call
// async-signal-safe functions (unlink, sigaction, raise), so no std::string, no allocation.
struct Slot {
  std::atomic<bool> active{false};
  char path[4096] = {};
};
std::array<Slot, TempFileCleanup::kMaxPaths> g_slots;
static_assert(std::atomic<bool>::is_always_lock_free);

constexpr std::array<int, 3> kSignals = {SIGINT, SIGTERM, SIGHUP};
std::array<struct sigaction, kSignals.size()> g_previous{};

std::mutex g_mutex;  // registration only (never taken in the handler)
bool g_installed = false;

extern "C" void remove_temp_files(int sig) {
  for (Slot& slot : g_slots)
    if (slot.active.load(std::memory_order_acquire)) ::unlink(slot.path);
  // Back to what was there before us (normally the default action), then re-raise: the signal
  // is blocked while this handler runs and is delivered as soon as it returns, so the process
  // ends with the signal's own status.
  for (std::size_t i = 0; i < kSignals.size(); ++i)
    if (kSignals[i] == sig) ::sigaction(sig, &g_previous[i], nullptr);
  ::raise(sig);
}

void install_handlers() {
  for (std::size_t i = 0; i < kSignals.size(); ++i) {
    struct sigaction previous {};
    ::sigaction(kSignals[i], nullptr, &previous);
    // An ignored signal stays ignored (nohup, a background job's SIGINT): the process survives
    // it, so its temp file is still owned and removed on the normal paths.
    if (previous.sa_handler == SIG_IGN) continue;
    g_previous[i] = previous;
    struct sigaction action {};
    action.sa_handler = remove_temp_files;
    sigemptyset(&action.sa_mask);
    for (const int other : kSignals) sigaddset(&action.sa_mask, other);  // one cleanup at a time
    ::sigaction(kSignals[i], &action, nullptr);
  }
}

}  // namespace

TempFileCleanup::TempFileCleanup(const std::filesystem::path& path) {
  const std::string& text = path.native();
  if (text.size() >= sizeof(Slot::path)) fail("{}: path too long for signal-time cleanup", text);
  const std::lock_guard lock(g_mutex);
  if (!g_installed) {
    install_handlers();
    g_installed = true;
  }
  for (std::size_t i = 0; i < g_slots.size(); ++i) {
    Slot& slot = g_slots[i];
    if (slot.active.load(std::memory_order_relaxed)) continue;
    std::memcpy(slot.path, text.c_str(), text.size() + 1);
    slot.active.store(true, std::memory_order_release);  // the path is complete before it is visible
    slot_ = static_cast<int>(i);
    return;
  }
  fail("{}: more than {} temporary files open at once", text, kMaxPaths);
}

TempFileCleanup::~TempFileCleanup() {
  const std::lock_guard lock(g_mutex);
  g_slots[static_cast<std::size_t>(slot_)].active.store(false, std::memory_order_release);
}

}  // namespace kvlab::core
