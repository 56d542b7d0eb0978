// Basic file I/O through the mount, compared with the host directory.
#include <sys/mman.h>

#include "svfsd_fixture.h"

namespace svfs_it {
namespace {

mode_t CurrentUmask() {
  mode_t m = ::umask(0);
  ::umask(m);
  return m;
}

class FileIoTest : public SvfsdCacheFixture {};

TEST_P(FileIoTest, CreateWriteReadVisibleOnHost) {
  Fd fd(::open(M("f").c_str(), O_CREAT | O_EXCL | O_RDWR, 0640));
  ASSERT_TRUE(fd.ok()) << ErrnoName(errno);
  const std::string data = "hello, svfsd\n";
  ASSERT_EQ(::write(fd.get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
  char buf[64] = {};
  ASSERT_EQ(::pread(fd.get(), buf, sizeof(buf), 0), static_cast<ssize_t>(data.size()));
  EXPECT_EQ(std::string(buf, data.size()), data);
  struct stat mst {};
  ASSERT_EQ(::fstat(fd.get(), &mst), 0);
  fd.reset();

  auto hst = Stat(H("f"));
  ASSERT_TRUE(hst) << "file created through the mount is missing on the host";
  EXPECT_TRUE(S_ISREG(hst->st_mode));
  EXPECT_EQ(hst->st_size, static_cast<off_t>(data.size()));
  EXPECT_EQ(hst->st_mode & 07777, 0640u & ~CurrentUmask());
  EXPECT_EQ(hst->st_uid, 0u);
  EXPECT_EQ(hst->st_gid, 0u);
  EXPECT_EQ(mst.st_size, hst->st_size);
  EXPECT_EQ(mst.st_mode, hst->st_mode);
  EXPECT_EQ(mst.st_uid, hst->st_uid);
  EXPECT_EQ(ReadFileOrDie(H("f")), data);
  EXPECT_EQ(ReadFileOrDie(M("f")), data);

  // O_EXCL on an existing name.
  EXPECT_EQ(OpenErrno(M("f"), O_CREAT | O_EXCL | O_WRONLY), EEXIST);
  EXPECT_EQ(OpenErrno(M("missing"), O_RDONLY), ENOENT);
}

TEST_P(FileIoTest, HostCreatedFileVisibleThroughMount) {
  ASSERT_EQ(WriteFile(H("hostfile"), "from the host"), 0);
  ASSERT_EQ(::chmod(H("hostfile").c_str(), 0604), 0);
  ASSERT_EQ(::chown(H("hostfile").c_str(), 4321, 8765), 0);
  auto st = Stat(M("hostfile"));
  ASSERT_TRUE(st) << ErrnoName(errno);
  EXPECT_EQ(st->st_size, 13);
  EXPECT_EQ(st->st_mode & 07777, 0604u);
  EXPECT_EQ(st->st_uid, 4321u);
  EXPECT_EQ(st->st_gid, 8765u);
  EXPECT_EQ(ReadFileOrDie(M("hostfile")), "from the host");
}

TEST_P(FileIoTest, TruncateAndFtruncate) {
  ASSERT_EQ(WriteFile(M("t"), std::string(10000, 'x')), 0);
  // truncate(2) by path: shrink.
  ASSERT_EQ(::truncate(M("t").c_str(), 100), 0) << ErrnoName(errno);
  EXPECT_EQ(Stat(M("t"))->st_size, 100);
  EXPECT_EQ(Stat(H("t"))->st_size, 100);
  EXPECT_EQ(ReadFileOrDie(H("t")), std::string(100, 'x'));

  // ftruncate: grow (zero-filled) then shrink.
  Fd fd(::open(M("t").c_str(), O_RDWR));
  ASSERT_TRUE(fd.ok()) << ErrnoName(errno);
  ASSERT_EQ(::ftruncate(fd.get(), 5000), 0) << ErrnoName(errno);
  struct stat st {};
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  EXPECT_EQ(st.st_size, 5000);
  EXPECT_EQ(Stat(H("t"))->st_size, 5000);
  EXPECT_EQ(ReadFileOrDie(H("t")), std::string(100, 'x') + std::string(4900, '\0'));
  EXPECT_EQ(ReadFileOrDie(M("t")), std::string(100, 'x') + std::string(4900, '\0'));
  ASSERT_EQ(::ftruncate(fd.get(), 7), 0);
  fd.reset();
  EXPECT_EQ(Stat(H("t"))->st_size, 7);
  EXPECT_EQ(ReadFileOrDie(M("t")), "xxxxxxx");

  // O_TRUNC on open.
  fd = Fd(::open(M("t").c_str(), O_WRONLY | O_TRUNC));
  ASSERT_TRUE(fd.ok());
  fd.reset();
  EXPECT_EQ(Stat(H("t"))->st_size, 0);
  EXPECT_EQ(Stat(M("t"))->st_size, 0);
}

TEST_P(FileIoTest, AppendMode) {
  ASSERT_EQ(WriteFile(M("a"), "abc"), 0);
  Fd fd(::open(M("a").c_str(), O_WRONLY | O_APPEND));
  ASSERT_TRUE(fd.ok()) << ErrnoName(errno);
  ASSERT_EQ(::write(fd.get(), "def", 3), 3);
  // Another writer extends the file behind our back (through the mount)...
  {
    Fd other(::open(M("a").c_str(), O_WRONLY));
    ASSERT_TRUE(other.ok());
    ASSERT_EQ(::pwrite(other.get(), "XYZ", 3, 6), 3);
  }
  // ...and O_APPEND still writes at the (new) end.
  ASSERT_EQ(::write(fd.get(), "ghi", 3), 3);
  fd.reset();
  EXPECT_EQ(ReadFileOrDie(H("a")), "abcdefXYZghi");
  EXPECT_EQ(ReadFileOrDie(M("a")), "abcdefXYZghi");
}

TEST_P(FileIoTest, PreadPwriteAtOffsets) {
  Fd fd(::open(M("p").c_str(), O_CREAT | O_RDWR, 0644));
  ASSERT_TRUE(fd.ok()) << ErrnoName(errno);
  ASSERT_EQ(::pwrite(fd.get(), "0123456789", 10, 0), 10);
  ASSERT_EQ(::pwrite(fd.get(), "AB", 2, 4), 2);
  ASSERT_EQ(::pwrite(fd.get(), "end", 3, 100000), 3);  // leaves a gap
  char buf[16] = {};
  ASSERT_EQ(::pread(fd.get(), buf, 10, 0), 10);
  EXPECT_EQ(std::string(buf, 10), "0123AB6789");
  ASSERT_EQ(::pread(fd.get(), buf, 4, 99999), 4);
  EXPECT_EQ(std::string(buf, 4), std::string("\0end", 4));
  // Reading at/after EOF returns 0.
  EXPECT_EQ(::pread(fd.get(), buf, 4, 100003), 0);
  // pread/pwrite do not move the file offset.
  EXPECT_EQ(::lseek(fd.get(), 0, SEEK_CUR), 0);
  fd.reset();

  std::string host = ReadFileOrDie(H("p"));
  ASSERT_EQ(host.size(), 100003u);
  EXPECT_EQ(host.substr(0, 10), "0123AB6789");
  EXPECT_EQ(host.substr(10, 99990), std::string(99990, '\0'));
  EXPECT_EQ(host.substr(100000), "end");
}

TEST_P(FileIoTest, LargeFileChecksum) {
  constexpr size_t kSize = 6 * 1024 * 1024 + 12345;  // several MiB, not block aligned
  const std::string data = PatternData(kSize, 42);
  const uint64_t want = Fnv1a(data);
  {
    Fd fd(::open(M("big").c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644));
    ASSERT_TRUE(fd.ok()) << ErrnoName(errno);
    size_t off = 0;
    while (off < data.size()) {
      size_t chunk = std::min<size_t>(1 << 20, data.size() - off);
      ssize_t n = ::write(fd.get(), data.data() + off, chunk);
      ASSERT_GT(n, 0) << ErrnoName(errno);
      off += static_cast<size_t>(n);
    }
    ASSERT_EQ(::close(fd.release()), 0) << ErrnoName(errno);
  }
  auto hst = Stat(H("big"));
  ASSERT_TRUE(hst);
  EXPECT_EQ(hst->st_size, static_cast<off_t>(kSize));
  EXPECT_EQ(Fnv1a(ReadFileOrDie(H("big"))), want) << "host copy differs from what was written through the mount";
  EXPECT_EQ(Fnv1a(ReadFileOrDie(M("big"))), want) << "read back through the mount differs";

  // And the other way: a large file written on the host reads back intact.
  const std::string data2 = PatternData(kSize - 777, 7);
  ASSERT_EQ(WriteFile(H("big2"), data2), 0);
  EXPECT_EQ(Fnv1a(ReadFileOrDie(M("big2"))), Fnv1a(data2));
}

TEST_P(FileIoTest, MmapSharedReadWrite) {
  // Programs such as git and sqlite mmap files: MAP_SHARED must work in every
  // cache mode, and msync'd stores must reach the host.
  ASSERT_EQ(WriteFile(H("m"), std::string(8192, 'a')), 0);
  Fd fd(::open(M("m").c_str(), O_RDWR));
  ASSERT_TRUE(fd.ok()) << ErrnoName(errno);
  void* p = ::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  ASSERT_NE(p, MAP_FAILED) << "mmap(MAP_SHARED) through the mount: " << ErrnoName(errno);
  char* c = static_cast<char*>(p);
  EXPECT_EQ(c[0], 'a');
  EXPECT_EQ(c[8191], 'a');
  std::memcpy(c + 4096, "mapped write", 12);
  ASSERT_EQ(::msync(p, 8192, MS_SYNC), 0) << ErrnoName(errno);
  ::munmap(p, 8192);
  fd.reset();
  std::string host = ReadFileOrDie(H("m"));
  ASSERT_EQ(host.size(), 8192u);
  EXPECT_EQ(host.substr(4096, 12), "mapped write");
  EXPECT_EQ(host.substr(0, 4096), std::string(4096, 'a'));
  EXPECT_EQ(ReadFileOrDie(M("m")).substr(4096, 12), "mapped write");
}

TEST_P(FileIoTest, MmapPrivateRead) {
  // Executables and shared libraries are mapped MAP_PRIVATE.
  const std::string data = PatternData(3 * 4096 + 100, 9);
  ASSERT_EQ(WriteFile(H("exe"), data), 0);
  Fd fd(::open(M("exe").c_str(), O_RDONLY));
  ASSERT_TRUE(fd.ok());
  void* p = ::mmap(nullptr, data.size(), PROT_READ, MAP_PRIVATE, fd.get(), 0);
  ASSERT_NE(p, MAP_FAILED) << "mmap(MAP_PRIVATE) through the mount: " << ErrnoName(errno);
  EXPECT_EQ(Fnv1a(std::string(static_cast<char*>(p), data.size())), Fnv1a(data));
  ::munmap(p, data.size());
}

TEST_P(FileIoTest, ConcurrentWritersDisjointRanges) {
  constexpr int kThreads = 4;
  constexpr size_t kChunk = 256 * 1024;
  Fd fd(::open(M("c").c_str(), O_CREAT | O_RDWR, 0644));
  ASSERT_TRUE(fd.ok());
  std::vector<std::thread> threads;
  std::atomic<int> errors = 0;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const std::string d = PatternData(kChunk, 100 + t);
      for (size_t off = 0; off < kChunk; off += 16384)
        if (::pwrite(fd.get(), d.data() + off, 16384, static_cast<off_t>(t * kChunk + off)) != 16384) ++errors;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  fd.reset();
  std::string expect;
  for (int t = 0; t < kThreads; ++t) expect += PatternData(kChunk, 100 + t);
  EXPECT_EQ(Fnv1a(ReadFileOrDie(H("c"))), Fnv1a(expect));
  EXPECT_EQ(Fnv1a(ReadFileOrDie(M("c"))), Fnv1a(expect));
}

INSTANTIATE_TEST_SUITE_P(CacheModes, FileIoTest, ::testing::Values("none", "metadata", "auto", "always"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace svfs_it
