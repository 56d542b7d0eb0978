// Shared by the svfs::fuse::Server unit tests (tests/unit/server_*_test.cc): a fixture that feeds
// raw request bytes, as the kernel lays them out, to a server over a recording fake filesystem,
// and helpers to build INIT and to parse READDIR(PLUS) replies.
//
// Not in an anonymous namespace: gtest requires every TEST_F of a suite (ServerTest, OpTest) to
// use one fixture type, and the suites span several files.
#pragma once

#include <linux/fuse.h>
#include <spdlog/spdlog.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "daemon/fuse/server.h"
#include "tests/unit/fake_filesystem.h"
#include "tests/unit/request_builder.h"

namespace svfs::testing {

inline constexpr uint64_t kNode = 5;
inline constexpr uint32_t kMiB = 1024 * 1024;

inline fuse_init_in InitIn(uint32_t major, uint32_t minor, uint32_t flags, uint32_t flags2 = 0) {
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
    server.handle(request, external, channel, nullptr, dax);
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
  fuse::DaxWindow* dax = nullptr;  // the transport's DAX window, passed with every request
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
inline std::vector<ParsedDirent> ParseDirents(const Reply& r, bool plus) {
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

}  // namespace svfs::testing
