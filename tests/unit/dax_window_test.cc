// DaxWindow: which guest ranges reach the VMM, what the model keeps mapped, and that a mapped
// file stays open exactly as long as some part of it is mapped.
#include "daemon/fuse/dax_window.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <cerrno>
#include <vector>

#include <gtest/gtest.h>

#include "tests/unit/recording_dax_mapper.h"

namespace svfs::fuse {
namespace {

constexpr uint64_t kPage = DaxWindow::kAlignment;
constexpr uint64_t kWindow = 64 * kPage;

UniqueFd File() { return UniqueFd(::memfd_create("dax-window-test", MFD_CLOEXEC)); }
bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

class DaxWindowTest : public ::testing::Test {
 protected:
  svfs::testing::RecordingDaxMapper mapper;
  DaxWindow window{kWindow, mapper};
};

TEST_F(DaxWindowTest, AMappingInsideTheWindowReachesTheVmm) {
  ASSERT_TRUE(window.map({.file_offset = 2 * kPage, .window_offset = 4 * kPage,
                          .length = 8 * kPage, .writable = true},
                         File()));
  ASSERT_EQ(mapper.maps.size(), 1u);
  EXPECT_EQ(mapper.maps[0].file_offset, 2 * kPage);
  EXPECT_EQ(mapper.maps[0].window_offset, 4 * kPage);
  EXPECT_EQ(mapper.maps[0].length, 8 * kPage);
  EXPECT_TRUE(mapper.maps[0].writable);
  EXPECT_EQ(window.mapping_count(), 1u);
  // The last page of the window is inside it too.
  EXPECT_TRUE(window.map({.window_offset = kWindow - kPage, .length = kPage}, File()));
}

TEST_F(DaxWindowTest, RangesOutsideUnalignedOrOverflowingAreRefusedBeforeTheVmm) {
  const DaxMapping bad[] = {
      {.window_offset = kWindow, .length = kPage},                   // starts at the end
      {.window_offset = kWindow - kPage, .length = 2 * kPage},        // runs past the end
      {.window_offset = kPage, .length = ~uint64_t{0} - kPage + 1},   // offset + length wraps
      {.window_offset = ~uint64_t{0} - kPage + 1, .length = kPage},   // far outside
      {.window_offset = 1, .length = kPage},                          // unaligned offset
      {.window_offset = 0, .length = kPage + 1},                      // unaligned length
      {.file_offset = 7, .window_offset = 0, .length = kPage},        // unaligned file offset
      {.file_offset = ~uint64_t{0} - kPage + 1, .window_offset = 0, .length = kPage},  // past off_t
      {.window_offset = 0, .length = 0},                              // empty
  };
  for (const DaxMapping& mapping : bad) {
    auto status = window.map(mapping, File());
    ASSERT_FALSE(status) << mapping.window_offset << "+" << mapping.length;
    EXPECT_EQ(status.error(), EINVAL);
  }
  EXPECT_TRUE(mapper.maps.empty());
  EXPECT_EQ(window.mapping_count(), 0u);
}

TEST_F(DaxWindowTest, AMappingKeepsItsFileOpenUntilUnmapped) {
  UniqueFd file = File();
  const int fd = file.get();
  ASSERT_TRUE(window.map({.window_offset = 0, .length = 2 * kPage}, std::move(file)));
  EXPECT_TRUE(IsOpen(fd));
  // Unmapping half keeps the other half, and so the file.
  const DaxRange first{.window_offset = 0, .length = kPage};
  ASSERT_TRUE(window.unmap(std::span(&first, 1)));
  EXPECT_TRUE(IsOpen(fd));
  EXPECT_EQ(window.mapping_count(), 1u);
  const DaxRange second{.window_offset = kPage, .length = kPage};
  ASSERT_TRUE(window.unmap(std::span(&second, 1)));
  EXPECT_FALSE(IsOpen(fd));
  EXPECT_EQ(window.mapping_count(), 0u);
  ASSERT_EQ(mapper.unmaps.size(), 2u);
}

TEST_F(DaxWindowTest, ANewMappingReplacesWhatItOverlaps) {
  UniqueFd a = File();
  const int fd_a = a.get();
  ASSERT_TRUE(window.map({.window_offset = 0, .length = 4 * kPage}, std::move(a)));
  // Over the middle two pages: the old mapping is cut into a head and a tail.
  ASSERT_TRUE(window.map({.window_offset = kPage, .length = 2 * kPage}, File()));
  EXPECT_EQ(window.mapping_count(), 3u);
  EXPECT_TRUE(IsOpen(fd_a));
  // Over all of it: only the new one is left, and the first file is closed.
  ASSERT_TRUE(window.map({.window_offset = 0, .length = 4 * kPage}, File()));
  EXPECT_EQ(window.mapping_count(), 1u);
  EXPECT_FALSE(IsOpen(fd_a));
}

TEST_F(DaxWindowTest, AnUnmapWithOneBadRangeUnmapsNothing) {
  ASSERT_TRUE(window.map({.window_offset = 0, .length = kPage}, File()));
  const DaxRange ranges[] = {{.window_offset = 0, .length = kPage},
                             {.window_offset = kWindow, .length = kPage}};
  auto status = window.unmap(ranges);
  ASSERT_FALSE(status);
  EXPECT_EQ(status.error(), EINVAL);
  EXPECT_TRUE(mapper.unmaps.empty());
  EXPECT_EQ(window.mapping_count(), 1u);
}

TEST_F(DaxWindowTest, UnmappingWhatIsNotMappedIsNoError) {
  const DaxRange range{.window_offset = 8 * kPage, .length = kPage};
  EXPECT_TRUE(window.unmap(std::span(&range, 1)));
}

TEST_F(DaxWindowTest, AVmmFailureChangesNothingAndIsTheGuestsEio) {
  ASSERT_TRUE(window.map({.window_offset = 0, .length = kPage}, File()));
  mapper.fail = true;
  auto mapped = window.map({.window_offset = 0, .length = kPage}, File());
  ASSERT_FALSE(mapped);
  EXPECT_EQ(mapped.error(), EIO);
  const DaxRange range{.window_offset = 0, .length = kPage};
  auto unmapped = window.unmap(std::span(&range, 1));
  ASSERT_FALSE(unmapped);
  EXPECT_EQ(unmapped.error(), EIO);
  EXPECT_EQ(window.mapping_count(), 1u);
}

TEST_F(DaxWindowTest, ClearDropsEveryMappingAndItsFile) {
  UniqueFd file = File();
  const int fd = file.get();
  ASSERT_TRUE(window.map({.window_offset = 0, .length = kPage}, std::move(file)));
  window.clear();
  EXPECT_EQ(window.mapping_count(), 0u);
  EXPECT_FALSE(IsOpen(fd));
  EXPECT_TRUE(mapper.unmaps.empty());  // the VMM's window went with the device
}

}  // namespace
}  // namespace svfs::fuse
