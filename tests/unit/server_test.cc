// svfs::fuse::Server fed raw request bytes, as the kernel lays them out, against a recording fake
// filesystem: INIT negotiation, the decoding of every implemented opcode, reply encoding,
// malformed input, cache-mode reply fields and the per-opcode counters.
#include "daemon/fuse/server.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <algorithm>
#include <chrono>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "daemon/fs/cache_policy.h"
#include "protocol/fuse_opcodes.h"
#include "protocol/shared_versions.h"
#include "tests/unit/fake_filesystem.h"
#include "tests/unit/request_builder.h"

namespace svfs::testing {
namespace {

constexpr uint64_t kNode = 5;
constexpr uint32_t kMiB = 1024 * 1024;

fuse_init_in InitIn(uint32_t major, uint32_t minor, uint32_t flags, uint32_t flags2 = 0) {
  fuse_init_in in{};
  in.major = major;
  in.minor = minor;
  in.max_readahead = 128 * 1024;
  in.flags = flags;
  in.flags2 = flags2;
  return in;
}

constexpr uint32_t kKernelFlags = FUSE_ASYNC_READ | FUSE_POSIX_LOCKS | FUSE_BIG_WRITES |
                                  FUSE_DO_READDIRPLUS | FUSE_READDIRPLUS_AUTO | FUSE_MAX_PAGES |
                                  FUSE_PARALLEL_DIROPS | FUSE_AUTO_INVAL_DATA | FUSE_INIT_EXT;

class ServerTest : public ::testing::Test {
 protected:
  // The server logs every INIT and malformed request; keep test output readable.
  void SetUp() override {
    saved_level_ = spdlog::default_logger()->level();
    spdlog::default_logger()->set_level(spdlog::level::off);
  }
  void TearDown() override { spdlog::default_logger()->set_level(saved_level_); }

  // Sends one request; returns every reply it produced.
  std::vector<Reply> send_all(const std::vector<uint8_t>& request,
                              fs::WriteSource* external = nullptr) {
    CapturingChannel channel;
    channel.capacity = reply_capacity;
    server.handle(request, external, channel);
    for (const Reply& r : channel.replies) {
      // Every reply is self-consistent: header length counts every byte sent.
      EXPECT_GE(r.bytes.size(), sizeof(fuse_out_header));
      EXPECT_EQ(r.header().len, r.bytes.size());
      if (r.error() != 0) {
        EXPECT_EQ(r.bytes.size(), sizeof(fuse_out_header));
      }
    }
    last_sink_requests = channel.sink_requests;
    return channel.replies;
  }
  // Sends one request that must produce exactly one reply.
  Reply send(const std::vector<uint8_t>& request, fs::WriteSource* external = nullptr) {
    auto replies = send_all(request, external);
    EXPECT_EQ(replies.size(), 1u);
    if (replies.empty()) return Reply{std::vector<uint8_t>(sizeof(fuse_out_header), 0)};
    return replies.front();
  }
  Reply send(const RequestBuilder& builder) { return send(builder.build()); }
  void send_expect_no_reply(const RequestBuilder& builder) {
    EXPECT_TRUE(send_all(builder.build()).empty());
  }
  // Sends a request that must be refused with `error` before reaching the filesystem.
  void expect_refused(const std::vector<uint8_t>& request, int error = EINVAL) {
    size_t calls_before = fake.calls.size();
    Reply r = send(request);
    EXPECT_EQ(r.error(), -error);
    EXPECT_EQ(fake.calls.size(), calls_before) << "filesystem called with " << fake.last().op;
  }
  void expect_refused(const RequestBuilder& builder, int error = EINVAL) {
    expect_refused(builder.build(), error);
  }

  void init(uint32_t minor = 38) {
    Reply r = send(RequestBuilder(FUSE_INIT, 0, 1).add(InitIn(7, minor, kKernelFlags)));
    ASSERT_EQ(r.error(), 0);
    ASSERT_TRUE(server.initialized());
  }

  FakeFileSystem fake;
  fuse::Server server{fake};
  size_t last_sink_requests = 0;
  // Replies longer than this do not reach the client (as when its buffer is too small).
  size_t reply_capacity = SIZE_MAX;

 private:
  spdlog::level::level_enum saved_level_ = spdlog::level::info;
};

// An initialized session.
class OpTest : public ServerTest {
 protected:
  void SetUp() override {
    ServerTest::SetUp();
    init();
  }
};

// ---------------------------------------------------------------------------------------------
// INIT

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

// ---------------------------------------------------------------------------------------------
// Decoding of each opcode

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
  expect_refused(RequestBuilder(FUSE_SYMLINK, kNode).name("l").name(std::string(4096, 'a')));
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

TEST_F(OpTest, Open) {
  fake.opened = fs::Opened{.handle = 555, .open_flags = FOPEN_KEEP_CACHE};
  Reply r = send(RequestBuilder(FUSE_OPEN, kNode)
                     .add(fuse_open_in{.flags = O_RDWR | O_APPEND, .open_flags = 0}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "open");
  EXPECT_EQ(fake.last().node, kNode);
  EXPECT_EQ(fake.last().flags, static_cast<uint32_t>(O_RDWR | O_APPEND));
  ASSERT_EQ(r.payload_size(), sizeof(fuse_open_out));
  EXPECT_EQ(r.as<fuse_open_out>().fh, 555u);
  EXPECT_EQ(r.as<fuse_open_out>().open_flags, static_cast<uint32_t>(FOPEN_KEEP_CACHE));
}

TEST_F(OpTest, CreateReplyIsEntryThenOpen) {
  fake.opened = fs::Opened{.handle = 556, .open_flags = FOPEN_DIRECT_IO};
  Reply r = send(RequestBuilder(FUSE_CREATE, kNode)
                     .add(fuse_create_in{.flags = O_WRONLY | O_CREAT | O_EXCL,
                                         .mode = S_IFREG | 0640,
                                         .umask = 022})
                     .name("new-file"));
  ASSERT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "create");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.name, "new-file");
  EXPECT_EQ(c.flags, static_cast<uint32_t>(O_WRONLY | O_CREAT | O_EXCL));
  EXPECT_EQ(c.mode, static_cast<uint32_t>(S_IFREG | 0640));
  EXPECT_EQ(c.umask, 022u);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_entry_out) + sizeof(fuse_open_out));
  EXPECT_EQ(r.as<fuse_entry_out>().nodeid, 42u);
  EXPECT_EQ(r.as<fuse_entry_out>().attr.ino, 42u);
  auto open = r.as<fuse_open_out>(sizeof(fuse_entry_out));
  EXPECT_EQ(open.fh, 556u);
  EXPECT_EQ(open.open_flags, static_cast<uint32_t>(FOPEN_DIRECT_IO));
}

TEST_F(OpTest, TmpfileAcceptsSlashName) {
  Reply r = send(RequestBuilder(FUSE_TMPFILE, kNode)
                     .add(fuse_create_in{.flags = O_RDWR, .mode = S_IFREG | 0600, .umask = 077})
                     .name("/"));
  ASSERT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "tmpfile");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.flags, static_cast<uint32_t>(O_RDWR));
  EXPECT_EQ(c.mode, static_cast<uint32_t>(S_IFREG | 0600));
  EXPECT_EQ(c.umask, 077u);
  EXPECT_EQ(r.payload_size(), sizeof(fuse_entry_out) + sizeof(fuse_open_out));
  EXPECT_EQ(r.as<fuse_open_out>(sizeof(fuse_entry_out)).fh, 99u);
}

TEST_F(OpTest, ReadPayloadComesFromSink) {
  fake.read_data = "0123456789abcdef";
  Reply r = send(RequestBuilder(FUSE_READ, kNode)
                     .add(fuse_read_in{.fh = 7, .offset = 4, .size = 6}));
  ASSERT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "read");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.handle, 7u);
  EXPECT_EQ(c.offset, 4u);
  EXPECT_EQ(c.size, 6u);
  EXPECT_EQ(last_sink_requests, 1u);
  EXPECT_EQ(r.payload_string(), "456789");
}

TEST_F(OpTest, ReadShortAtEof) {
  fake.read_data = "short";
  Reply r = send(RequestBuilder(FUSE_READ, kNode).add(fuse_read_in{.fh = 7, .size = 4096}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_string(), "short");
  r = send(RequestBuilder(FUSE_READ, kNode).add(fuse_read_in{.fh = 7, .offset = 100, .size = 10}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_size(), 0u);
}

TEST_F(OpTest, ReadOfOneMibAccepted) {
  Reply r = send(RequestBuilder(FUSE_READ, kNode).add(fuse_read_in{.fh = 7, .size = kMiB}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().size, kMiB);
}

TEST_F(OpTest, WriteInlinePayloadReachesFilesystem) {
  std::string payload = "payload bytes \x01\x02";
  Reply r = send(RequestBuilder(FUSE_WRITE, kNode)
                     .add(fuse_write_in{.fh = 8,
                                        .offset = 4096,
                                        .size = static_cast<uint32_t>(payload.size()),
                                        .write_flags = FUSE_WRITE_KILL_SUIDGID})
                     .raw(payload));
  ASSERT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "write");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.handle, 8u);
  EXPECT_EQ(c.offset, 4096u);
  EXPECT_EQ(c.flags, static_cast<uint32_t>(FUSE_WRITE_KILL_SUIDGID));
  EXPECT_EQ(c.data, payload);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_write_out));
  EXPECT_EQ(r.as<fuse_write_out>().size, payload.size());
}

TEST_F(OpTest, WriteReplyReportsFilesystemCount) {
  fake.write_result = 3;
  Reply r = send(RequestBuilder(FUSE_WRITE, kNode)
                     .add(fuse_write_in{.fh = 8, .size = 10})
                     .raw("0123456789"));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(r.as<fuse_write_out>().size, 3u);
}

