// SETUPMAPPING and REMOVEMAPPING from raw bytes: what reaches the filesystem and the window, and
// what is refused before (the window's own rule is dax_window_test.cc's).
#include <linux/fuse.h>

#include <vector>

#include "tests/unit/recording_dax_mapper.h"
#include "tests/unit/server_test_support.h"

namespace svfs::testing {
namespace {

constexpr uint64_t kPage = fuse::DaxWindow::kAlignment;
constexpr uint64_t kNoHandle = ~uint64_t{0};

class DaxServerTest : public OpTest {
 protected:
  void SetUp() override {
    dax = &window;
    OpTest::SetUp();
  }
  static RequestBuilder Setup(uint64_t fh, uint64_t foffset, uint64_t moffset, uint64_t len,
                              uint64_t flags) {
    fuse_setupmapping_in in{};
    in.fh = fh;
    in.foffset = foffset;
    in.len = len;
    in.flags = flags;
    in.moffset = moffset;
    return std::move(RequestBuilder(FUSE_SETUPMAPPING, kNode, 2).add(in));
  }
  static RequestBuilder Remove(uint32_t count, const std::vector<fuse_removemapping_one>& ranges) {
    RequestBuilder b(FUSE_REMOVEMAPPING, kNode, 3);
    b.add(fuse_removemapping_in{.count = count});
    for (const auto& r : ranges) b.add(r);
    return b;
  }

  RecordingDaxMapper mapper;
  fuse::DaxWindow window{64 * kPage, mapper};
};

TEST_F(ServerTest, WithAWindowInitAdvertisesThePageAlignment) {
  RecordingDaxMapper mapper;
  fuse::DaxWindow window(64 * kPage, mapper);
  dax = &window;
  Reply r = send(RequestBuilder(FUSE_INIT, 0, 1).add(InitIn(7, 38, kKernelFlags | FUSE_MAP_ALIGNMENT)));
  ASSERT_EQ(r.error(), 0);
  ASSERT_GE(r.payload_size(), sizeof(fuse_init_out));
  fuse_init_out out;
  std::memcpy(&out, r.payload(), sizeof(out));
  EXPECT_TRUE(out.flags & FUSE_MAP_ALIGNMENT);
  EXPECT_EQ(out.map_alignment, 12) << "log2 of the 4 KiB pages mappings are aligned to";
}

TEST_F(DaxServerTest, LinuxsMappingWithoutHandleReachesTheWindow) {
  Reply r = send(Setup(kNoHandle, 2 * kPage, 4 * kPage, 8 * kPage,
                       FUSE_SETUPMAPPING_FLAG_READ | FUSE_SETUPMAPPING_FLAG_WRITE));
  EXPECT_EQ(r.error(), 0);
  ASSERT_EQ(fake.count("dax_file"), 1u);
  EXPECT_EQ(fake.last().node, kNode);
  EXPECT_FALSE(fake.last().opt_handle) << "fh -1 means no handle";
  EXPECT_EQ(fake.last().flags, 1u) << "writable";
  ASSERT_EQ(mapper.maps.size(), 1u);
  EXPECT_EQ(mapper.maps[0].file_offset, 2 * kPage);
  EXPECT_EQ(mapper.maps[0].window_offset, 4 * kPage);
  EXPECT_EQ(mapper.maps[0].length, 8 * kPage);
  EXPECT_TRUE(mapper.maps[0].writable);
}

TEST_F(DaxServerTest, AHandleIsPassedOnAndItsErrorComesBack) {
  fake.fail("dax_file", EISDIR);
  EXPECT_EQ(send(Setup(99, 0, 0, kPage, FUSE_SETUPMAPPING_FLAG_READ)).error(), -EISDIR);
  EXPECT_EQ(fake.last().opt_handle, std::optional<fs::HandleId>(99));
  EXPECT_TRUE(mapper.maps.empty());
}

// A range the window refuses is refused before the file is opened (expect_refused checks that
// the filesystem is not called): a guest cannot make the host open files for nothing.
TEST_F(DaxServerTest, RangesTheWindowRefusesNeverOpenTheFile) {
  expect_refused(Setup(kNoHandle, 0, 64 * kPage, kPage, FUSE_SETUPMAPPING_FLAG_READ));  // past the end
  expect_refused(Setup(kNoHandle, 0, 63 * kPage, 2 * kPage, FUSE_SETUPMAPPING_FLAG_READ));  // straddles it
  expect_refused(Setup(kNoHandle, 0, kPage / 2, kPage, FUSE_SETUPMAPPING_FLAG_READ));  // unaligned
  expect_refused(Setup(kNoHandle, 1, 0, kPage, FUSE_SETUPMAPPING_FLAG_READ));  // file offset
  expect_refused(Setup(kNoHandle, ~uint64_t{0} - kPage + 1, 0, kPage, FUSE_SETUPMAPPING_FLAG_READ));
  expect_refused(Setup(kNoHandle, 0, 0, 0, FUSE_SETUPMAPPING_FLAG_READ));  // empty
  EXPECT_TRUE(mapper.maps.empty());
}

TEST_F(DaxServerTest, FlagsOtherThanReadOrReadWriteAreRefused) {
  expect_refused(Setup(kNoHandle, 0, 0, kPage, 0));
  expect_refused(Setup(kNoHandle, 0, 0, kPage, FUSE_SETUPMAPPING_FLAG_WRITE));
  expect_refused(Setup(kNoHandle, 0, 0, kPage, FUSE_SETUPMAPPING_FLAG_READ | 8));
}

TEST_F(DaxServerTest, RemoveMappingCountsMustMatchAndStayBounded) {
  const fuse_removemapping_one one{.moffset = 0, .len = kPage};
  EXPECT_EQ(send(Remove(2, {one, {.moffset = kPage, .len = kPage}})).error(), 0);
  EXPECT_EQ(mapper.unmaps.size(), 2u);
  expect_refused(Remove(0, {}));
  expect_refused(Remove(2, {one}));        // fewer entries than counted
  expect_refused(Remove(1, {one, one}));   // more
  expect_refused(Remove(257, std::vector<fuse_removemapping_one>(257, one)));
  expect_refused(RequestBuilder(FUSE_REMOVEMAPPING, kNode, 4));  // no fuse_removemapping_in
  EXPECT_EQ(mapper.unmaps.size(), 2u);
}

TEST_F(ServerTest, WithoutAWindowDaxIsNotAgreedAndNotServed) {
  Reply r = send(RequestBuilder(FUSE_INIT, 0, 1).add(InitIn(7, 38, kKernelFlags | FUSE_MAP_ALIGNMENT)));
  ASSERT_EQ(r.error(), 0);
  ASSERT_GE(r.payload_size(), sizeof(fuse_init_out));
  fuse_init_out out;
  std::memcpy(&out, r.payload(), sizeof(out));
  EXPECT_FALSE(out.flags & FUSE_MAP_ALIGNMENT);
  EXPECT_EQ(out.map_alignment, 0);
  fuse_setupmapping_in in{.fh = kNoHandle, .len = kPage, .flags = FUSE_SETUPMAPPING_FLAG_READ};
  expect_refused(RequestBuilder(FUSE_SETUPMAPPING, kNode, 2).add(in), ENOSYS);
}

}  // namespace
}  // namespace svfs::testing
