#include "daemon/transport/vhost_user/adaptive_poll.h"

#include <gtest/gtest.h>

namespace svfs::transport::vhost_user {
namespace {

using std::chrono::microseconds;

TEST(AdaptivePollTest, StartsWithoutPolling) {
  AdaptivePoll poll(microseconds(50));
  EXPECT_EQ(poll.window(), microseconds(0));
}

TEST(AdaptivePollTest, GrowsWhileRequestsComeSoonAfterSleeping) {
  AdaptivePoll poll(microseconds(50));
  poll.slept(microseconds(5));  // a longer window would have caught it
  EXPECT_EQ(poll.window(), microseconds(10));
  poll.slept(microseconds(5));
  EXPECT_EQ(poll.window(), microseconds(20));
  poll.slept(microseconds(5));
  EXPECT_EQ(poll.window(), microseconds(40));
  poll.slept(microseconds(5));
  EXPECT_EQ(poll.window(), microseconds(50));  // capped
}

TEST(AdaptivePollTest, ShrinksToNothingWhenIdle) {
  AdaptivePoll poll(microseconds(50));
  for (int i = 0; i < 4; ++i) poll.slept(microseconds(1));
  ASSERT_EQ(poll.window(), microseconds(50));
  poll.slept(std::chrono::milliseconds(10));
  EXPECT_EQ(poll.window(), microseconds(25));
  poll.slept(std::chrono::milliseconds(10));
  EXPECT_EQ(poll.window(), microseconds(12) + std::chrono::nanoseconds(500));
  poll.slept(std::chrono::milliseconds(10));
  EXPECT_EQ(poll.window(), microseconds(0));  // below the first window: off
}

TEST(AdaptivePollTest, ZeroMaximumNeverPolls) {
  AdaptivePoll poll(microseconds(0));
  poll.slept(microseconds(1));
  EXPECT_EQ(poll.window(), microseconds(0));
}

}  // namespace
}  // namespace svfs::transport::vhost_user
