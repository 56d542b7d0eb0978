// Namespace and metadata operations through the mount, verified on the host.
#include <sys/sysmacros.h>
#include <time.h>

#include "svfsd_fixture.h"

namespace svfs_it {
namespace {

mode_t CurrentUmask() {
  mode_t m = ::umask(0);
  ::umask(m);
  return m;
}

class NamespaceTest : public SvfsdCacheFixture {};

TEST_P(NamespaceTest, RenameFile) {
  ASSERT_EQ(WriteFile(M("old"), "payload"), 0);
  ASSERT_EQ(::rename(M("old").c_str(), M("new").c_str()), 0) << ErrnoName(errno);
  EXPECT_FALSE(Lstat(M("old")));
  EXPECT_EQ(errno, ENOENT);
  EXPECT_FALSE(Lstat(H("old"))) << "old name still present on the host";
  EXPECT_EQ(ReadFileOrDie(H("new")), "payload");
  EXPECT_EQ(ReadFileOrDie(M("new")), "payload");

  // rename over an existing file replaces it.
  ASSERT_EQ(WriteFile(M("victim"), "to be replaced"), 0);
  ASSERT_EQ(::rename(M("new").c_str(), M("victim").c_str()), 0) << ErrnoName(errno);
  EXPECT_EQ(ReadFileOrDie(H("victim")), "payload");
  EXPECT_FALSE(Lstat(H("new")));

  // rename of a missing source.
  EXPECT_EQ(::rename(M("nope").c_str(), M("x").c_str()), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_P(NamespaceTest, RenameNoreplace) {
  ASSERT_EQ(WriteFile(M("a"), "AAA"), 0);
  ASSERT_EQ(WriteFile(M("b"), "BBBBB"), 0);
  EXPECT_EQ(::renameat2(AT_FDCWD, M("a").c_str(), AT_FDCWD, M("b").c_str(), RENAME_NOREPLACE), -1);
  EXPECT_EQ(errno, EEXIST);
  EXPECT_EQ(ReadFileOrDie(H("a")), "AAA");
  EXPECT_EQ(ReadFileOrDie(H("b")), "BBBBB");
  // To a free name it works.
  ASSERT_EQ(::renameat2(AT_FDCWD, M("a").c_str(), AT_FDCWD, M("c").c_str(), RENAME_NOREPLACE), 0)
      << ErrnoName(errno);
  EXPECT_FALSE(Lstat(H("a")));
  EXPECT_EQ(ReadFileOrDie(H("c")), "AAA");
}

TEST_P(NamespaceTest, RenameExchange) {
  ASSERT_EQ(WriteFile(M("a"), "AAA"), 0);
  ASSERT_EQ(::mkdir(M("d").c_str(), 0755), 0);
  ASSERT_EQ(WriteFile(M("d/b"), "BBBBB"), 0);
  ASSERT_EQ(::renameat2(AT_FDCWD, M("a").c_str(), AT_FDCWD, M("d/b").c_str(), RENAME_EXCHANGE), 0)
      << ErrnoName(errno);
  EXPECT_EQ(ReadFileOrDie(H("a")), "BBBBB");
  EXPECT_EQ(ReadFileOrDie(H("d/b")), "AAA");
  EXPECT_EQ(ReadFileOrDie(M("a")), "BBBBB");
  EXPECT_EQ(ReadFileOrDie(M("d/b")), "AAA");
  EXPECT_EQ(Stat(M("a"))->st_size, 5);
  EXPECT_EQ(Stat(M("d/b"))->st_size, 3);
  // Exchange with a missing target fails.
  EXPECT_EQ(::renameat2(AT_FDCWD, M("a").c_str(), AT_FDCWD, M("missing").c_str(), RENAME_EXCHANGE), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_P(NamespaceTest, RenameDirectory) {
  ASSERT_EQ(::mkdir(M("d1").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(M("d1/sub").c_str(), 0755), 0);
  ASSERT_EQ(WriteFile(M("d1/sub/f"), "deep"), 0);
  ASSERT_EQ(::rename(M("d1").c_str(), M("d2").c_str()), 0) << ErrnoName(errno);
  EXPECT_FALSE(Lstat(H("d1")));
  EXPECT_EQ(ReadFileOrDie(H("d2/sub/f")), "deep");
  EXPECT_EQ(ReadFileOrDie(M("d2/sub/f")), "deep");
  EXPECT_FALSE(Lstat(M("d1/sub/f")));

  // Move into another directory.
  ASSERT_EQ(::mkdir(M("parent").c_str(), 0755), 0);
  ASSERT_EQ(::rename(M("d2").c_str(), M("parent/d3").c_str()), 0) << ErrnoName(errno);
  EXPECT_EQ(ReadFileOrDie(H("parent/d3/sub/f")), "deep");

  // Over a non-empty directory: refused.
  ASSERT_EQ(::mkdir(M("full").c_str(), 0755), 0);
  ASSERT_EQ(WriteFile(M("full/x"), "x"), 0);
  EXPECT_EQ(::rename(M("parent/d3").c_str(), M("full").c_str()), -1);
  EXPECT_TRUE(errno == ENOTEMPTY || errno == EEXIST) << ErrnoName(errno);
  EXPECT_TRUE(Lstat(H("full/x")));
  // A directory into its own subdirectory: EINVAL.
  EXPECT_EQ(::rename(M("parent").c_str(), M("parent/d3/sub/inner").c_str()), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST_P(NamespaceTest, HardLink) {
  ASSERT_EQ(WriteFile(M("orig"), "linked"), 0);
  ASSERT_EQ(::link(M("orig").c_str(), M("alias").c_str()), 0) << ErrnoName(errno);
  auto m1 = Stat(M("orig")), m2 = Stat(M("alias"));
  ASSERT_TRUE(m1 && m2);
  EXPECT_EQ(m1->st_nlink, 2u);
  EXPECT_EQ(m2->st_nlink, 2u);
  EXPECT_EQ(m1->st_ino, m2->st_ino);
  auto h1 = Stat(H("orig")), h2 = Stat(H("alias"));
  ASSERT_TRUE(h1 && h2);
  EXPECT_EQ(h1->st_nlink, 2u);
  EXPECT_EQ(h1->st_ino, h2->st_ino);
  // Writes through one name are seen through the other.
  ASSERT_EQ(WriteFile(M("alias"), "changed", O_WRONLY | O_TRUNC), 0);
  EXPECT_EQ(ReadFileOrDie(M("orig")), "changed");
  // Unlinking one name drops the count.
  ASSERT_EQ(::unlink(M("orig").c_str()), 0);
  EXPECT_EQ(Stat(M("alias"))->st_nlink, 1u);
  EXPECT_EQ(Stat(H("alias"))->st_nlink, 1u);
  // Link onto an existing name.
  ASSERT_EQ(WriteFile(M("other"), ""), 0);
  EXPECT_EQ(::link(M("alias").c_str(), M("other").c_str()), -1);
  EXPECT_EQ(errno, EEXIST);
}

TEST_P(NamespaceTest, SymlinkReadlink) {
  const std::string target = "some/relative/target-that-does-not-exist";
  ASSERT_EQ(::symlink(target.c_str(), M("sl").c_str()), 0) << ErrnoName(errno);
  char buf[256] = {};
  ssize_t n = ::readlink(M("sl").c_str(), buf, sizeof(buf));
  ASSERT_GE(n, 0) << ErrnoName(errno);
  EXPECT_EQ(std::string(buf, n), target);
  n = ::readlink(H("sl").c_str(), buf, sizeof(buf));
  ASSERT_GE(n, 0) << "symlink missing on the host";
  EXPECT_EQ(std::string(buf, n), target);
  auto st = Lstat(M("sl"));
  ASSERT_TRUE(st);
  EXPECT_TRUE(S_ISLNK(st->st_mode));
  EXPECT_EQ(st->st_size, static_cast<off_t>(target.size()));

  // A symlink to a file inside the share works when followed.
  ASSERT_EQ(WriteFile(M("real"), "real content"), 0);
  ASSERT_EQ(::symlink("real", M("sl2").c_str()), 0);
  EXPECT_EQ(ReadFileOrDie(M("sl2")), "real content");
  // readlink on a non-symlink.
  EXPECT_EQ(::readlink(M("real").c_str(), buf, sizeof(buf)), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST_P(NamespaceTest, UnlinkMkdirRmdir) {
  ASSERT_EQ(WriteFile(M("f"), "x"), 0);
  ASSERT_EQ(::unlink(M("f").c_str()), 0) << ErrnoName(errno);
  EXPECT_FALSE(Lstat(H("f")));
  EXPECT_FALSE(Lstat(M("f")));
  EXPECT_EQ(::unlink(M("f").c_str()), -1);
  EXPECT_EQ(errno, ENOENT);

  ASSERT_EQ(::mkdir(M("dir").c_str(), 0750), 0) << ErrnoName(errno);
  auto hst = Stat(H("dir"));
  ASSERT_TRUE(hst);
  EXPECT_TRUE(S_ISDIR(hst->st_mode));
  EXPECT_EQ(hst->st_mode & 07777, 0750u & ~CurrentUmask());
  EXPECT_EQ(::mkdir(M("dir").c_str(), 0750), -1);
  EXPECT_EQ(errno, EEXIST);

  ASSERT_EQ(WriteFile(M("dir/child"), "c"), 0);
  EXPECT_EQ(::rmdir(M("dir").c_str()), -1);
  EXPECT_EQ(errno, ENOTEMPTY);
  EXPECT_TRUE(Lstat(H("dir/child")));
  EXPECT_EQ(::unlink(M("dir").c_str()), -1);  // unlink on a directory
  EXPECT_TRUE(errno == EISDIR || errno == EPERM) << ErrnoName(errno);
  ASSERT_EQ(::unlink(M("dir/child").c_str()), 0);
  ASSERT_EQ(::rmdir(M("dir").c_str()), 0) << ErrnoName(errno);
  EXPECT_FALSE(Lstat(H("dir")));
  // rmdir on a file.
  ASSERT_EQ(WriteFile(M("file"), "x"), 0);
  EXPECT_EQ(::rmdir(M("file").c_str()), -1);
  EXPECT_EQ(errno, ENOTDIR);
}

TEST_P(NamespaceTest, MknodFifo) {
  ASSERT_EQ(::mkfifo(M("fifo").c_str(), 0640), 0) << ErrnoName(errno);
  auto h = Lstat(H("fifo"));
  ASSERT_TRUE(h);
  EXPECT_TRUE(S_ISFIFO(h->st_mode));
  EXPECT_EQ(h->st_mode & 07777, 0640u & ~CurrentUmask());
  auto m = Lstat(M("fifo"));
  ASSERT_TRUE(m);
  EXPECT_TRUE(S_ISFIFO(m->st_mode));
  // Plain mknod of a regular file too.
  ASSERT_EQ(::mknod(M("regnode").c_str(), S_IFREG | 0600, 0), 0) << ErrnoName(errno);
  EXPECT_TRUE(S_ISREG(Lstat(H("regnode"))->st_mode));
}

TEST_P(NamespaceTest, ChmodChown) {
  ASSERT_EQ(WriteFile(M("f"), "x"), 0);
  ASSERT_EQ(::chmod(M("f").c_str(), 0604), 0) << ErrnoName(errno);
  EXPECT_EQ(Stat(H("f"))->st_mode & 07777, 0604u);
  EXPECT_EQ(Stat(M("f"))->st_mode & 07777, 0604u);
  ASSERT_EQ(::chmod(M("f").c_str(), 04755), 0) << ErrnoName(errno);  // setuid bit, as root
  EXPECT_EQ(Stat(H("f"))->st_mode & 07777, 04755u);

  ASSERT_EQ(::chown(M("f").c_str(), 1234, 5678), 0) << ErrnoName(errno);
  auto h = Stat(H("f"));
  EXPECT_EQ(h->st_uid, 1234u);
  EXPECT_EQ(h->st_gid, 5678u);
  auto m = Stat(M("f"));
  EXPECT_EQ(m->st_uid, 1234u);
  EXPECT_EQ(m->st_gid, 5678u);
  // chown by root clears the setuid bit, as on the host.
  EXPECT_EQ(h->st_mode & S_ISUID, 0u);
  // -1 leaves a field unchanged.
  ASSERT_EQ(::chown(M("f").c_str(), static_cast<uid_t>(-1), 42), 0);
  EXPECT_EQ(Stat(H("f"))->st_uid, 1234u);
  EXPECT_EQ(Stat(H("f"))->st_gid, 42u);

  // fchmod/fchown on an open fd.
  Fd fd(::open(M("f").c_str(), O_RDONLY));
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(::fchmod(fd.get(), 0600), 0) << ErrnoName(errno);
  ASSERT_EQ(::fchown(fd.get(), 77, 88), 0) << ErrnoName(errno);
  h = Stat(H("f"));
  EXPECT_EQ(h->st_mode & 07777, 0600u);
  EXPECT_EQ(h->st_uid, 77u);
  EXPECT_EQ(h->st_gid, 88u);
}

TEST_P(NamespaceTest, Utimensat) {
  ASSERT_EQ(WriteFile(M("f"), "x"), 0);
  struct timespec ts[2] = {{1000000000, 123456789}, {1200000000, 987654321}};
  ASSERT_EQ(::utimensat(AT_FDCWD, M("f").c_str(), ts, 0), 0) << ErrnoName(errno);
  auto h = Stat(H("f"));
  ASSERT_TRUE(h);
  EXPECT_EQ(h->st_atim.tv_sec, 1000000000);
  EXPECT_EQ(h->st_atim.tv_nsec, 123456789);
  EXPECT_EQ(h->st_mtim.tv_sec, 1200000000);
  EXPECT_EQ(h->st_mtim.tv_nsec, 987654321);
  auto m = Stat(M("f"));
  EXPECT_EQ(m->st_mtim.tv_sec, 1200000000);
  EXPECT_EQ(m->st_mtim.tv_nsec, 987654321);

  // UTIME_OMIT for atime, explicit mtime.
  struct timespec ts2[2] = {{0, UTIME_OMIT}, {1300000000, 5}};
  ASSERT_EQ(::utimensat(AT_FDCWD, M("f").c_str(), ts2, 0), 0) << ErrnoName(errno);
  h = Stat(H("f"));
  EXPECT_EQ(h->st_atim.tv_sec, 1000000000);
  EXPECT_EQ(h->st_mtim.tv_sec, 1300000000);
  EXPECT_EQ(h->st_mtim.tv_nsec, 5);

  // UTIME_NOW.
  struct timespec before {};
  ::clock_gettime(CLOCK_REALTIME, &before);
  struct timespec now[2] = {{0, UTIME_NOW}, {0, UTIME_NOW}};
  ASSERT_EQ(::utimensat(AT_FDCWD, M("f").c_str(), now, 0), 0) << ErrnoName(errno);
  struct timespec after {};
  ::clock_gettime(CLOCK_REALTIME, &after);
  h = Stat(H("f"));
  // File timestamps use a coarse clock: allow a little slack below `before`.
  EXPECT_GE(h->st_mtim.tv_sec, before.tv_sec - 1);
  EXPECT_LE(h->st_mtim.tv_sec, after.tv_sec + 1);
  EXPECT_GE(h->st_atim.tv_sec, before.tv_sec - 1);
  EXPECT_LE(h->st_atim.tv_sec, after.tv_sec + 1);
  m = Stat(M("f"));
  EXPECT_EQ(m->st_mtim.tv_sec, h->st_mtim.tv_sec);

  // futimens on an fd.
  Fd fd(::open(M("f").c_str(), O_RDONLY));
  ASSERT_TRUE(fd.ok());
  struct timespec ts3[2] = {{1111111111, 0}, {1222222222, 0}};
  ASSERT_EQ(::futimens(fd.get(), ts3), 0) << ErrnoName(errno);
  EXPECT_EQ(Stat(H("f"))->st_mtim.tv_sec, 1222222222);
}

INSTANTIATE_TEST_SUITE_P(CacheModes, NamespaceTest, ::testing::Values("none", "auto"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace svfs_it
