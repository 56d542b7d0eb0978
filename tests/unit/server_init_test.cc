// Server: INIT negotiation (flags, protocol minors, struct sizes), requests before INIT and
// DESTROY.
#include "daemon/fuse/server.h"

#include <linux/fuse.h>

#include <gtest/gtest.h>

#include "tests/unit/server_test_support.h"

namespace svfs::testing {
namespace {

TEST_F(ServerTest, Init738WithFlags2NegotiatesAndMasksFlags) {
  fake.init_result = FUSE_ASYNC_READ | FUSE_DO_READDIRPLUS | FUSE_POSIX_LOCKS |
                     FUSE_WRITEBACK_CACHE /* not offered */ | FUSE_HAS_INODE_DAX |
                     FUSE_HAS_EXPIRE_ONLY /* not offered */;
  uint32_t flags2 = static_cast<uint32_t>(FUSE_HAS_INODE_DAX >> 32) |
                    static_cast<uint32_t>(FUSE_SECURITY_CTX >> 32);
  Reply r = send(RequestBuilder(FUSE_INIT, 0, 77).add(InitIn(7, 38, kKernelFlags, flags2)));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.header().unique, 77u);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_init_out));
  auto out = r.as<fuse_init_out>();
  EXPECT_EQ(out.major, 7u);
  EXPECT_EQ(out.minor, 38u);
  EXPECT_EQ(out.max_write, kMiB);
  EXPECT_EQ(out.max_pages, 256u);
  EXPECT_EQ(out.max_readahead, 128u * 1024);

  uint64_t offered = kKernelFlags | (static_cast<uint64_t>(flags2) << 32);
  EXPECT_EQ(fake.offered_flags, offered);
  uint64_t agreed = out.flags | (static_cast<uint64_t>(out.flags2) << 32);
  EXPECT_EQ(agreed & ~offered, 0u) << "reply enables flags the kernel did not offer";
  EXPECT_EQ(agreed & fake.init_result & offered, fake.init_result & offered);
  EXPECT_TRUE(agreed & FUSE_HAS_INODE_DAX);
  EXPECT_FALSE(agreed & FUSE_WRITEBACK_CACHE);
  EXPECT_FALSE(agreed & FUSE_HAS_EXPIRE_ONLY);
  EXPECT_TRUE(agreed & FUSE_MAX_PAGES);

  EXPECT_TRUE(server.initialized());
  EXPECT_EQ(server.negotiated_minor(), 38u);
  ASSERT_TRUE(fake.negotiated.has_value());
  EXPECT_EQ(fake.negotiated->minor, 38u);
  EXPECT_EQ(fake.negotiated->flags, agreed);
  EXPECT_EQ(fake.negotiated->max_write, kMiB);
}

TEST_F(ServerTest, InitIgnoresFlags2WithoutInitExt) {
  fake.init_result = FUSE_ASYNC_READ | FUSE_HAS_INODE_DAX;
  uint32_t flags2 = static_cast<uint32_t>(FUSE_HAS_INODE_DAX >> 32);
  Reply r = send(RequestBuilder(FUSE_INIT, 0)
                     .add(InitIn(7, 38, kKernelFlags & ~FUSE_INIT_EXT, flags2)));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.offered_flags >> 32, 0u);
  EXPECT_EQ(r.as<fuse_init_out>().flags2, 0u);
  EXPECT_FALSE(r.as<fuse_init_out>().flags & FUSE_INIT_EXT);
}

TEST_F(ServerTest, Init731ShortStructAccepted) {
  Reply r = send(RequestBuilder(FUSE_INIT, 0)
                     .add_prefix(InitIn(7, 31, FUSE_ASYNC_READ | FUSE_MAX_PAGES), 16));
  ASSERT_EQ(r.error(), 0);
  auto out = r.as<fuse_init_out>();
  EXPECT_EQ(out.major, 7u);
  EXPECT_EQ(out.minor, 31u);
  EXPECT_EQ(out.max_pages, 256u);
  EXPECT_EQ(out.flags & ~static_cast<uint32_t>(FUSE_ASYNC_READ | FUSE_MAX_PAGES), 0u);
  EXPECT_EQ(server.negotiated_minor(), 31u);
}

TEST_F(ServerTest, InitWithoutMaxPagesAdvertisesNoMaxPages) {
  Reply r = send(RequestBuilder(FUSE_INIT, 0).add(InitIn(7, 38, FUSE_ASYNC_READ)));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.as<fuse_init_out>().max_pages, 0u);
  EXPECT_EQ(r.as<fuse_init_out>().flags, static_cast<uint32_t>(FUSE_ASYNC_READ));
}

TEST_F(ServerTest, InitNewerMinorAnsweredWithOurs) {
  Reply r = send(RequestBuilder(FUSE_INIT, 0).add(InitIn(7, 41, kKernelFlags)));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.as<fuse_init_out>().minor, 38u);
}

TEST_F(ServerTest, Init726RefusedWithEproto) {
  Reply r = send(RequestBuilder(FUSE_INIT, 0).add_prefix(InitIn(7, 26, FUSE_ASYNC_READ), 16));
  EXPECT_EQ(r.error(), -EPROTO);
  EXPECT_FALSE(server.initialized());
  EXPECT_FALSE(fake.negotiated.has_value());
  // The session stays uninitialized.
  EXPECT_EQ(send(RequestBuilder(FUSE_LOOKUP, 1).name("x")).error(), -EIO);
}

TEST_F(ServerTest, InitMajor6RefusedWithEproto) {
  EXPECT_EQ(send(RequestBuilder(FUSE_INIT, 0).add(InitIn(6, 38, kKernelFlags))).error(), -EPROTO);
  EXPECT_FALSE(server.initialized());
}

TEST_F(ServerTest, InitTruncatedIsEinval) {
  expect_refused(RequestBuilder(FUSE_INIT, 0).add_prefix(InitIn(7, 38, 0), 15));
  EXPECT_FALSE(server.initialized());
}

TEST_F(ServerTest, RequestsBeforeInitGetEio) {
  expect_refused(RequestBuilder(FUSE_LOOKUP, 1).name("x"), EIO);
  expect_refused(RequestBuilder(FUSE_GETATTR, 1).add(fuse_getattr_in{}), EIO);
  expect_refused(RequestBuilder(FUSE_STATFS, 1), EIO);
  EXPECT_TRUE(fake.calls.empty());
}

TEST_F(ServerTest, SecondInitGetsEio) {
  init();
  fake.negotiated.reset();
  EXPECT_EQ(send(RequestBuilder(FUSE_INIT, 0).add(InitIn(7, 31, 0))).error(), -EIO);
  EXPECT_FALSE(fake.negotiated.has_value());
  EXPECT_EQ(server.negotiated_minor(), 38u);
  EXPECT_TRUE(server.initialized());
}

TEST_F(ServerTest, DestroyEndsSessionAndAllowsNewInit) {
  init();
  Reply r = send(RequestBuilder(FUSE_DESTROY, 0));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_size(), 0u);
  EXPECT_EQ(fake.destroyed, 1);
  EXPECT_FALSE(server.initialized());
  expect_refused(RequestBuilder(FUSE_LOOKUP, 1).name("x"), EIO);
  init(31);
  EXPECT_EQ(server.negotiated_minor(), 31u);
}

}  // namespace
}  // namespace svfs::testing
