// libFuzzer target: sweep plan YAML through results::parse_sweep (from memory), then the
// shards and the sbatch script `kvlab sweep` derives from a plan.
#include <cstdint>
#include <string>

#include "fuzz/fuzz_common.h"
#include "results/sweep_plan.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(kvlab_fuzz::bytes(data, size));
  kvlab_fuzz::run([&] {
    const auto plan = kvlab::results::parse_sweep(text, "sweep.yaml", "/base");
    (void)kvlab::results::shard_cells(plan, 1, 3);
    (void)kvlab::results::slurm_script(plan, "sweep.yaml", 2, "kvlab", {{"time", "1:00:00"}});
  });
  return 0;
}
