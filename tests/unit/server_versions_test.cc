// Server: shared versions (docs/protocol.md, "Shared versions"): INIT negotiation and the
// VersionTrailer that entry, attr, CREATE and READDIRPLUS replies carry.
#include "daemon/fuse/server.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/stat.h>

#include <cstring>
#include <sstream>
#include <vector>

#include "protocol/shared_versions.h"
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <gtest/gtest.h>

#include "tests/unit/server_test_support.h"

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

// --log-level trace: each request, the name looked up and the version a reply carried, the
// evidence for why a guest revalidated; nothing of it at the default level.
TEST_F(NegotiatedTest, TraceLevelLogsRequestsNamesAndRepliedVersions) {
  std::ostringstream log;
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>(
      "trace", std::make_shared<spdlog::sinks::ostream_sink_mt>(log));
  logger->set_pattern("%v");
  spdlog::set_default_logger(logger);
  logger->set_level(spdlog::level::info);
  send(RequestBuilder(FUSE_LOOKUP, kNode).name("quiet"));
  EXPECT_EQ(log.str(), "");
  logger->set_level(spdlog::level::trace);
  send(RequestBuilder(FUSE_LOOKUP, kNode).name("f"));
  send(RequestBuilder(FUSE_GETATTR, kNode).add(fuse_getattr_in{}));
  spdlog::set_default_logger(previous);
  const std::string text = log.str();
  EXPECT_NE(text.find("request LOOKUP unique"), std::string::npos) << text;
  EXPECT_NE(text.find("lookup 'f' in node " + std::to_string(kNode)), std::string::npos) << text;
  EXPECT_NE(text.find("entry node 42 slot 1234 version 56"), std::string::npos) << text;
  EXPECT_NE(text.find("attr node " + std::to_string(kNode) + " slot 777 version 88"),
            std::string::npos) << text;
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
