// The region totals against the clock: scopes of known length, nesting, threads, and nothing
// recorded (nor reported) when profiling is off.
#include "core/profile.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace kvlab::core {
namespace {

using namespace std::chrono_literals;

class ProfileTest : public ::testing::Test {
 protected:
  void SetUp() override { reset_profile(); }
  void TearDown() override {
    set_profiling(false);
    reset_profile();
  }
};

TEST_F(ProfileTest, CountsCallsAndAddsTheirWallTime) {
  set_profiling(true);
  for (int i = 0; i < 3; ++i) {
    const ProfileScope outer("outer");
    const ProfileScope inner("inner");
    std::this_thread::sleep_for(20ms);
  }
  const auto entries = profile_entries();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].region, "inner");  // sorted by name
  EXPECT_EQ(entries[1].region, "outer");
  for (const auto& e : entries) {
    EXPECT_EQ(e.calls, 3);
    EXPECT_GE(e.seconds, 0.060);  // three sleeps of 20 ms; sleep_for never wakes early
    EXPECT_LT(e.seconds, 2.0);
  }
  EXPECT_GE(entries[1].seconds, entries[0].seconds);  // inclusive: the outer scope holds the inner
  const std::string report = profile_report();
  EXPECT_NE(report.find("outer"), std::string::npos);
  EXPECT_NE(report.find("inner"), std::string::npos);
}

TEST_F(ProfileTest, ThreadsAddTheirTimes) {
  set_profiling(true);
  std::thread a([] { const ProfileScope s("work"); std::this_thread::sleep_for(30ms); });
  std::thread b([] { const ProfileScope s("work"); std::this_thread::sleep_for(30ms); });
  a.join();
  b.join();
  const auto entries = profile_entries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].calls, 2);
  EXPECT_GE(entries[0].seconds, 0.060);
}

TEST_F(ProfileTest, OffRecordsNothing) {
  set_profiling(false);
  { const ProfileScope s("ignored"); }
  EXPECT_TRUE(profile_entries().empty());
  EXPECT_EQ(profile_report(), "");
}

}  // namespace
}  // namespace kvlab::core