TEST_F(OpTest, WriteExternalPayload) {
  ExternalPayload payload("guest memory data");
  RequestBuilder b(FUSE_WRITE, kNode);
  b.add(fuse_write_in{.fh = 9, .offset = 1, .size = static_cast<uint32_t>(payload.size())});
  Reply r = send(b.build(payload.size()), &payload);
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().data, "guest memory data");
  EXPECT_EQ(r.as<fuse_write_out>().size, payload.size());
}

TEST_F(OpTest, Statfs) {
  Reply r = send(RequestBuilder(FUSE_STATFS, kNode));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "statfs");
  EXPECT_EQ(fake.last().node, kNode);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_statfs_out));
  auto st = r.as<fuse_statfs_out>().st;
  EXPECT_EQ(st.blocks, 1000u);
  EXPECT_EQ(st.bfree, 500u);
  EXPECT_EQ(st.bavail, 400u);
  EXPECT_EQ(st.files, 100u);
  EXPECT_EQ(st.ffree, 50u);
  EXPECT_EQ(st.bsize, 4096u);
  EXPECT_EQ(st.frsize, 4096u);
  EXPECT_EQ(st.namelen, 255u);
}

TEST_F(OpTest, Release) {
  Reply r = send(RequestBuilder(FUSE_RELEASE, kNode)
                     .add(fuse_release_in{.fh = 12,
                                          .flags = O_RDWR,
                                          .release_flags = FUSE_RELEASE_FLOCK_UNLOCK,
                                          .lock_owner = 0xabcdef}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_size(), 0u);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "release");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.handle, 12u);
  EXPECT_EQ(c.flags, static_cast<uint32_t>(O_RDWR));
  EXPECT_EQ(c.flags2, static_cast<uint32_t>(FUSE_RELEASE_FLOCK_UNLOCK));
  EXPECT_EQ(c.owner, 0xabcdefu);
}

TEST_F(OpTest, Releasedir) {
  Reply r = send(RequestBuilder(FUSE_RELEASEDIR, kNode).add(fuse_release_in{.fh = 13}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "releasedir");
  EXPECT_EQ(fake.last().node, kNode);
  EXPECT_EQ(fake.last().handle, 13u);
}

TEST_F(OpTest, Flush) {
  Reply r = send(RequestBuilder(FUSE_FLUSH, kNode)
                     .add(fuse_flush_in{.fh = 14, .lock_owner = 0x1234}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "flush");
  EXPECT_EQ(fake.last().handle, 14u);
  EXPECT_EQ(fake.last().owner, 0x1234u);
}

TEST_F(OpTest, FsyncDatasyncBit) {
  send(RequestBuilder(FUSE_FSYNC, kNode).add(fuse_fsync_in{.fh = 15, .fsync_flags = 0}));
  EXPECT_EQ(fake.last().op, "fsync");
  EXPECT_EQ(fake.last().handle, 15u);
  EXPECT_FALSE(fake.last().datasync);
  Reply r = send(RequestBuilder(FUSE_FSYNC, kNode)
                     .add(fuse_fsync_in{.fh = 15, .fsync_flags = FUSE_FSYNC_FDATASYNC}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_TRUE(fake.last().datasync);
}

TEST_F(OpTest, Fsyncdir) {
  Reply r = send(RequestBuilder(FUSE_FSYNCDIR, kNode)
                     .add(fuse_fsync_in{.fh = 16, .fsync_flags = FUSE_FSYNC_FDATASYNC}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "fsyncdir");
  EXPECT_EQ(fake.last().handle, 16u);
  EXPECT_TRUE(fake.last().datasync);
}

// SETXATTR without FUSE_SETXATTR_EXT: 8-byte {size, flags}, then name, then value.
RequestBuilder Setxattr(std::string_view name, std::string_view value, uint32_t flags,
                        std::optional<uint32_t> size = std::nullopt) {
  fuse_setxattr_in in{};
  in.size = size.value_or(static_cast<uint32_t>(value.size()));
  in.flags = flags;
  RequestBuilder b(FUSE_SETXATTR, kNode);
  b.add_prefix(in, FUSE_COMPAT_SETXATTR_IN_SIZE).name(name).raw(value);
  return b;
}

TEST_F(OpTest, SetxattrCompatStruct) {
  std::string value("bin\0ary", 7);
  Reply r = send(Setxattr("user.test", value, static_cast<uint32_t>(XATTR_CREATE)));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_size(), 0u);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "setxattr");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.name, "user.test");
  EXPECT_EQ(c.data, value);
  EXPECT_EQ(c.flags, static_cast<uint32_t>(XATTR_CREATE));
}

TEST_F(OpTest, SetxattrEmptyValue) {
  EXPECT_EQ(send(Setxattr("user.empty", "", 0)).error(), 0);
  EXPECT_EQ(fake.last().data, "");
}

TEST_F(OpTest, SetxattrValueSizeLimits) {
  std::string big(65536, 'x');
  EXPECT_EQ(send(Setxattr("user.big", big, 0)).error(), 0);
  EXPECT_EQ(fake.last().data.size(), 65536u);
  expect_refused(Setxattr("user.big", big + "y", 0));
  // A size beyond the bytes present.
  expect_refused(Setxattr("user.a", "abc", 0, 4));
  expect_refused(Setxattr("user.a", "abc", 0, 0xffffffff));
}

TEST_F(OpTest, GetxattrSizeZeroAsksForLength) {
  fake.xattr_value = {'1', '2', '3', '4', '5', '6'};
  Reply r = send(RequestBuilder(FUSE_GETXATTR, kNode)
                     .add(fuse_getxattr_in{.size = 0})
                     .name("user.x"));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "getxattr");
  EXPECT_EQ(fake.last().name, "user.x");
  EXPECT_EQ(fake.last().size, 0u);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_getxattr_out));
  EXPECT_EQ(r.as<fuse_getxattr_out>().size, 6u);
}

TEST_F(OpTest, GetxattrReturnsValue) {
  fake.xattr_value = {'v', 'a', 'l', 0, 'x'};
  Reply r = send(RequestBuilder(FUSE_GETXATTR, kNode)
                     .add(fuse_getxattr_in{.size = 100})
                     .name("user.x"));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().size, 100u);
  EXPECT_EQ(r.payload_string(), std::string("val\0x", 5));
  // Exactly the buffer size fits.
  r = send(RequestBuilder(FUSE_GETXATTR, kNode).add(fuse_getxattr_in{.size = 5}).name("user.x"));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_size(), 5u);
}

TEST_F(OpTest, GetxattrValueLongerThanSizeIsErange) {
  fake.xattr_value = std::vector<char>(10, 'z');
  Reply r = send(RequestBuilder(FUSE_GETXATTR, kNode)
                     .add(fuse_getxattr_in{.size = 9})
                     .name("user.x"));
  EXPECT_EQ(r.error(), -ERANGE);
}

TEST_F(OpTest, Listxattr) {
  Reply r = send(RequestBuilder(FUSE_LISTXATTR, kNode).add(fuse_getxattr_in{.size = 0}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "listxattr");
  EXPECT_EQ(r.as<fuse_getxattr_out>().size, fake.xattr_list.size());
  r = send(RequestBuilder(FUSE_LISTXATTR, kNode).add(fuse_getxattr_in{.size = 4096}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().size, 4096u);
  EXPECT_EQ(r.payload_string(), std::string(fake.xattr_list.begin(), fake.xattr_list.end()));
  r = send(RequestBuilder(FUSE_LISTXATTR, kNode).add(fuse_getxattr_in{.size = 3}));
  EXPECT_EQ(r.error(), -ERANGE);
}

TEST_F(OpTest, Removexattr) {
  Reply r = send(RequestBuilder(FUSE_REMOVEXATTR, kNode).name("trusted.foo"));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "removexattr");
  EXPECT_EQ(fake.last().name, "trusted.foo");
}

TEST_F(OpTest, XattrNamesMayContainSlashButNotBeEmpty) {
  EXPECT_EQ(send(RequestBuilder(FUSE_REMOVEXATTR, kNode).name("user.a/b")).error(), 0);
  expect_refused(RequestBuilder(FUSE_REMOVEXATTR, kNode).name(""));
  expect_refused(RequestBuilder(FUSE_REMOVEXATTR, kNode).name(std::string(256, 'x')));
  expect_refused(RequestBuilder(FUSE_GETXATTR, kNode).add(fuse_getxattr_in{.size = 0}).name(""));
  expect_refused(Setxattr("", "v", 0));
  expect_refused(RequestBuilder(FUSE_GETXATTR, kNode)
                     .add(fuse_getxattr_in{.size = 65537})
                     .name("user.x"));
}

TEST_F(OpTest, Opendir) {
  fake.opened = fs::Opened{.handle = 600, .open_flags = FOPEN_CACHE_DIR};
  Reply r = send(RequestBuilder(FUSE_OPENDIR, kNode).add(fuse_open_in{.flags = O_RDONLY}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "opendir");
  EXPECT_EQ(fake.last().flags, static_cast<uint32_t>(O_RDONLY));
  EXPECT_EQ(r.as<fuse_open_out>().fh, 600u);
  EXPECT_EQ(r.as<fuse_open_out>().open_flags, static_cast<uint32_t>(FOPEN_CACHE_DIR));
}

// fuse_dirent without its flexible name array.
struct DirentHeader {
  uint64_t ino;
  uint64_t off;
  uint32_t namelen;
  uint32_t type;
};
static_assert(sizeof(DirentHeader) == FUSE_NAME_OFFSET);

struct ParsedDirent {
  fuse_entry_out entry{};
  DirentHeader dirent{};
  std::string name;
};

// Parses a READDIR(PLUS) payload, checking record alignment and zero padding.
std::vector<ParsedDirent> ParseDirents(const Reply& r, bool plus) {
  std::vector<ParsedDirent> out;
  size_t pos = 0;
  const uint8_t* p = r.payload();
  size_t size = r.payload_size();
  while (pos < size) {
    ParsedDirent d;
    if (plus) {
      EXPECT_LE(pos + sizeof(fuse_entry_out), size);
      if (pos + sizeof(fuse_entry_out) > size) break;
      std::memcpy(&d.entry, p + pos, sizeof(d.entry));
      pos += sizeof(fuse_entry_out);
    }
    EXPECT_LE(pos + FUSE_NAME_OFFSET, size);
    if (pos + FUSE_NAME_OFFSET > size) break;
    std::memcpy(&d.dirent, p + pos, FUSE_NAME_OFFSET);
    size_t record = FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + d.dirent.namelen);
    EXPECT_LE(pos + record, size) << "record overruns the reply";
    if (pos + record > size) break;
    d.name.assign(reinterpret_cast<const char*>(p + pos + FUSE_NAME_OFFSET), d.dirent.namelen);
    for (size_t i = FUSE_NAME_OFFSET + d.dirent.namelen; i < record; ++i) {
      EXPECT_EQ(p[pos + i], 0) << "padding byte not zero after " << d.name;
    }
    pos += record;
    EXPECT_EQ(pos % 8, 0u);
    out.push_back(std::move(d));
  }
  return out;
}

TEST_F(OpTest, ReaddirLayout) {
  Reply r = send(RequestBuilder(FUSE_READDIR, kNode)
                     .add(fuse_read_in{.fh = 20, .offset = 0, .size = 4096}));
  ASSERT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "readdir");
  EXPECT_EQ(c.handle, 20u);
  EXPECT_EQ(c.offset, 0u);
  EXPECT_FALSE(c.plus);
  auto dirents = ParseDirents(r, false);
  ASSERT_EQ(dirents.size(), fake.dir_items.size());
  for (size_t i = 0; i < dirents.size(); ++i) {
    EXPECT_EQ(dirents[i].name, fake.dir_items[i].name);
    EXPECT_EQ(dirents[i].dirent.ino, fake.dir_items[i].ino);
    EXPECT_EQ(dirents[i].dirent.off, fake.dir_items[i].offset);
    EXPECT_EQ(dirents[i].dirent.type, fake.dir_items[i].type);
  }
  // ".", "..", "a", "l": 32-byte records; "file-two": 24 + 8 = 32 too.
  EXPECT_EQ(r.payload_size(), 5u * 32);
}

