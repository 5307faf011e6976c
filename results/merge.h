// Merging result databases (sweep shards, several machines) into one. Runs are matched by
// their uuid, so a run already in the destination is skipped: merging the same shards twice
// changes nothing, and shards that overlap do not duplicate runs.
#pragma once

#include <filesystem>

#include "results/store.h"

namespace kvlab::results {

struct MergeCount {
  std::int64_t added = 0, skipped = 0;  // runs copied, runs already present
};

// Copies every run of `source` that `destination` lacks, each run with all its rows in one
// transaction (an interrupted merge leaves whole runs only). Run ids are renumbered; uuids,
// provenance and timestamps are kept. Throws when `source` is the destination file itself.
MergeCount merge_into(Store& destination, const std::filesystem::path& source);

}  // namespace kvlab::results
