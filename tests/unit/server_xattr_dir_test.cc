// Server: the xattr opcodes and directory listing (OPENDIR, READDIR, READDIRPLUS): argument
// layouts, size limits and the packing of dirent records.
#include "daemon/fuse/server.h"

#include <fcntl.h>
#include <linux/fuse.h>
#include <sys/xattr.h>

#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "tests/unit/server_test_support.h"

namespace svfs::testing {
namespace {

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
  expect_refused(RequestBuilder(FUSE_GETXATTR, kNode).add(fuse_getxattr_in{.size = 0}).name(""));
  expect_refused(Setxattr("", "v", 0));
  expect_refused(RequestBuilder(FUSE_GETXATTR, kNode)
                     .add(fuse_getxattr_in{.size = 65537})
                     .name("user.x"));
}

// setxattr(2) & co. on Linux refuse a name over XATTR_NAME_MAX (255) with ERANGE; a guest
// kernel never sends one, but a hostile one gets the host's answer, never the filesystem.
TEST_F(OpTest, XattrNamesOver255BytesAreErange) {
  const std::string longest = "user." + std::string(250, 'x');
  const std::string too_long = longest + "y";
  EXPECT_EQ(send(RequestBuilder(FUSE_REMOVEXATTR, kNode).name(longest)).error(), 0);
  EXPECT_EQ(fake.last().name, longest);
  fake.calls.clear();
  expect_refused(RequestBuilder(FUSE_REMOVEXATTR, kNode).name(too_long), ERANGE);
  expect_refused(RequestBuilder(FUSE_GETXATTR, kNode).add(fuse_getxattr_in{.size = 0})
                     .name(too_long), ERANGE);
  expect_refused(Setxattr(too_long, "v", 0), ERANGE);
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

}  // namespace
}  // namespace svfs::testing
