// libFuzzer target: compressor spec strings (compressors/spec.h's grammar) through parse_spec
// and expand_sweep with the real method registry, from memory. A spec that parses must print
// canonically and read back to the same spec: parse(print(parse(s))) == parse(s).
#include <cstdint>
#include <cstdio>
#include <string>

#include "compressors/spec.h"
#include "fuzz/fuzz_common.h"

namespace {

void check_round_trip(const kvlab::compressors::ChainSpec& spec) {
  const std::string printed = spec.to_string();
  const std::string again = kvlab::compressors::parse_spec(printed).to_string();
  if (again != printed) {
    std::fprintf(stderr, "kvlab fuzz: spec does not read back: '%s' -> '%s'\n", printed.c_str(), again.c_str());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto text = kvlab_fuzz::bytes(data, size);
  kvlab_fuzz::run([&] { check_round_trip(kvlab::compressors::parse_spec(text)); });
  kvlab_fuzz::run([&] {
    const auto grid = kvlab::compressors::expand_sweep(text);
    // The first and last grid points (a sweep may hold up to 100000).
    if (!grid.empty()) {
      check_round_trip(grid.front());
      check_round_trip(grid.back());
    }
  });
  return 0;
}
