#include "shm/fault_guard.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include <gtest/gtest.h>

namespace svfs::shm {
namespace {

constexpr size_t kBytes = 4 * 4096;

// A memfd mapped shared, as guest memory and the version table are.
struct SharedFile {
  SharedFile() {
    fd = ::memfd_create("fault-guard-test", MFD_CLOEXEC);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, kBytes), 0);
    void* p = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    EXPECT_NE(p, MAP_FAILED);
    base = static_cast<volatile uint8_t*>(p);
  }
  ~SharedFile() {
    ::munmap(const_cast<uint8_t*>(base), kBytes);
    ::close(fd);
  }
  void shrink(off_t to) { ASSERT_EQ(::ftruncate(fd, to), 0); }
  int fd = -1;
  volatile uint8_t* base = nullptr;
};

TEST(FaultGuardTest, ShrunkFileUnderAGuardedMappingIsSurvived) {
  SharedFile file;
  file.base[kBytes - 1] = 7;
  FaultGuard guard = FaultGuard::Guard(const_cast<uint8_t*>(file.base), kBytes);
  ASSERT_TRUE(guard.active());
  file.shrink(4096);
  EXPECT_FALSE(guard.tripped());
  file.base[10] = 1;  // the first page is still backed
  EXPECT_FALSE(guard.tripped());
  EXPECT_EQ(file.base[kBytes - 1], 0) << "the lost page reads as zeros";
  EXPECT_TRUE(guard.tripped());
  file.base[2 * 4096] = 9;  // writes land on a private page: no fault, nothing shared
  uint8_t back = 0;
  EXPECT_EQ(::pread(file.fd, &back, 1, 2 * 4096), 0) << "the file did not grow";
}

TEST(FaultGuardTest, GuardsAreIndependentAndReleased) {
  SharedFile a, b;
  FaultGuard guard_a = FaultGuard::Guard(const_cast<uint8_t*>(a.base), kBytes);
  FaultGuard guard_b = FaultGuard::Guard(const_cast<uint8_t*>(b.base), kBytes);
  a.shrink(0);
  (void)a.base[0];
  EXPECT_TRUE(guard_a.tripped());
  EXPECT_FALSE(guard_b.tripped());
  FaultGuard moved = std::move(guard_b);
  EXPECT_FALSE(guard_b.active());
  EXPECT_TRUE(moved.active());
  uint64_t trips = 0;
  EXPECT_EQ(::read(FaultGuard::TripFd(), &trips, sizeof(trips)), static_cast<ssize_t>(sizeof(trips)));
  EXPECT_GE(trips, 1u);
}

// Outside every guard a SIGBUS is as fatal as without the handler: the process dies of it (or,
// under a sanitizer, of the sanitizer's report, the handler the guard chains to).
TEST(FaultGuardDeathTest, UnguardedFaultStillKills) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  SharedFile guarded;
  FaultGuard guard = FaultGuard::Guard(const_cast<uint8_t*>(guarded.base), kBytes);
  EXPECT_EXIT(
      {
        SharedFile file;
        file.shrink(0);
        (void)file.base[0];
      },
      [](int status) {
        return WIFSIGNALED(status) && (WTERMSIG(status) == SIGBUS || WTERMSIG(status) == SIGABRT);
      },
      "");
}

}  // namespace
}  // namespace svfs::shm
