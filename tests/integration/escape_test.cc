// Escape attempts: nothing outside the source dir may be created, modified or
// read through svfsd's own operations.
//
// Symlinks are resolved by the *client* kernel in the mount's namespace: that
// is not an escape. What matters is that svfsd itself never follows a symlink
// or ".." on the host side. On this test host the client and the host share a
// namespace, so each check is built so that host-side resolution and
// client-side resolution give observably different results.
#include <dirent.h>
#include <sys/xattr.h>

#include <map>
#include <set>

#include "svfsd_fixture.h"

namespace svfs_it {
namespace {

// A snapshot of a directory tree's names and metadata (not atime) and content.
std::map<std::string, std::string> Snapshot(const std::string& dir) {
  std::map<std::string, std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    std::string p = dir + "/" + n;
    struct stat st {};
    ::lstat(p.c_str(), &st);
    std::ostringstream s;
    s << std::oct << st.st_mode << std::dec << " " << st.st_uid << ":" << st.st_gid << " size=" << st.st_size
      << " mtime=" << st.st_mtim.tv_sec << "." << st.st_mtim.tv_nsec << " ctime=" << st.st_ctim.tv_sec << "."
      << st.st_ctim.tv_nsec << " nlink=" << st.st_nlink;
    if (S_ISREG(st.st_mode)) s << " data=" << ReadFileOrDie(p);
    out[n] = s.str();
    if (S_ISDIR(st.st_mode))
      for (auto& [k, v] : Snapshot(p)) out[n + "/" + k] = v;
  }
  ::closedir(d);
  return out;
}

const std::string& OutsideDir() {
  static const std::string dir = "/tmp/svfs-outside-" + std::to_string(::getpid());
  return dir;
}
std::map<std::string, std::string>& OutsideBaseline() {
  static std::map<std::string, std::string> snap;
  return snap;
}

// Creates the outside dir once for the whole run and checks at the very end
// that it is unchanged after all tests.
class OutsideEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    RemoveTree(OutsideDir());
    ASSERT_EQ(::mkdir(OutsideDir().c_str(), 0755), 0);
    ASSERT_EQ(WriteFile(OutsideDir() + "/secret", "outside secret\n", O_WRONLY | O_CREAT | O_TRUNC, 0600), 0);
    ASSERT_EQ(::mkdir((OutsideDir() + "/subdir").c_str(), 0755), 0);
    OutsideBaseline() = Snapshot(OutsideDir());
  }
  void TearDown() override {
    EXPECT_EQ(Snapshot(OutsideDir()), OutsideBaseline()) << "the outside dir changed during the test run";
    RemoveTree(OutsideDir());
  }
};
[[maybe_unused]] ::testing::Environment* const kOutsideEnv =
    ::testing::AddGlobalTestEnvironment(new OutsideEnvironment);

class EscapeTest : public SvfsdFixture {
 protected:
  DaemonOptions Options() override {
    DaemonOptions o;
    o.cache = "none";
    o.xattr = true;
    return o;
  }
  void SetUp() override {
    SvfsdFixture::SetUp();
    if (HasFatalFailure()) return;
    secret_ = OutsideDir() + "/secret";
    ASSERT_TRUE(Lstat(secret_)) << "outside dir missing";
    ASSERT_EQ(::symlink(secret_.c_str(), H("esc").c_str()), 0);
    ASSERT_EQ(::symlink("/etc", H("etc").c_str()), 0);
    ASSERT_EQ(::symlink("../../..", H("up").c_str()), 0);
    ASSERT_EQ(::symlink("../parent-sentinel", H("rel").c_str()), 0);
    ASSERT_EQ(::symlink(OutsideDir().c_str(), H("outdir").c_str()), 0);
    before_ = Snapshot(OutsideDir());
    host_before_ = Snapshot(host_);
  }
  void TearDown() override {
    if (!before_.empty()) {
      EXPECT_EQ(Snapshot(OutsideDir()), before_) << "outside dir modified";
      // Only the source dir subtree may change below host_.
      auto after = Snapshot(host_);
      for (auto& [k, v] : host_before_)
        if (k.rfind("src", 0) != 0) {
          auto it = after.find(k);
          EXPECT_TRUE(it != after.end() && it->second == v) << "parent of the source dir changed: " << k;
        }
      for (auto& [k, v] : after)
        EXPECT_TRUE(k.rfind("src", 0) == 0 || host_before_.count(k)) << "created next to the source dir: " << k;
    }
    SvfsdFixture::TearDown();
  }
  std::string secret_;
  std::map<std::string, std::string> before_, host_before_;
};