TEST_F(OpTest, ReaddirResumesFromOffset) {
  Reply r = send(RequestBuilder(FUSE_READDIR, kNode)
                     .add(fuse_read_in{.fh = 20, .offset = 3, .size = 4096}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().offset, 3u);
  auto dirents = ParseDirents(r, false);
  ASSERT_EQ(dirents.size(), 2u);
  EXPECT_EQ(dirents[0].name, "file-two");
  EXPECT_EQ(dirents[1].name, "l");
}

TEST_F(OpTest, ReaddirStopsWhenSizeIsFull) {
  // Room for two 32-byte records but not three.
  Reply r = send(RequestBuilder(FUSE_READDIR, kNode)
                     .add(fuse_read_in{.fh = 20, .offset = 0, .size = 95}));
  ASSERT_EQ(r.error(), 0);
  auto dirents = ParseDirents(r, false);
  ASSERT_EQ(dirents.size(), 2u);
  EXPECT_EQ(fake.dir_items_sent, 2u);
  EXPECT_EQ(r.payload_size(), 64u);
  // Exactly three records' worth.
  r = send(RequestBuilder(FUSE_READDIR, kNode)
               .add(fuse_read_in{.fh = 20, .offset = 0, .size = 96}));
  EXPECT_EQ(ParseDirents(r, false).size(), 3u);
}

TEST_F(OpTest, ReaddirplusLayout) {
  Reply r = send(RequestBuilder(FUSE_READDIRPLUS, kNode)
                     .add(fuse_read_in{.fh = 21, .offset = 0, .size = 4096}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "readdir");
  EXPECT_TRUE(fake.last().plus);
  auto dirents = ParseDirents(r, true);
  ASSERT_EQ(dirents.size(), fake.dir_items.size());
  EXPECT_EQ(r.payload_size(), 5u * (sizeof(fuse_entry_out) + 32));
  for (size_t i = 0; i < dirents.size(); ++i) {
    EXPECT_EQ(dirents[i].name, fake.dir_items[i].name);
    EXPECT_EQ(dirents[i].dirent.off, fake.dir_items[i].offset);
    if (dirents[i].name == "." || dirents[i].name == "..") {
      EXPECT_EQ(dirents[i].entry.nodeid, 0u) << "no lookup for " << dirents[i].name;
    } else {
      EXPECT_EQ(dirents[i].entry.nodeid, 1000 + fake.dir_items[i].ino);
      EXPECT_EQ(dirents[i].entry.attr.ino, fake.dir_items[i].ino);
      EXPECT_EQ(dirents[i].entry.entry_valid, 1u);
    }
  }
}

TEST_F(OpTest, ReaddirplusStopsWhenSizeIsFull) {
  size_t record = sizeof(fuse_entry_out) + 32;
  Reply r = send(RequestBuilder(FUSE_READDIRPLUS, kNode)
                     .add(fuse_read_in{.fh = 21, .size = static_cast<uint32_t>(3 * record - 1)}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(ParseDirents(r, true).size(), 2u);
  EXPECT_EQ(fake.dir_items_sent, 2u);
  EXPECT_EQ(r.payload_size(), 2 * record);
}

// A reply the client never receives (its buffer too small for it) must not leave behind what
// it handed out: the client cannot FORGET a node or RELEASE a handle it never learnt of.
TEST_F(OpTest, UndeliveredRepliesGiveBackReferencesAndHandles) {
  reply_capacity = sizeof(fuse_out_header);  // room for an error reply, nothing more
  fake.opened = fs::Opened{.handle = 555};

  EXPECT_TRUE(send_all(RequestBuilder(FUSE_LOOKUP, kNode).name("a").build()).empty());
  EXPECT_EQ(fake.forgets, (std::vector<std::pair<fs::NodeId, uint64_t>>{{42, 1}}));

  EXPECT_TRUE(send_all(RequestBuilder(FUSE_OPEN, kNode).add(fuse_open_in{}).build()).empty());
  EXPECT_EQ(fake.last().op, "release");
  EXPECT_EQ(fake.last().handle, 555u);

  EXPECT_TRUE(send_all(RequestBuilder(FUSE_OPENDIR, kNode).add(fuse_open_in{}).build()).empty());
  EXPECT_EQ(fake.last().op, "releasedir");
  EXPECT_EQ(fake.last().handle, 555u);

  fake.forgets.clear();
  EXPECT_TRUE(send_all(RequestBuilder(FUSE_CREATE, kNode)
                           .add(fuse_create_in{.flags = O_RDWR | O_CREAT, .mode = S_IFREG | 0600})
                           .name("b")
                           .build())
                  .empty());
  EXPECT_EQ(fake.calls[fake.calls.size() - 2].op, "release");
  EXPECT_EQ(fake.forgets, (std::vector<std::pair<fs::NodeId, uint64_t>>{{42, 1}}));

  // READDIRPLUS: one reference back per entry that carried one ("." and ".." carry none).
  fake.forgets.clear();
  EXPECT_TRUE(send_all(RequestBuilder(FUSE_READDIRPLUS, kNode)
                           .add(fuse_read_in{.fh = 21, .size = 4096})
                           .build())
                  .empty());
  std::vector<std::pair<fs::NodeId, uint64_t>> expected;
  for (const auto& item : fake.dir_items) {
    if (item.name != "." && item.name != "..") expected.emplace_back(1000 + item.ino, 1);
  }
  ASSERT_FALSE(expected.empty());
  EXPECT_EQ(fake.forgets, expected);

  // A negative entry (node 0) holds no reference; an error reply still goes out.
  fake.forgets.clear();
  fake.negative_lookup = true;
  EXPECT_TRUE(send_all(RequestBuilder(FUSE_LOOKUP, kNode).name("c").build()).empty());
  EXPECT_TRUE(fake.forgets.empty());
  fake.fail("getattr", ENOENT);
  EXPECT_EQ(send(RequestBuilder(FUSE_GETATTR, kNode).add(fuse_getattr_in{})).error(), -ENOENT);
}

TEST_F(OpTest, Access) {
  Reply r = send(RequestBuilder(FUSE_ACCESS, kNode).add(fuse_access_in{.mask = R_OK | X_OK}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "access");
  EXPECT_EQ(fake.last().mask, static_cast<uint32_t>(R_OK | X_OK));
}

fuse_lk_in LockIn(uint32_t type, uint32_t lk_flags = 0) {
  fuse_lk_in in{};
  in.fh = 30;
  in.owner = 0xdeadbeefcafe;
  in.lk.start = 100;
  in.lk.end = 199;
  in.lk.type = type;
  in.lk.pid = 321;
  in.lk_flags = lk_flags;
  return in;
}

TEST_F(OpTest, Getlk) {
  Reply r = send(RequestBuilder(FUSE_GETLK, kNode).add(LockIn(F_RDLCK)));
  ASSERT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "getlk");
  EXPECT_EQ(c.handle, 30u);
  EXPECT_EQ(c.owner, 0xdeadbeefcafeu);
  EXPECT_EQ(c.lock.start, 100u);
  EXPECT_EQ(c.lock.end, 199u);
  EXPECT_EQ(c.lock.type, static_cast<uint32_t>(F_RDLCK));
  EXPECT_EQ(c.lock.pid, 321u);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_lk_out));
  auto lk = r.as<fuse_lk_out>().lk;
  EXPECT_EQ(lk.start, 5u);
  EXPECT_EQ(lk.end, 15u);
  EXPECT_EQ(lk.type, static_cast<uint32_t>(F_WRLCK));
  EXPECT_EQ(lk.pid, 777u);
}

TEST_F(OpTest, SetlkAndSetlkw) {
  Reply r = send(RequestBuilder(FUSE_SETLK, kNode).add(LockIn(F_WRLCK)));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_size(), 0u);
  EXPECT_EQ(fake.last().op, "setlk");
  EXPECT_FALSE(fake.last().wait);
  EXPECT_EQ(fake.last().lock.type, static_cast<uint32_t>(F_WRLCK));
  EXPECT_EQ(fake.last().lock.start, 100u);
  EXPECT_EQ(fake.last().lock.end, 199u);
  EXPECT_EQ(fake.last().owner, 0xdeadbeefcafeu);

  r = send(RequestBuilder(FUSE_SETLKW, kNode).add(LockIn(F_UNLCK, FUSE_LK_FLOCK)));
  EXPECT_EQ(r.error(), 0);
  EXPECT_TRUE(fake.last().wait);
  EXPECT_EQ(fake.last().lock.type, static_cast<uint32_t>(F_UNLCK));
  EXPECT_EQ(fake.last().flags2, static_cast<uint32_t>(FUSE_LK_FLOCK));
}

TEST_F(OpTest, NotifyReplyHasNoReply) {
  send_expect_no_reply(RequestBuilder(FUSE_NOTIFY_REPLY, kNode).add(fuse_notify_retrieve_in{}));
  EXPECT_TRUE(fake.calls.empty());
}

TEST_F(OpTest, InterruptHasNoReply) {
  send_expect_no_reply(RequestBuilder(FUSE_INTERRUPT, 0).add(fuse_interrupt_in{.unique = 12345}));
  EXPECT_TRUE(fake.calls.empty());
  // Truncated: still no reply.
  send_expect_no_reply(RequestBuilder(FUSE_INTERRUPT, 0).raw("abc"));
}

TEST_F(OpTest, InterruptWakesBlockedSetlkw) {
  fuse::InstallInterruptSignalHandler();
  struct BlockingFs : FakeFileSystem {
    std::atomic<bool> entered{false};
    Status setlk(const fs::Context& ctx, fs::NodeId, fs::HandleId, uint64_t, const fs::FileLock&,
                 uint32_t, bool wait) override {
      entered = true;
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (wait && std::chrono::steady_clock::now() < deadline) {
        if (ctx.is_interrupted()) return Err(EINTR);
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      return Err(EDEADLK);
    }
  } blocking;
  fuse::Server s(blocking);
  CapturingChannel init_channel;
  s.handle(RequestBuilder(FUSE_INIT, 0).add(InitIn(7, 38, kKernelFlags)).build(), nullptr,
           init_channel);
  ASSERT_TRUE(s.initialized());

  CapturingChannel lock_channel;
  std::thread locker([&] {
    s.handle(RequestBuilder(FUSE_SETLKW, kNode, 500).add(LockIn(F_WRLCK)).build(), nullptr,
             lock_channel);
  });
  while (!blocking.entered) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  CapturingChannel interrupt_channel;
  s.handle(RequestBuilder(FUSE_INTERRUPT, 0, 501).add(fuse_interrupt_in{.unique = 500}).build(),
           nullptr, interrupt_channel);
  locker.join();
  EXPECT_TRUE(interrupt_channel.replies.empty());
  ASSERT_EQ(lock_channel.replies.size(), 1u);
  EXPECT_EQ(lock_channel.replies[0].error(), -EINTR);
  EXPECT_EQ(lock_channel.replies[0].header().unique, 500u);
}

TEST_F(OpTest, Fallocate) {
  Reply r = send(RequestBuilder(FUSE_FALLOCATE, kNode)
                     .add(fuse_fallocate_in{.fh = 40,
                                            .offset = 8192,
                                            .length = 1 << 20,
                                            .mode = FALLOC_FL_KEEP_SIZE}));
  EXPECT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "fallocate");
  EXPECT_EQ(c.handle, 40u);
  EXPECT_EQ(c.offset, 8192u);
  EXPECT_EQ(c.length, 1u << 20);
  EXPECT_EQ(c.mode, static_cast<uint32_t>(FALLOC_FL_KEEP_SIZE));
}

TEST_F(OpTest, Lseek) {
  fake.lseek_result = 12288;
  Reply r = send(RequestBuilder(FUSE_LSEEK, kNode)
                     .add(fuse_lseek_in{.fh = 41, .offset = 100, .whence = SEEK_DATA}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "lseek");
  EXPECT_EQ(fake.last().handle, 41u);
  EXPECT_EQ(fake.last().offset, 100u);
  EXPECT_EQ(fake.last().whence, static_cast<uint32_t>(SEEK_DATA));
  ASSERT_EQ(r.payload_size(), sizeof(fuse_lseek_out));
  EXPECT_EQ(r.as<fuse_lseek_out>().offset, 12288u);
}

TEST_F(OpTest, CopyFileRange) {
  fake.copy_result = 65536;
  Reply r = send(RequestBuilder(FUSE_COPY_FILE_RANGE, kNode)
                     .add(fuse_copy_file_range_in{.fh_in = 50,
                                                  .off_in = 10,
                                                  .nodeid_out = 51,
                                                  .fh_out = 52,
                                                  .off_out = 20,
                                                  .len = 100000,
                                                  .flags = 0}));
  ASSERT_EQ(r.error(), 0);
  const FakeCall& c = fake.last();
  EXPECT_EQ(c.op, "copy_file_range");
  EXPECT_EQ(c.node, kNode);
  EXPECT_EQ(c.handle, 50u);
  EXPECT_EQ(c.offset, 10u);
  EXPECT_EQ(c.node2, 51u);
  EXPECT_EQ(c.handle2, 52u);
  EXPECT_EQ(c.offset2, 20u);
  EXPECT_EQ(c.length, 100000u);
  EXPECT_EQ(c.cfr_flags, 0u);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_write_out));
  EXPECT_EQ(r.as<fuse_write_out>().size, 65536u);
}

