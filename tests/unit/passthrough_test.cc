// PassthroughFs called directly on a temporary directory (no kernel FUSE involved).
#include "daemon/fs/passthrough.h"
#include "protocol/fuse_request.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace svfs::fs {
namespace {

class StringSink : public ReadSink {
 public:
  Result<size_t> read_from(int fd, uint64_t offset, size_t length) override {
    data.resize(length);
    ssize_t n = ::pread(fd, data.data(), length, static_cast<off_t>(offset));
    if (n < 0) return ErrnoErr();
    data.resize(static_cast<size_t>(n));
    return static_cast<size_t>(n);
  }
  std::string data;
};

// Holds at most `capacity` entries per call, like a small reply buffer.
class VectorDirSink : public DirSink {
 public:
  explicit VectorDirSink(size_t capacity) : capacity_(capacity) {}
  bool has_room(size_t) const override { return entries.size() < capacity_; }
  bool add(const DirEntry& dirent, const Entry* entry) override {
    if (!has_room(dirent.name.size())) return false;
    entries.push_back({std::string(dirent.name), dirent.offset, entry ? *entry : Entry{}});
    return true;
  }
  struct Item {
    std::string name;
    uint64_t offset;
    Entry entry;
  };
  std::vector<Item> entries;

 private:
  size_t capacity_;
};

class PassthroughTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/svfs-passthrough-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    fs_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  PassthroughFs& Fs(CacheMode mode = CacheMode::kAuto) {
    if (!fs_) {
      PassthroughConfig config;
      config.shared_dir = dir_;
      config.cache = CachePolicy(mode);
      config.xattr = true;
      auto fs = PassthroughFs::Create(config);
      EXPECT_TRUE(fs.has_value());
      fs_ = std::move(*fs);
    }
    return *fs_;
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }
  void Touch(const std::string& name, const std::string& content = "") {
    int fd = ::open(Path(name).c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
    ::close(fd);
  }
  std::string ReadHostFile(const std::string& name) {
    int fd = ::open(Path(name).c_str(), O_RDONLY);
    std::string s(4096, '\0');
    ssize_t n = ::read(fd, s.data(), s.size());
    ::close(fd);
    s.resize(n < 0 ? 0 : static_cast<size_t>(n));
    return s;
  }

  Context ctx_;
  std::string dir_;
  std::unique_ptr<PassthroughFs> fs_;
};

TEST(PassthroughCreate, MissingOrNotDirectoryIsAnError) {
  PassthroughConfig config;
  config.shared_dir = "/nonexistent/svfs-test";
  auto fs = PassthroughFs::Create(config);
  ASSERT_FALSE(fs.has_value());
  EXPECT_EQ(fs.error(), ENOENT);
  config.shared_dir = "/etc/passwd";
  fs = PassthroughFs::Create(config);
  ASSERT_FALSE(fs.has_value());
  EXPECT_EQ(fs.error(), ENOTDIR);
}

TEST_F(PassthroughTest, CreateWriteReadLookup) {
  auto& fs = Fs();
  auto created = fs.create(ctx_, kRootNodeId, "file", S_IFREG | 0666, O_RDWR, 022);
  ASSERT_TRUE(created.has_value()) << created.error();
  EXPECT_GE(created->entry.node, 2u);
  EXPECT_EQ(created->entry.attr.st.st_mode & 07777, 0644u);
  SpanWriteSource src("hello world");
  auto written = fs.write(ctx_, created->entry.node, created->opened.handle, 0, src, 0);
  ASSERT_TRUE(written.has_value());
  EXPECT_EQ(*written, 11u);
  EXPECT_EQ(ReadHostFile("file"), "hello world");

  auto entry = fs.lookup(ctx_, kRootNodeId, "file");
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->node, created->entry.node);
  EXPECT_EQ(entry->attr.st.st_size, 11);
  EXPECT_EQ(fs.inodes().ref_count(entry->node), 2u);

