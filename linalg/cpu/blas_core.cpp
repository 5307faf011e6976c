#include "linalg/cpu/blas_core.h"

#include <cblas.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace kvlab::linalg::blas {
namespace {

bool iequal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

// OpenBLAS's x86-64 core names (driver/others/dynamic.c; SapphireRapids from 0.3.22 on) and the
// widest instruction set each one's kernels use. The 32-bit-only cores (Katmai, Coppermine,
// Northwood, Banias, Athlon) become Prescott on x86-64; they rank with the SSE-era cores.
constexpr std::array<std::pair<std::string_view, int>, 26> kCores{{
    {"Katmai", 0},      {"Coppermine", 0},  {"Northwood", 0},   {"Prescott", 0},     {"Banias", 0},
    {"Atom", 0},        {"Core2", 0},       {"Penryn", 0},      {"Dunnington", 0},   {"Nehalem", 0},
    {"Athlon", 0},      {"Opteron", 0},     {"Opteron_SSE3", 0}, {"Barcelona", 0},   {"Nano", 0},
    {"Bobcat", 0},      {"Sandybridge", 1}, {"Bulldozer", 1},   {"Piledriver", 1},   {"Steamroller", 1},
    {"Excavator", 1},   {"Haswell", 2},     {"Zen", 2},         {"SkylakeX", 3},     {"Cooperlake", 4},
    {"SapphireRapids", 5},
}};

std::optional<std::string> env_value(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

}  // namespace

CpuFeatures cpu_features() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  // libgcc's __builtin_cpu_supports reports AVX and AVX-512 only when the OS saves their
  // registers (XCR0), as OpenBLAS's own support_avx*() checks do.
  __builtin_cpu_init();
  f.avx = __builtin_cpu_supports("avx");
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  // CPUID leaf 7, subleaf 1: EAX bit 5 is AVX512_BF16 (usable when AVX-512 itself is).
  if (f.avx512f && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) f.avx512_bf16 = (eax >> 5) & 1u;
#endif
  return f;
}

std::string_view best_core(const CpuFeatures& f) {
  const bool avx512 = f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx2 && f.fma;
  if (avx512 && f.avx512_bf16) return "Cooperlake";
  if (avx512) return "SkylakeX";
  if (f.avx2 && f.fma) return "Haswell";
  if (f.avx) return "Sandybridge";
  return "";
}

std::optional<int> core_rank(std::string_view core) {
  for (const auto& [name, rank] : kCores)
    if (iequal(name, core)) return rank;
  return std::nullopt;
}

std::string_view canonical_core(std::string_view core) {
  for (const auto& [name, rank] : kCores)
    if (iequal(name, core)) return name;
  return "";
}

bool weaker_than(std::string_view chosen, std::string_view best) {
  const auto a = core_rank(chosen), b = core_rank(best);
  return a && b && *a < *b;
}

std::string_view describe(const CpuFeatures& f) {
  const auto best = best_core(f);
  if (best == "Cooperlake") return "AVX-512 + BF16";
  if (best == "SkylakeX") return "AVX-512";
  if (best == "Haswell") return "AVX2";
  if (best == "Sandybridge") return "AVX";
  return "no AVX";
}

CoreEnv CoreEnv::from_environment() {
  return {env_value("OPENBLAS_CORETYPE"), env_value("KVLAB_BLAS_CORE"), env_value("KVLAB_BLAS_PICKED"),
          env_value("KVLAB_BLAS_ASSUME_PICKED")};
}

