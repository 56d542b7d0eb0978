// Server with --translate-uid/--translate-gid: callers, chown targets and the groups a request
// carries reach the filesystem as host IDs; owners in replies go back as guest IDs.
#include "daemon/fuse/server.h"

#include <linux/fuse.h>
#include <spdlog/spdlog.h>

#include <gtest/gtest.h>

#include "tests/unit/fake_filesystem.h"
#include "tests/unit/request_builder.h"
#include "tests/unit/server_test_support.h"

namespace svfs::testing {
namespace {

// Guest 1000 is host 5000 (both ways); guest 0 is squashed onto host 5000; guest 666 forbidden;
// gids: guest 1001 is host 6001, guest 13 forbidden.
fs::IdTranslation Translation() {
  fs::IdTranslation ids;
  for (const char* rule : {"map:1000:5000:1", "squash-guest:0:5000:1", "forbid-guest:666:1"}) {
    EXPECT_TRUE(ids.uids.add(rule));
  }
  for (const char* rule : {"map:1001:6001:1", "forbid-guest:13:1"}) EXPECT_TRUE(ids.gids.add(rule));
  return ids;
}

class TranslatingServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spdlog::default_logger()->set_level(spdlog::level::off);
    ASSERT_EQ(send(RequestBuilder(FUSE_INIT, 0, 1).add(InitIn(7, 38, kKernelFlags))).error(), 0);
  }
  void TearDown() override { spdlog::default_logger()->set_level(spdlog::level::info); }

  Reply send(const RequestBuilder& builder) {
    CapturingChannel channel;
    server.handle(builder.build(), nullptr, channel);
    EXPECT_EQ(channel.replies.size(), 1u);
    return channel.replies.empty() ? Reply{std::vector<uint8_t>(sizeof(fuse_out_header), 0)}
                                   : channel.replies.front();
  }

  FakeFileSystem fake;
  fuse::Server server{fake, {.ids = Translation()}};
};

RequestBuilder As(uint32_t opcode, uint32_t uid, uint32_t gid) {
  RequestBuilder builder(opcode, kNode, 9);
  builder.set_caller(uid, gid);
  return builder;
}

TEST_F(TranslatingServerTest, CallersReachTheFilesystemAsHostIds) {
  send(As(FUSE_LOOKUP, 1000, 1001).name("x"));
  EXPECT_EQ(fake.last().context.uid, 5000u);
  EXPECT_EQ(fake.last().context.gid, 6001u);
  EXPECT_FALSE(fake.last().context.forbidden_caller);
  send(As(FUSE_LOOKUP, 0, 0).name("x"));
  EXPECT_EQ(fake.last().context.uid, 5000u);  // squashed
  EXPECT_EQ(fake.last().context.gid, 0u);     // no gid rule covers it
  send(As(FUSE_LOOKUP, 42, 42).name("x"));
  EXPECT_EQ(fake.last().context.uid, 42u);
}

TEST_F(TranslatingServerTest, ForbiddenCallersAreMarkedForTheCredentialsSwitch) {
  send(As(FUSE_LOOKUP, 666, 1001).name("x"));
  EXPECT_TRUE(fake.last().context.forbidden_caller);
  send(As(FUSE_LOOKUP, 1000, 13).name("x"));
  EXPECT_TRUE(fake.last().context.forbidden_caller);
}

TEST_F(TranslatingServerTest, ChownTargetsAreTranslatedAndForbiddenOnesRefused) {
  fuse_setattr_in in{};
  in.valid = FATTR_UID | FATTR_GID;
  in.uid = 1000;
  in.gid = 1001;
  ASSERT_EQ(send(As(FUSE_SETATTR, 1000, 1001).add(in)).error(), 0);
  EXPECT_EQ(fake.last().setattr.uid, 5000u);
  EXPECT_EQ(fake.last().setattr.gid, 6001u);

  const size_t calls = fake.calls.size();
  in.uid = 666;
  EXPECT_EQ(send(As(FUSE_SETATTR, 1000, 1001).add(in)).error(), -EPERM);
  in.uid = 1000;
  in.gid = 13;
  EXPECT_EQ(send(As(FUSE_SETATTR, 1000, 1001).add(in)).error(), -EPERM);
  EXPECT_EQ(fake.calls.size(), calls);
  // A gid-only chgrp leaves the (unsent) uid alone: 666 in the uid field does not count.
  in.valid = FATTR_GID;
  in.uid = 666;
  in.gid = 1001;
  EXPECT_EQ(send(As(FUSE_SETATTR, 1000, 1001).add(in)).error(), 0);
}

TEST_F(TranslatingServerTest, GroupsACreationCarriesAreHostGroupsWithoutForbiddenOnes) {
  // One FUSE_EXT_GROUPS record: header, count 3, guest groups 1001 (host 6001), 13 (forbidden), 7.
  const uint32_t record[6] = {24, protocol::kExtGroups, 3, 1001, 13, 7};
  RequestBuilder mkdir = As(FUSE_MKDIR, 1000, 1001);
  mkdir.add(fuse_mkdir_in{.mode = 0755}).name("d").add(record);
  std::vector<uint8_t> bytes = mkdir.build();
  const uint16_t units = sizeof(record) / 8;
  std::memcpy(bytes.data() + offsetof(fuse_in_header, total_extlen), &units, sizeof(units));
  CapturingChannel channel;
  server.handle(bytes, nullptr, channel);
  ASSERT_EQ(fake.last().op, "mkdir");
  EXPECT_EQ(fake.last().context.request_groups, (std::vector<uint32_t>{6001, 7}));
}

TEST_F(TranslatingServerTest, OwnersInRepliesAreGuestIds) {
  fake.attr.st.st_uid = 5000;
  fake.attr.st.st_gid = 6001;
  fake.entry.attr.st.st_uid = 5000;
  fake.entry.attr.st.st_gid = 77;
  Reply attr = send(As(FUSE_GETATTR, 1000, 1001).add(fuse_getattr_in{}));
  ASSERT_EQ(attr.error(), 0);
  EXPECT_EQ(attr.as<fuse_attr_out>().attr.uid, 1000u);
  EXPECT_EQ(attr.as<fuse_attr_out>().attr.gid, 1001u);
  Reply entry = send(As(FUSE_LOOKUP, 1000, 1001).name("x"));
  ASSERT_EQ(entry.error(), 0);
  EXPECT_EQ(entry.as<fuse_entry_out>().attr.uid, 1000u);
  EXPECT_EQ(entry.as<fuse_entry_out>().attr.gid, 77u);
}

}  // namespace
}  // namespace svfs::testing
