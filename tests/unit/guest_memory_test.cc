#include "daemon/transport/vhost_user/guest_memory.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <limits>

namespace svfs::transport::vhost_user {
namespace {

UniqueFd MakeMemfd(size_t size) {
  UniqueFd fd(::memfd_create("guest", MFD_CLOEXEC));
  EXPECT_TRUE(fd.valid());
  EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(size)), 0);
  return fd;
}

TEST(GuestMemoryTest, TranslatesInsideOneRegionOnly) {
  UniqueFd fd = MakeMemfd(2 * 4096);
  GuestMemory memory;
  // The region is the second page of the fd.
  ASSERT_TRUE(memory.add({.guest_phys_addr = 0x100000, .memory_size = 4096,
                          .userspace_addr = 0x7f0000000000, .mmap_offset = 4096},
                         fd.get()));
  EXPECT_EQ(memory.size(), 1u);
  ASSERT_EQ(::pwrite(fd.get(), "hello", 5, 4096 + 16), 5);
  uint8_t* p = memory.guest_to_host(0x100010, 5);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(std::memcmp(p, "hello", 5), 0);
  EXPECT_EQ(memory.frontend_to_host(0x7f0000000010, 5), p);
  EXPECT_NE(memory.guest_to_host(0x100000, 4096), nullptr);
  EXPECT_NE(memory.guest_to_host(0x101000, 0), nullptr);  // empty range at the end
  EXPECT_EQ(memory.guest_to_host(0x100000, 4097), nullptr);
  EXPECT_EQ(memory.guest_to_host(0xfffff, 2), nullptr);
  EXPECT_EQ(memory.guest_to_host(0x100fff, 2), nullptr);
  EXPECT_EQ(memory.guest_to_host(0x100010, std::numeric_limits<uint64_t>::max()), nullptr);
  EXPECT_EQ(memory.guest_to_host(std::numeric_limits<uint64_t>::max(), 2), nullptr);
  EXPECT_EQ(memory.frontend_to_host(0x100010, 5), nullptr);  // wrong address space
}

TEST(GuestMemoryTest, RangeSpanningTwoAdjacentRegionsIsRefused) {
  UniqueFd a = MakeMemfd(4096), b = MakeMemfd(4096);
  GuestMemory memory;
  ASSERT_TRUE(memory.add({0x0, 4096, 0x10000, 0}, a.get()));
  ASSERT_TRUE(memory.add({0x1000, 4096, 0x20000, 0}, b.get()));
  EXPECT_NE(memory.guest_to_host(0xff0, 16), nullptr);
  EXPECT_NE(memory.guest_to_host(0x1000, 16), nullptr);
  EXPECT_EQ(memory.guest_to_host(0xff8, 16), nullptr);
}

TEST(GuestMemoryTest, PiecesWalkARangeAcrossAdjacentRegions) {
  UniqueFd a = MakeMemfd(4096), b = MakeMemfd(4096);
  GuestMemory memory;
  ASSERT_TRUE(memory.add({0x0, 4096, 0x10000, 0}, a.get()));
  ASSERT_TRUE(memory.add({0x1000, 4096, 0x20000, 0}, b.get()));
  GuestMemory::Piece first = memory.guest_piece(0xff8, 16);
  EXPECT_EQ(first.host, memory.guest_to_host(0xff8, 8));
  EXPECT_EQ(first.length, 8u);
  GuestMemory::Piece second = memory.guest_piece(0x1000, 8);
  EXPECT_EQ(second.host, memory.guest_to_host(0x1000, 8));
  EXPECT_EQ(second.length, 8u);
  EXPECT_EQ(memory.guest_piece(0x1ff0, 64).length, 16u);  // the rest is outside guest memory
  EXPECT_EQ(memory.guest_piece(0x2000, 1).host, nullptr);
  EXPECT_EQ(memory.guest_piece(std::numeric_limits<uint64_t>::max(), 1).host, nullptr);
}

TEST(GuestMemoryTest, RejectsBadRegionsAndRemoves) {
  UniqueFd fd = MakeMemfd(4096);
  GuestMemory memory;
  EXPECT_EQ(memory.add({0x0, 0, 0x10000, 0}, fd.get()).error(), EINVAL);
  EXPECT_EQ(memory.add({std::numeric_limits<uint64_t>::max() - 10, 4096, 0x10000, 0}, fd.get())
                .error(),
            EINVAL);
  EXPECT_FALSE(memory.add({0x0, 4096, 0x10000, 0}, -1));  // mmap fails: EBADF
  ASSERT_TRUE(memory.add({0x0, 4096, 0x10000, 0}, fd.get()));
  EXPECT_EQ(memory.add({0x800, 4096, 0x90000, 0}, fd.get()).error(), EINVAL);  // overlap
  EXPECT_EQ(memory.remove({0x0, 8192, 0x10000, 0}).error(), ENOENT);
  EXPECT_TRUE(memory.remove({0x0, 4096, 0x10000, 0}));
  EXPECT_EQ(memory.size(), 0u);
  EXPECT_EQ(memory.guest_to_host(0x10, 1), nullptr);
}

TEST(GuestMemoryTest, MappingOutlivesTheFd) {
  GuestMemory memory;
  {
    UniqueFd fd = MakeMemfd(4096);
    ASSERT_TRUE(memory.add({0x0, 4096, 0x10000, 0}, fd.get()));
  }
  uint8_t* p = memory.guest_to_host(0, 4096);
  ASSERT_NE(p, nullptr);
  p[4095] = 7;
  EXPECT_EQ(p[4095], 7);
}

}  // namespace
}  // namespace svfs::transport::vhost_user