TEST_F(OpTest, Syncfs) {
  Reply r = send(RequestBuilder(FUSE_SYNCFS, kNode).add(fuse_syncfs_in{}));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(r.payload_size(), 0u);
  EXPECT_EQ(fake.last().op, "syncfs");
  EXPECT_EQ(fake.last().node, kNode);
}

// ---------------------------------------------------------------------------------------------
// Reply encoding

TEST_F(OpTest, EntryTimeoutsSplitIntoSecondsAndNanoseconds) {
  fake.entry.entry_timeout_ns = 1'500'000'000;
  fake.entry.attr.timeout_ns = 2'250'000'001;
  Reply r = send(RequestBuilder(FUSE_LOOKUP, kNode).name("x"));
  auto e = r.as<fuse_entry_out>();
  EXPECT_EQ(e.entry_valid, 1u);
  EXPECT_EQ(e.entry_valid_nsec, 500'000'000u);
  EXPECT_EQ(e.attr_valid, 2u);
  EXPECT_EQ(e.attr_valid_nsec, 250'000'001u);
}

TEST_F(OpTest, AttrTimeoutSplit) {
  fake.attr.timeout_ns = 86400ULL * 1'000'000'000 + 7;
  Reply r = send(RequestBuilder(FUSE_GETATTR, kNode).add(fuse_getattr_in{}));
  EXPECT_EQ(r.as<fuse_attr_out>().attr_valid, 86400u);
  EXPECT_EQ(r.as<fuse_attr_out>().attr_valid_nsec, 7u);
}

TEST_F(OpTest, AttrFieldsFromStat) {
  fs::Attr& a = fake.entry.attr;
  a.st.st_ino = 0x123456789;
  a.st.st_size = 0x7000000001;
  a.st.st_blocks = 77;
  a.st.st_atim = {1700000000, 11};
  a.st.st_mtim = {1700000001, 22};
  a.st.st_ctim = {1700000002, 33};
  a.st.st_mode = S_IFCHR | 0620;
  a.st.st_nlink = 3;
  a.st.st_uid = 1234;
  a.st.st_gid = 5678;
  a.st.st_rdev = makedev(4, 64);
  a.st.st_blksize = 65536;
  a.flags = FUSE_ATTR_SUBMOUNT;
  Reply r = send(RequestBuilder(FUSE_LOOKUP, kNode).name("tty"));
  fuse_attr at = r.as<fuse_entry_out>().attr;
  EXPECT_EQ(at.ino, 0x123456789u);
  EXPECT_EQ(at.size, 0x7000000001u);
  EXPECT_EQ(at.blocks, 77u);
  EXPECT_EQ(at.atime, 1700000000u);
  EXPECT_EQ(at.atimensec, 11u);
  EXPECT_EQ(at.mtime, 1700000001u);
  EXPECT_EQ(at.mtimensec, 22u);
  EXPECT_EQ(at.ctime, 1700000002u);
  EXPECT_EQ(at.ctimensec, 33u);
  EXPECT_EQ(at.mode, static_cast<uint32_t>(S_IFCHR | 0620));
  EXPECT_EQ(at.nlink, 3u);
  EXPECT_EQ(at.uid, 1234u);
  EXPECT_EQ(at.gid, 5678u);
  EXPECT_EQ(at.rdev, static_cast<uint32_t>(makedev(4, 64)));
  EXPECT_EQ(at.blksize, 65536u);
  EXPECT_EQ(at.flags, static_cast<uint32_t>(FUSE_ATTR_SUBMOUNT));
}

