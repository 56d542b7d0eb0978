// protocol::RequestReader: each read either yields the field or says what was wrong with the
// bytes, and a failed read consumes nothing.
#include "protocol/fuse_request.h"

#include <linux/fuse.h>

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace svfs::protocol {
namespace {

std::vector<uint8_t> Bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

TEST(RequestReaderTest, StructShorterThanItsSizeIsTruncated) {
  std::vector<uint8_t> bytes(sizeof(fuse_open_in) - 1, 0);
  RequestReader reader(bytes);
  auto in = reader.read<fuse_open_in>();
  ASSERT_FALSE(in.has_value());
  EXPECT_EQ(in.error(), DecodeError::kTruncated);
  EXPECT_EQ(reader.remaining(), bytes.size());
  EXPECT_TRUE(reader.read<uint32_t>().has_value());
}

TEST(RequestReaderTest, PrefixReadsZeroTheMissingTail) {
  fuse_init_in full{};
  full.major = 7;
  full.minor = 31;
  full.flags2 = 0xffffffff;  // beyond the prefix
  std::vector<uint8_t> bytes(reinterpret_cast<const uint8_t*>(&full),
                             reinterpret_cast<const uint8_t*>(&full) + sizeof(full));
  RequestReader reader(bytes);
  auto in = reader.read_prefix<fuse_init_in>(16);
  ASSERT_TRUE(in.has_value());
  EXPECT_EQ(in->minor, 31u);
  EXPECT_EQ(in->flags2, 0u);
  EXPECT_EQ(reader.read_prefix<fuse_init_in>(sizeof(fuse_init_in)).error(),
            DecodeError::kTruncated);
  EXPECT_EQ(reader.read_prefix<fuse_open_in>(sizeof(fuse_open_in) + 1).error(),
            DecodeError::kTooLarge);
}

TEST(RequestReaderTest, BytesBeyondTheEndAreTruncated) {
  auto bytes = Bytes("abc");
  RequestReader reader(bytes);
  EXPECT_EQ(reader.read_bytes(4).error(), DecodeError::kTruncated);
  auto all = reader.read_bytes(3);
  ASSERT_TRUE(all.has_value());
  EXPECT_EQ(all->size(), 3u);
  EXPECT_EQ(reader.remaining(), 0u);
}

TEST(RequestReaderTest, NameWithoutNulIsTruncatedAndARefusedNameIsBad) {
  auto unterminated = Bytes("name");
  RequestReader no_nul(unterminated);
  EXPECT_EQ(no_nul.read_name(NameRule::kEntry).error(), DecodeError::kTruncated);

  auto two = Bytes(std::string("..\0ok\0", 6));
  RequestReader reader(two);
  auto dotdot = reader.read_name(NameRule::kEntry);
  ASSERT_FALSE(dotdot.has_value());
  EXPECT_EQ(dotdot.error(), DecodeError::kBadName);
  EXPECT_EQ(reader.remaining(), two.size()) << "a refused name was consumed";
  // The same bytes are fine where ".." is no entry name (an xattr name may be anything).
  auto xattr = reader.read_name(NameRule::kXattr);
  ASSERT_TRUE(xattr.has_value());
  EXPECT_EQ(*xattr, "..");
  auto next = reader.read_name(NameRule::kEntry);
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(*next, "ok");
  EXPECT_EQ(reader.remaining(), 0u);
}

TEST(RequestReaderTest, OverlongNamesAreTooLongNotBad) {
  auto bytes = Bytes(std::string(256, 'n') + '\0');
  RequestReader entry(bytes);
  EXPECT_EQ(entry.read_name(NameRule::kEntry).error(), DecodeError::kNameTooLong);
  EXPECT_EQ(entry.remaining(), bytes.size());
  RequestReader xattr(bytes);
  EXPECT_EQ(xattr.read_name(NameRule::kXattr).error(), DecodeError::kNameTooLong);
  EXPECT_EQ(NameTooLongErrno(NameRule::kEntry), ENAMETOOLONG);
  EXPECT_EQ(NameTooLongErrno(NameRule::kXattr), ERANGE);
  EXPECT_EQ(NameTooLongErrno(NameRule::kSymlink), ENAMETOOLONG);
  // As a symlink target 256 bytes are fine.
  RequestReader target(bytes);
  EXPECT_TRUE(target.read_name(NameRule::kSymlink).has_value());
}

}  // namespace
}  // namespace svfs::protocol
