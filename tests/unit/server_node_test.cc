// Server: decoding of the node and namespace opcodes (LOOKUP, FORGET, GETATTR, SETATTR,
// READLINK, SYMLINK, MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, ACCESS) and their replies.
#include "daemon/fuse/server.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/unit/server_test_support.h"

namespace svfs::testing {
namespace {

TEST_F(OpTest, ContextComesFromHeader) {
  send(RequestBuilder(FUSE_LOOKUP, kNode, 1234).name("x"));
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.context.uid, 1000u);
  EXPECT_EQ(c.context.gid, 1001u);
  EXPECT_EQ(c.context.pid, 4242u);
  EXPECT_EQ(c.context.unique, 1234u);
}

TEST_F(OpTest, Lookup) {
  Reply r = send(RequestBuilder(FUSE_LOOKUP, kNode, 9).name("hello.txt"));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.header().unique, 9u);
  ASSERT_EQ(fake.calls.size(), 1u);
  EXPECT_EQ(fake.last().op, "lookup");
  EXPECT_EQ(fake.last().node, kNode);
  EXPECT_EQ(fake.last().name, "hello.txt");
  ASSERT_EQ(r.payload_size(), sizeof(fuse_entry_out));
  EXPECT_EQ(r.as<fuse_entry_out>().nodeid, 42u);
  EXPECT_EQ(r.as<fuse_entry_out>().generation, 7u);
}

TEST_F(OpTest, LookupAcceptsLongestNameAndDotPrefixed) {
  std::string longest(255, 'n');
  EXPECT_EQ(send(RequestBuilder(FUSE_LOOKUP, kNode).name(longest)).error(), 0);
  EXPECT_EQ(fake.last().name, longest);
  EXPECT_EQ(send(RequestBuilder(FUSE_LOOKUP, kNode).name("...")).error(), 0);
  EXPECT_EQ(send(RequestBuilder(FUSE_LOOKUP, kNode).name(".hidden")).error(), 0);
  EXPECT_EQ(fake.last().name, ".hidden");
}

TEST_F(OpTest, Forget) {
  send_expect_no_reply(RequestBuilder(FUSE_FORGET, kNode).add(fuse_forget_in{.nlookup = 3}));
  ASSERT_EQ(fake.forgets.size(), 1u);
  EXPECT_EQ(fake.forgets[0], std::make_pair(kNode, uint64_t{3}));
}

TEST_F(OpTest, BatchForget) {
  RequestBuilder b(FUSE_BATCH_FORGET, 0);
  b.add(fuse_batch_forget_in{.count = 3});
  b.add(fuse_forget_one{.nodeid = 10, .nlookup = 1});
  b.add(fuse_forget_one{.nodeid = 11, .nlookup = 2});
  b.add(fuse_forget_one{.nodeid = 12, .nlookup = 300});
  send_expect_no_reply(b);
  std::vector<std::pair<fs::NodeId, uint64_t>> want = {{10, 1}, {11, 2}, {12, 300}};
  EXPECT_EQ(fake.forgets, want);
}

