// BLAS rates on this machine, the ceiling the analysis is judged against (bench/README.md):
// sgemm 4096³ (the reference rate), ssyrk, and the exact shape of the analysis's
// cross-product stage (one layer pair, 1024×1024 over a 2048-token block).
// Rates are reported as GFLOP/s counters (GEMM: 2mnk; SYRK: n·c² for its half).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "linalg/backend.h"

namespace {

std::vector<float> random_floats(std::size_t n) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);  // never benchmark on zeros
  return v;
}

void BM_sgemm(benchmark::State& state) {
  const std::int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  auto a = random_floats(std::size_t(m * k)), b = random_floats(std::size_t(k * n));
  std::vector<float> c(std::size_t(m * n));
  auto& be = kvlab::linalg::cpu_backend();
  for (auto _ : state) {
    be.gemm(false, true, m, n, k, 1.f, a.data(), m, b.data(), n, 1.f, c.data(), m);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOPS"] = benchmark::Counter(2.0 * double(m) * double(n) * double(k) * double(state.iterations()) / 1e9,
                                                benchmark::Counter::kIsRate);
}

void BM_ssyrk(benchmark::State& state) {
  const std::int64_t rows = state.range(0), cols = state.range(1);
  auto x = random_floats(std::size_t(rows * cols));
  std::vector<float> c(std::size_t(cols * cols));
  auto& be = kvlab::linalg::cpu_backend();
  for (auto _ : state) {
    be.gram(x.data(), rows, cols, cols, 1.f, 1.f, c.data(), cols);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOPS"] = benchmark::Counter(double(rows) * double(cols) * double(cols) * double(state.iterations()) / 1e9,
                                                benchmark::Counter::kIsRate);
}

void BM_ssyevd_values(benchmark::State& state) {
  const std::int64_t n = state.range(0);
  auto x = random_floats(std::size_t(2 * n * n));
  std::vector<float> s(static_cast<std::size_t>(n * n));
  std::vector<float> w(static_cast<std::size_t>(n));
  auto& be = kvlab::linalg::cpu_backend();
  std::vector<float> gram(std::size_t(n * n));
  be.gram(x.data(), 2 * n, n, n, 1.f, 0.f, gram.data(), n);
  for (auto _ : state) {
    s = gram;
    be.eigvalsh(s.data(), n, n, w.data());
    benchmark::DoNotOptimize(w.data());
  }
}

}  // namespace

BENCHMARK(BM_sgemm)->Args({4096, 4096, 4096})->Args({1024, 1024, 2048})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ssyrk)->Args({16384, 2048})->Args({2048, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ssyevd_values)->Arg(1024)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_MAIN();
