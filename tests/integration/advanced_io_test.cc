// fallocate, SEEK_DATA/SEEK_HOLE, copy_file_range, statfs, fsync.
#include <linux/falloc.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cmath>

#include "svfsd_fixture.h"

namespace svfs_it {
namespace {

class AdvancedIoTest : public SvfsdCacheFixture {};

TEST_P(AdvancedIoTest, FallocateGrowsFile) {
  Fd fd(::open(M("fa").c_str(), O_CREAT | O_RDWR, 0644));
  ASSERT_TRUE(fd.ok()) << ErrnoName(errno);
  ASSERT_EQ(::fallocate(fd.get(), 0, 0, 1 << 20), 0) << ErrnoName(errno);
  struct stat st {};
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  EXPECT_EQ(st.st_size, 1 << 20);
  auto h = Stat(H("fa"));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->st_size, 1 << 20);
  EXPECT_GE(h->st_blocks * 512, 1 << 20) << "space not allocated on the host";

  // KEEP_SIZE allocates beyond EOF without changing the size.
  ASSERT_EQ(::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20), 0) << ErrnoName(errno);
  EXPECT_EQ(Stat(H("fa"))->st_size, 1 << 20);
  EXPECT_GE(Stat(H("fa"))->st_blocks * 512, 2 << 20);
  // posix_fallocate through the same path.
  ASSERT_EQ(::posix_fallocate(fd.get(), 0, 3 << 20), 0);
  EXPECT_EQ(Stat(H("fa"))->st_size, 3 << 20);
}

TEST_P(AdvancedIoTest, PunchHoleFoundBySeekHole) {
  const std::string data = PatternData(1 << 20, 3);
  ASSERT_EQ(WriteFile(M("ph"), data), 0);
  Fd fd(::open(M("ph").c_str(), O_RDWR));
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(::fsync(fd.get()), 0);
  // Before punching: no hole except the implicit one at EOF.
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_HOLE), 1 << 20);
  ASSERT_EQ(::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 256 << 10, 128 << 10), 0)
      << ErrnoName(errno);
  struct stat st {};
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  EXPECT_EQ(st.st_size, 1 << 20);
  EXPECT_EQ(Stat(H("ph"))->st_size, 1 << 20);
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_HOLE), 256 << 10) << ErrnoName(errno);
  EXPECT_EQ(::lseek(fd.get(), 256 << 10, SEEK_DATA), 384 << 10) << ErrnoName(errno);
  // Host agrees.
  Fd hfd(::open(H("ph").c_str(), O_RDONLY));
  EXPECT_EQ(::lseek(hfd.get(), 0, SEEK_HOLE), 256 << 10);
  // Punched range reads as zeros, the rest is intact.
  std::string expect = data;
  std::fill(expect.begin() + (256 << 10), expect.begin() + (384 << 10), '\0');
  fd.reset();
  EXPECT_EQ(Fnv1a(ReadFileOrDie(M("ph"))), Fnv1a(expect));
  EXPECT_EQ(Fnv1a(ReadFileOrDie(H("ph"))), Fnv1a(expect));
}

TEST_P(AdvancedIoTest, SeekDataHoleOnHostSparseFile) {
  constexpr off_t kMiB = 1 << 20;
  {
    Fd h(::open(H("sparse").c_str(), O_CREAT | O_WRONLY, 0644));
    ASSERT_TRUE(h.ok());
    std::string blk(4096, 'D');
    ASSERT_EQ(::pwrite(h.get(), blk.data(), blk.size(), 0), 4096);
    ASSERT_EQ(::pwrite(h.get(), blk.data(), blk.size(), kMiB), 4096);
    ASSERT_EQ(::fsync(h.get()), 0);
  }
  Fd hfd(::open(H("sparse").c_str(), O_RDONLY));
  const off_t host_hole0 = ::lseek(hfd.get(), 0, SEEK_HOLE);
  const off_t host_data1 = ::lseek(hfd.get(), host_hole0, SEEK_DATA);
  const off_t host_hole1 = ::lseek(hfd.get(), kMiB, SEEK_HOLE);
  ASSERT_LT(host_hole0, kMiB) << "host fs does not report holes; test cannot run meaningfully";

  Fd fd(::open(M("sparse").c_str(), O_RDONLY));
  ASSERT_TRUE(fd.ok()) << ErrnoName(errno);
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_DATA), 0);
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_HOLE), host_hole0);
  EXPECT_EQ(::lseek(fd.get(), host_hole0, SEEK_DATA), host_data1);
  EXPECT_EQ(::lseek(fd.get(), 100, SEEK_DATA), 100);  // inside data: unchanged
  EXPECT_EQ(::lseek(fd.get(), kMiB, SEEK_HOLE), host_hole1);
  EXPECT_EQ(host_data1, kMiB);
  EXPECT_EQ(host_hole1, kMiB + 4096);
  // SEEK_DATA at/after EOF: ENXIO.
  EXPECT_EQ(::lseek(fd.get(), kMiB + 4096, SEEK_DATA), -1);
  EXPECT_EQ(errno, ENXIO);
  // Plain SEEK_SET/SEEK_END still work.
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_END), kMiB + 4096);
}