  auto opened = fs.open(ctx_, entry->node, O_RDONLY);
  ASSERT_TRUE(opened.has_value());
  StringSink sink;
  auto n = fs.read(ctx_, entry->node, opened->handle, 6, 100, sink);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(sink.data, "world");
  EXPECT_TRUE(fs.release(ctx_, entry->node, opened->handle, 0, 0, 0).has_value());
  EXPECT_FALSE(fs.read(ctx_, entry->node, opened->handle, 0, 1, sink).has_value());  // released
  EXPECT_TRUE(fs.release(ctx_, 0, created->opened.handle, 0, 0, 0).has_value());

  fs.forget(entry->node, 2);
  EXPECT_EQ(fs.inodes().ref_count(entry->node), 0u);
  EXPECT_FALSE(fs.getattr(ctx_, entry->node, std::nullopt).has_value());
}

TEST_F(PassthroughTest, UnknownIdsAreErrorsNotCrashes) {
  auto& fs = Fs();
  StringSink sink;
  EXPECT_EQ(fs.getattr(ctx_, 999, std::nullopt).error(), EBADF);
  EXPECT_EQ(fs.lookup(ctx_, 999, "x").error(), EBADF);
  EXPECT_FALSE(fs.read(ctx_, kRootNodeId, 999, 0, 10, sink).has_value());
  EXPECT_FALSE(fs.release(ctx_, kRootNodeId, 999, 0, 0, 0).has_value());
  fs.forget(999, 1);
}

TEST_F(PassthroughTest, SetattrTruncateChmodTimes) {
  Touch("f", "0123456789");
  auto& fs = Fs();
  auto e = fs.lookup(ctx_, kRootNodeId, "f");
  ASSERT_TRUE(e.has_value());
  SetattrArgs args;
  args.valid = FATTR_SIZE | FATTR_MODE | FATTR_MTIME;
  args.size = 4;
  args.mode = 0600;
  args.mtime = {1000, 0};
  auto attr = fs.setattr(ctx_, e->node, args);
  ASSERT_TRUE(attr.has_value()) << attr.error();
  EXPECT_EQ(attr->st.st_size, 4);
  EXPECT_EQ(attr->st.st_mode & 07777, 0600u);
  EXPECT_EQ(attr->st.st_mtim.tv_sec, 1000);
}

TEST_F(PassthroughTest, ReaddirListsTenThousandEntriesAcrossCalls) {
  constexpr int kCount = 10000;
  for (int i = 0; i < kCount; ++i) Touch("f" + std::to_string(i));
  auto& fs = Fs();
  auto opened = fs.opendir(ctx_, kRootNodeId, O_RDONLY);
  ASSERT_TRUE(opened.has_value());
  std::map<std::string, int> seen;
  uint64_t offset = 0;
  int calls = 0;
  for (;;) {
    VectorDirSink sink(37);
    ASSERT_TRUE(fs.readdir(ctx_, kRootNodeId, opened->handle, offset, false, sink).has_value());
    if (sink.entries.empty()) break;
    for (auto& item : sink.entries) ++seen[item.name];
    offset = sink.entries.back().offset;
    ++calls;
    ASSERT_LT(calls, 10000);
  }
  EXPECT_EQ(seen.size(), static_cast<size_t>(kCount + 2));
  for (auto& [name, count] : seen) EXPECT_EQ(count, 1) << name;
  EXPECT_TRUE(seen.contains("."));
  EXPECT_TRUE(seen.contains(".."));
  EXPECT_TRUE(fs.releasedir(ctx_, kRootNodeId, opened->handle).has_value());
}

