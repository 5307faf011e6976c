// parallel_for: every index exactly once, an error rethrown after all indices ran, n = 0.
#include "core/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

namespace kvlab::core {
namespace {

TEST(ParallelFor, RunsEveryIndexOnce) {
  for (std::int64_t n : {0, 1, 7, 1000}) {
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
    parallel_for(n, [&](std::int64_t i) { ++hits[static_cast<std::size_t>(i)]; });
    for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(hits[static_cast<std::size_t>(i)], 1) << "n " << n << " index " << i;
  }
}

TEST(ParallelFor, RethrowsTheErrorAfterEveryIndexRan) {
  std::atomic<int> ran{0};
  EXPECT_THROW(parallel_for(50,
                            [&](std::int64_t i) {
                              ++ran;
                              if (i == 3) throw std::runtime_error("index 3");
                            }),
               std::runtime_error);
  EXPECT_EQ(ran, 50);
}

}  // namespace
}  // namespace kvlab::core
