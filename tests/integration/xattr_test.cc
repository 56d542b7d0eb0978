// Extended attributes with and without --xattr.
#include <sys/xattr.h>

#include <algorithm>

#include "svfsd_fixture.h"

namespace svfs_it {
namespace {

std::vector<std::string> ListXattrs(const std::string& path) {
  char buf[4096];
  ssize_t n = ::listxattr(path.c_str(), buf, sizeof(buf));
  std::vector<std::string> out;
  if (n < 0) return out;
  for (ssize_t i = 0; i < n;) {
    std::string name(buf + i);
    i += static_cast<ssize_t>(name.size()) + 1;
    out.push_back(name);
  }
  return out;
}

std::optional<std::string> GetXattr(const std::string& path, const char* name) {
  char buf[4096];
  ssize_t n = ::getxattr(path.c_str(), name, buf, sizeof(buf));
  if (n < 0) return std::nullopt;
  return std::string(buf, n);
}

class XattrTest : public SvfsdFixture {
 protected:
  DaemonOptions Options() override {
    DaemonOptions o;
    o.xattr = true;
    return o;
  }
};

TEST_F(XattrTest, SetGetListRemove) {
  ASSERT_EQ(WriteFile(M("f"), "x"), 0);
  ASSERT_EQ(::setxattr(M("f").c_str(), "user.color", "blue", 4, 0), 0) << ErrnoName(errno);
  ASSERT_EQ(::setxattr(M("f").c_str(), "user.empty", "", 0, 0), 0) << ErrnoName(errno);

  EXPECT_EQ(GetXattr(M("f"), "user.color"), std::optional<std::string>("blue"));
  EXPECT_EQ(GetXattr(H("f"), "user.color"), std::optional<std::string>("blue")) << "not visible on the host";
  EXPECT_EQ(GetXattr(H("f"), "user.empty"), std::optional<std::string>(""));
  // Size probe (size 0) returns the value length.
  EXPECT_EQ(::getxattr(M("f").c_str(), "user.color", nullptr, 0), 4);
  // Too-small buffer: ERANGE.
  char small[2];
  EXPECT_EQ(::getxattr(M("f").c_str(), "user.color", small, sizeof(small)), -1);
  EXPECT_EQ(errno, ERANGE);
  // Missing attribute: ENODATA.
  EXPECT_FALSE(GetXattr(M("f"), "user.nope"));
  EXPECT_EQ(errno, ENODATA);

  auto names = ListXattrs(M("f"));
  EXPECT_NE(std::find(names.begin(), names.end(), "user.color"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "user.empty"), names.end());
  auto host_names = ListXattrs(H("f"));
  std::sort(names.begin(), names.end());
  std::sort(host_names.begin(), host_names.end());
  EXPECT_EQ(names, host_names);

  // XATTR_CREATE on an existing name / XATTR_REPLACE on a missing one.
  EXPECT_EQ(::setxattr(M("f").c_str(), "user.color", "red", 3, XATTR_CREATE), -1);
  EXPECT_EQ(errno, EEXIST);
  EXPECT_EQ(::setxattr(M("f").c_str(), "user.shape", "round", 5, XATTR_REPLACE), -1);
  EXPECT_EQ(errno, ENODATA);
  ASSERT_EQ(::setxattr(M("f").c_str(), "user.color", "red", 3, XATTR_REPLACE), 0) << ErrnoName(errno);
  EXPECT_EQ(GetXattr(H("f"), "user.color"), std::optional<std::string>("red"));

  ASSERT_EQ(::removexattr(M("f").c_str(), "user.color"), 0) << ErrnoName(errno);
  EXPECT_FALSE(GetXattr(H("f"), "user.color"));
  EXPECT_EQ(errno, ENODATA);
  EXPECT_FALSE(GetXattr(M("f"), "user.color"));
  EXPECT_EQ(::removexattr(M("f").c_str(), "user.color"), -1);
  EXPECT_EQ(errno, ENODATA);
}

TEST_F(XattrTest, HostSetXattrVisibleThroughMount) {
  ASSERT_EQ(WriteFile(H("hf"), "x"), 0);
  ASSERT_EQ(::mkdir(H("hd").c_str(), 0755), 0);
  ASSERT_EQ(::setxattr(H("hf").c_str(), "user.fromhost", "v1", 2, 0), 0);
  ASSERT_EQ(::setxattr(H("hd").c_str(), "user.dirattr", "dv", 2, 0), 0);
  EXPECT_EQ(GetXattr(M("hf"), "user.fromhost"), std::optional<std::string>("v1"));
  EXPECT_EQ(GetXattr(M("hd"), "user.dirattr"), std::optional<std::string>("dv"));
  auto names = ListXattrs(M("hf"));
  EXPECT_NE(std::find(names.begin(), names.end(), "user.fromhost"), names.end());
  // On an open fd too.
  Fd fd(::open(M("hf").c_str(), O_RDONLY));
  ASSERT_TRUE(fd.ok());
  char buf[16];
  ssize_t n = ::fgetxattr(fd.get(), "user.fromhost", buf, sizeof(buf));
  ASSERT_EQ(n, 2) << ErrnoName(errno);
  EXPECT_EQ(std::string(buf, 2), "v1");
  ASSERT_EQ(::fsetxattr(fd.get(), "user.viafd", "fdv", 3, 0), 0) << ErrnoName(errno);
  EXPECT_EQ(GetXattr(H("hf"), "user.viafd"), std::optional<std::string>("fdv"));
}

// trusted.* needs CAP_SYS_ADMIN on the host (overlayfs keeps its state there): the guest (here the
// mount's users, served by svfsd as root) neither sees nor changes them.
// The l*xattr calls on a symlink act on the link itself, as on the host: a dangling link and one
// pointing at a file with attributes both list nothing (not the target's attributes, not
// ENOENT), get ENODATA, and user.* cannot be set on a link (EPERM, the host's rule). A FIFO, which
// svfsd cannot open either, takes the same route. Run in the default sandbox, which has no /proc
// path.
TEST_F(XattrTest, SymlinkAttributesAreTheLinksOwn) {
  ASSERT_EQ(WriteFile(H("target"), "x"), 0);
  ASSERT_EQ(::setxattr(H("target").c_str(), "user.secret", "s", 1, 0), 0) << ErrnoName(errno);
  ASSERT_EQ(::symlink("target", H("link").c_str()), 0);
  ASSERT_EQ(::symlink("nowhere", H("dangling").c_str()), 0);
  for (const char* name : {"link", "dangling"}) {
    char buf[256];
    errno = 0;
    const ssize_t host = ::llistxattr(H(name).c_str(), buf, sizeof(buf));
    const int host_errno = errno;
    errno = 0;
    EXPECT_EQ(::llistxattr(M(name).c_str(), buf, sizeof(buf)), host) << name << ": " << ErrnoName(errno);
    EXPECT_EQ(errno, host_errno) << name;
    EXPECT_EQ(::lgetxattr(M(name).c_str(), "user.secret", buf, sizeof(buf)), -1) << name;
    EXPECT_EQ(errno, ENODATA) << name;
    EXPECT_EQ(::lsetxattr(M(name).c_str(), "user.planted", "p", 1, 0), -1) << name;
    EXPECT_EQ(errno, EPERM) << name;
  }
  // Through the link (following it), the target's attribute.
  EXPECT_EQ(GetXattr(M("link"), "user.secret"), std::optional<std::string>("s"));
  EXPECT_EQ(ListXattrs(H("target")), std::vector<std::string>{"user.secret"})
      << "an l*xattr call reached the link's target";

  ASSERT_EQ(::mkfifo(H("fifo").c_str(), 0644), 0);
  char buf[256];
  EXPECT_EQ(::llistxattr(M("fifo").c_str(), buf, sizeof(buf)), 0) << ErrnoName(errno);
  EXPECT_EQ(::lsetxattr(M("fifo").c_str(), "user.x", "p", 1, 0), -1);
  EXPECT_EQ(errno, EPERM);
}

TEST_F(XattrTest, TrustedXattrsStayOnTheHost) {
  ASSERT_EQ(WriteFile(H("t"), "x"), 0);
  if (::setxattr(H("t").c_str(), "trusted.svfs", "host", 4, 0) != 0) {
    GTEST_SKIP() << "cannot set trusted.* on the host here: " << ErrnoName(errno);
  }
  ASSERT_EQ(::setxattr(H("t").c_str(), "user.seen", "1", 1, 0), 0) << ErrnoName(errno);

  EXPECT_FALSE(GetXattr(M("t"), "trusted.svfs"));
  EXPECT_EQ(errno, ENODATA);
  auto names = ListXattrs(M("t"));
  EXPECT_EQ(std::find(names.begin(), names.end(), "trusted.svfs"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "user.seen"), names.end());
  // The size a probe reports is that of the list the guest gets.
  std::size_t listed = 0;
  for (const auto& name : names) listed += name.size() + 1;
  EXPECT_EQ(::listxattr(M("t").c_str(), nullptr, 0), static_cast<ssize_t>(listed));

  EXPECT_EQ(::setxattr(M("t").c_str(), "trusted.overlay.opaque", "y", 1, 0), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_FALSE(GetXattr(H("t"), "trusted.overlay.opaque")) << "a guest set trusted.* on the host";
  EXPECT_EQ(::removexattr(M("t").c_str(), "trusted.svfs"), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(GetXattr(H("t"), "trusted.svfs"), std::optional<std::string>("host"));
}

class NoXattrTest : public SvfsdFixture {};  // default options: no --xattr

TEST_F(NoXattrTest, SetxattrFailsWithoutXattrOption) {
  SVFS_SKIP_WITHOUT_DAEMON();
  ASSERT_EQ(WriteFile(M("f"), "x"), 0);
  int rc = ::setxattr(M("f").c_str(), "user.color", "blue", 4, 0);
  int err = errno;
  EXPECT_EQ(rc, -1) << "setxattr succeeded although svfsd runs without --xattr";
  if (rc == -1) {
    // ENOTSUP == EOPNOTSUPP on Linux; the kernel maps FUSE ENOSYS to EOPNOTSUPP.
    EXPECT_TRUE(err == EOPNOTSUPP || err == ENOSYS) << "unexpected errno " << ErrnoName(err);
  }
  EXPECT_FALSE(GetXattr(H("f"), "user.color")) << "attribute reached the host despite no --xattr";
  // getxattr also does not work.
  EXPECT_FALSE(GetXattr(M("f"), "user.color"));
}

}  // namespace
}  // namespace svfs_it