TEST_F(PassthroughTest, ReaddirplusTakesOneReferencePerSentEntry) {
  Touch("a");
  Touch("b");
  Touch("c");
  auto& fs = Fs();
  auto opened = fs.opendir(ctx_, kRootNodeId, O_RDONLY);
  ASSERT_TRUE(opened.has_value());
  std::vector<VectorDirSink::Item> all;
  uint64_t offset = 0;
  for (;;) {
    VectorDirSink sink(2);
    ASSERT_TRUE(fs.readdir(ctx_, kRootNodeId, opened->handle, offset, true, sink).has_value());
    if (sink.entries.empty()) break;
    offset = sink.entries.back().offset;
    all.insert(all.end(), sink.entries.begin(), sink.entries.end());
  }
  ASSERT_EQ(all.size(), 5u);
  size_t inodes_before = fs.inodes().size();
  EXPECT_EQ(inodes_before, 4u);  // root + a, b, c
  for (auto& item : all) {
    if (item.name == "." || item.name == "..") {
      EXPECT_EQ(item.entry.node, 0u);
      continue;
    }
    ASSERT_NE(item.entry.node, 0u) << item.name;
    EXPECT_EQ(fs.inodes().ref_count(item.entry.node), 1u) << item.name;
    fs.forget(item.entry.node, 1);
    EXPECT_EQ(fs.inodes().ref_count(item.entry.node), 0u);
  }
  EXPECT_EQ(fs.inodes().size(), 1u);
  fs.releasedir(ctx_, kRootNodeId, opened->handle);
}

TEST_F(PassthroughTest, RenameNoreplaceAndExchange) {
  Touch("x", "X");
  Touch("y", "Y");
  auto& fs = Fs();
  EXPECT_EQ(fs.rename(ctx_, kRootNodeId, "x", kRootNodeId, "y", RENAME_NOREPLACE).error(), EEXIST);
  ASSERT_TRUE(fs.rename(ctx_, kRootNodeId, "x", kRootNodeId, "y", RENAME_EXCHANGE).has_value());
  EXPECT_EQ(ReadHostFile("x"), "Y");
  EXPECT_EQ(ReadHostFile("y"), "X");
  ASSERT_TRUE(fs.rename(ctx_, kRootNodeId, "x", kRootNodeId, "z", RENAME_NOREPLACE).has_value());
  EXPECT_EQ(ReadHostFile("z"), "Y");
  EXPECT_EQ(fs.rename(ctx_, kRootNodeId, "z", kRootNodeId, "../z", 0).error(), EINVAL);
  EXPECT_EQ(fs.rename(ctx_, kRootNodeId, "z", kRootNodeId, "w", 0x80).error(), EINVAL);
}

TEST_F(PassthroughTest, SymlinkToOutsideIsNotFollowed) {
  ASSERT_EQ(::symlink("/etc", Path("escape").c_str()), 0);
  ASSERT_EQ(::symlink("/etc/passwd", Path("passwd").c_str()), 0);
  auto& fs = Fs();
  auto e = fs.lookup(ctx_, kRootNodeId, "escape");
  ASSERT_TRUE(e.has_value());
  EXPECT_TRUE(S_ISLNK(e->attr.st.st_mode));
  auto target = fs.readlink(ctx_, e->node);
  ASSERT_TRUE(target.has_value());
  EXPECT_EQ(*target, "/etc");
  // Looking up below the symlink must not reach /etc.
  auto below = fs.lookup(ctx_, e->node, "passwd");
  EXPECT_FALSE(below.has_value() && below->node != 0);
  EXPECT_FALSE(fs.opendir(ctx_, e->node, O_RDONLY).has_value());

  auto p = fs.lookup(ctx_, kRootNodeId, "passwd");
  ASSERT_TRUE(p.has_value());
  auto opened = fs.open(ctx_, p->node, O_RDONLY);
  ASSERT_FALSE(opened.has_value());
  EXPECT_EQ(opened.error(), ELOOP);

  // A symlink created through the filesystem behaves the same.
  auto s = fs.symlink(ctx_, "/etc/shadow", kRootNodeId, "made");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(fs.open(ctx_, s->node, O_RDONLY).error(), ELOOP);
}

