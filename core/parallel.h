// One fan-out for the host's loops over independent items (a dump's token blocks, a group's
// layers): no thread pool, threads started per call, which is cheap beside the work they do.
#pragma once

#include <cstdint>
#include <functional>

namespace kvlab::core {

// Runs body(0..n−1) on up to one thread per core (the calling thread included), indices handed
// out in order as threads free up. Each index must write disjoint memory. Every index runs even
// if one throws; the first exception is rethrown once all have finished.
void parallel_for(std::int64_t n, const std::function<void(std::int64_t)>& body);

}  // namespace kvlab::core
