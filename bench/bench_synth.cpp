// What `kvlab synth` costs (datasets::write_synthetic_dump), against its two halves run alone:
// generating every layer in memory (SynthGenerator::for_each_layer, nothing written) and writing
// tensors of the same shapes with core::DumpWriter (f16 rounding + HDF5, nothing generated). The
// default SynthConfig is the bench size of bench/README.md (32 layers × 8 KV heads × 128,
// 16384 tokens, f16: 2.0 GiB); the argument is the token count.
//   build/bench/bench_synth [--benchmark_filter=…]
#include <benchmark/benchmark.h>

#include <filesystem>
#include <vector>

#include "core/kv_dump.h"
#include "core/progress.h"
#include "datasets/synth_kv.h"

namespace {

using kvlab::datasets::SynthConfig;
using kvlab::datasets::SynthGenerator;

SynthConfig bench_config(const benchmark::State& state) {
  SynthConfig c;  // the defaults are the bench size
  c.tokens = state.range(0);
  return c;
}

const std::filesystem::path& out_file() {
  static const auto path = std::filesystem::temp_directory_path() / "kvlab_bench_synth.h5";
  return path;
}

void report_bytes(benchmark::State& state) {
  const auto bytes = static_cast<std::int64_t>(std::filesystem::file_size(out_file()));
  state.SetBytesProcessed(bytes * static_cast<std::int64_t>(state.iterations()));
  state.counters["GiB"] = static_cast<double>(bytes) / (1 << 30);
  std::filesystem::remove(out_file());
}

void BM_SynthDump(benchmark::State& state) {
  const SynthConfig c = bench_config(state);
  for (auto _ : state) kvlab::datasets::write_synthetic_dump(c, out_file());
  report_bytes(state);
}

void BM_GenerateOnly(benchmark::State& state) {
  const SynthGenerator generator(bench_config(state));
  for (auto _ : state) {
    for (int s = 0; s < generator.config().samples; ++s) {
      generator.for_each_layer(s, [](int, const kvlab::core::FloatTensor& key, const kvlab::core::FloatTensor& value,
                                     const kvlab::core::FloatTensor& query) {
        benchmark::DoNotOptimize(key.data.data());
        benchmark::DoNotOptimize(value.data.data());
        benchmark::DoNotOptimize(query.data.data());
      });
    }
  }
}

void BM_WriteOnly(benchmark::State& state) {
  const SynthGenerator generator(bench_config(state));
  const SynthConfig& c = generator.config();
  // Non-zero constants: the writer rounds and checks every value, whatever it is.
  const std::vector<float> kv(static_cast<std::size_t>(c.tokens * c.width()), 0.5f);
  const std::vector<float> query(static_cast<std::size_t>(std::int64_t{c.query_window} * c.q_heads * c.head_dim), 0.25f);
  for (auto _ : state) {
    kvlab::core::DumpWriter writer(out_file(), generator.dump_info());
    for (int s = 0; s < c.samples; ++s) {
      writer.begin_sample(generator.sample_meta(s));
      for (int layer = 0; layer < c.layers; ++layer) writer.write_layer(layer, kv, kv, query);
      writer.end_sample();
    }
    writer.commit();
  }
  report_bytes(state);
}

BENCHMARK(BM_SynthDump)->Arg(4096)->Arg(16384)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK(BM_GenerateOnly)->Arg(4096)->Arg(16384)->Unit(benchmark::kSecond)->UseRealTime();
BENCHMARK(BM_WriteOnly)->Arg(4096)->Arg(16384)->Unit(benchmark::kSecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  kvlab::core::set_quiet(true);  // no progress bar between the benchmark's lines
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