TEST_F(PassthroughTest, BadNamesAreRefused) {
  ::mkdir(Path("a").c_str(), 0755);
  Touch("a/b");
  auto& fs = Fs();
  EXPECT_EQ(fs.lookup(ctx_, kRootNodeId, "..").error(), EINVAL);
  EXPECT_EQ(fs.lookup(ctx_, kRootNodeId, ".").error(), EINVAL);
  EXPECT_EQ(fs.lookup(ctx_, kRootNodeId, "a/b").error(), EINVAL);
  EXPECT_EQ(fs.lookup(ctx_, kRootNodeId, std::string_view("a\0b", 3)).error(), EINVAL);
  EXPECT_EQ(fs.mkdir(ctx_, kRootNodeId, "../x", 0755, 0).error(), EINVAL);
  EXPECT_EQ(fs.unlink(ctx_, kRootNodeId, "a/b").error(), EINVAL);
  EXPECT_EQ(fs.create(ctx_, kRootNodeId, "..", 0644, O_RDWR, 0).error(), EINVAL);
}

TEST_F(PassthroughTest, NegativeLookupInAutoIsACacheableEntry) {
  auto& fs = Fs(CacheMode::kAuto);
  auto e = fs.lookup(ctx_, kRootNodeId, "missing");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->node, 0u);
  EXPECT_EQ(e->entry_timeout_ns, CachePolicy(CacheMode::kAuto).negative_timeout_ns());
}

TEST_F(PassthroughTest, NegativeLookupInNoneIsENOENT) {
  auto& fs = Fs(CacheMode::kNone);
  auto e = fs.lookup(ctx_, kRootNodeId, "missing");
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error(), ENOENT);
}

TEST_F(PassthroughTest, OpenFlagsFollowCacheModeNone) {
  Touch("f");
  auto& fs = Fs(CacheMode::kNone);
  auto e = fs.lookup(ctx_, kRootNodeId, "f");
  auto opened = fs.open(ctx_, e->node, O_RDONLY);
  ASSERT_TRUE(opened.has_value());
  EXPECT_TRUE(opened->open_flags & FOPEN_DIRECT_IO);
  EXPECT_EQ(e->entry_timeout_ns, 0u);
}

TEST_F(PassthroughTest, OpenFlagsFollowCacheModeAlways) {
  Touch("f");
  auto& fs = Fs(CacheMode::kAlways);
  auto e = fs.lookup(ctx_, kRootNodeId, "f");
  auto opened = fs.open(ctx_, e->node, O_RDONLY);
  ASSERT_TRUE(opened.has_value());
  EXPECT_TRUE(opened->open_flags & FOPEN_KEEP_CACHE);
  EXPECT_FALSE(opened->open_flags & FOPEN_DIRECT_IO);
  auto dir = fs.opendir(ctx_, kRootNodeId, O_RDONLY);
  ASSERT_TRUE(dir.has_value());
  EXPECT_TRUE(dir->open_flags & FOPEN_CACHE_DIR);
}

