// Which OpenBLAS kernels ("core") this process runs, and the start-up check that picks better
// ones when OpenBLAS misjudges the CPU (docs/performance.md §3, "Which OpenBLAS kernels run").
//
// A DYNAMIC_ARCH OpenBLAS (Debian's) picks its kernels from the CPU's family/model at load time.
// 0.3.21 does not know every newer CPU and can fall back to older kernels (SSE3 "Prescott" has been
// seen on AVX-512 Xeons); Haswell kernels on an AVX-512 EPYC run sgemm at about half the rate.
// OpenBLAS reads OPENBLAS_CORETYPE once, when it is loaded, so the only fix from inside is to run
// the program again with that variable set: restart_with_best_blas_core() does that at the top of
// main(). The rest of this header is pure functions, tested in blas_core_test.cpp.
//
// Environment:
//   OPENBLAS_CORETYPE       set by the user: kvlab never overrides it.
//   KVLAB_BLAS_CORE         auto (default, also when unset or empty): restart with the best core
//                           when OpenBLAS chose a weaker one; keep: never restart; <name>: run that
//                           OpenBLAS core (e.g. SkylakeX), whatever the CPU.
//   KVLAB_BLAS_PICKED       set by kvlab on its restart (the core OpenBLAS had picked): marks the
//                           restarted process, which never restarts again.
//   KVLAB_BLAS_ASSUME_PICKED  test hook: act as if OpenBLAS had picked this core.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace kvlab::linalg::blas {

// x86 vector extensions that select OpenBLAS kernels, as usable here (CPU and OS both).
struct CpuFeatures {
  bool avx = false, avx2 = false, fma = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512_bf16 = false;
};

// This CPU's features (cpuid + the OS's saved register state); all false off x86.
CpuFeatures cpu_features();

// The strongest OpenBLAS core whose kernels the features run, among the names OpenBLAS 0.3.21
// accepts in OPENBLAS_CORETYPE: "Cooperlake" (AVX-512 F/BW/VL/DQ + BF16), "SkylakeX" (AVX-512
// F/BW/VL/DQ), "Haswell" (AVX2 + FMA), "Sandybridge" (AVX); "" below AVX (nothing worth forcing).
std::string_view best_core(const CpuFeatures& f);

// The widest instruction set an OpenBLAS x86-64 core's kernels use, as a rank: 0 SSE-era
// (Prescott, Core2, Nehalem, Barcelona, …), 1 AVX (Sandybridge, Bulldozer … Excavator), 2 AVX2
// (Haswell, Zen), 3 AVX-512 (SkylakeX), 4 AVX-512 + BF16 (Cooperlake), 5 AMX (SapphireRapids);
// std::nullopt for a name this table does not know. Names compare case-insensitively, as
// OpenBLAS compares them.
std::optional<int> core_rank(std::string_view core);

// The name as OpenBLAS spells it ("skylakex" → "SkylakeX"); "" for an unknown name.
std::string_view canonical_core(std::string_view core);

// True when `chosen` and `best` are known cores and `chosen` uses a narrower instruction set.
// Unknown names are never weaker: kvlab does not second-guess a core it does not know.
bool weaker_than(std::string_view chosen, std::string_view best);

// "AVX-512 + BF16", "AVX-512", "AVX2", "AVX" or "no AVX": the features best_core() went by.
std::string_view describe(const CpuFeatures& f);

// The environment variables above (std::nullopt: unset).
struct CoreEnv {
  std::optional<std::string> openblas_coretype;  // OPENBLAS_CORETYPE
  std::optional<std::string> kvlab_blas_core;    // KVLAB_BLAS_CORE
  std::optional<std::string> picked;             // KVLAB_BLAS_PICKED (this is the restarted process)
  std::optional<std::string> assume_picked;      // KVLAB_BLAS_ASSUME_PICKED (test hook)
  static CoreEnv from_environment();
};

// What to do at start-up, given the environment, the core OpenBLAS runs and the CPU's features.
struct CoreChoice {
  std::string restart_with;  // the core to restart with; "" to go on as is
  std::string message;       // one line for stderr (without "\n"), "" for none
};
CoreChoice choose_core(const CoreEnv& env, std::string_view running, const CpuFeatures& f, bool dynamic_arch);

// The BLAS line of `kvlab --version` and of every run's provenance, e.g. "OpenBLAS 0.3.21
// NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY MAX_THREADS=64, core Cooperlake (chosen by kvlab; OpenBLAS
// picked Haswell), 2 threads". Pure: `config` is openblas_get_config(), which names the core too;
// `best` is best_core() of this CPU, named when the core kept (the user's, or under keep) is weaker.
std::string summary(std::string_view config, std::string_view core, int threads, const CoreEnv& env,
                    std::string_view best = "");

// The same for this process (asks OpenBLAS).
std::string summary();

// At the top of main(): when choose_core() says so, sets OPENBLAS_CORETYPE and KVLAB_BLAS_PICKED
// and executes /proc/self/exe again with the same argv (returns only when that fails, after a
// warning). Prints choose_core()'s message on stderr unless `quiet`.
void restart_with_best_core(char** argv, bool quiet);

}  // namespace kvlab::linalg::blas