TEST_F(OpTest, GetattrWithAndWithoutFh) {
  Reply r = send(RequestBuilder(FUSE_GETATTR, kNode)
                     .add(fuse_getattr_in{.getattr_flags = FUSE_GETATTR_FH, .fh = 77}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "getattr");
  EXPECT_EQ(fake.last().node, kNode);
  EXPECT_EQ(fake.last().opt_handle, std::optional<fs::HandleId>(77));
  ASSERT_EQ(r.payload_size(), sizeof(fuse_attr_out));
  EXPECT_EQ(r.as<fuse_attr_out>().attr.ino, 42u);

  send(RequestBuilder(FUSE_GETATTR, kNode).add(fuse_getattr_in{.getattr_flags = 0, .fh = 77}));
  EXPECT_EQ(fake.last().opt_handle, std::nullopt);
}

TEST_F(OpTest, SetattrAllFields) {
  fuse_setattr_in in{};
  in.valid = FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_SIZE | FATTR_ATIME | FATTR_MTIME |
             FATTR_FH;
  in.fh = 31;
  in.size = 1 << 20;
  in.atime = 111;
  in.atimensec = 222;
  in.mtime = 333;
  in.mtimensec = 444;
  in.mode = S_IFREG | 0600;
  in.uid = 55;
  in.gid = 66;
  Reply r = send(RequestBuilder(FUSE_SETATTR, kNode).add(in));
  ASSERT_EQ(r.error(), 0);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_attr_out));
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "setattr");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.setattr.valid, in.valid);
  EXPECT_EQ(c.setattr.handle, std::optional<fs::HandleId>(31));
  EXPECT_EQ(c.setattr.size, 1u << 20);
  EXPECT_EQ(c.setattr.mode, static_cast<uint32_t>(S_IFREG | 0600));
  EXPECT_EQ(c.setattr.uid, 55u);
  EXPECT_EQ(c.setattr.gid, 66u);
  EXPECT_EQ(c.setattr.atime.tv_sec, 111);
  EXPECT_EQ(c.setattr.atime.tv_nsec, 222);
  EXPECT_EQ(c.setattr.mtime.tv_sec, 333);
  EXPECT_EQ(c.setattr.mtime.tv_nsec, 444);
}

TEST_F(OpTest, SetattrWithoutFhHasNoHandle) {
  fuse_setattr_in in{};
  in.valid = FATTR_SIZE;
  in.fh = 31;
  send(RequestBuilder(FUSE_SETATTR, kNode).add(in));
  EXPECT_EQ(fake.last().setattr.handle, std::nullopt);
}

TEST_F(OpTest, SetattrTimeNowBecomesUtimeNow) {
  fuse_setattr_in in{};
  in.valid = FATTR_ATIME | FATTR_ATIME_NOW | FATTR_MTIME | FATTR_MTIME_NOW;
  in.atime = 5;
  in.mtime = 6;
  send(RequestBuilder(FUSE_SETATTR, kNode).add(in));
  EXPECT_EQ(fake.last().setattr.atime.tv_nsec, UTIME_NOW);
  EXPECT_EQ(fake.last().setattr.mtime.tv_nsec, UTIME_NOW);

  in.valid = FATTR_ATIME | FATTR_ATIME_NOW | FATTR_MTIME;
  in.mtimensec = 9;
  send(RequestBuilder(FUSE_SETATTR, kNode).add(in));
  EXPECT_EQ(fake.last().setattr.atime.tv_nsec, UTIME_NOW);
  EXPECT_EQ(fake.last().setattr.mtime.tv_nsec, 9);
}

TEST_F(OpTest, SetattrNanosecondsOutOfRangeRefused) {
  fuse_setattr_in in{};
  in.valid = FATTR_ATIME;
  in.atimensec = 1'000'000'000;
  expect_refused(RequestBuilder(FUSE_SETATTR, kNode).add(in));
  in.valid = FATTR_MTIME;
  in.atimensec = 0;
  in.mtimensec = 0xffffffff;
  expect_refused(RequestBuilder(FUSE_SETATTR, kNode).add(in));
}

TEST_F(OpTest, ReadlinkReplyIsTargetWithoutNul) {
  fake.readlink_target = "../some/where";
  Reply r = send(RequestBuilder(FUSE_READLINK, kNode));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "readlink");
  EXPECT_EQ(fake.last().node, kNode);
  EXPECT_EQ(r.payload_string(), "../some/where");
}

TEST_F(OpTest, SymlinkNameThenTarget) {
  Reply r = send(RequestBuilder(FUSE_SYMLINK, kNode).name("link").name("/abs/target dir/x"));
  ASSERT_EQ(r.error(), 0);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_entry_out));
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "symlink");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.name, "link");
  EXPECT_EQ(c.name2, "/abs/target dir/x");
}

