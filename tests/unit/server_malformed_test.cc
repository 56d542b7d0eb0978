// Server: malformed input (short headers, length mismatches, truncated arguments, bad names,
// sizes beyond limits), the opcodes never answered, unsupported opcodes, and the rate-limited
// log of refusals.
#include "daemon/fuse/server.h"

#include <linux/fuse.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "protocol/fuse_opcodes.h"

#include <gtest/gtest.h>

#include "tests/unit/server_test_support.h"

namespace svfs::testing {
namespace {

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
                          BadName{"Dot", ".", true}, BadName{"DotDot", "..", true})),
    [](const ::testing::TestParamInfo<std::tuple<uint32_t, BadName>>& info) {
      return std::string(protocol::OpcodeName(std::get<0>(info.param))) + "_" +
             std::get<1>(info.param).label;
    });

// A name over NAME_MAX is the caller's mistake, answered as the host answers it (ENAMETOOLONG),
// not a malformed request: the kernel passes names of up to 1024 bytes through.
class LongNameTest : public OpTest, public ::testing::WithParamInterface<uint32_t> {};

TEST_P(LongNameTest, OverNameMaxIsEnametoolongAndNotMalformed) {
  const uint32_t opcode = GetParam();
  EXPECT_EQ(send(NameRequest(opcode, std::string(255, 'n'), true)).error(), 0);
  fake.calls.clear();
  uint64_t malformed = server.stats().malformed();
  for (size_t length : {256, 1024, 4000}) {
    expect_refused(NameRequest(opcode, std::string(length, 'n'), true), ENAMETOOLONG);
  }
  // Too long wins over the other faults, as on the host (the component is refused unread).
  expect_refused(NameRequest(opcode, std::string(200, 'a') + "/" + std::string(100, 'b'), true),
                 ENAMETOOLONG);
  EXPECT_EQ(server.stats().malformed(), malformed);
}

INSTANTIATE_TEST_SUITE_P(EntryNames, LongNameTest,
                         ::testing::Values(FUSE_LOOKUP, FUSE_UNLINK, FUSE_RMDIR, FUSE_MKDIR,
                                           FUSE_MKNOD, FUSE_CREATE, FUSE_SYMLINK, FUSE_LINK,
                                           FUSE_RENAME),
                         [](const ::testing::TestParamInfo<uint32_t>& info) {
                           return std::string(protocol::OpcodeName(info.param));
                         });

TEST_F(OpTest, LongSecondNamesAndSymlinkTargetsAreEnametoolong) {
  const std::string long_name(256, 'n');
  expect_refused(RequestBuilder(FUSE_RENAME, kNode).add(fuse_rename_in{.newdir = 9})
                     .name("ok").name(long_name), ENAMETOOLONG);
  expect_refused(RequestBuilder(FUSE_RENAME2, kNode).add(fuse_rename2_in{.newdir = 9})
                     .name("ok").name(long_name), ENAMETOOLONG);
  expect_refused(RequestBuilder(FUSE_RENAME2, kNode).add(fuse_rename2_in{.newdir = 9})
                     .name(long_name).name("ok"), ENAMETOOLONG);
  // A symlink target may be up to PATH_MAX - 1 bytes, as symlink(2) on the host allows.
  EXPECT_EQ(send(RequestBuilder(FUSE_SYMLINK, kNode).name("l").name(std::string(4095, 't')))
                .error(), 0);
  expect_refused(RequestBuilder(FUSE_SYMLINK, kNode).name("l").name(std::string(4096, 't')),
                 ENAMETOOLONG);
}

TEST_F(OpTest, RenameBadSecondNameRefused) {
  for (const std::string& bad : std::vector<std::string>{"", ".", "..", "x/y"}) {
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
  // Kept outside the request buffer, as vhost-user passes it.
  fs::SpanWriteSource payload("four");
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

TEST_F(OpTest, NotifyReplyHasNoReply) {
  send_expect_no_reply(RequestBuilder(FUSE_NOTIFY_REPLY, kNode).add(fuse_notify_retrieve_in{}));
  EXPECT_TRUE(fake.calls.empty());
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

}  // namespace
}  // namespace svfs::testing