TEST_F(EscapeTest, SymlinkInodeItselfIsNotFollowed) {
  auto st = Lstat(M("esc"));
  ASSERT_TRUE(st) << ErrnoName(errno);
  EXPECT_TRUE(S_ISLNK(st->st_mode));
  char buf[512];
  ssize_t n = ::readlink(M("esc").c_str(), buf, sizeof(buf));
  ASSERT_GE(n, 0);
  EXPECT_EQ(std::string(buf, n), secret_);
  n = ::readlink(M("up").c_str(), buf, sizeof(buf));
  ASSERT_GE(n, 0);
  EXPECT_EQ(std::string(buf, n), "../../..");
  EXPECT_EQ(OpenErrno(M("esc"), O_RDONLY | O_NOFOLLOW), ELOOP);
  EXPECT_EQ(OpenErrno(M("etc"), O_RDONLY | O_NOFOLLOW), ELOOP);
  EXPECT_EQ(OpenErrno(M("up"), O_RDONLY | O_NOFOLLOW), ELOOP);
  // Same as on the host.
  EXPECT_EQ(OpenErrno(H("esc"), O_RDONLY | O_NOFOLLOW), ELOOP);
  // O_PATH|O_NOFOLLOW gets the link itself.
  Fd p(::open(M("esc").c_str(), O_PATH | O_NOFOLLOW));
  ASSERT_TRUE(p.ok()) << ErrnoName(errno);
  struct stat pst {};
  ASSERT_EQ(::fstat(p.get(), &pst), 0);
  EXPECT_TRUE(S_ISLNK(pst.st_mode));
}

TEST_F(EscapeTest, SetattrOnSymlinkDoesNotTouchTarget) {
  auto target_before = Lstat(secret_);
  ASSERT_TRUE(target_before);
  // lchown: a SETATTR on the symlink inode. svfsd must change the link, not
  // follow it on the host to the outside file.
  ASSERT_EQ(::lchown(M("esc").c_str(), 1234, 4321), 0) << ErrnoName(errno);
  auto l = Lstat(H("esc"));
  ASSERT_TRUE(l);
  EXPECT_EQ(l->st_uid, 1234u) << "symlink owner not changed on host";
  EXPECT_EQ(l->st_gid, 4321u);
  auto t = Lstat(secret_);
  EXPECT_EQ(t->st_uid, target_before->st_uid) << "lchown through the mount changed a file outside the share!";
  EXPECT_EQ(t->st_gid, target_before->st_gid);

  // utimensat(AT_SYMLINK_NOFOLLOW) on the link.
  struct timespec ts[2] = {{1000000000, 0}, {1000000000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, M("esc").c_str(), ts, AT_SYMLINK_NOFOLLOW), 0) << ErrnoName(errno);
  EXPECT_EQ(Lstat(H("esc"))->st_mtim.tv_sec, 1000000000);
  EXPECT_EQ(Lstat(secret_)->st_mtim.tv_sec, target_before->st_mtim.tv_sec)
      << "utimensat(AT_SYMLINK_NOFOLLOW) through the mount changed the outside file";
  // user.* xattrs are not permitted on symlinks; it must not land on the target.
  ::lsetxattr(M("esc").c_str(), "user.escape", "x", 1, 0);
  char v[8];
  EXPECT_LT(::getxattr(secret_.c_str(), "user.escape", v, sizeof(v)), 0) << "xattr set on outside file";
}

TEST_F(EscapeTest, RelativeSymlinksResolveOnClientSide) {
  // Host-side resolution of src/rel reaches host_/parent-sentinel; client-side
  // resolution of mnt/rel goes to base_/parent-sentinel, which does not exist.
  ASSERT_TRUE(ReadFile(H("rel"))) << "host baseline: rel should resolve on the host";
  if (NoDaemonMode()) GTEST_SKIP() << "mount == source dir without the daemon";
  EXPECT_FALSE(ReadFile(M("rel"))) << "reading mnt/rel returned the host's parent-sentinel";
  EXPECT_EQ(errno, ENOENT);
  // "up" -> ../../.. : on the host that is /tmp; through the mount it is "/".
  const std::string base_name = base_.substr(base_.rfind('/') + 1);
  ASSERT_TRUE(Lstat(src_ + "/up/" + base_name + "/host/parent-sentinel")) << "host baseline";
  EXPECT_FALSE(Lstat(M("up/" + base_name + "/host/parent-sentinel")))
      << "mnt/up resolved with the host's view of ../../..";
  auto root = Stat("/"), up = Stat(M("up"));
  ASSERT_TRUE(root && up);
  EXPECT_EQ(up->st_ino, root->st_ino);
  EXPECT_EQ(up->st_dev, root->st_dev);
}

