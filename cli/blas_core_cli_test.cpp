// The kvlab binary's BLAS core check end to end (linalg/cpu/blas_core.h): a fallback (simulated
// with the KVLAB_BLAS_ASSUME_PICKED hook) makes kvlab restart itself with the best core this CPU
// runs, say so once on stderr and report it in --version and in a run's provenance; a core the
// user set, and KVLAB_BLAS_CORE=keep, are kept. The expected core comes from /proc/cpuinfo's
// flags, read here independently of kvlab's cpuid code.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include <unistd.h>

#include "linalg/cpu/blas_core.h"

namespace {

namespace fs = std::filesystem;

// The OpenBLAS core /proc/cpuinfo says this CPU runs (the rule of docs/performance.md §3, "Which OpenBLAS kernels run").
std::string expected_best_core() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  std::set<std::string> has;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      for (std::string w; words >> w;) has.insert(w);
      break;
    }
  const auto all = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (!has.count(n)) return false;
    return true;
  };
  if (all({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma", "avx512_bf16"})) return "Cooperlake";
  if (all({"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma"})) return "SkylakeX";
  if (all({"avx2", "fma"})) return "Haswell";
  if (all({"avx"})) return "Sandybridge";
  return "";
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct Result {
  int rc = -1;
  std::string out, err;
};

class KvlabBlasCore : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) / ("kvlab_blas_core_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // kvlab with a clean BLAS environment plus `env` ("NAME=value ..."), in the test's folder.
  Result kvlab(const std::string& env, const std::string& args) {
    const std::string command = "cd '" + dir_.string() +
                                "' && env -u OPENBLAS_CORETYPE -u KVLAB_BLAS_CORE -u KVLAB_BLAS_PICKED "
                                "-u KVLAB_BLAS_ASSUME_PICKED " +
                                env + " '" KVLAB_EXE "' " + args + " >out.txt 2>err.txt";
    Result r;
    r.rc = std::system(command.c_str());
    r.out = slurp(dir_ / "out.txt");
    r.err = slurp(dir_ / "err.txt");
    return r;
  }

  fs::path dir_;
};

std::string blas_line(const std::string& version_output) {
  const auto at = version_output.find("BLAS: ");
  if (at == std::string::npos) return "";
  return version_output.substr(at, version_output.find('\n', at) - at);
}

TEST_F(KvlabBlasCore, AFallbackRestartsWithTheBestCoreAndSaysSoOnce) {
  const auto best = expected_best_core();
  if (best.empty()) GTEST_SKIP() << "this CPU has no AVX: no core to prefer";
  const auto r = kvlab("KVLAB_BLAS_ASSUME_PICKED=Prescott", "--version");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(blas_line(r.out).find("core " + best + " (chosen by kvlab; OpenBLAS picked Prescott)"), std::string::npos)
      << r.out;
  EXPECT_EQ(r.err, "kvlab: BLAS core " + best +
                       " instead of OpenBLAS's choice, Prescott, which leaves this CPU's " +
                       std::string(kvlab::linalg::blas::describe(kvlab::linalg::blas::cpu_features())) +
                       " unused (KVLAB_BLAS_CORE=keep turns this off)\n");
}

TEST_F(KvlabBlasCore, QuietSilencesTheNoticeNotTheRestart) {
  const auto best = expected_best_core();
  if (best.empty()) GTEST_SKIP() << "this CPU has no AVX: no core to prefer";
  const auto r = kvlab("KVLAB_BLAS_ASSUME_PICKED=Prescott", "--quiet --version");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(blas_line(r.out).find("core " + best + " (chosen by kvlab"), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "");
}

TEST_F(KvlabBlasCore, TheUsersCoreIsKept) {
  // Prescott (SSE3) runs on every x86-64 CPU.
  const auto r = kvlab("OPENBLAS_CORETYPE=Prescott KVLAB_BLAS_ASSUME_PICKED=Prescott", "--version");
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto best = expected_best_core();
  EXPECT_NE(blas_line(r.out).find(best.empty() || best == "Prescott" ? "core Prescott (OPENBLAS_CORETYPE)"
                                                                     : "core Prescott (OPENBLAS_CORETYPE; this CPU runs " +
                                                                           best + ")"),
            std::string::npos)
      << r.out;
  EXPECT_EQ(r.err, "");
}

TEST_F(KvlabBlasCore, KeepTurnsItOff) {
  const auto r = kvlab("KVLAB_BLAS_CORE=keep KVLAB_BLAS_ASSUME_PICKED=Prescott", "--version");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(blas_line(r.out).find("(OpenBLAS's choice"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("chosen by kvlab"), std::string::npos) << r.out;
  EXPECT_EQ(r.err, "");
}

TEST_F(KvlabBlasCore, UnhookedTheCoreIsNeverWeakerThanTheCpuAllows) {
  const auto r = kvlab("", "--version");
  ASSERT_EQ(r.rc, 0) << r.err;
  std::smatch m;
  const auto line = blas_line(r.out);
  ASSERT_TRUE(std::regex_search(line, m, std::regex(R"(, core (\S+) \()"))) << r.out;
  EXPECT_FALSE(kvlab::linalg::blas::weaker_than(m[1].str(), expected_best_core())) << line;
}

TEST_F(KvlabBlasCore, ARunsProvenanceNamesTheCore) {
  const auto best = expected_best_core();
  if (best.empty()) GTEST_SKIP() << "this CPU has no AVX: no core to prefer";
  ASSERT_EQ(kvlab("", "-q synth --layers 2 --kv-heads 1 --q-heads 2 --head-dim 16 --tokens 128 --query-window 8 "
                      "--out a.h5")
                .rc,
            0);
  const auto r = kvlab("KVLAB_BLAS_ASSUME_PICKED=Prescott", "-q analyze a.h5 --kind key --out an --db r.sqlite");
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string want = "core " + best + " (chosen by kvlab; OpenBLAS picked Prescott)";
  EXPECT_NE(slurp(dir_ / "an" / "analysis.json").find(want), std::string::npos);
  const auto show = kvlab("", "results show latest --db r.sqlite");
  ASSERT_EQ(show.rc, 0) << show.err;
  EXPECT_NE(show.out.find("  blas          OpenBLAS"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find(want), std::string::npos) << show.out;
}

}  // namespace