TEST_F(PassthroughTest, PosixLocksOfDifferentOwnersConflict) {
  Touch("f", "data");
  auto& fs = Fs();
  auto e = fs.lookup(ctx_, kRootNodeId, "f");
  auto opened = fs.open(ctx_, e->node, O_RDWR);
  ASSERT_TRUE(opened.has_value());
  FileLock lock{0, 0x7fffffffffffffffULL, F_WRLCK, 4242};
  constexpr uint64_t kOwnerA = 0xa, kOwnerB = 0xb;
  ASSERT_TRUE(fs.setlk(ctx_, e->node, opened->handle, kOwnerA, lock, 0, false).has_value());
  // Owner A re-locking its own range is fine.
  ASSERT_TRUE(fs.setlk(ctx_, e->node, opened->handle, kOwnerA, lock, 0, false).has_value());
  auto b = fs.setlk(ctx_, e->node, opened->handle, kOwnerB, lock, 0, false);
  ASSERT_FALSE(b.has_value());
  EXPECT_EQ(b.error(), EAGAIN);
  auto conflict = fs.getlk(ctx_, e->node, opened->handle, kOwnerB, lock);
  ASSERT_TRUE(conflict.has_value());
  EXPECT_EQ(conflict->type, static_cast<uint32_t>(F_WRLCK));
  EXPECT_EQ(conflict->start, 0u);
  EXPECT_EQ(conflict->end, 0x7fffffffffffffffULL);
  EXPECT_EQ(conflict->pid, 4242u);  // the guest pid of owner A's SETLK
  // Owner A sees no conflict with itself.
  auto own = fs.getlk(ctx_, e->node, opened->handle, kOwnerA, lock);
  ASSERT_TRUE(own.has_value());
  EXPECT_EQ(own->type, static_cast<uint32_t>(F_UNLCK));
  // FLUSH for owner A releases its locks; B can lock now.
  ASSERT_TRUE(fs.flush(ctx_, e->node, opened->handle, kOwnerA).has_value());
  EXPECT_TRUE(fs.setlk(ctx_, e->node, opened->handle, kOwnerB, lock, 0, false).has_value());

  // Locks belong to (inode, owner): owner B's lock is seen through another handle too, and a
  // read-only handle cannot take a write lock.
  auto ro = fs.open(ctx_, e->node, O_RDONLY);
  ASSERT_TRUE(ro.has_value());
  EXPECT_EQ(fs.setlk(ctx_, e->node, ro->handle, kOwnerA, lock, 0, false).error(), EBADF);
  FileLock rd{10, 20, F_RDLCK, 7};
  EXPECT_EQ(fs.setlk(ctx_, e->node, ro->handle, kOwnerA, rd, 0, false).error(), EAGAIN);
  auto seen = fs.getlk(ctx_, e->node, ro->handle, kOwnerA, rd);
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(seen->type, static_cast<uint32_t>(F_WRLCK));
  // Unlock by B through the read-only handle is allowed and releases it.
  FileLock unlock{0, 0x7fffffffffffffffULL, F_UNLCK, 0};
  EXPECT_TRUE(fs.setlk(ctx_, e->node, ro->handle, kOwnerB, unlock, 0, false).has_value());
  EXPECT_TRUE(fs.setlk(ctx_, e->node, ro->handle, kOwnerA, rd, 0, false).has_value());
}

TEST_F(PassthroughTest, BlockingSetlkIsInterruptible) {
  Touch("f", "data");
  auto& fs = Fs();
  auto e = fs.lookup(ctx_, kRootNodeId, "f");
  auto opened = fs.open(ctx_, e->node, O_RDWR);
  ASSERT_TRUE(opened.has_value());
  FileLock lock{0, 0x7fffffffffffffffULL, F_WRLCK, 1};
  ASSERT_TRUE(fs.setlk(ctx_, e->node, opened->handle, 1, lock, 0, false).has_value());

  // Already interrupted: refused before blocking.
  std::atomic<bool> interrupted{true};
  Context ctx = ctx_;
  ctx.interrupted = &interrupted;
  EXPECT_EQ(fs.setlk(ctx, e->node, opened->handle, 2, lock, 0, true).error(), EINTR);

  // Interrupted while blocked: the server flags the request and signals the worker thread.
  struct sigaction sa {};
  sa.sa_handler = [](int) {};
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: the blocked fcntl returns EINTR
  struct sigaction old {};
  ASSERT_EQ(::sigaction(SIGUSR2, &sa, &old), 0);
  interrupted = false;
  std::atomic<int> result{-1};
  std::thread worker([&] {
    auto r = fs.setlk(ctx, e->node, opened->handle, 2, lock, 0, true);
    result = r.has_value() ? 0 : r.error();
  });
  ::usleep(100 * 1000);
  EXPECT_EQ(result.load(), -1);  // still blocked
  interrupted = true;
  for (int i = 0; i < 50 && result.load() == -1; ++i) {
    ::pthread_kill(worker.native_handle(), SIGUSR2);
    ::usleep(10 * 1000);
  }
  worker.join();
  EXPECT_EQ(result.load(), EINTR);
  ::sigaction(SIGUSR2, &old, nullptr);
}