TEST_F(OpTest, NegativeEntryReply) {
  fake.negative_lookup = true;
  fake.entry.entry_timeout_ns = 3'000'000'000;
  Reply r = send(RequestBuilder(FUSE_LOOKUP, kNode).name("missing"));
  ASSERT_EQ(r.error(), 0);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_entry_out));
  auto e = r.as<fuse_entry_out>();
  EXPECT_EQ(e.nodeid, 0u);
  EXPECT_EQ(e.entry_valid, 3u);
  EXPECT_EQ(e.attr.ino, 0u);
}

TEST_F(OpTest, ErrorReplyIsHeaderOnlyWithNegatedErrno) {
  struct Case {
    const char* op;
    RequestBuilder request;
    int error;
  };
  std::vector<Case> cases = {
      {"lookup", RequestBuilder(FUSE_LOOKUP, kNode, 61).name("x"), ENOENT},
      {"getattr", RequestBuilder(FUSE_GETATTR, kNode, 62).add(fuse_getattr_in{}), ESTALE},
      {"open", RequestBuilder(FUSE_OPEN, kNode, 63).add(fuse_open_in{}), EACCES},
      {"read", RequestBuilder(FUSE_READ, kNode, 64).add(fuse_read_in{.size = 10}), EIO},
      {"write", RequestBuilder(FUSE_WRITE, kNode, 65).add(fuse_write_in{.size = 1}).raw("x"),
       ENOSPC},
      {"readdir", RequestBuilder(FUSE_READDIR, kNode, 66).add(fuse_read_in{.size = 4096}), EBADF},
      {"readlink", RequestBuilder(FUSE_READLINK, kNode, 67), EINVAL},
      {"statfs", RequestBuilder(FUSE_STATFS, kNode, 68), ENOSYS},
      {"unlink", RequestBuilder(FUSE_UNLINK, kNode, 69).name("x"), EPERM},
      {"create", RequestBuilder(FUSE_CREATE, kNode, 70).add(fuse_create_in{}).name("x"), EEXIST},
      {"getxattr",
       RequestBuilder(FUSE_GETXATTR, kNode, 71).add(fuse_getxattr_in{.size = 0}).name("user.x"),
       ENODATA},
      {"lseek", RequestBuilder(FUSE_LSEEK, kNode, 72).add(fuse_lseek_in{}), ENXIO},
      {"getlk", RequestBuilder(FUSE_GETLK, kNode, 73).add(fuse_lk_in{}), ENOLCK},
      {"copy_file_range",
       RequestBuilder(FUSE_COPY_FILE_RANGE, kNode, 74).add(fuse_copy_file_range_in{}), EXDEV},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.op);
    fake.fail(c.op, c.error);
    Reply r = send(c.request);
    EXPECT_EQ(r.bytes.size(), sizeof(fuse_out_header));
    EXPECT_EQ(r.header().len, sizeof(fuse_out_header));
    EXPECT_EQ(r.error(), -c.error);
    fuse_in_header in{};
    std::memcpy(&in, c.request.build().data(), sizeof(in));
    EXPECT_EQ(r.header().unique, in.unique);
    EXPECT_EQ(fake.last().op, c.op);
  }
}

TEST_F(OpTest, ErrorReplyCarriesUnique) {
  fake.fail("lookup", ENOENT);
  Reply r = send(RequestBuilder(FUSE_LOOKUP, kNode, 0xfeedface12345678).name("x"));
  EXPECT_EQ(r.header().unique, 0xfeedface12345678u);
  EXPECT_EQ(r.error(), -ENOENT);
}

// ---------------------------------------------------------------------------------------------
// Malformed input

TEST_F(OpTest, HeaderShorterThanInHeaderIsDropped) {
  uint64_t malformed = server.stats().malformed();
  for (size_t n : {0, 1, 16, 39}) {
    std::vector<uint8_t> bytes = RequestBuilder(FUSE_LOOKUP, kNode).name("x").build();
    bytes.resize(n);
    EXPECT_TRUE(send_all(bytes).empty()) << n << " bytes";
  }
  EXPECT_TRUE(fake.calls.empty());
  EXPECT_EQ(server.stats().malformed(), malformed + 4);
}

TEST_F(OpTest, HeaderLengthMismatchIsEio) {
  RequestBuilder b(FUSE_LOOKUP, kNode);
  b.name("x");
  size_t actual = b.build().size();
  expect_refused(b.build_with_len(static_cast<uint32_t>(actual + 1)), EIO);
  expect_refused(b.build_with_len(static_cast<uint32_t>(actual - 1)), EIO);
  expect_refused(b.build_with_len(0), EIO);
  expect_refused(b.build_with_len(0xffffffff), EIO);
  // Also before INIT, and for INIT itself.
  fuse::Server fresh(fake);
  CapturingChannel channel;
  fresh.handle(RequestBuilder(FUSE_INIT, 0).add(InitIn(7, 38, 0)).build_with_len(1000), nullptr,
               channel);
  ASSERT_EQ(channel.replies.size(), 1u);
  EXPECT_EQ(channel.replies[0].error(), -EIO);
  EXPECT_FALSE(fresh.initialized());
}

struct FixedArgs {
  const char* name;
  uint32_t opcode;
  size_t size;       // bytes of the fixed argument struct
  bool needs_name;   // a name follows the struct
};

class TruncatedArgsTest : public OpTest, public ::testing::WithParamInterface<FixedArgs> {};

TEST_P(TruncatedArgsTest, RefusedWithEinvalAndFilesystemNotCalled) {
  const FixedArgs& p = GetParam();
  std::vector<uint8_t> zeros(p.size, 0);
  // Every prefix shorter than the struct, with and without a trailing name.
  for (size_t n = 0; n < p.size; ++n) {
    RequestBuilder b(p.opcode, kNode);
    b.raw(std::string_view(reinterpret_cast<const char*>(zeros.data()), n));
    expect_refused(b);
  }
  // The full struct with a good name (where needed) is accepted, so the test can fail.
  RequestBuilder ok(p.opcode, kNode);
  ok.raw(std::string_view(reinterpret_cast<const char*>(zeros.data()), zeros.size()));
  if (p.needs_name) ok.name(p.opcode == FUSE_RENAME || p.opcode == FUSE_RENAME2 ? "a" : "user.a");
  if (p.opcode == FUSE_RENAME || p.opcode == FUSE_RENAME2) ok.name("b");
  Reply r = send(ok);
  EXPECT_NE(r.error(), -EINVAL);
  EXPECT_FALSE(fake.calls.empty());
}

INSTANTIATE_TEST_SUITE_P(
    AllFixedStructs, TruncatedArgsTest,
    ::testing::Values(
        FixedArgs{"GETATTR", FUSE_GETATTR, sizeof(fuse_getattr_in), false},
        FixedArgs{"SETATTR", FUSE_SETATTR, sizeof(fuse_setattr_in), false},
        FixedArgs{"MKNOD", FUSE_MKNOD, sizeof(fuse_mknod_in), true},
        FixedArgs{"MKDIR", FUSE_MKDIR, sizeof(fuse_mkdir_in), true},
        FixedArgs{"RENAME", FUSE_RENAME, sizeof(fuse_rename_in), true},
        FixedArgs{"RENAME2", FUSE_RENAME2, sizeof(fuse_rename2_in), true},
        FixedArgs{"LINK", FUSE_LINK, sizeof(fuse_link_in), true},
        FixedArgs{"OPEN", FUSE_OPEN, sizeof(fuse_open_in), false},
        FixedArgs{"CREATE", FUSE_CREATE, sizeof(fuse_create_in), true},
        FixedArgs{"TMPFILE", FUSE_TMPFILE, sizeof(fuse_create_in), true},
        FixedArgs{"READ", FUSE_READ, sizeof(fuse_read_in), false},
        FixedArgs{"WRITE", FUSE_WRITE, sizeof(fuse_write_in), false},
        FixedArgs{"RELEASE", FUSE_RELEASE, sizeof(fuse_release_in), false},
        FixedArgs{"RELEASEDIR", FUSE_RELEASEDIR, sizeof(fuse_release_in), false},
        FixedArgs{"FLUSH", FUSE_FLUSH, sizeof(fuse_flush_in), false},
        FixedArgs{"FSYNC", FUSE_FSYNC, sizeof(fuse_fsync_in), false},
        FixedArgs{"FSYNCDIR", FUSE_FSYNCDIR, sizeof(fuse_fsync_in), false},
        FixedArgs{"SETXATTR", FUSE_SETXATTR, FUSE_COMPAT_SETXATTR_IN_SIZE, true},
        FixedArgs{"GETXATTR", FUSE_GETXATTR, sizeof(fuse_getxattr_in), true},
        FixedArgs{"LISTXATTR", FUSE_LISTXATTR, sizeof(fuse_getxattr_in), false},
        FixedArgs{"OPENDIR", FUSE_OPENDIR, sizeof(fuse_open_in), false},
        FixedArgs{"READDIR", FUSE_READDIR, sizeof(fuse_read_in), false},
        FixedArgs{"READDIRPLUS", FUSE_READDIRPLUS, sizeof(fuse_read_in), false},
        FixedArgs{"ACCESS", FUSE_ACCESS, sizeof(fuse_access_in), false},
        FixedArgs{"GETLK", FUSE_GETLK, sizeof(fuse_lk_in), false},
        FixedArgs{"SETLK", FUSE_SETLK, sizeof(fuse_lk_in), false},
        FixedArgs{"SETLKW", FUSE_SETLKW, sizeof(fuse_lk_in), false},
        FixedArgs{"FALLOCATE", FUSE_FALLOCATE, sizeof(fuse_fallocate_in), false},
        FixedArgs{"LSEEK", FUSE_LSEEK, sizeof(fuse_lseek_in), false},
        FixedArgs{"COPY_FILE_RANGE", FUSE_COPY_FILE_RANGE, sizeof(fuse_copy_file_range_in),
                  false},
        FixedArgs{"SYNCFS", FUSE_SYNCFS, sizeof(fuse_syncfs_in), false}),
    [](const ::testing::TestParamInfo<FixedArgs>& info) { return info.param.name; });

