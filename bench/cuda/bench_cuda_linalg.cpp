// GPU vs CPU timings of the Backend ops at kvlab's shapes (docs/performance.md §9 items 1–2):
// Gram (syrk) at n × D, Xsyevd values-only and with vectors, Xsyevdx top 25 %, each against
// the CPU backend on the same host at a fixed thread count. Plain main(), no Google Benchmark,
// so it builds on a GPU machine with only the carried .debs (scripts/build-cuda.sh).
//
//   bench_cuda_linalg [--cpu-threads 2] [--cpu-budget-s 300] [--reps 3] [--quick]
//
// GPU figures: median of --reps calls after one warm-up, end to end through the host-pointer
// API (copies included) and the device-side split from CUDA events. CPU figures: one call each
// (they take seconds to minutes), cheapest first, skipping the rest once --cpu-budget-s is spent.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/error.h"
#include "linalg/backend.h"
#include "linalg/cuda/cuda_backend.h"

namespace {

using kvlab::linalg::Backend;
using kvlab::linalg::CudaBackend;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Uniform [-1, 1) from xorshift64*: fast enough to fill GiBs (the values do not matter for
// syrk timings; for eigensolvers the input is a Gram, see below).
template <typename T>
void fill_uniform(std::vector<T>& v, std::uint64_t seed) {
  std::uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& x : v) {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    x = T(double((s * 0x2545F4914F6CDD1Dull) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
  }
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

struct Options {
  int cpu_threads = 2;
  double cpu_budget_s = 300;
  int reps = 3;
  bool quick = false;  // small shapes: a smoke test of the program itself
};

struct GpuResult {
  double total_ms, upload_ms, compute_ms, download_ms;
};

// One warm-up, then the median (by end-to-end time) of `reps` calls; `prepare` restores inputs.
GpuResult time_gpu(CudaBackend& gpu, int reps, const std::function<void()>& prepare,
                   const std::function<void()>& call) {
  std::vector<GpuResult> runs;
  for (int i = 0; i <= reps; ++i) {
    prepare();
    const auto t0 = Clock::now();
    call();
    const double total = ms_since(t0);
    const auto t = gpu.last_timing();
    if (i > 0) runs.push_back({total, t.upload_ms, t.compute_ms, t.download_ms});
  }
  std::sort(runs.begin(), runs.end(), [](const GpuResult& a, const GpuResult& b) { return a.total_ms < b.total_ms; });
  return runs[runs.size() / 2];
}

struct Case {
  std::string op, shape, precision;
  GpuResult gpu{};
  double cpu_ms = -1;           // < 0: not measured
  double cpu_estimate_s = 0;    // from docs/performance.md §3's 2-core rates: orders the CPU runs
  std::function<void()> prepare, run_cpu;
};

Case make_case(std::string op, std::string shape, const char* precision, double cpu_estimate_s) {
  Case c;
  c.op = std::move(op);
  c.shape = std::move(shape);
  c.precision = precision;
  c.cpu_estimate_s = cpu_estimate_s;
  c.prepare = [] {};
  return c;
}

void print_row(const Case& c) {
  char cpu[64] = "skipped", ratio[64] = "—";
  if (c.cpu_ms >= 0) {
    std::snprintf(cpu, sizeof cpu, "%.0f", c.cpu_ms);
    std::snprintf(ratio, sizeof ratio, "%.0f× / %.0f×", c.cpu_ms / c.gpu.total_ms, c.cpu_ms / c.gpu.compute_ms);
  }
  std::printf("| %s | %s | %s | %.1f | %.1f | %.1f | %.1f | %s | %s |\n", c.op.c_str(), c.shape.c_str(),
              c.precision.c_str(), c.gpu.total_ms, c.gpu.compute_ms, c.gpu.upload_ms, c.gpu.download_ms, cpu, ratio);
  std::fflush(stdout);
}

// Builds the cases of one precision; matrices live in `store` so the CPU runs reuse them.
template <typename T>
struct Suite {
  const char* precision;
  std::deque<std::vector<T>> store;  // a deque: growing it keeps references to earlier matrices valid
  static constexpr bool f32 = sizeof(T) == 4;

  void gram_case(std::vector<Case>& out, CudaBackend& gpu, const Options& o, std::int64_t n, std::int64_t d) {
    auto& x = store.emplace_back(static_cast<std::size_t>(n * d));
    fill_uniform(x, static_cast<std::uint64_t>(n + d));
    auto& c = store.emplace_back(static_cast<std::size_t>(d * d));
    // ssyrk ≈ 165, dsyrk ≈ 80 GFLOP/s on 2 cores (docs/performance.md §3), n·d² flops.
    Case k = make_case("gram (syrk)", std::to_string(n) + " × " + std::to_string(d), precision,
                       double(n) * double(d) * double(d) / (f32 ? 165e9 : 80e9));
    const T* xp = x.data();
    T* cp = c.data();
    k.gpu = time_gpu(gpu, o.reps, [] {}, [&gpu, xp, cp, n, d] { gpu.gram(xp, n, d, d, T(1), T(0), cp, d); });
    k.run_cpu = [xp, cp, n, d] { kvlab::linalg::cpu_backend().gram(xp, n, d, d, T(1), T(0), cp, d); };
    print_row(k);
    out.push_back(std::move(k));
  }

  // Eigensolver input: the Gram of 2d random rows (SPD, Marchenko–Pastur spectrum, like a
  // KV Gram without the decay), formed on the GPU in f64 and symmetrised.
  const std::vector<T>& spd(CudaBackend& gpu, std::int64_t d) {
    std::vector<double> x(static_cast<std::size_t>(2 * d * d)), g(static_cast<std::size_t>(d * d));
    fill_uniform(x, static_cast<std::uint64_t>(d));
    gpu.gram(x.data(), 2 * d, d, d, 1.0, 0.0, g.data(), d);
    kvlab::linalg::symmetrize_from_upper(g.data(), d, d);
    auto& s = store.emplace_back(g.begin(), g.end());
    return s;
  }

  void eig_cases(std::vector<Case>& out, CudaBackend& gpu, const Options& o, std::int64_t d) {
    const std::vector<T>& s0 = spd(gpu, d);
    auto& work = store.emplace_back(s0.size());
    auto& w = store.emplace_back(static_cast<std::size_t>(d));
    const std::int64_t r = d / 4;
    auto& v = store.emplace_back(static_cast<std::size_t>(d * r));
    T* sp = work.data();
    T* wp = w.data();
    T* vp = v.data();
    const T* s0p = s0.data();
    const std::size_t bytes = s0.size() * sizeof(T);
    auto prepare = [sp, s0p, bytes] { std::memcpy(sp, s0p, bytes); };
    const std::string shape = std::to_string(d) + " × " + std::to_string(d);

    // docs/performance.md §3 at 4096 (2 threads), scaled by d³.
    const double cube = std::pow(double(d) / 4096.0, 3);
    Case values = make_case("Xsyevd values only", shape, precision, (f32 ? 1.8 : 4.0) * cube);
    values.gpu = time_gpu(gpu, o.reps, prepare, [&gpu, sp, wp, d] { gpu.eigvalsh(sp, d, d, wp); });
    values.prepare = prepare;
    values.run_cpu = [sp, wp, d] { kvlab::linalg::cpu_backend().eigvalsh(sp, d, d, wp); };
    print_row(values);
    out.push_back(std::move(values));

    Case vectors = make_case("Xsyevd with vectors", shape, precision, (f32 ? 4.2 : 7.5) * cube);
    vectors.gpu = time_gpu(gpu, o.reps, prepare, [&gpu, sp, wp, d] { gpu.eigh(sp, d, d, wp); });
    vectors.prepare = prepare;
    vectors.run_cpu = [sp, wp, d] { kvlab::linalg::cpu_backend().eigh(sp, d, d, wp); };
    print_row(vectors);
    out.push_back(std::move(vectors));

    Case top = make_case("Xsyevdx top 25 % (CPU: ?syevr)", shape + ", r = " + std::to_string(r), precision,
                         (f32 ? 4.2 : 7.5) * cube);
    top.gpu = time_gpu(gpu, o.reps, prepare, [&gpu, sp, wp, vp, d, r] { gpu.eigh_top(sp, d, d, r, wp, vp, d); });
    top.prepare = prepare;
    top.run_cpu = [sp, wp, vp, d, r] { kvlab::linalg::cpu_backend().eigh_top(sp, d, d, r, wp, vp, d); };
    print_row(top);
    out.push_back(std::move(top));
  }
};

int run(const Options& o) {
  CudaBackend& gpu = kvlab::linalg::cuda_backend();
  kvlab::linalg::cpu_backend().set_threads(o.cpu_threads);
  std::printf("GPU: %s; CPU: %s, %d BLAS threads (%d reported)\n", gpu.device_description().c_str(),
              cpu_model().c_str(), o.cpu_threads, kvlab::linalg::cpu_backend().threads());
  std::printf("GPU ms: median of %d after a warm-up; 'end to end' = host pointers in and out, copies included\n\n",
              o.reps);
  std::printf("| op | shape | prec | GPU end to end ms | GPU compute ms | upload ms | download ms | CPU ms | CPU/GPU (end to end / compute) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  std::fflush(stdout);

  const std::vector<std::int64_t> grams_n = o.quick ? std::vector<std::int64_t>{2048} : std::vector<std::int64_t>{16384, 131072};
  const std::int64_t gram_d = o.quick ? 512 : 4096;
  const std::vector<std::int64_t> eig_d = o.quick ? std::vector<std::int64_t>{256, 512} : std::vector<std::int64_t>{4096, 8192};

  std::vector<Case> cases;
  Suite<float> f32{"f32", {}};
  Suite<double> f64{"f64", {}};
  for (auto n : grams_n) {
    f32.gram_case(cases, gpu, o, n, gram_d);
    f64.gram_case(cases, gpu, o, n, gram_d);
  }
  for (auto d : eig_d) {
    f32.eig_cases(cases, gpu, o, d);
    f64.eig_cases(cases, gpu, o, d);
  }
  gpu.release_memory();

  // CPU side, cheapest first by the estimate; a case is skipped when it would overrun the budget.
  std::vector<Case*> order;
  for (auto& c : cases) order.push_back(&c);
  std::stable_sort(order.begin(), order.end(),
                   [](const Case* a, const Case* b) { return a->cpu_estimate_s < b->cpu_estimate_s; });
  std::printf("\nCPU backend, %d threads, one call each (budget %.0f s):\n\n", o.cpu_threads, o.cpu_budget_s);
  std::printf("| op | shape | prec | GPU end to end ms | GPU compute ms | upload ms | download ms | CPU ms | CPU/GPU (end to end / compute) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  const auto start = Clock::now();
  for (Case* c : order) {
    if (ms_since(start) / 1000 + c->cpu_estimate_s <= o.cpu_budget_s) {
      c->prepare();
      const auto t0 = Clock::now();
      try {
        c->run_cpu();
        c->cpu_ms = ms_since(t0);
      } catch (const kvlab::Error& e) {  // report and go on: one failing CPU routine must not end the run
        std::printf("CPU backend failed on %s %s %s: %s\n", c->op.c_str(), c->shape.c_str(), c->precision.c_str(),
                    e.what());
      }
    }
    print_row(*c);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* name) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_cuda_linalg: %s needs a value\n", name);
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    if (a == "--cpu-threads") o.cpu_threads = std::stoi(value("--cpu-threads"));
    else if (a == "--cpu-budget-s") o.cpu_budget_s = std::stod(value("--cpu-budget-s"));
    else if (a == "--reps") o.reps = std::max(1, std::stoi(value("--reps")));
    else if (a == "--quick") o.quick = true;
    else {
      std::fprintf(stderr, "usage: bench_cuda_linalg [--cpu-threads N] [--cpu-budget-s S] [--reps R] [--quick]\n");
      return 2;
    }
  }
  try {
    return run(o);
  } catch (const kvlab::Error& e) {
    std::fprintf(stderr, "bench_cuda_linalg: %s\n", e.what());
    return 2;
  }
}
