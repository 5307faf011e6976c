// What recording provenance costs: core::file_hash (streamed XXH3-128 of a file) against the same
// hash of the bytes already in memory (the ceiling) and against reading the file without hashing
// (the floor a streamed hash cannot beat). 512 MiB file in the page cache, after one warm-up read.
//   build/bench/bench_content_hash [--benchmark_filter=…]
#include <benchmark/benchmark.h>
#include <xxhash.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "core/content_hash.h"

namespace {

constexpr std::size_t kBytes = std::size_t{512} << 20;

const std::filesystem::path& file() {
  static const auto path = [] {
    const auto p = std::filesystem::temp_directory_path() / "kvlab_bench_hash.bin";
    std::vector<std::uint64_t> data(kBytes / 8);
    std::mt19937_64 rng(1);
    for (auto& v : data) v = rng();
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(kBytes));
    return p;
  }();
  return path;
}

void BM_FileHash(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(kvlab::core::file_hash(file()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kBytes));
}

void BM_ReadOnly(benchmark::State& state) {
  std::vector<char> block(std::size_t{8} << 20);
  for (auto _ : state) {
    std::FILE* f = std::fopen(file().c_str(), "rb");
    while (std::fread(block.data(), 1, block.size(), f) == block.size()) benchmark::ClobberMemory();
    std::fclose(f);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kBytes));
}

void BM_HashInMemory(benchmark::State& state) {
  std::vector<char> bytes(kBytes);
  std::ifstream(file(), std::ios::binary).read(bytes.data(), static_cast<std::streamsize>(kBytes));
  for (auto _ : state) benchmark::DoNotOptimize(XXH3_128bits(bytes.data(), bytes.size()));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kBytes));
}

BENCHMARK(BM_ReadOnly)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_FileHash)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_HashInMemory)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  kvlab::core::file_hash(file());  // write the file and warm the page cache outside the timings
  benchmark::RunSpecifiedBenchmarks();
  std::filesystem::remove(file());
  return 0;
}
