// Permission checks for unprivileged callers: svfsd performs each request with
// the caller's fsuid/fsgid, so the outcome must match the host's.
#include "svfsd_fixture.h"

namespace svfs_it {
namespace {

class PermissionsTest : public SvfsdCacheFixture {};

TEST_P(PermissionsTest, RootOnly0600FileNotReadableByNobody) {
  ASSERT_EQ(WriteFile(H("secret"), "root only"), 0);
  ASSERT_EQ(::chmod(H("secret").c_str(), 0600), 0);
  ASSERT_EQ(::chown(H("secret").c_str(), 0, 0), 0);
  const std::string mpath = M("secret"), hpath = H("secret");

  int host = RunAs(kNobodyUid, kNobodyGid, [&] { return OpenErrno(hpath, O_RDONLY); });
  ASSERT_EQ(host, EACCES) << "host baseline";
  int via_mount = RunAs(kNobodyUid, kNobodyGid, [&] { return OpenErrno(mpath, O_RDONLY); });
  EXPECT_EQ(via_mount, host) << "nobody opened a root-owned 0600 file through the mount";
  EXPECT_EQ(RunAs(kNobodyUid, kNobodyGid, [&] { return OpenErrno(mpath, O_WRONLY); }), EACCES);
  // Metadata is still visible (the directory is 0755).
  EXPECT_EQ(RunAs(kNobodyUid, kNobodyGid, [&] { return Stat(mpath) ? 0 : errno; }), 0);
  // And root can open it (no over-restriction).
  EXPECT_EQ(OpenErrno(mpath, O_RDONLY), 0);
  // A world-readable file next to it is readable by nobody.
  ASSERT_EQ(WriteFile(H("public"), "anyone"), 0);
  ASSERT_EQ(::chmod(H("public").c_str(), 0644), 0);
  const std::string pub = M("public");
  EXPECT_EQ(RunAs(kNobodyUid, kNobodyGid, [&] {
              auto c = ReadFile(pub);
              if (!c) return errno;
              return *c == "anyone" ? 0 : 99;
            }),
            0);
}

TEST_P(PermissionsTest, NobodyCannotCreateInRootOwned0755Dir) {
  ASSERT_EQ(::mkdir(H("rootdir").c_str(), 0755), 0);
  ASSERT_EQ(::chmod(H("rootdir").c_str(), 0755), 0);
  const std::string mdir = M("rootdir"), hdir = H("rootdir");
  int host = RunAs(kNobodyUid, kNobodyGid, [&] { return OpenErrno(hdir + "/h", O_CREAT | O_WRONLY, 0644); });
  ASSERT_EQ(host, EACCES) << "host baseline";
  EXPECT_EQ(RunAs(kNobodyUid, kNobodyGid, [&] { return OpenErrno(mdir + "/m", O_CREAT | O_WRONLY, 0644); }),
            EACCES);
  EXPECT_EQ(RunAs(kNobodyUid, kNobodyGid, [&] { return ::mkdir((mdir + "/sub").c_str(), 0755) == 0 ? 0 : errno; }),
            EACCES);
  EXPECT_EQ(RunAs(kNobodyUid, kNobodyGid,
                  [&] { return ::symlink("x", (mdir + "/sl").c_str()) == 0 ? 0 : errno; }),
            EACCES);
  EXPECT_FALSE(Lstat(H("rootdir/m")));
  EXPECT_FALSE(Lstat(H("rootdir/sub")));
  EXPECT_FALSE(Lstat(H("rootdir/sl")));
  // Nor delete from it.
  ASSERT_EQ(WriteFile(H("rootdir/keep"), "k"), 0);
  EXPECT_EQ(RunAs(kNobodyUid, kNobodyGid, [&] { return ::unlink((mdir + "/keep").c_str()) == 0 ? 0 : errno; }),
            EACCES);
  EXPECT_TRUE(Lstat(H("rootdir/keep")));
}

TEST_P(PermissionsTest, FileCreatedByUserIsOwnedByUserOnHost) {
  ASSERT_EQ(::mkdir(H("open").c_str(), 0777), 0);
  ASSERT_EQ(::chmod(H("open").c_str(), 0777), 0);
  const std::string mdir = M("open");
  int rc = RunAs(kUserUid, kUserGid, [&] {
    if (int e = WriteFile(mdir + "/mine", "user data"); e != 0) return e;
    if (::mkdir((mdir + "/mydir").c_str(), 0755) != 0) return errno;
    if (::symlink("mine", (mdir + "/mylink").c_str()) != 0) return errno;
    if (::mkfifo((mdir + "/myfifo").c_str(), 0644) != 0) return errno;
    return 0;
  });
  ASSERT_EQ(rc, 0) << ErrnoName(rc);
  for (const char* name : {"open/mine", "open/mydir", "open/mylink", "open/myfifo"}) {
    auto h = Lstat(H(name));
    ASSERT_TRUE(h) << name;
    EXPECT_EQ(h->st_uid, kUserUid) << name << " on host";
    EXPECT_EQ(h->st_gid, kUserGid) << name << " on host";
    auto m = Lstat(M(name));
    ASSERT_TRUE(m) << name;
    EXPECT_EQ(m->st_uid, kUserUid) << name << " through mount";
    EXPECT_EQ(m->st_gid, kUserGid) << name << " through mount";
  }
  EXPECT_EQ(ReadFileOrDie(H("open/mine")), "user data");
  // Root-created files in the same dir stay root-owned (credentials are per request).
  ASSERT_EQ(WriteFile(M("open/roots"), "r"), 0);
  EXPECT_EQ(Stat(H("open/roots"))->st_uid, 0u);
  // The user can write its own file but not root's 0644 file.
  ASSERT_EQ(::chmod(H("open/roots").c_str(), 0644), 0);
  const std::string roots = M("open/roots"), mine = M("open/mine");
  EXPECT_EQ(RunAs(kUserUid, kUserGid, [&] { return OpenErrno(mine, O_WRONLY | O_APPEND); }), 0);
  EXPECT_EQ(RunAs(kUserUid, kUserGid, [&] { return OpenErrno(roots, O_WRONLY); }), EACCES);
  // truncate is a SETATTR: must be checked too.
  EXPECT_EQ(RunAs(kUserUid, kUserGid, [&] { return ::truncate(roots.c_str(), 0) == 0 ? 0 : errno; }), EACCES);
  EXPECT_EQ(Stat(H("open/roots"))->st_size, 1);
  // chmod on someone else's file: EPERM.
  EXPECT_EQ(RunAs(kUserUid, kUserGid, [&] { return ::chmod(roots.c_str(), 0666) == 0 ? 0 : errno; }), EPERM);
  EXPECT_EQ(Stat(H("open/roots"))->st_mode & 07777, 0644u);
}

TEST_P(PermissionsTest, NonRootChownToOtherUidFails) {
  ASSERT_EQ(::mkdir(H("open").c_str(), 0777), 0);
  ASSERT_EQ(::chmod(H("open").c_str(), 0777), 0);
  ASSERT_EQ(WriteFile(H("open/f"), "x"), 0);
  ASSERT_EQ(::chown(H("open/f").c_str(), kUserUid, kUserGid), 0);
  const std::string mf = M("open/f"), hf = H("open/f");
  int host = RunAs(kUserUid, kUserGid, [&] { return ::chown(hf.c_str(), 1234, static_cast<gid_t>(-1)) == 0 ? 0 : errno; });
  ASSERT_EQ(host, EPERM) << "host baseline";
  EXPECT_EQ(RunAs(kUserUid, kUserGid,
                  [&] { return ::chown(mf.c_str(), 1234, static_cast<gid_t>(-1)) == 0 ? 0 : errno; }),
            EPERM);
  // Also: giving the file to a group the user is not in.
  EXPECT_EQ(RunAs(kUserUid, kUserGid,
                  [&] { return ::chown(mf.c_str(), static_cast<uid_t>(-1), 5678) == 0 ? 0 : errno; }),
            EPERM);
  auto h = Stat(hf);
  EXPECT_EQ(h->st_uid, kUserUid);
  EXPECT_EQ(h->st_gid, kUserGid);
  // Owner may chmod its own file.
  EXPECT_EQ(RunAs(kUserUid, kUserGid, [&] { return ::chmod(mf.c_str(), 0600) == 0 ? 0 : errno; }), 0);
  EXPECT_EQ(Stat(hf)->st_mode & 07777, 0600u);
  // And utimensat with explicit times on someone else's file fails with EPERM.
  const std::string other = M("open/other");
  ASSERT_EQ(WriteFile(H("open/other"), "o"), 0);
  ASSERT_EQ(::chmod(H("open/other").c_str(), 0666), 0);
  struct timespec ts[2] = {{1000, 0}, {1000, 0}};
  EXPECT_EQ(RunAs(kUserUid, kUserGid,
                  [&] { return ::utimensat(AT_FDCWD, other.c_str(), ts, 0) == 0 ? 0 : errno; }),
            EPERM);
  EXPECT_NE(Stat(H("open/other"))->st_mtim.tv_sec, 1000);
}

TEST_P(PermissionsTest, SupplementaryGroupsAreNotInheritedFromDaemon) {
  // A 0070 file owned by group 0: a caller whose only group is nobody's must
  // not get group access (svfsd itself runs as root with group 0).
  ASSERT_EQ(WriteFile(H("grp"), "group data"), 0);
  ASSERT_EQ(::chown(H("grp").c_str(), 4242, 0), 0);
  ASSERT_EQ(::chmod(H("grp").c_str(), 0070), 0);
  const std::string mpath = M("grp"), hpath = H("grp");
  ASSERT_EQ(RunAs(kNobodyUid, kNobodyGid, [&] { return OpenErrno(hpath, O_RDONLY); }), EACCES);
  EXPECT_EQ(RunAs(kNobodyUid, kNobodyGid, [&] { return OpenErrno(mpath, O_RDONLY); }), EACCES);
  // With gid 0 as primary group it is readable on the host and via the mount.
  EXPECT_EQ(RunAs(kNobodyUid, 0, [&] { return OpenErrno(hpath, O_RDONLY); }), 0);
  EXPECT_EQ(RunAs(kNobodyUid, 0, [&] { return OpenErrno(mpath, O_RDONLY); }), 0);
}

TEST_P(PermissionsTest, NoSearchPermissionInPrivateDir) {
  // A root-owned 0700 directory: nobody cannot look up names inside it.
  ASSERT_EQ(::mkdir(H("private").c_str(), 0700), 0);
  ASSERT_EQ(::chmod(H("private").c_str(), 0700), 0);
  ASSERT_EQ(WriteFile(H("private/f"), "hidden"), 0);
  ASSERT_EQ(::chmod(H("private/f").c_str(), 0644), 0);
  const std::string mf = M("private/f"), hf = H("private/f"), md = M("private");
  ASSERT_EQ(RunAs(kNobodyUid, kNobodyGid, [&] { return Stat(hf) ? 0 : errno; }), EACCES) << "host baseline";
  EXPECT_EQ(RunAs(kNobodyUid, kNobodyGid, [&] { return Stat(mf) ? 0 : errno; }), EACCES);
  EXPECT_EQ(RunAs(kNobodyUid, kNobodyGid, [&] { return OpenErrno(mf, O_RDONLY); }), EACCES);
  EXPECT_EQ(RunAs(kNobodyUid, kNobodyGid, [&] { return OpenErrno(md, O_RDONLY | O_DIRECTORY); }), EACCES);
  // Even after root has looked the name up (warm caches), nobody is refused.
  ASSERT_TRUE(Stat(mf));
  EXPECT_EQ(RunAs(kNobodyUid, kNobodyGid, [&] { return OpenErrno(mf, O_RDONLY); }), EACCES);
}

INSTANTIATE_TEST_SUITE_P(CacheModes, PermissionsTest, ::testing::Values("none", "auto"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace svfs_it
