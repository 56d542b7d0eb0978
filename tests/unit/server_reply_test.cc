// Server: reply encoding (timeouts, attributes, error replies), what an undelivered reply gives
// back, the reply fields of each cache mode and the per-opcode counters.
#include "daemon/fuse/server.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "daemon/fs/cache_policy.h"

#include <gtest/gtest.h>

#include "tests/unit/server_test_support.h"

namespace svfs::testing {
namespace {

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
// Undelivered replies

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

// A transport that read the clock as it took a request up passes that time: the request's
// duration counts from there, and handle() returns when it was done (the transport's next read).
TEST_F(OpTest, RequestDurationCountsFromWhenTheTransportTookItUp) {
  const auto before = fuse::Server::Clock::now();
  const auto started = before - std::chrono::milliseconds(50);
  CapturingChannel channel;
  const auto done = server.handle(RequestBuilder(FUSE_GETATTR, kNode).add(fuse_getattr_in{}).build(),
                                  nullptr, channel, nullptr, nullptr, started);
  ASSERT_EQ(channel.replies.size(), 1u);
  EXPECT_GE(done, before);
  EXPECT_LE(done, fuse::Server::Clock::now());

  metrics::Exposition out;
  server.stats().write_metrics(out);
  const std::string key = "svfsd_request_duration_seconds_sum{opcode=\"GETATTR\"} ";
  const size_t at = out.text().find(key);
  ASSERT_NE(at, std::string::npos) << out.text();
  const double seconds = std::stod(out.text().substr(at + key.size()));
  EXPECT_GE(seconds, 0.050);
  EXPECT_LT(seconds, 10.0);
}

TEST_F(ServerTest, StatsCountRefusedBeforeInit) {
  send(RequestBuilder(FUSE_STATFS, kNode));
  EXPECT_EQ(server.stats().requests(FUSE_STATFS), 1u);
  EXPECT_EQ(server.stats().errors(FUSE_STATFS), 1u);
}

}  // namespace
}  // namespace svfs::testing