TEST_F(PassthroughTest, FlockOnSeparateOpensConflicts) {
  Touch("f");
  auto& fs = Fs();
  auto e = fs.lookup(ctx_, kRootNodeId, "f");
  auto h1 = fs.open(ctx_, e->node, O_RDONLY);
  auto h2 = fs.open(ctx_, e->node, O_RDONLY);
  FileLock ex{0, 0, F_WRLCK, 0};
  ASSERT_TRUE(fs.setlk(ctx_, e->node, h1->handle, 1, ex, FUSE_LK_FLOCK, false).has_value());
  auto r = fs.setlk(ctx_, e->node, h2->handle, 2, ex, FUSE_LK_FLOCK, false);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), EWOULDBLOCK);
  ASSERT_TRUE(fs.release(ctx_, e->node, h1->handle, 0, FUSE_RELEASE_FLOCK_UNLOCK, 1).has_value());
  EXPECT_TRUE(fs.setlk(ctx_, e->node, h2->handle, 2, ex, FUSE_LK_FLOCK, false).has_value());
}

TEST_F(PassthroughTest, MkdirMknodLinkUnlinkRmdir) {
  auto& fs = Fs();
  auto d = fs.mkdir(ctx_, kRootNodeId, "d", 0777, 022);
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(S_ISDIR(d->attr.st.st_mode));
  EXPECT_EQ(d->attr.st.st_mode & 07777, 0755u);
  auto fifo = fs.mknod(ctx_, d->node, "fifo", S_IFIFO | 0644, 0, 0);
  ASSERT_TRUE(fifo.has_value());
  EXPECT_TRUE(S_ISFIFO(fifo->attr.st.st_mode));
  EXPECT_FALSE(fs.open(ctx_, fifo->node, O_RDONLY).has_value());  // never opened on the host
  auto f = fs.create(ctx_, d->node, "f", 0644, O_WRONLY, 0);
  ASSERT_TRUE(f.has_value());
  auto l = fs.link(ctx_, f->entry.node, kRootNodeId, "hard");
  ASSERT_TRUE(l.has_value()) << l.error();
  EXPECT_EQ(l->node, f->entry.node);
  EXPECT_EQ(l->attr.st.st_nlink, 2u);
  EXPECT_EQ(fs.rmdir(ctx_, kRootNodeId, "d").error(), ENOTEMPTY);
  EXPECT_TRUE(fs.unlink(ctx_, d->node, "f").has_value());
  EXPECT_TRUE(fs.unlink(ctx_, d->node, "fifo").has_value());
  EXPECT_TRUE(fs.rmdir(ctx_, kRootNodeId, "d").has_value());
}

TEST_F(PassthroughTest, XattrSizeQueries) {
  Touch("f");
  auto& fs = Fs();
  auto e = fs.lookup(ctx_, kRootNodeId, "f");
  std::string value = "value";
  auto set = fs.setxattr(ctx_, e->node, "user.test", std::span<const char>(value), 0);
  if (!set.has_value() && set.error() == EOPNOTSUPP) GTEST_SKIP() << "no user xattrs on /tmp";
  ASSERT_TRUE(set.has_value()) << set.error();
  auto len = fs.getxattr(ctx_, e->node, "user.test", 0);
  ASSERT_TRUE(len.has_value());
  EXPECT_EQ(len->size(), 5u);
  auto got = fs.getxattr(ctx_, e->node, "user.test", 100);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(std::string(got->begin(), got->end()), "value");
  EXPECT_EQ(fs.getxattr(ctx_, e->node, "user.test", 2).error(), ERANGE);
  auto list = fs.listxattr(ctx_, e->node, 0);
  ASSERT_TRUE(list.has_value());
  EXPECT_GE(list->size(), 10u);
  EXPECT_TRUE(fs.removexattr(ctx_, e->node, "user.test").has_value());
}