TEST_F(EscapeTest, DotDotFromMountRootGoesToClientParent) {
  SVFS_SKIP_WITHOUT_DAEMON();
  Fd mfd(::open(mount_.c_str(), O_RDONLY | O_DIRECTORY));
  ASSERT_TRUE(mfd.ok());
  struct stat dotdot {};
  ASSERT_EQ(::fstatat(mfd.get(), "..", &dotdot, 0), 0);
  auto base = Stat(base_), host_parent = Stat(host_);
  EXPECT_EQ(dotdot.st_ino, base->st_ino) << "'..' of the mount root is not the mountpoint's parent";
  EXPECT_NE(dotdot.st_ino, host_parent->st_ino);
  EXPECT_EQ(OpenErrno(M("../parent-sentinel"), O_RDONLY), ENOENT);
  struct stat st {};
  EXPECT_NE(::fstatat(mfd.get(), "../parent-sentinel", &st, 0), 0);
  // Deeper: sub/../.. also ends at the client's parent.
  ASSERT_EQ(::mkdir(M("sub").c_str(), 0755), 0);
  ASSERT_EQ(::fstatat(mfd.get(), "sub/../..", &st, 0), 0);
  EXPECT_EQ(st.st_ino, base->st_ino);
  // The root's own ".." entry from readdir must not leak a host inode either.
  ASSERT_EQ(::fstatat(mfd.get(), "sub/..", &st, 0), 0);
  struct stat rootst {};
  ASSERT_EQ(::fstat(mfd.get(), &rootst), 0);
  EXPECT_EQ(st.st_ino, rootst.st_ino);
}

TEST_F(EscapeTest, DotDotPathsStayInside) {
  ASSERT_EQ(::mkdir(M("a").c_str(), 0755), 0);
  ASSERT_EQ(WriteFile(M("a/../b"), "bee"), 0);
  EXPECT_EQ(ReadFileOrDie(H("b")), "bee");
  EXPECT_FALSE(Lstat(host_ + "/b")) << "file created next to the source dir";
  // Creating through a symlinked directory pointing outside is the client's
  // business; but rename/link from the mount to outside must fail with EXDEV.
  ASSERT_EQ(WriteFile(M("inside"), "in"), 0);
  if (!NoDaemonMode()) {
    EXPECT_EQ(::rename(M("inside").c_str(), (OutsideDir() + "/moved").c_str()), -1);
    EXPECT_EQ(errno, EXDEV);
    EXPECT_EQ(::link(M("inside").c_str(), (OutsideDir() + "/linked").c_str()), -1);
    EXPECT_EQ(errno, EXDEV);
    EXPECT_EQ(::link(secret_.c_str(), M("stolen").c_str()), -1);
    EXPECT_EQ(errno, EXDEV);
  }
  EXPECT_FALSE(Lstat(OutsideDir() + "/moved"));
  EXPECT_FALSE(Lstat(OutsideDir() + "/linked"));
  EXPECT_TRUE(Lstat(H("inside")));
}

TEST_F(EscapeTest, RootListingAndLinkOpsStayInside) {
  // Listing the root through the mount shows only share entries.
  std::set<std::string> names;
  DIR* d = ::opendir(mount_.c_str());
  ASSERT_NE(d, nullptr);
  while (dirent* e = ::readdir(d)) names.insert(e->d_name);
  ::closedir(d);
  EXPECT_FALSE(names.count("parent-sentinel"));
  EXPECT_FALSE(names.count("host"));
  EXPECT_TRUE(names.count("esc"));
  // Renaming a symlink pointing outside moves the link, not the target.
  ASSERT_EQ(::rename(M("esc").c_str(), M("esc2").c_str()), 0) << ErrnoName(errno);
  EXPECT_TRUE(S_ISLNK(Lstat(H("esc2"))->st_mode));
  EXPECT_TRUE(Lstat(secret_));
  // Unlinking a symlink removes the link only.
  ASSERT_EQ(::unlink(M("esc2").c_str()), 0);
  EXPECT_TRUE(Lstat(secret_)) << "unlink through the mount removed the symlink's outside target";
  ASSERT_EQ(::unlink(M("outdir").c_str()), 0);
  EXPECT_TRUE(Lstat(OutsideDir() + "/subdir"));
}

}  // namespace
}  // namespace svfs_it