TEST_F(OpTest, SymlinkTargetMayBeLong) {
  std::string target(4095, 'a');
  EXPECT_EQ(send(RequestBuilder(FUSE_SYMLINK, kNode).name("l").name(target)).error(), 0);
  EXPECT_EQ(fake.last().name2, target);
  // symlink(2) on the host answers a target over PATH_MAX - 1 bytes so.
  expect_refused(RequestBuilder(FUSE_SYMLINK, kNode).name("l").name(std::string(4096, 'a')),
                 ENAMETOOLONG);
  expect_refused(RequestBuilder(FUSE_SYMLINK, kNode).name("l").name(""));
  expect_refused(RequestBuilder(FUSE_SYMLINK, kNode).name("l").raw("no-nul"));
}

TEST_F(OpTest, Mknod) {
  Reply r = send(RequestBuilder(FUSE_MKNOD, kNode)
                     .add(fuse_mknod_in{.mode = S_IFIFO | 0640, .rdev = 0x0801, .umask = 022})
                     .name("fifo"));
  ASSERT_EQ(r.error(), 0);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_entry_out));
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "mknod");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.name, "fifo");
  EXPECT_EQ(c.mode, static_cast<uint32_t>(S_IFIFO | 0640));
  EXPECT_EQ(c.rdev, 0x0801u);
  EXPECT_EQ(c.umask, 022u);
}

TEST_F(OpTest, Mkdir) {
  Reply r = send(RequestBuilder(FUSE_MKDIR, kNode)
                     .add(fuse_mkdir_in{.mode = 0755, .umask = 027})
                     .name("dir"));
  ASSERT_EQ(r.error(), 0);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_entry_out));
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "mkdir");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.name, "dir");
  EXPECT_EQ(c.mode, 0755u);
  EXPECT_EQ(c.umask, 027u);
}

TEST_F(OpTest, UnlinkAndRmdir) {
  Reply r = send(RequestBuilder(FUSE_UNLINK, kNode).name("gone"));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_size(), 0u);
  EXPECT_EQ(fake.last().op, "unlink");
  EXPECT_EQ(fake.last().node, kNode);
  EXPECT_EQ(fake.last().name, "gone");

  r = send(RequestBuilder(FUSE_RMDIR, kNode + 1).name("dir"));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_size(), 0u);
  EXPECT_EQ(fake.last().op, "rmdir");
  EXPECT_EQ(fake.last().node, kNode + 1);
  EXPECT_EQ(fake.last().name, "dir");
}

TEST_F(OpTest, Rename) {
  Reply r = send(RequestBuilder(FUSE_RENAME, kNode)
                     .add(fuse_rename_in{.newdir = 77})
                     .name("old")
                     .name("new"));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_size(), 0u);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "rename");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.name, "old");
  EXPECT_EQ(c.node2, 77u);
  EXPECT_EQ(c.name2, "new");
  EXPECT_EQ(c.flags, 0u);
}

TEST_F(OpTest, Rename2Flags) {
  Reply r = send(RequestBuilder(FUSE_RENAME2, kNode)
                     .add(fuse_rename2_in{.newdir = 78, .flags = RENAME_EXCHANGE})
                     .name("a")
                     .name("b"));
  EXPECT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "rename");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.node2, 78u);
  EXPECT_EQ(c.name, "a");
  EXPECT_EQ(c.name2, "b");
  EXPECT_EQ(c.flags, static_cast<uint32_t>(RENAME_EXCHANGE));
}

TEST_F(OpTest, Link) {
  Reply r = send(RequestBuilder(FUSE_LINK, /*new parent*/ kNode)
                     .add(fuse_link_in{.oldnodeid = 123})
                     .name("hardlink"));
  ASSERT_EQ(r.error(), 0);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_entry_out));
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "link");
  EXPECT_EQ(c.node, 123u);
  EXPECT_EQ(c.node2, kNode);
  EXPECT_EQ(c.name, "hardlink");
}

TEST_F(OpTest, Access) {
  Reply r = send(RequestBuilder(FUSE_ACCESS, kNode).add(fuse_access_in{.mask = R_OK | X_OK}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "access");
  EXPECT_EQ(fake.last().mask, static_cast<uint32_t>(R_OK | X_OK));
}

}  // namespace
}  // namespace svfs::testing
