#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fuse.h>

#include "daemon/fs/cache_policy.h"

namespace svfs::fs {
namespace {

constexpr uint64_t kSecond = 1'000'000'000ULL;

// Without versions a session's replies follow its cache mode exactly.
TEST(ReplyPolicyTest, PlainSessionsFollowTheCacheMode) {
  ReplyPolicy none(CachePolicy(CacheMode::kNone), false);
  EXPECT_EQ(none.attr_timeout_ns(7), 0u);
  EXPECT_EQ(none.entry_timeout_ns(), 0u);
  EXPECT_FALSE(none.negative_entry_timeout_ns()) << "cache=none answers ENOENT";
  EXPECT_EQ(none.file_open_flags(false), static_cast<uint32_t>(FOPEN_DIRECT_IO));

  ReplyPolicy always(CachePolicy(CacheMode::kAlways), false);
  EXPECT_EQ(always.attr_timeout_ns(0), 86400 * kSecond);
  EXPECT_EQ(always.negative_entry_timeout_ns(), 86400 * kSecond);
  EXPECT_EQ(always.file_open_flags(false), static_cast<uint32_t>(FOPEN_KEEP_CACHE));

  // Shared mode with a guest that did not negotiate versions is exactly cache=none.
  ReplyPolicy shared(CachePolicy(CacheMode::kShared, 5 * kSecond), false);
  EXPECT_EQ(shared.attr_timeout_ns(7), 0u);
  EXPECT_EQ(shared.entry_timeout_ns(), 0u);
  EXPECT_FALSE(shared.negative_entry_timeout_ns());
  EXPECT_EQ(shared.file_open_flags(false), static_cast<uint32_t>(FOPEN_DIRECT_IO));
}

// With versions the guest's own checks replace the timeouts: attributes live with their version
// (unversioned ones not at all), dentries and negative entries with the parent's, pages and
// listings are kept or dropped by the guest comparing versions on open.
TEST(ReplyPolicyTest, VersionedSessionsLetVersionsDecide) {
  ReplyPolicy versioned(CachePolicy(CacheMode::kShared), true);
  EXPECT_TRUE(versioned.versioned());
  EXPECT_EQ(versioned.attr_timeout_ns(7), ReplyPolicy::kVersionedTimeoutNs);
  EXPECT_EQ(versioned.attr_timeout_ns(0), 0u) << "unversioned attributes must not be cached";
  EXPECT_EQ(versioned.entry_timeout_ns(), 0u);
  EXPECT_EQ(versioned.negative_entry_timeout_ns(), 0u) << "a negative entry, not ENOENT";
  EXPECT_EQ(versioned.file_open_flags(false), 0u);
  EXPECT_EQ(versioned.file_open_flags(true), static_cast<uint32_t>(FOPEN_DIRECT_IO));
  EXPECT_EQ(versioned.dir_open_flags(), 0u);
}

}  // namespace
}  // namespace svfs::fs
