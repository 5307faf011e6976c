#include "results/merge.h"

#include "core/error.h"

namespace kvlab::results {

MergeCount merge_into(Store& destination, const std::filesystem::path& source) {
  std::error_code ec;
  if (std::filesystem::equivalent(destination.path(), source, ec))
    fail("cannot merge {} into itself", source.string());
  const Store from(source, /*must_exist=*/true);  // migrates an older shard before reading it
  MergeCount count;
  for (const Run& run : from.runs()) {
    if (destination.find_uuid(run.uuid)) {
      ++count.skipped;
      continue;
    }
    RunWriter writer = destination.begin_run(static_cast<const RunInfo&>(run));
    for (auto& m : from.metrics(run.id)) writer.add_metric(std::move(m));
    for (auto& x : from.matrices(run.id)) writer.add_matrix(std::move(x));
    try {
      writer.commit();
    } catch (const Error& e) {
      if (destination.find_uuid(run.uuid)) {  // a concurrent merge stored it first
        ++count.skipped;
        continue;
      }
      fail("merging run {} ({}) of {}: {}", run.id, run.uuid, source.string(), e.what());
    }
    ++count.added;
  }
  return count;
}

}  // namespace kvlab::results
