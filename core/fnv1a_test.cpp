#include "core/fnv1a.h"

#include <gtest/gtest.h>

namespace kvlab::core {
namespace {

// Test vectors published with the reference implementation (test_fnv.c, FNV-1a 64).
TEST(Fnv1a64, MatchesTheReferenceVectors) {
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171f73967e8ULL);
}

TEST(Fnv1a64, UpdatingPiecesEqualsHashingTheWhole) {
  EXPECT_EQ(fnv1a64_update(fnv1a64("foo"), "bar"), fnv1a64("foobar"));
}

// Computable at compile time, so ids can be constants.
static_assert(fnv1a64("a") == 0xaf63dc4c8601ec8cULL);

}  // namespace
}  // namespace kvlab::core