CoreChoice choose_core(const CoreEnv& env, std::string_view running, const CpuFeatures& f, bool dynamic_arch) {
  const std::string mode = env.kvlab_blas_core.value_or("");
  const bool named = !mode.empty() && !iequal(mode, "auto") && !iequal(mode, "keep");
  if (env.picked) {  // the restarted process: report, never restart again
    const std::string asked = env.openblas_coretype.value_or("");
    if (!iequal(asked, running))
      return {"", fmt::format("kvlab: warning: OpenBLAS did not take core {} (it runs {}); KVLAB_BLAS_CORE=keep stops "
                              "kvlab asking for it",
                              asked, running)};
    if (named)
      return {"", fmt::format("kvlab: BLAS core {} (KVLAB_BLAS_CORE) instead of OpenBLAS's choice, {}", running, *env.picked)};
    return {"", fmt::format("kvlab: BLAS core {} instead of OpenBLAS's choice, {}, which leaves this CPU's {} unused "
                            "(KVLAB_BLAS_CORE=keep turns this off)",
                            running, *env.picked, describe(f))};
  }
  if (env.openblas_coretype) return {};  // the user's choice, always kept
  if (iequal(mode, "keep")) return {};
  if (!dynamic_arch)  // one core built in: OPENBLAS_CORETYPE would change nothing
    return {"", named ? fmt::format("kvlab: warning: KVLAB_BLAS_CORE={} ignored: this OpenBLAS has only the {} core "
                                    "(no DYNAMIC_ARCH)",
                                    mode, running)
                      : std::string()};
  const std::string_view picked = env.assume_picked ? std::string_view(*env.assume_picked) : running;
  if (!named) {
    const auto best = best_core(f);
    if (best.empty() || !weaker_than(picked, best)) return {};
    return {std::string(best), ""};
  }
  const auto core = canonical_core(mode);
  if (core.empty())
    return {"", fmt::format("kvlab: warning: KVLAB_BLAS_CORE={} is not an OpenBLAS core (nor auto or keep); "
                            "running {}",
                            mode, picked)};
  if (iequal(core, picked)) return {};
  return {std::string(core), ""};
}

std::string summary(std::string_view config, std::string_view core, int threads, const CoreEnv& env,
                    std::string_view best) {
  // openblas_get_config() names the running core among its build options: drop it there.
  std::string library;
  for (std::size_t at = 0; at < config.size();) {
    const auto end = std::min(config.find(' ', at), config.size());
    const auto word = config.substr(at, end - at);
    if (!word.empty() && !iequal(word, core)) {
      if (!library.empty()) library += ' ';
      library += word;
    }
    at = end + 1;
  }
  std::string who = "OpenBLAS's choice";
  if (env.picked) {
    const std::string asked = env.openblas_coretype.value_or("");
    const bool named = env.kvlab_blas_core && !canonical_core(*env.kvlab_blas_core).empty();
    who = !iequal(asked, core) ? fmt::format("kvlab asked for {}; OpenBLAS picked {}", asked, *env.picked)
          : named              ? fmt::format("KVLAB_BLAS_CORE; OpenBLAS picked {}", *env.picked)
                               : fmt::format("chosen by kvlab; OpenBLAS picked {}", *env.picked);
  } else {
    if (env.openblas_coretype) who = "OPENBLAS_CORETYPE";
    if (weaker_than(core, best)) who += fmt::format("; this CPU runs {}", best);  // kept (keep, or the user's)
  }
  return fmt::format("{}, core {} ({}), {} thread{}", library.empty() ? "unknown BLAS" : library, core, who, threads,
                     threads == 1 ? "" : "s");
}

std::string summary() {
  const char* config = openblas_get_config();
  const char* core = openblas_get_corename();
  return summary(config ? config : "", core ? core : "unknown", openblas_get_num_threads(), CoreEnv::from_environment(),
                 best_core(cpu_features()));
}

void restart_with_best_core(char** argv, bool quiet) {
  const auto env = CoreEnv::from_environment();
  const char* running = openblas_get_corename();
  const char* config = openblas_get_config();
  const bool dynamic_arch = config != nullptr && std::strstr(config, "DYNAMIC_ARCH") != nullptr;
  const auto choice = choose_core(env, running ? running : "", cpu_features(), dynamic_arch);
  if (!choice.message.empty() && !quiet) fmt::print(stderr, "{}\n", choice.message);
  if (choice.restart_with.empty()) return;
  const std::string picked = env.assume_picked.value_or(running ? running : "");
  ::setenv("OPENBLAS_CORETYPE", choice.restart_with.c_str(), 1);
  ::setenv("KVLAB_BLAS_PICKED", picked.c_str(), 1);
  std::fflush(stdout);
  std::fflush(stderr);
  ::execv("/proc/self/exe", argv);
  const int error = errno;  // still here: go on with OpenBLAS's core, and say so
  ::unsetenv("OPENBLAS_CORETYPE");
  ::unsetenv("KVLAB_BLAS_PICKED");
  if (!quiet)
    fmt::print(stderr, "kvlab: warning: could not restart with BLAS core {} ({}); running {}\n", choice.restart_with,
               std::strerror(error), picked);
}

}  // namespace kvlab::linalg::blas