TEST_F(PassthroughTest, GuestCredentialsAreEnforced) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root";
  Touch("secret", "s");
  ASSERT_EQ(::chmod(Path("secret").c_str(), 0600), 0);
  auto& fs = Fs();
  auto e = fs.lookup(ctx_, kRootNodeId, "secret");
  Context user;
  user.uid = 1000;
  user.gid = 1000;
  EXPECT_EQ(fs.open(user, e->node, O_RDONLY).error(), EACCES);
  EXPECT_EQ(fs.access(user, e->node, R_OK).error(), EACCES);
  EXPECT_TRUE(fs.access(ctx_, e->node, R_OK).has_value());
  EXPECT_TRUE(fs.open(ctx_, e->node, O_RDONLY).has_value());

  // No search permission on a directory: lookups inside it fail for the user.
  ASSERT_EQ(::mkdir(Path("closed").c_str(), 0700), 0);
  Touch("closed/inner");
  auto closed = fs.lookup(ctx_, kRootNodeId, "closed");
  ASSERT_TRUE(closed.has_value());
  EXPECT_EQ(fs.lookup(user, closed->node, "inner").error(), EACCES);
  EXPECT_TRUE(fs.lookup(ctx_, closed->node, "inner").has_value());

  // New files belong to the guest user.
  ASSERT_EQ(::chmod(dir_.c_str(), 0777), 0);
  auto created = fs.create(user, kRootNodeId, "mine", 0644, O_RDWR, 0);
  ASSERT_TRUE(created.has_value()) << created.error();
  EXPECT_EQ(created->entry.attr.st.st_uid, 1000u);
  EXPECT_EQ(created->entry.attr.st.st_gid, 1000u);
  // And the thread is back to root afterwards.
  struct stat st {};
  Touch("after");
  ASSERT_EQ(::stat(Path("after").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);
}

TEST_F(PassthroughTest, ReadonlyRefusesModifications) {
  Touch("f");
  PassthroughConfig config;
  config.shared_dir = dir_;
  config.readonly = true;
  auto fs = PassthroughFs::Create(config);
  ASSERT_TRUE(fs.has_value());
  auto e = (*fs)->lookup(ctx_, kRootNodeId, "f");
  EXPECT_EQ((*fs)->open(ctx_, e->node, O_RDWR).error(), EROFS);
  EXPECT_TRUE((*fs)->open(ctx_, e->node, O_RDONLY).has_value());
  EXPECT_EQ((*fs)->mkdir(ctx_, kRootNodeId, "d", 0755, 0).error(), EROFS);
  EXPECT_EQ((*fs)->unlink(ctx_, kRootNodeId, "f").error(), EROFS);
}

TEST_F(PassthroughTest, InitFlagsFollowConfig) {
  auto& fs = Fs(CacheMode::kAuto);
  uint64_t all = ~0ULL;
  uint64_t flags = fs.init(all);
  EXPECT_TRUE(flags & FUSE_DO_READDIRPLUS);
  EXPECT_TRUE(flags & FUSE_DONT_MASK);
  EXPECT_TRUE(flags & FUSE_POSIX_LOCKS);
  EXPECT_FALSE(flags & FUSE_EXPORT_SUPPORT);
  EXPECT_FALSE(flags & FUSE_POSIX_ACL);
  EXPECT_FALSE(flags & FUSE_WRITEBACK_CACHE);
  EXPECT_FALSE(flags & FUSE_HANDLE_KILLPRIV_V2) << "opt-in, as in the Rust virtiofsd";
  EXPECT_TRUE(flags & protocol::kInitCreateSuppGroup);
  EXPECT_FALSE(flags & FUSE_HAS_INODE_DAX) << "no DAX, per inode or otherwise";
  EXPECT_FALSE(flags & FUSE_SECURITY_CTX);
  EXPECT_EQ(fs.init(0), 0u);
  PassthroughConfig config;
  config.shared_dir = dir_;
  config.killpriv_v2 = true;
  auto killpriv = PassthroughFs::Create(config);
  ASSERT_TRUE(killpriv.has_value());
  EXPECT_TRUE((*killpriv)->init(all) & FUSE_HANDLE_KILLPRIV_V2);
  config.killpriv_v2 = false;
  config.posix_acl = true;
  auto acl = PassthroughFs::Create(config);
  ASSERT_TRUE(acl.has_value());
  EXPECT_TRUE((*acl)->init(all) & FUSE_POSIX_ACL);
  EXPECT_FALSE((*acl)->init(all) & FUSE_HANDLE_KILLPRIV_V2);
}

