// libFuzzer target: a LongBench JSONL file, split into lines as load_longbench_jsonl does and
// each line read with datasets::parse_longbench_line (from memory); each record then becomes a
// sample (its dataset field picks the prompt template).
#include <cstdint>
#include <string_view>

#include "datasets/longbench.h"
#include "fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest = kvlab_fuzz::bytes(data, size);
  std::int64_t number = 0;
  while (!rest.empty()) {
    const auto end = rest.find('\n');
    const std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    ++number;
    if (line.find_first_not_of(" \t\r\f\v") == std::string_view::npos) continue;
    kvlab_fuzz::run([&] {
      const auto record = kvlab::datasets::parse_longbench_line(line, "longbench.jsonl", number);
      (void)kvlab::datasets::longbench_sample(record, number - 1);
      (void)kvlab::datasets::longbench_e_bucket(record.length);
    });
  }
  return 0;
}