TEST_F(OpTest, TruncatedForgetsAreSilentlyDropped) {
  uint64_t malformed = server.stats().malformed();
  send_expect_no_reply(RequestBuilder(FUSE_FORGET, kNode).raw("1234567"));
  send_expect_no_reply(RequestBuilder(FUSE_BATCH_FORGET, 0).raw("1234567"));
  EXPECT_TRUE(fake.forgets.empty());
  EXPECT_EQ(server.stats().malformed(), malformed + 2);
}

// A request whose name argument is `name` (raw bytes, `terminate` adds the NUL).
std::vector<uint8_t> NameRequest(uint32_t opcode, std::string_view name, bool terminate) {
  RequestBuilder b(opcode, kNode);
  switch (opcode) {
    case FUSE_MKNOD: b.add(fuse_mknod_in{.mode = S_IFREG | 0644}); break;
    case FUSE_MKDIR: b.add(fuse_mkdir_in{.mode = 0755}); break;
    case FUSE_CREATE: b.add(fuse_create_in{.mode = S_IFREG | 0644}); break;
    case FUSE_LINK: b.add(fuse_link_in{.oldnodeid = 9}); break;
    case FUSE_RENAME: b.add(fuse_rename_in{.newdir = 9}); break;
    default: break;
  }
  if (terminate) b.name(name); else b.raw(name);
  if (opcode == FUSE_SYMLINK) b.name("target");
  if (opcode == FUSE_RENAME) b.name("newname");
  return b.build();
}

struct BadName {
  const char* label;
  std::string bytes;
  bool terminate;
};

class BadNameTest : public OpTest,
                    public ::testing::WithParamInterface<std::tuple<uint32_t, BadName>> {};

TEST_P(BadNameTest, RefusedWithEinval) {
  auto [opcode, bad] = GetParam();
  // The same request with a good name succeeds.
  EXPECT_EQ(send(NameRequest(opcode, "good", true)).error(), 0);
  fake.calls.clear();
  expect_refused(NameRequest(opcode, bad.bytes, bad.terminate));
}

INSTANTIATE_TEST_SUITE_P(
    EntryNames, BadNameTest,
    ::testing::Combine(
        ::testing::Values(FUSE_LOOKUP, FUSE_UNLINK, FUSE_RMDIR, FUSE_MKDIR, FUSE_MKNOD,
                          FUSE_CREATE, FUSE_SYMLINK, FUSE_LINK, FUSE_RENAME),
        ::testing::Values(BadName{"MissingNul", "abc", false}, BadName{"Empty", "", true},
                          BadName{"Slash", "a/b", true}, BadName{"OnlySlash", "/", true},
                          BadName{"Dot", ".", true}, BadName{"DotDot", "..", true},
                          BadName{"TooLong", std::string(256, 'x'), true})),
    [](const ::testing::TestParamInfo<std::tuple<uint32_t, BadName>>& info) {
      return std::string(protocol::OpcodeName(std::get<0>(info.param))) + "_" +
             std::get<1>(info.param).label;
    });

TEST_F(OpTest, RenameBadSecondNameRefused) {
  for (const std::string& bad : std::vector<std::string>{"", ".", "..", "x/y", std::string(256, 'n')}) {
    expect_refused(RequestBuilder(FUSE_RENAME, kNode)
                       .add(fuse_rename_in{.newdir = 9})
                       .name("ok")
                       .name(bad));
    expect_refused(RequestBuilder(FUSE_RENAME2, kNode)
                       .add(fuse_rename2_in{.newdir = 9})
                       .name("ok")
                       .name(bad));
  }
  expect_refused(RequestBuilder(FUSE_RENAME, kNode)
                     .add(fuse_rename_in{.newdir = 9})
                     .name("ok")
                     .raw("unterminated"));
}

TEST_F(OpTest, TmpfileNameMustStillBeTerminated) {
  expect_refused(RequestBuilder(FUSE_TMPFILE, kNode).add(fuse_create_in{}).raw("/"));
}

TEST_F(OpTest, ReadLargerThanOneMibRefused) {
  expect_refused(RequestBuilder(FUSE_READ, kNode).add(fuse_read_in{.size = kMiB + 1}));
  expect_refused(RequestBuilder(FUSE_READ, kNode).add(fuse_read_in{.size = 0xffffffff}));
  expect_refused(RequestBuilder(FUSE_READDIR, kNode).add(fuse_read_in{.size = kMiB + 1}));
  expect_refused(RequestBuilder(FUSE_READDIRPLUS, kNode).add(fuse_read_in{.size = 0xffffffff}));
  EXPECT_EQ(last_sink_requests, 0u);
}

TEST_F(OpTest, WriteSizeMismatchRefused) {
  // Payload longer than size.
  expect_refused(RequestBuilder(FUSE_WRITE, kNode).add(fuse_write_in{.size = 3}).raw("abcd"));
  // Payload shorter than size.
  expect_refused(RequestBuilder(FUSE_WRITE, kNode).add(fuse_write_in{.size = 5}).raw("abcd"));
  // Beyond max_write.
  std::string big(kMiB + 1, 'w');
  expect_refused(RequestBuilder(FUSE_WRITE, kNode)
                     .add(fuse_write_in{.size = static_cast<uint32_t>(big.size())})
                     .raw(big));
  // External payload of a different size than announced.
  ExternalPayload payload("four");
  RequestBuilder b(FUSE_WRITE, kNode);
  b.add(fuse_write_in{.size = 5});
  size_t before = fake.calls.size();
  Reply r = send(b.build(payload.size()), &payload);
  EXPECT_EQ(r.error(), -EINVAL);
  EXPECT_EQ(fake.calls.size(), before);
  // External payload plus stray bytes after the arguments.
  RequestBuilder stray(FUSE_WRITE, kNode);
  stray.add(fuse_write_in{.size = 4}).raw("xx");
  r = send(stray.build(payload.size()), &payload);
  EXPECT_EQ(r.error(), -EINVAL);
  EXPECT_EQ(fake.calls.size(), before);
}

// FORGET, BATCH_FORGET and INTERRUPT are never answered: the kernel waits for no reply and
// virtio-fs queues them without a device-writable buffer. That holds when they are refused too.
std::vector<RequestBuilder> NoReplyRequests() {
  RequestBuilder forget(FUSE_FORGET, kNode);
  forget.add(fuse_forget_in{.nlookup = 1});
  RequestBuilder batch(FUSE_BATCH_FORGET, 0);
  batch.add(fuse_batch_forget_in{.count = 1}).add(fuse_forget_one{.nodeid = 10, .nlookup = 1});
  RequestBuilder interrupt(FUSE_INTERRUPT, 0);
  interrupt.add(fuse_interrupt_in{.unique = 1});
  // The kernel's answer to a retrieve notification (sent with noreply).
  RequestBuilder notify_reply(FUSE_NOTIFY_REPLY, kNode);
  notify_reply.add(fuse_notify_retrieve_in{}).raw("data");
  return {forget, batch, interrupt, notify_reply};
}

TEST_F(OpTest, NoReplyOpcodesUnansweredOnLengthMismatch) {
  uint64_t malformed = server.stats().malformed();
  for (const RequestBuilder& b : NoReplyRequests()) {
    auto bytes = b.build();
    EXPECT_TRUE(send_all(b.build_with_len(static_cast<uint32_t>(bytes.size() + 8))).empty());
  }
  EXPECT_TRUE(fake.forgets.empty());
  EXPECT_EQ(server.stats().malformed(), malformed + 4);
}

TEST_F(ServerTest, NoReplyOpcodesUnansweredBeforeInit) {
  for (const RequestBuilder& b : NoReplyRequests()) EXPECT_TRUE(send_all(b.build()).empty());
  EXPECT_TRUE(fake.forgets.empty());
}

TEST_F(OpTest, BatchForgetCountBeyondEntriesForgetsNothing) {
  uint64_t malformed = server.stats().malformed();
  RequestBuilder b(FUSE_BATCH_FORGET, 0);
  b.add(fuse_batch_forget_in{.count = 3});
  b.add(fuse_forget_one{.nodeid = 10, .nlookup = 1});
  b.add(fuse_forget_one{.nodeid = 11, .nlookup = 1});
  send_expect_no_reply(b);
  EXPECT_TRUE(fake.forgets.empty());
  EXPECT_EQ(server.stats().malformed(), malformed + 1);

  RequestBuilder huge(FUSE_BATCH_FORGET, 0);
  huge.add(fuse_batch_forget_in{.count = 0xffffffff});
  huge.add(fuse_forget_one{.nodeid = 10, .nlookup = 1});
  send_expect_no_reply(huge);
  EXPECT_TRUE(fake.forgets.empty());
}

TEST_F(OpTest, UnsupportedOpcodesGetEnosys) {
  for (uint32_t opcode : {9999u, 64u, 63u, static_cast<uint32_t>(FUSE_IOCTL),
                          static_cast<uint32_t>(FUSE_POLL), static_cast<uint32_t>(FUSE_BMAP),
                          static_cast<uint32_t>(FUSE_SETUPMAPPING),
                          static_cast<uint32_t>(FUSE_REMOVEMAPPING), 0u}) {
    SCOPED_TRACE(opcode);
    expect_refused(RequestBuilder(opcode, kNode).raw(std::string(64, '\0')), ENOSYS);
  }
  EXPECT_EQ(server.stats().errors(9999), server.stats().requests(9999));
}

