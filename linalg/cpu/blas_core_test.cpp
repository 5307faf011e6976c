// The BLAS core check's pure functions (linalg/cpu/blas_core.h): which core a feature set gets,
// which cores are weaker than which, what kvlab does at start-up under each environment, and
// the provenance line. cli/blas_core_cli_test.cpp runs the real restart.
#include "linalg/cpu/blas_core.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace kvlab::linalg::blas {
namespace {

CpuFeatures avx_only() {
  CpuFeatures f;
  f.avx = true;
  return f;
}
CpuFeatures avx2() {
  auto f = avx_only();
  f.avx2 = f.fma = true;
  return f;
}
CpuFeatures avx512() {
  auto f = avx2();
  f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = true;
  return f;
}
CpuFeatures avx512_bf16() {
  auto f = avx512();
  f.avx512_bf16 = true;
  return f;
}

TEST(BlasCore, BestCoreOfEachFeatureSet) {
  EXPECT_EQ(best_core(CpuFeatures{}), "");
  EXPECT_EQ(best_core(avx_only()), "Sandybridge");
  EXPECT_EQ(best_core(avx2()), "Haswell");
  EXPECT_EQ(best_core(avx512()), "SkylakeX");
  EXPECT_EQ(best_core(avx512_bf16()), "Cooperlake");

  auto no_fma = avx2();
  no_fma.fma = false;  // Haswell's kernels are FMA kernels
  EXPECT_EQ(best_core(no_fma), "Sandybridge");
  auto knl = avx2();  // Knights Landing: AVX-512 F without BW/VL/DQ, which SkylakeX's kernels use
  knl.avx512f = true;
  EXPECT_EQ(best_core(knl), "Haswell");
  auto no_vl = avx512_bf16();
  no_vl.avx512vl = false;
  EXPECT_EQ(best_core(no_vl), "Haswell");
  auto bf16_without_bw = avx512_bf16();
  bf16_without_bw.avx512bw = false;
  EXPECT_EQ(best_core(bf16_without_bw), "Haswell");

  EXPECT_EQ(describe(avx512_bf16()), "AVX-512 + BF16");
  EXPECT_EQ(describe(avx512()), "AVX-512");
  EXPECT_EQ(describe(avx2()), "AVX2");
  EXPECT_EQ(describe(CpuFeatures{}), "no AVX");
}

TEST(BlasCore, WeakerThanTable) {
  struct Row {
    const char* chosen;
    const char* best;
    bool weaker;
  };
  const Row rows[] = {
      {"Prescott", "Cooperlake", true},   {"Prescott", "Haswell", true},      {"Nehalem", "Sandybridge", true},
      {"Core2", "SkylakeX", true},        {"Barcelona", "Haswell", true},     {"Sandybridge", "Haswell", true},
      {"Excavator", "Haswell", true},     {"Haswell", "SkylakeX", true},      {"Haswell", "Cooperlake", true},
      {"Zen", "Cooperlake", true},        {"SkylakeX", "Cooperlake", true},   {"Haswell", "Haswell", false},
      {"Zen", "Haswell", false},          {"Haswell", "Zen", false},          {"Cooperlake", "SkylakeX", false},
      {"Cooperlake", "Cooperlake", false}, {"SkylakeX", "Haswell", false},    {"SapphireRapids", "Cooperlake", false},
      {"Cooperlake", "SapphireRapids", true}, {"Haswell", "Sandybridge", false}, {"Prescott", "Prescott", false},
      {"haswell", "COOPERLAKE", true},    {"Unknown", "Cooperlake", false},   {"", "Cooperlake", false},
      {"Haswell", "", false},             {"NeoverseN1", "Haswell", false},   {"Haswell", "Zen4", false},
  };
  for (const auto& r : rows) EXPECT_EQ(weaker_than(r.chosen, r.best), r.weaker) << r.chosen << " < " << r.best;
}

TEST(BlasCore, NamesAreOpenBlasNames) {
  EXPECT_EQ(canonical_core("skylakex"), "SkylakeX");
  EXPECT_EQ(canonical_core("COOPERLAKE"), "Cooperlake");
  EXPECT_EQ(canonical_core("Opteron_SSE3"), "Opteron_SSE3");
  EXPECT_EQ(canonical_core("Zen4"), "");
  EXPECT_EQ(canonical_core(""), "");
  EXPECT_EQ(core_rank("Haswell"), core_rank("Zen"));
  EXPECT_FALSE(core_rank("auto").has_value());
  // Every core best_core() can name is one OpenBLAS 0.3.21 accepts in OPENBLAS_CORETYPE
  // (driver/others/dynamic.c: Katmai … Cooperlake; SapphireRapids came later).
  const std::set<std::string> accepted_by_0_3_21 = {
      "Katmai",    "Coppermine",   "Northwood",  "Prescott",    "Banias",    "Atom",       "Core2",
      "Penryn",    "Dunnington",   "Nehalem",    "Athlon",      "Opteron",   "Opteron_SSE3", "Barcelona",
      "Nano",      "Sandybridge",  "Bobcat",     "Bulldozer",   "Piledriver", "Haswell",   "Steamroller",
      "Excavator", "Zen",          "SkylakeX",   "Cooperlake"};
  for (const auto& f : {avx_only(), avx2(), avx512(), avx512_bf16()}) {
    const std::string core(best_core(f));
    EXPECT_TRUE(accepted_by_0_3_21.count(core)) << core;
    EXPECT_EQ(canonical_core(core), core);
  }
  for (const auto& name : accepted_by_0_3_21) EXPECT_EQ(canonical_core(name), name);
}

CoreEnv env_with(std::optional<std::string> coretype, std::optional<std::string> mode = {},
                 std::optional<std::string> picked = {}, std::optional<std::string> assume = {}) {
  return {std::move(coretype), std::move(mode), std::move(picked), std::move(assume)};
}

TEST(BlasCore, ChooseCoreRestartsOnlyWhenOpenBlasFellBack) {
  // The case this exists for: an AVX-512 + BF16 CPU that 0.3.21 runs on Haswell kernels.
  auto c = choose_core({}, "Haswell", avx512_bf16(), true);
  EXPECT_EQ(c.restart_with, "Cooperlake");
  EXPECT_EQ(c.message, "");  // the restarted process says it, once
  EXPECT_EQ(choose_core({}, "Prescott", avx512(), true).restart_with, "SkylakeX");
  EXPECT_EQ(choose_core({}, "Prescott", avx2(), true).restart_with, "Haswell");
  EXPECT_EQ(choose_core(env_with({}, "auto"), "Haswell", avx512_bf16(), true).restart_with, "Cooperlake");
  EXPECT_EQ(choose_core(env_with({}, ""), "Haswell", avx512_bf16(), true).restart_with, "Cooperlake");
  // OpenBLAS's choice is as good: nothing to do.
  EXPECT_EQ(choose_core({}, "Cooperlake", avx512_bf16(), true).restart_with, "");
  EXPECT_EQ(choose_core({}, "Zen", avx2(), true).restart_with, "");
  EXPECT_EQ(choose_core({}, "SapphireRapids", avx512_bf16(), true).restart_with, "");
  EXPECT_EQ(choose_core({}, "Prescott", CpuFeatures{}, true).restart_with, "");
  EXPECT_EQ(choose_core({}, "NeoverseN1", CpuFeatures{}, true).restart_with, "");  // not x86: unknown name
  // A single-core build ignores OPENBLAS_CORETYPE.
  EXPECT_EQ(choose_core({}, "Haswell", avx512_bf16(), false).restart_with, "");
}

TEST(BlasCore, ChooseCoreKeepsTheUsersCore) {
  for (const auto& c : {choose_core(env_with("Prescott"), "Prescott", avx512_bf16(), true),
                        choose_core(env_with("Prescott", "SkylakeX"), "Prescott", avx512_bf16(), true),
                        choose_core(env_with("Prescott", {}, {}, "Prescott"), "Prescott", avx512_bf16(), true),
                        choose_core(env_with({}, "keep"), "Haswell", avx512_bf16(), true),
                        choose_core(env_with({}, "KEEP", {}, "Prescott"), "Haswell", avx512_bf16(), true)}) {
    EXPECT_EQ(c.restart_with, "");
    EXPECT_EQ(c.message, "");
  }
}

TEST(BlasCore, ChooseCoreByName) {
  EXPECT_EQ(choose_core(env_with({}, "skylakex"), "Haswell", avx512_bf16(), true).restart_with, "SkylakeX");
  EXPECT_EQ(choose_core(env_with({}, "Haswell"), "Cooperlake", avx512_bf16(), true).restart_with, "Haswell");
  EXPECT_EQ(choose_core(env_with({}, "haswell"), "Haswell", avx512_bf16(), true).restart_with, "");
  const auto bad = choose_core(env_with({}, "Zen4"), "Haswell", avx512_bf16(), true);
  EXPECT_EQ(bad.restart_with, "");
  EXPECT_NE(bad.message.find("KVLAB_BLAS_CORE=Zen4 is not an OpenBLAS core"), std::string::npos) << bad.message;
  const auto fixed = choose_core(env_with({}, "SkylakeX"), "Haswell", avx512_bf16(), false);
  EXPECT_EQ(fixed.restart_with, "");
  EXPECT_NE(fixed.message.find("ignored"), std::string::npos) << fixed.message;
}

TEST(BlasCore, TheRestartedProcessSaysSoOnceAndNeverRestarts) {
  const auto c = choose_core(env_with("Cooperlake", {}, "Haswell"), "Cooperlake", avx512_bf16(), true);
  EXPECT_EQ(c.restart_with, "");
  EXPECT_EQ(c.message,
            "kvlab: BLAS core Cooperlake instead of OpenBLAS's choice, Haswell, which leaves this CPU's AVX-512 + BF16 "
            "unused (KVLAB_BLAS_CORE=keep turns this off)");
  // Even when it still looks weaker (OpenBLAS did not take the name): a warning, no loop.
  const auto refused = choose_core(env_with("Cooperlake", {}, "Haswell"), "Prescott", avx512_bf16(), true);
  EXPECT_EQ(refused.restart_with, "");
  EXPECT_NE(refused.message.find("OpenBLAS did not take core Cooperlake (it runs Prescott)"), std::string::npos)
      << refused.message;
  const auto named = choose_core(env_with("SkylakeX", "SkylakeX", "Haswell"), "SkylakeX", avx512_bf16(), true);
  EXPECT_EQ(named.restart_with, "");
  EXPECT_EQ(named.message, "kvlab: BLAS core SkylakeX (KVLAB_BLAS_CORE) instead of OpenBLAS's choice, Haswell");
}

TEST(BlasCore, TheTestHookStandsInForOpenBlasChoice) {
  EXPECT_EQ(choose_core(env_with({}, {}, {}, "Prescott"), "Cooperlake", avx512_bf16(), true).restart_with, "Cooperlake");
  EXPECT_EQ(choose_core(env_with({}, {}, {}, "Cooperlake"), "Haswell", avx512_bf16(), true).restart_with, "");
}

TEST(BlasCore, SummaryNamesLibraryCoreWhoChoseAndThreads) {
  const std::string config = "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Cooperlake MAX_THREADS=64";
  EXPECT_EQ(summary(config, "Cooperlake", 2, env_with("Cooperlake", {}, "Haswell")),
            "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY MAX_THREADS=64, core Cooperlake (chosen by kvlab; "
            "OpenBLAS picked Haswell), 2 threads");
  EXPECT_EQ(summary("OpenBLAS 0.3.21 DYNAMIC_ARCH Haswell", "Haswell", 1, {}),
            "OpenBLAS 0.3.21 DYNAMIC_ARCH, core Haswell (OpenBLAS's choice), 1 thread");
  EXPECT_EQ(summary("OpenBLAS 0.3.21 DYNAMIC_ARCH Prescott", "Prescott", 2, env_with("prescott")),
            "OpenBLAS 0.3.21 DYNAMIC_ARCH, core Prescott (OPENBLAS_CORETYPE), 2 threads");
  EXPECT_EQ(summary("OpenBLAS 0.3.21 DYNAMIC_ARCH Haswell", "Haswell", 2, env_with("Cooperlake", {}, "Haswell")),
            "OpenBLAS 0.3.21 DYNAMIC_ARCH, core Haswell (kvlab asked for Cooperlake; OpenBLAS picked Haswell), 2 threads");
  EXPECT_EQ(summary("", "Haswell", 2, {}), "unknown BLAS, core Haswell (OpenBLAS's choice), 2 threads");
  EXPECT_EQ(summary("OpenBLAS 0.3.21 DYNAMIC_ARCH SkylakeX", "SkylakeX", 2, env_with("SkylakeX", "SkylakeX", "Haswell")),
            "OpenBLAS 0.3.21 DYNAMIC_ARCH, core SkylakeX (KVLAB_BLAS_CORE; OpenBLAS picked Haswell), 2 threads");
  // The user's core is kept, but the line says what it leaves unused.
  EXPECT_EQ(summary("OpenBLAS 0.3.21 DYNAMIC_ARCH Haswell", "Haswell", 2, env_with("Haswell"), "Cooperlake"),
            "OpenBLAS 0.3.21 DYNAMIC_ARCH, core Haswell (OPENBLAS_CORETYPE; this CPU runs Cooperlake), 2 threads");
  EXPECT_EQ(summary("OpenBLAS 0.3.21 DYNAMIC_ARCH Cooperlake", "Cooperlake", 2, env_with("Cooperlake"), "Cooperlake"),
            "OpenBLAS 0.3.21 DYNAMIC_ARCH, core Cooperlake (OPENBLAS_CORETYPE), 2 threads");
  EXPECT_EQ(summary("OpenBLAS 0.3.21 DYNAMIC_ARCH Haswell", "Haswell", 2, env_with({}, "keep"), "Cooperlake"),
            "OpenBLAS 0.3.21 DYNAMIC_ARCH, core Haswell (OpenBLAS's choice; this CPU runs Cooperlake), 2 threads");
  EXPECT_EQ(summary("OpenBLAS 0.3.21 DYNAMIC_ARCH Zen", "Zen", 2, {}, "Haswell"),
            "OpenBLAS 0.3.21 DYNAMIC_ARCH, core Zen (OpenBLAS's choice), 2 threads");
}

// cpuid as the kernel sees it: /proc/cpuinfo's flags, which Linux also clears when the OS does
// not save the registers (an independent reading of the same facts).
TEST(BlasCore, CpuFeaturesAgreeWithProcCpuinfo) {
#if !(defined(__x86_64__) || defined(__i386__))
  GTEST_SKIP() << "not x86";
#endif
  std::ifstream in("/proc/cpuinfo");
  std::string line, flags;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) {
      flags = line.substr(line.find(':') + 1);
      break;
    }
  if (flags.empty()) GTEST_SKIP() << "no /proc/cpuinfo flags";
  std::set<std::string> has;
  std::istringstream words(flags);
  for (std::string w; words >> w;) has.insert(w);
  const auto f = cpu_features();
  EXPECT_EQ(f.avx, has.count("avx") == 1);
  EXPECT_EQ(f.avx2, has.count("avx2") == 1);
  EXPECT_EQ(f.fma, has.count("fma") == 1);
  EXPECT_EQ(f.avx512f, has.count("avx512f") == 1);
  EXPECT_EQ(f.avx512bw, has.count("avx512bw") == 1);
  EXPECT_EQ(f.avx512vl, has.count("avx512vl") == 1);
  EXPECT_EQ(f.avx512dq, has.count("avx512dq") == 1);
  EXPECT_EQ(f.avx512_bf16, has.count("avx512_bf16") == 1);
}

}  // namespace
}  // namespace kvlab::linalg::blas