TEST_P(AdvancedIoTest, CopyFileRange) {
  const std::string data = PatternData(3 << 20, 11);
  ASSERT_EQ(WriteFile(M("in"), data), 0);
  ASSERT_EQ(WriteFile(M("out"), "prefix--"), 0);
  Fd in(::open(M("in").c_str(), O_RDONLY));
  Fd out(::open(M("out").c_str(), O_WRONLY));
  ASSERT_TRUE(in.ok() && out.ok());
  loff_t off_in = 4096, off_out = 8;
  size_t remaining = 2 << 20;
  while (remaining > 0) {
    ssize_t n = ::copy_file_range(in.get(), &off_in, out.get(), &off_out, remaining, 0);
    ASSERT_GT(n, 0) << ErrnoName(errno);
    remaining -= static_cast<size_t>(n);
  }
  EXPECT_EQ(off_in, 4096 + (2 << 20));
  EXPECT_EQ(off_out, 8 + (2 << 20));
  out.reset();
  const std::string expect = "prefix--" + data.substr(4096, 2 << 20);
  auto host = ReadFileOrDie(H("out"));
  EXPECT_EQ(host.size(), expect.size());
  EXPECT_EQ(Fnv1a(host), Fnv1a(expect)) << "copied content wrong on the host";
  EXPECT_EQ(Fnv1a(ReadFileOrDie(M("out"))), Fnv1a(expect));
  EXPECT_EQ(Fnv1a(ReadFileOrDie(H("in"))), Fnv1a(data)) << "source modified";
}

TEST_P(AdvancedIoTest, StatfsMatchesHost) {
  struct statvfs m {}, h {};
  ASSERT_EQ(::statvfs(mount_.c_str(), &m), 0) << ErrnoName(errno);
  ASSERT_EQ(::statvfs(src_.c_str(), &h), 0);
  EXPECT_EQ(m.f_blocks, h.f_blocks);
  EXPECT_EQ(m.f_frsize, h.f_frsize);
  EXPECT_EQ(m.f_files, h.f_files);
  EXPECT_GT(m.f_blocks, 0u);
  EXPECT_GT(m.f_namemax, 0u);
  // Free space is live: allow drift from concurrent activity (within 5%).
  double diff = static_cast<double>(m.f_bfree) - static_cast<double>(h.f_bfree);
  EXPECT_LT(std::abs(diff), 0.05 * static_cast<double>(h.f_blocks));
  if (!NoDaemonMode()) {
    struct statfs sfs {};
    ASSERT_EQ(::statfs(mount_.c_str(), &sfs), 0);
    EXPECT_EQ(static_cast<long>(sfs.f_type), kFuseSuperMagic);
  }
}

TEST_P(AdvancedIoTest, FsyncFdatasync) {
  Fd fd(::open(M("s").c_str(), O_CREAT | O_RDWR, 0644));
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(::write(fd.get(), "durable", 7), 7);
  EXPECT_EQ(::fsync(fd.get()), 0) << ErrnoName(errno);
  ASSERT_EQ(::write(fd.get(), "!", 1), 1);
  EXPECT_EQ(::fdatasync(fd.get()), 0) << ErrnoName(errno);
  // After fsync the host has the data even while the file is still open.
  EXPECT_EQ(ReadFileOrDie(H("s")), "durable!");
  Fd dfd(::open(mount_.c_str(), O_RDONLY | O_DIRECTORY));
  ASSERT_TRUE(dfd.ok());
  EXPECT_EQ(::fsync(dfd.get()), 0) << ErrnoName(errno);
  EXPECT_EQ(::syncfs(fd.get()), 0) << ErrnoName(errno);
}

INSTANTIATE_TEST_SUITE_P(CacheModes, AdvancedIoTest, ::testing::Values("none", "auto", "always"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace svfs_it