TEST_F(OpTest, MalformedCounterCountsEachRefusal) {
  uint64_t before = server.stats().malformed();
  expect_refused(RequestBuilder(FUSE_LOOKUP, kNode).name(".."));                    // bad name
  expect_refused(RequestBuilder(FUSE_OPEN, kNode).raw("abc"));                      // truncated
  expect_refused(RequestBuilder(FUSE_READ, kNode).add(fuse_read_in{.size = ~0u}));  // too large
  expect_refused(RequestBuilder(FUSE_STATFS, kNode).build_with_len(1), EIO);        // length
  EXPECT_EQ(server.stats().malformed(), before + 4);
  // Well-formed requests that fail in the filesystem are not malformed.
  fake.fail("lookup", ENOENT);
  send(RequestBuilder(FUSE_LOOKUP, kNode).name("x"));
  EXPECT_EQ(server.stats().malformed(), before + 4);
}

TEST_F(OpTest, RateLimitedLoggingSurvivesFlood) {
  std::ostringstream log;
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>(
      "flood", std::make_shared<spdlog::sinks::ostream_sink_mt>(log));
  logger->set_pattern("%v");
  logger->set_level(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  auto seconds = [] {
    return std::chrono::duration_cast<std::chrono::seconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  };
  int64_t start = seconds();
  uint64_t before = server.stats().malformed();
  CapturingChannel channel;
  auto request = RequestBuilder(FUSE_LOOKUP, kNode).raw("no-nul").build();
  for (int i = 0; i < 10000; ++i) server.handle(request, nullptr, channel);
  int64_t windows = seconds() - start + 1;
  spdlog::set_default_logger(previous);

  EXPECT_EQ(server.stats().malformed(), before + 10000);
  ASSERT_EQ(channel.replies.size(), 10000u);
  EXPECT_EQ(channel.replies.back().error(), -EINVAL);
  std::string text = log.str();
  auto lines = std::count(text.begin(), text.end(), '\n');
  EXPECT_GE(lines, 1);
  EXPECT_LE(lines, 10 * windows) << text;
  EXPECT_TRUE(fake.calls.empty());
}

// ---------------------------------------------------------------------------------------------
// Cache modes (the real CachePolicy, as the passthrough applies it)

struct CacheCase {
  const char* name;
  fs::CacheMode mode;
  uint64_t timeout_s;
  uint32_t file_flags;
  uint32_t dir_flags;
};

class CacheModeTest : public ServerTest, public ::testing::WithParamInterface<CacheCase> {};

TEST_P(CacheModeTest, ReplyFields) {
  const CacheCase& p = GetParam();
  fs::CachePolicy policy(p.mode);
  fake.use_policy(policy);
  init();

  Reply r = send(RequestBuilder(FUSE_LOOKUP, kNode).name("f"));
  EXPECT_EQ(r.as<fuse_entry_out>().entry_valid, p.timeout_s);
  EXPECT_EQ(r.as<fuse_entry_out>().entry_valid_nsec, 0u);
  EXPECT_EQ(r.as<fuse_entry_out>().attr_valid, p.timeout_s);

  r = send(RequestBuilder(FUSE_GETATTR, kNode).add(fuse_getattr_in{}));
  EXPECT_EQ(r.as<fuse_attr_out>().attr_valid, p.timeout_s);

  fake.negative_lookup = true;
  r = send(RequestBuilder(FUSE_LOOKUP, kNode).name("missing"));
  EXPECT_EQ(r.as<fuse_entry_out>().nodeid, 0u);
  EXPECT_EQ(r.as<fuse_entry_out>().entry_valid, p.timeout_s);

  r = send(RequestBuilder(FUSE_OPEN, kNode).add(fuse_open_in{.flags = O_RDONLY}));
  EXPECT_EQ(r.as<fuse_open_out>().open_flags, p.file_flags);
  r = send(RequestBuilder(FUSE_OPENDIR, kNode).add(fuse_open_in{.flags = O_RDONLY}));
  EXPECT_EQ(r.as<fuse_open_out>().open_flags & FOPEN_CACHE_DIR, p.dir_flags & FOPEN_CACHE_DIR);
  EXPECT_EQ(r.as<fuse_open_out>().open_flags, p.dir_flags);

  // INIT: READDIRPLUS only when the guest may cache; AUTO_INVAL_DATA only in auto.
  ASSERT_TRUE(fake.negotiated.has_value());
  EXPECT_EQ((fake.negotiated->flags & FUSE_DO_READDIRPLUS) != 0,
            p.mode != fs::CacheMode::kNone && p.mode != fs::CacheMode::kShared);
  EXPECT_EQ((fake.negotiated->flags & FUSE_AUTO_INVAL_DATA) != 0, p.mode == fs::CacheMode::kAuto);
}

INSTANTIATE_TEST_SUITE_P(
    Modes, CacheModeTest,
    ::testing::Values(
        CacheCase{"none", fs::CacheMode::kNone, 0, FOPEN_DIRECT_IO, 0},
        CacheCase{"metadata", fs::CacheMode::kMetadata, 86400, FOPEN_DIRECT_IO,
                  FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE},
        CacheCase{"auto", fs::CacheMode::kAuto, 1, 0, 0},
        CacheCase{"always", fs::CacheMode::kAlways, 86400, FOPEN_KEEP_CACHE,
                  FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE},
        // Shared versions not negotiated: exactly cache=none.
        CacheCase{"shared", fs::CacheMode::kShared, 0, FOPEN_DIRECT_IO, 0}),
    [](const ::testing::TestParamInfo<CacheCase>& info) { return info.param.name; });

TEST(CachePolicyTest, SharedIgnoresTimeoutOverride) {
  // -o timeout= must not make an unnegotiated shared session cache anything.
  fs::CachePolicy shared(fs::CacheMode::kShared, 5'000'000'000);
  EXPECT_EQ(shared.entry_timeout_ns(), 0u);
  EXPECT_EQ(shared.attr_timeout_ns(), 0u);
  EXPECT_EQ(fs::ParseCacheMode("shared"), fs::CacheMode::kShared);
  EXPECT_EQ(fs::CacheModeName(fs::CacheMode::kShared), "shared");
}

TEST(CachePolicyTest, DirectIoRequestedWins) {
  for (auto mode : {fs::CacheMode::kNone, fs::CacheMode::kMetadata, fs::CacheMode::kAuto,
                    fs::CacheMode::kAlways}) {
    EXPECT_EQ(fs::CachePolicy(mode).file_open_flags(true), static_cast<uint32_t>(FOPEN_DIRECT_IO));
  }
  EXPECT_EQ(fs::CachePolicy(fs::CacheMode::kAuto, 5'000'000'000).entry_timeout_ns(),
            5'000'000'000u);
}

// ---------------------------------------------------------------------------------------------
// Per-opcode counters

TEST_F(OpTest, StatsCountRequestsAndErrors) {
  const auto& stats = server.stats();
  EXPECT_EQ(stats.requests(FUSE_INIT), 1u);
  EXPECT_EQ(stats.errors(FUSE_INIT), 0u);

  send(RequestBuilder(FUSE_LOOKUP, kNode).name("a"));
  send(RequestBuilder(FUSE_LOOKUP, kNode).name("b"));
  fake.fail("lookup", ENOENT);
  send(RequestBuilder(FUSE_LOOKUP, kNode).name("c"));
  send(RequestBuilder(FUSE_LOOKUP, kNode).name(".."));  // malformed: an error too
  EXPECT_EQ(stats.requests(FUSE_LOOKUP), 4u);
  EXPECT_EQ(stats.errors(FUSE_LOOKUP), 2u);

  send(RequestBuilder(FUSE_GETATTR, kNode).add(fuse_getattr_in{}));
  EXPECT_EQ(stats.requests(FUSE_GETATTR), 1u);
  EXPECT_EQ(stats.errors(FUSE_GETATTR), 0u);

  send_expect_no_reply(RequestBuilder(FUSE_FORGET, kNode).add(fuse_forget_in{.nlookup = 1}));
  EXPECT_EQ(stats.requests(FUSE_FORGET), 1u);
  EXPECT_EQ(stats.errors(FUSE_FORGET), 0u);

  send(RequestBuilder(FUSE_IOCTL, kNode));
  EXPECT_EQ(stats.requests(FUSE_IOCTL), 1u);
  EXPECT_EQ(stats.errors(FUSE_IOCTL), 1u);

  EXPECT_EQ(stats.total(), 1u + 4 + 1 + 1 + 1);
  std::string table = stats.format_table();
  EXPECT_NE(table.find("LOOKUP"), std::string::npos) << table;
}

TEST_F(ServerTest, StatsCountRefusedBeforeInit) {
  send(RequestBuilder(FUSE_STATFS, kNode));
  EXPECT_EQ(server.stats().requests(FUSE_STATFS), 1u);
  EXPECT_EQ(server.stats().errors(FUSE_STATFS), 1u);
}

}  // namespace
}  // namespace svfs::testing

// ---------------------------------------------------------------------------------------------
// Shared versions: INIT negotiation and reply trailers (docs/protocol.md, "Shared versions").

namespace svfs::testing {
namespace {

constexpr uint32_t kSharedFlag2 = static_cast<uint32_t>(protocol::kInitSharedVersions >> 32);

fs::VersionTableId SampleTableId() {
  fs::VersionTableId id;
  for (size_t i = 0; i < id.uuid.size(); ++i) id.uuid[i] = static_cast<uint8_t>(0xa0 + i);
  id.generation = 0x0102030405060708ULL;
  return id;
}

protocol::VersionTrailer TrailerAt(const Reply& r, size_t offset) {
  protocol::VersionTrailer t{};
  EXPECT_GE(r.payload_size(), offset + sizeof(t));
  if (r.payload_size() >= offset + sizeof(t)) std::memcpy(&t, r.payload() + offset, sizeof(t));
  return t;
}

class SharedVersionsTest : public ServerTest {
 protected:
  Reply init_shared(bool offer = true) {
    fake.init_result |= protocol::kInitSharedVersions;
    return send(RequestBuilder(FUSE_INIT, 0, 1)
                    .add(InitIn(7, 38, kKernelFlags, offer ? kSharedFlag2 : 0)));
  }
};

TEST_F(SharedVersionsTest, InitAcceptsFlagAndNamesTheTable) {
  fake.table_id = SampleTableId();
  Reply r = init_shared();
  ASSERT_EQ(r.error(), 0);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_init_out));
  auto out = r.as<fuse_init_out>();
  EXPECT_EQ(out.flags2 & kSharedFlag2, kSharedFlag2);
  EXPECT_EQ(kSharedFlag2, 1u << 30);
  EXPECT_TRUE(server.shared_versions());
  // uuid at byte 40, generation at byte 56, unused[0] (byte 36) left zero.
  const uint8_t* raw = r.payload();
  EXPECT_EQ(std::memcmp(raw + 40, fake.table_id->uuid.data(), 16), 0);
  uint64_t generation = 0;
  std::memcpy(&generation, raw + 56, 8);
  EXPECT_EQ(generation, fake.table_id->generation);
  EXPECT_EQ(out.unused[0], 0u);
  EXPECT_TRUE(fake.negotiated->flags & protocol::kInitSharedVersions);
}

TEST_F(SharedVersionsTest, InitWithoutTableWithdrawsFlag) {
  Reply r = init_shared();  // the filesystem wants it but has no table (versiond down)
  ASSERT_EQ(r.error(), 0);
  auto out = r.as<fuse_init_out>();
  EXPECT_EQ(out.flags2 & kSharedFlag2, 0u);
  EXPECT_FALSE(server.shared_versions());
  for (uint32_t word : out.unused) EXPECT_EQ(word, 0u);
}

TEST_F(SharedVersionsTest, InitNotOfferedByGuestMeansNoVersions) {
  fake.table_id = SampleTableId();
  Reply r = init_shared(/*offer=*/false);  // an unpatched guest
  ASSERT_EQ(r.error(), 0);
  auto out = r.as<fuse_init_out>();
  EXPECT_EQ(out.flags2 & kSharedFlag2, 0u);
  for (uint32_t word : out.unused) EXPECT_EQ(word, 0u);
  EXPECT_FALSE(server.shared_versions());
  // Replies keep the standard sizes.
  fake.entry.attr.version = {9, 3};
  EXPECT_EQ(send(RequestBuilder(FUSE_LOOKUP, kNode).name("f")).payload_size(),
            sizeof(fuse_entry_out));
  fake.attr.version = {9, 3};
  EXPECT_EQ(send(RequestBuilder(FUSE_GETATTR, kNode).add(fuse_getattr_in{})).payload_size(),
            sizeof(fuse_attr_out));
}

class NegotiatedTest : public SharedVersionsTest {
 protected:
  void SetUp() override {
    SharedVersionsTest::SetUp();
    fake.table_id = SampleTableId();
    ASSERT_EQ(init_shared().error(), 0);
    ASSERT_TRUE(server.shared_versions());
    fake.entry.node = 42;
    fake.entry.attr.version = {1234, 56};
    fake.attr.version = {777, 88};
  }
};

TEST_F(NegotiatedTest, EntryRepliesCarryTrailer) {
  struct Case {
    const char* name;
    RequestBuilder request;
  };
  std::vector<Case> cases = {
      {"LOOKUP", RequestBuilder(FUSE_LOOKUP, kNode).name("f")},
      {"MKNOD", RequestBuilder(FUSE_MKNOD, kNode).add(fuse_mknod_in{.mode = S_IFREG | 0644}).name("n")},
      {"MKDIR", RequestBuilder(FUSE_MKDIR, kNode).add(fuse_mkdir_in{.mode = 0755}).name("d")},
      {"SYMLINK", RequestBuilder(FUSE_SYMLINK, kNode).name("l").name("target")},
      {"LINK", RequestBuilder(FUSE_LINK, kNode).add(fuse_link_in{.oldnodeid = 123}).name("h")},
  };
  for (auto& c : cases) {
    Reply r = send(c.request);
    ASSERT_EQ(r.error(), 0) << c.name;
    ASSERT_EQ(r.payload_size(), sizeof(fuse_entry_out) + sizeof(protocol::VersionTrailer)) << c.name;
    EXPECT_EQ(r.as<fuse_entry_out>().nodeid, 42u) << c.name;
    auto t = TrailerAt(r, sizeof(fuse_entry_out));
    EXPECT_EQ(t.version_index, 1234u) << c.name;
    EXPECT_EQ(t.version, 56) << c.name;
  }
}

TEST_F(NegotiatedTest, NegativeEntryCarriesZeroTrailer) {
  fake.negative_lookup = true;
  Reply r = send(RequestBuilder(FUSE_LOOKUP, kNode).name("missing"));
  ASSERT_EQ(r.error(), 0);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_entry_out) + 16);
  EXPECT_EQ(r.as<fuse_entry_out>().nodeid, 0u);
  auto t = TrailerAt(r, sizeof(fuse_entry_out));
  EXPECT_EQ(t.version_index, 0u);
  EXPECT_EQ(t.version, 0);
}

