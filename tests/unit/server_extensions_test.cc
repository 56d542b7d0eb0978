// Request extensions (fuse_in_header.total_extlen): FUSE_EXT_GROUPS on creations, as a 6.3+
// kernel sends it after INIT agreed on FUSE_CREATE_SUPP_GROUP, fed as raw bytes.
#include <sys/stat.h>

#include "tests/unit/server_test_support.h"

namespace svfs::testing {
namespace {

// An extension area of `records` (each a FUSE_EXT_GROUPS record of those groups, or for an
// empty list a record of another type), 8-byte aligned as the kernel lays it out.
std::string Extensions(const std::vector<std::vector<uint32_t>>& records) {
  std::string out;
  for (const auto& groups : records) {
    const uint32_t body = groups.empty() ? 8 : 4 + 4 * static_cast<uint32_t>(groups.size());
    const uint32_t size = (8 + body + 7) / 8 * 8;
    std::string record(size, '\0');
    fuse_ext_header header{.size = size, .type = groups.empty() ? 7u : protocol::kExtGroups};
    std::memcpy(record.data(), &header, sizeof(header));
    if (!groups.empty()) {
      const uint32_t count = static_cast<uint32_t>(groups.size());
      std::memcpy(record.data() + 8, &count, 4);
      std::memcpy(record.data() + 12, groups.data(), 4 * groups.size());
    }
    out += record;
  }
  return out;
}

// `builder`'s request with `extensions` appended and total_extlen saying so (or `extlen`).
std::vector<uint8_t> WithExtensions(RequestBuilder builder, const std::string& extensions,
                                    std::optional<uint16_t> extlen = std::nullopt) {
  builder.raw(extensions);
  std::vector<uint8_t> bytes = builder.build();
  const uint16_t units = extlen.value_or(static_cast<uint16_t>(extensions.size() / 8));
  std::memcpy(bytes.data() + offsetof(fuse_in_header, total_extlen), &units, sizeof(units));
  return bytes;
}

TEST_F(OpTest, CreationsCarryTheGroupsOfTheirExtension) {
  const std::string ext = Extensions({{4242}});
  struct Case {
    const char* op;
    RequestBuilder request;
  };
  std::vector<Case> cases;
  cases.push_back({"create", RequestBuilder(FUSE_CREATE, kNode)
                                 .add(fuse_create_in{.flags = O_WRONLY, .mode = S_IFREG | 0644})
                                 .name("f")});
  cases.push_back({"mkdir", RequestBuilder(FUSE_MKDIR, kNode).add(fuse_mkdir_in{.mode = 0755})
                                .name("d")});
  cases.push_back({"mknod", RequestBuilder(FUSE_MKNOD, kNode)
                                .add(fuse_mknod_in{.mode = S_IFIFO | 0644})
                                .name("p")});
  cases.push_back({"symlink", RequestBuilder(FUSE_SYMLINK, kNode).name("l").name("target")});
  cases.push_back({"tmpfile", RequestBuilder(FUSE_TMPFILE, kNode)
                                  .add(fuse_create_in{.flags = O_RDWR, .mode = S_IFREG | 0600})
                                  .name("/")});
  for (const Case& c : cases) {
    Reply r = send(WithExtensions(c.request, ext));
    EXPECT_EQ(r.error(), 0) << c.op;
    ASSERT_FALSE(fake.calls.empty());
    EXPECT_EQ(fake.last().op, c.op);
    EXPECT_EQ(fake.last().context.request_groups, std::vector<uint32_t>{4242}) << c.op;
  }
  // The names were read without the extension: the symlink's target is intact.
  send(WithExtensions(RequestBuilder(FUSE_SYMLINK, kNode).name("l").name("target"), ext));
  EXPECT_EQ(fake.last().name2, "target");
}

TEST_F(OpTest, GroupsOfSeveralRecordsAddUpAndOtherTypesAreSkipped) {
  send(WithExtensions(RequestBuilder(FUSE_MKDIR, kNode).add(fuse_mkdir_in{.mode = 0755}).name("d"),
                      Extensions({{}, {10, 11, 12}, {}, {13}})));
  EXPECT_EQ(fake.last().op, "mkdir");
  EXPECT_EQ(fake.last().context.request_groups, (std::vector<uint32_t>{10, 11, 12, 13}));
}

TEST_F(OpTest, GroupsOnOtherRequestsCountForNothing) {
  // The kernel sends them only with creations; on an UNLINK they would widen what the caller
  // may do. The request is still served, its arguments read without the extension.
  Reply r = send(WithExtensions(RequestBuilder(FUSE_UNLINK, kNode).name("victim"),
                                Extensions({{4242}})));
  EXPECT_EQ(r.error(), 0);
  EXPECT_EQ(fake.last().op, "unlink");
  EXPECT_EQ(fake.last().name, "victim");
  EXPECT_TRUE(fake.last().context.request_groups.empty());
}

TEST_F(OpTest, MalformedExtensionsAreRefused) {
  auto mkdir = [] {
    return RequestBuilder(FUSE_MKDIR, kNode).add(fuse_mkdir_in{.mode = 0755}).name("d");
  };
  // total_extlen beyond the request.
  expect_refused(WithExtensions(mkdir(), Extensions({{1}}), 100));
  // A record whose size overruns the area.
  std::string overrun = Extensions({{1}});
  const uint32_t big = 64;
  std::memcpy(overrun.data(), &big, 4);
  expect_refused(WithExtensions(mkdir(), overrun));
  // A record size that is not a multiple of 8, or too small for its header.
  std::string odd = Extensions({{1}});
  const uint32_t twelve = 12;
  std::memcpy(odd.data(), &twelve, 4);
  expect_refused(WithExtensions(mkdir(), odd));
  std::string tiny = Extensions({{1}});
  const uint32_t zero = 0;
  std::memcpy(tiny.data(), &zero, 4);
  expect_refused(WithExtensions(mkdir(), tiny));
  // nr_groups beyond its record, and beyond NGROUPS_MAX.
  std::string lying = Extensions({{1}});
  const uint32_t many = 3;
  std::memcpy(lying.data() + 8, &many, 4);
  expect_refused(WithExtensions(mkdir(), lying));
  std::string huge = Extensions({{1}});
  const uint32_t too_many = protocol::kMaxExtGroups + 1;
  std::memcpy(huge.data() + 8, &too_many, 4);
  expect_refused(WithExtensions(mkdir(), huge));
  // The extension area swallowing the name leaves an argument-less MKDIR.
  expect_refused(WithExtensions(RequestBuilder(FUSE_MKDIR, kNode).add(fuse_mkdir_in{.mode = 0755}),
                                Extensions({{1}})));
}

TEST(ExtensionGroupsTest, EmptyAreaHasNoGroups) {
  auto groups = protocol::ParseExtensionGroups({});
  ASSERT_TRUE(groups.has_value());
  EXPECT_TRUE(groups->empty());
}

}  // namespace
}  // namespace svfs::testing
