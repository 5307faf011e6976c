// The tiny tokenizers' speed, once wall-clock bounds in harness/tokenizer/tiny_tokenizer_test.cpp
// (which now checks only what these runs compute). Each is timed at two sizes side by side, so
// the ratio shows how the cost grows:
//   BM_Encode/<family>/<bytes>: encode 100000 and 400000 bytes of the project corpus with a
//     512-token tokenizer (linear encoding: a ratio near 4);
//   BM_Train/<family>/<bytes>: write_tiny_tokenizer with 512 tokens on 12500 and 50000 bytes.
//   build/bench/bench_tokenizer [--benchmark_filter=…]
#include <benchmark/benchmark.h>

#include <filesystem>
#include <string>

#include "harness/tokenizer/test_util.h"
#include "harness/tokenizer/tiny_tokenizer.h"
#include "harness/tokenizer/tokenizer.h"

namespace {

namespace kh = kvlab::harness;

const char* const kFamilies[] = {"llama", "qwen2", "mistral"};

// One tokenizer per family, trained as TinyTokenizer's suite trains its own (512 tokens, seed 7).
std::filesystem::path tokenizer_dir(const std::string& family) {
  static const kh::testing::TempDir dir;
  const auto path = dir.path() / family;
  if (!std::filesystem::exists(path)) kh::write_tiny_tokenizer(path, family, kh::testing::project_corpus(), 512, 7);
  return path;
}

// Each encode runs on a freshly loaded tokenizer, as in a run that tokenizes a prompt once: the
// per-word cache starts empty and fills during the timed call.
void BM_Encode(benchmark::State& state, const std::string& family) {
  const auto dir = tokenizer_dir(family);
  const std::string text = kh::testing::project_corpus_prefix(static_cast<std::size_t>(state.range(0)));
  std::size_t tokens = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const auto tok = kh::load_tokenizer(dir);
    state.ResumeTiming();
    const auto ids = tok->encode(text, false);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(text.size()) * static_cast<std::int64_t>(state.iterations()));
  state.counters["tokens"] = static_cast<double>(tokens);
}

void BM_Train(benchmark::State& state, const std::string& family) {
  const std::string corpus = kh::testing::project_corpus_prefix(static_cast<std::size_t>(state.range(0)));
  const kh::testing::TempDir dir;
  for (auto _ : state) kh::write_tiny_tokenizer(dir.path() / family, family, corpus, 512, 3);
  state.SetBytesProcessed(static_cast<std::int64_t>(corpus.size()) * static_cast<std::int64_t>(state.iterations()));
}

}  // namespace

int main(int argc, char** argv) {
  for (const char* family : kFamilies) {
    benchmark::RegisterBenchmark((std::string("BM_Encode/") + family).c_str(), BM_Encode, std::string(family))
        ->Arg(100'000)->Arg(400'000)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  for (const char* family : kFamilies) {
    benchmark::RegisterBenchmark((std::string("BM_Train/") + family).c_str(), BM_Train, std::string(family))
        ->Arg(12'500)->Arg(50'000)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