TEST_F(NegotiatedTest, AttrRepliesCarryTrailer) {
  Reply r = send(RequestBuilder(FUSE_GETATTR, kNode).add(fuse_getattr_in{}));
  ASSERT_EQ(r.error(), 0);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_attr_out) + 16);
  auto t = TrailerAt(r, sizeof(fuse_attr_out));
  EXPECT_EQ(t.version_index, 777u);
  EXPECT_EQ(t.version, 88);

  fuse_setattr_in in{};
  in.valid = FATTR_MODE;
  in.mode = 0600;
  r = send(RequestBuilder(FUSE_SETATTR, kNode).add(in));
  ASSERT_EQ(r.error(), 0);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_attr_out) + 16);
  EXPECT_EQ(TrailerAt(r, sizeof(fuse_attr_out)).version_index, 777u);
}

TEST_F(NegotiatedTest, CreateTrailerFollowsOpenOut) {
  fake.opened.handle = 99;
  Reply r = send(RequestBuilder(FUSE_CREATE, kNode)
                     .add(fuse_create_in{.flags = O_WRONLY | O_CREAT, .mode = 0644})
                     .name("new"));
  ASSERT_EQ(r.error(), 0);
  ASSERT_EQ(r.payload_size(), sizeof(fuse_entry_out) + sizeof(fuse_open_out) + 16);
  fuse_open_out open{};
  std::memcpy(&open, r.payload() + sizeof(fuse_entry_out), sizeof(open));
  EXPECT_EQ(open.fh, 99u);
  auto t = TrailerAt(r, sizeof(fuse_entry_out) + sizeof(fuse_open_out));
  EXPECT_EQ(t.version_index, 1234u);
  EXPECT_EQ(t.version, 56);
}

TEST_F(NegotiatedTest, ReaddirplusRecordsEndWithTrailer) {
  Reply r = send(RequestBuilder(FUSE_READDIRPLUS, kNode)
                     .add(fuse_read_in{.fh = 21, .offset = 0, .size = 4096}));
  ASSERT_EQ(r.error(), 0);
  ASSERT_FALSE(fake.dir_items.empty());
  // Walk the records: fuse_entry_out, fuse_dirent + name padded to 8, then the trailer.
  size_t pos = 0;
  size_t seen = 0;
  while (pos < r.payload_size()) {
    ASSERT_LE(pos + sizeof(fuse_entry_out) + FUSE_NAME_OFFSET, r.payload_size());
    fuse_entry_out entry{};
    std::memcpy(&entry, r.payload() + pos, sizeof(entry));
    DirentHeader dirent{};
    std::memcpy(&dirent, r.payload() + pos + sizeof(entry), FUSE_NAME_OFFSET);
    size_t record = sizeof(entry) + FUSE_DIRENT_ALIGN(FUSE_NAME_OFFSET + dirent.namelen);
    auto t = TrailerAt(r, pos + record);
    const auto& item = fake.dir_items.at(seen);
    ASSERT_EQ(dirent.namelen, item.name.size());
    if (item.name == "." || item.name == "..") {
      EXPECT_EQ(t.version_index, 0u);
    } else {
      EXPECT_EQ(t.version_index, 1234u + item.ino) << item.name;
      EXPECT_EQ(t.version, 56) << item.name;
    }
    pos += record + sizeof(protocol::VersionTrailer);
    EXPECT_EQ(pos % 8, 0u);
    ++seen;
  }
  EXPECT_EQ(pos, r.payload_size());
  EXPECT_EQ(seen, fake.dir_items.size());
}

TEST_F(NegotiatedTest, ReaddirplusCountsTrailerAgainstSize) {
  // Room for exactly two versioned records of 1-byte names, one byte short of three.
  size_t record = sizeof(fuse_entry_out) + 32 + sizeof(protocol::VersionTrailer);
  Reply r = send(RequestBuilder(FUSE_READDIRPLUS, kNode)
                     .add(fuse_read_in{.fh = 21, .size = static_cast<uint32_t>(3 * record - 1)}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(fake.dir_items_sent, 2u);
  EXPECT_EQ(r.payload_size(), 2 * record);
}

TEST_F(NegotiatedTest, PlainReaddirHasNoTrailers) {
  Reply r = send(RequestBuilder(FUSE_READDIR, kNode)
                     .add(fuse_read_in{.fh = 20, .offset = 0, .size = 4096}));
  ASSERT_EQ(r.error(), 0);
  EXPECT_EQ(ParseDirents(r, false).size(), fake.dir_items.size());
}

}  // namespace
}  // namespace svfs::testing
