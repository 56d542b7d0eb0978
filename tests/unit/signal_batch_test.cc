#include "daemon/transport/vhost_user/signal_batch.h"

#include <gtest/gtest.h>

namespace svfs::transport::vhost_user {
namespace {

using std::chrono::microseconds;
constexpr unsigned kBusyRing = 100;  // more chains waiting than any rule looks at

// Chains used so far in a batch that began at `start`, one per microsecond, until used() asks
// for a signal; returns how many were used.
unsigned UntilSignal(SignalBatch& batch, SignalBatch::Clock::time_point start,
                     unsigned still_available) {
  for (unsigned n = 1; n <= 1000; ++n) {
    if (batch.used(start + microseconds(n - 1), still_available)) return n;
  }
  return 0;
}

TEST(SignalBatchTest, NothingPendingAtFirst) {
  SignalBatch batch;
  EXPECT_FALSE(batch.pending());
}

TEST(SignalBatchTest, SignalsAfterMaxChainsOfAFullRing) {
  SignalBatch batch;
  auto start = SignalBatch::Clock::now();
  EXPECT_EQ(UntilSignal(batch, start, kBusyRing), SignalBatch::kMaxChains);
  EXPECT_TRUE(batch.pending());
  batch.signalled();
  EXPECT_FALSE(batch.pending());
  // The next batch counts from zero again.
  EXPECT_EQ(UntilSignal(batch, start + microseconds(100), kBusyRing), SignalBatch::kMaxChains);
}

TEST(SignalBatchTest, SignalsOnceTheFirstReplyHasWaitedMaxDelay) {
  SignalBatch batch;
  auto start = SignalBatch::Clock::now();
  EXPECT_FALSE(batch.used(start, kBusyRing));
  EXPECT_FALSE(batch.used(start + microseconds(19), kBusyRing));
  EXPECT_TRUE(batch.used(start + microseconds(25), kBusyRing));  // slow requests: 3 chains
}

TEST(SignalBatchTest, SignalsEarlyOnceTheRingRunsLow) {
  SignalBatch batch;
  auto start = SignalBatch::Clock::now();
  // kMinEarly chains done with only kLowWater left: wake the driver while they are served.
  for (unsigned n = 1; n < SignalBatch::kMinEarly; ++n) {
    EXPECT_FALSE(batch.used(start, SignalBatch::kLowWater)) << n;
  }
  EXPECT_TRUE(batch.used(start, SignalBatch::kLowWater));
}

TEST(SignalBatchTest, ShortBatchWaitsForTheDrain) {
  SignalBatch batch;
  auto start = SignalBatch::Clock::now();
  // A driver keeping fewer than kMinEarly requests in flight: no early signal per chain.
  for (unsigned n = 1; n < SignalBatch::kMinEarly; ++n) {
    EXPECT_FALSE(batch.used(start, SignalBatch::kMinEarly - 1 - n)) << n;
  }
  EXPECT_TRUE(batch.pending());
}

TEST(SignalBatchTest, AFullRingKeepsBatching) {
  SignalBatch batch;
  auto start = SignalBatch::Clock::now();
  for (unsigned n = 1; n < SignalBatch::kMaxChains; ++n) {
    EXPECT_FALSE(batch.used(start, SignalBatch::kLowWater + 1)) << n;
  }
  EXPECT_TRUE(batch.used(start, SignalBatch::kLowWater + 1));
}

TEST(SignalBatchTest, OverdueOnceTheFirstReplyHasWaitedMaxDelay) {
  SignalBatch batch;
  auto start = SignalBatch::Clock::now();
  EXPECT_FALSE(batch.overdue(start + microseconds(100)));  // nothing pending
  EXPECT_FALSE(batch.used(start, kBusyRing));
  EXPECT_FALSE(batch.overdue(start + microseconds(19)));
  EXPECT_TRUE(batch.overdue(start + microseconds(20)));
  batch.signalled();
  EXPECT_FALSE(batch.overdue(start + microseconds(100)));
}

}  // namespace
}  // namespace svfs::transport::vhost_user