TEST_F(PassthroughTest, FileHandlesMode) {
  for (auto mode : {InodeFileHandles::kPrefer, InodeFileHandles::kMandatory}) {
    Touch("f", "handle data");
    ASSERT_EQ(::mkdir(Path("d").c_str(), 0755), 0);
    Touch("d/inner");
    PassthroughConfig config;
    config.shared_dir = dir_;
    config.file_handles = mode;
    auto created = PassthroughFs::Create(config);
    if (!created.has_value()) GTEST_SKIP() << "file handles unsupported: " << created.error();
    auto& fs = **created;
    auto e = fs.lookup(ctx_, kRootNodeId, "f");
    ASSERT_TRUE(e.has_value());
    auto inode = fs.inodes().get(e->node);
    ASSERT_NE(inode, nullptr);
    EXPECT_TRUE(inode->handle.has_value());
    EXPECT_FALSE(inode->fd.valid());
    auto opened = fs.open(ctx_, e->node, O_RDONLY);
    ASSERT_TRUE(opened.has_value()) << opened.error();
    StringSink sink;
    ASSERT_TRUE(fs.read(ctx_, e->node, opened->handle, 0, 100, sink).has_value());
    EXPECT_EQ(sink.data, "handle data");
    auto d = fs.lookup(ctx_, kRootNodeId, "d");
    ASSERT_TRUE(d.has_value());
    auto inner = fs.lookup(ctx_, d->node, "inner");
    ASSERT_TRUE(inner.has_value());
    EXPECT_NE(inner->node, 0u);
    EXPECT_TRUE(fs.getattr(ctx_, inner->node, std::nullopt).has_value());
    fs.forget(e->node, 1);
    EXPECT_EQ(fs.inodes().get(e->node), nullptr);
    fs.release(ctx_, 0, opened->handle, 0, 0, 0);
    ::unlink(Path("d/inner").c_str());
    ::rmdir(Path("d").c_str());
  }
}

TEST_F(PassthroughTest, SubmountsAreAnnounced) {
  ASSERT_EQ(::mkdir(Path("sub").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(Path("plain").c_str(), 0755), 0);
  if (::mount("svfs-test", Path("sub").c_str(), "tmpfs", 0, "size=1m") != 0) {
    GTEST_SKIP() << "cannot mount tmpfs: " << std::strerror(errno);
  }
  PassthroughConfig config;
  config.shared_dir = dir_;
  config.announce_submounts = true;
  auto fs = PassthroughFs::Create(config);
  ASSERT_TRUE(fs.has_value());
  auto sub = (*fs)->lookup(ctx_, kRootNodeId, "sub");
  auto plain = (*fs)->lookup(ctx_, kRootNodeId, "plain");
  ASSERT_TRUE(sub.has_value());
  ASSERT_TRUE(plain.has_value());
  EXPECT_TRUE(sub->attr.flags & FUSE_ATTR_SUBMOUNT);
  EXPECT_FALSE(plain->attr.flags & FUSE_ATTR_SUBMOUNT);
  EXPECT_TRUE((*fs)->init(~0ULL) & FUSE_SUBMOUNTS);
  fs->reset();
  ::umount2(Path("sub").c_str(), MNT_DETACH);
}

TEST_F(PassthroughTest, TmpfileAndLseek) {
  auto& fs = Fs();
  auto t = fs.tmpfile(ctx_, kRootNodeId, 0600, O_RDWR, 0);
  if (!t.has_value() && t.error() == EOPNOTSUPP) GTEST_SKIP();
  ASSERT_TRUE(t.has_value()) << t.error();
  SpanWriteSource src("abc");
  ASSERT_TRUE(fs.write(ctx_, t->entry.node, t->opened.handle, 0, src, 0).has_value());
  auto end = fs.lseek(ctx_, t->entry.node, t->opened.handle, 0, SEEK_END);
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(*end, 3u);
  auto data = fs.lseek(ctx_, t->entry.node, t->opened.handle, 0, SEEK_DATA);
  ASSERT_TRUE(data.has_value());
  EXPECT_EQ(*data, 0u);
}

}  // namespace
}  // namespace svfs::fs
