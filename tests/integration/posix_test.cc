// POSIX behaviour where svfsd once differed from the host (issue 16): each test does the same
// thing on the host directory and through the mount and expects the host's result.
#include <grp.h>
#include <linux/capability.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include "svfsd_fixture.h"

namespace svfs_it {
namespace {

class PosixTest : public SvfsdFixture {};

// errno of a call returning < 0 on failure (0 on success).
int ErrnoOf(int rc) { return rc < 0 ? errno : 0; }

TEST_F(PosixTest, NamesOverNameMaxAreEnametoolongEverywhere) {
  const std::string too_long(256, 'n');
  const std::string longest(255, 'n');
  ASSERT_EQ(WriteFile(H("file"), "x"), 0);
  ASSERT_EQ(::mkdir(H("dir").c_str(), 0755), 0);

  // Each operation with the over-long name under `base` (the host dir or the mount).
  struct Op {
    const char* what;
    std::function<int(const std::string& base)> run;
  };
  const std::vector<Op> ops = {
      {"stat", [&](const std::string& b) { struct stat st; return ErrnoOf(::lstat((b + "/" + too_long).c_str(), &st)); }},
      {"create", [&](const std::string& b) { return OpenErrno(b + "/" + too_long, O_CREAT | O_WRONLY, 0644); }},
      {"mkdir", [&](const std::string& b) { return ErrnoOf(::mkdir((b + "/" + too_long).c_str(), 0755)); }},
      {"mknod", [&](const std::string& b) { return ErrnoOf(::mknod((b + "/" + too_long).c_str(), S_IFIFO | 0644, 0)); }},
      {"symlink", [&](const std::string& b) { return ErrnoOf(::symlink("file", (b + "/" + too_long).c_str())); }},
      {"link", [&](const std::string& b) { return ErrnoOf(::link((b + "/file").c_str(), (b + "/" + too_long).c_str())); }},
      {"unlink", [&](const std::string& b) { return ErrnoOf(::unlink((b + "/" + too_long).c_str())); }},
      {"rmdir", [&](const std::string& b) { return ErrnoOf(::rmdir((b + "/" + too_long).c_str())); }},
      {"rename from", [&](const std::string& b) { return ErrnoOf(::rename((b + "/" + too_long).c_str(), (b + "/x").c_str())); }},
      {"rename to", [&](const std::string& b) { return ErrnoOf(::rename((b + "/file").c_str(), (b + "/" + too_long).c_str())); }},
      {"renameat2 exchange", [&](const std::string& b) {
         return ErrnoOf(::renameat2(AT_FDCWD, (b + "/dir").c_str(), AT_FDCWD, (b + "/" + too_long).c_str(), RENAME_EXCHANGE)); }},
      {"setxattr name", [&](const std::string& b) {
         const std::string name = "user." + std::string(251, 'x');
         return ErrnoOf(::setxattr((b + "/file").c_str(), name.c_str(), "v", 1, 0)); }},
      {"getxattr name", [&](const std::string& b) {
         const std::string name = "user." + std::string(251, 'x');
         char v[8];
         return ErrnoOf(static_cast<int>(::getxattr((b + "/file").c_str(), name.c_str(), v, sizeof(v)))); }},
  };
  for (const Op& op : ops) {
    const int host = op.run(src_);
    const int mount = op.run(mount_);
    EXPECT_EQ(mount, host) << op.what << ": through the mount " << ErrnoName(mount)
                           << ", on the host " << ErrnoName(host);
    if (std::string(op.what).find("xattr") == std::string::npos) {
      EXPECT_EQ(host, ENAMETOOLONG) << op.what << " on the host";
    }
  }
  // Nothing was made, and the longest legal name works through the mount.
  EXPECT_FALSE(Lstat(H(too_long)));
  ASSERT_EQ(WriteFile(M(longest), "longest"), 0);
  EXPECT_EQ(ReadFileOrDie(H(longest)), "longest");
  ASSERT_EQ(::rename(M(longest).c_str(), M("dir/" + longest).c_str()), 0) << ErrnoName(errno);
  EXPECT_TRUE(Lstat(H("dir/" + longest)));
}

// A user and groups of the test's own, unknown to /etc: numbers are all the kernel checks.
constexpr uid_t kTeamUser = 41000;
constexpr gid_t kTeamUserGroup = 41000;
constexpr gid_t kTeam = 41100;       // a supplementary group of kTeamUser
constexpr gid_t kOutsiders = 41200;  // a group kTeamUser is not in

// Runs fn in a forked child as uid/gid with exactly `groups` as supplementary groups and umask 0.
// The result is fn's (0 or an errno), 200 + errno if switching failed, -1 if the child died.
int RunWithGroups(uid_t uid, gid_t gid, const std::vector<gid_t>& groups,
                  const std::function<int()>& fn) {
  Child c([&](const Child::Channel&) {
    if (::setgroups(groups.size(), groups.data()) != 0) return 200 + (errno & 0x3f);
    if (::setresgid(gid, gid, gid) != 0) return 200 + (errno & 0x3f);
    if (::setresuid(uid, uid, uid) != 0) return 200 + (errno & 0x3f);
    ::umask(0);
    return fn();
  });
  return c.Wait();
}

int AsTeamMember(const std::function<int()>& fn) {
  return RunWithGroups(kTeamUser, kTeamUserGroup, {kTeam}, fn);
}

// Makes `rel` a directory owned by root:group with `mode`, on the host.
void MakeGroupDir(const std::string& path, gid_t group, mode_t mode) {
  ASSERT_EQ(::mkdir(path.c_str(), 0700), 0) << path;
  ASSERT_EQ(::chown(path.c_str(), 0, group), 0) << path;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

TEST_F(PosixTest, SupplementaryGroupsCountAsOnTheHost) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (switching users)";
  // A directory only the group kTeam may enter and write.
  MakeGroupDir(H("team"), kTeam, 0770);
  auto work = [](const std::string& dir) {
    return [dir] {
      if (int e = WriteFile(dir + "/file", "by a member"); e != 0) return e;
      if (::mkdir((dir + "/sub").c_str(), 0755) != 0) return errno;
      if (::symlink("file", (dir + "/link").c_str()) != 0) return errno;
      if (::mkfifo((dir + "/fifo").c_str(), 0644) != 0) return errno;
      struct stat st;
      if (::stat((dir + "/file").c_str(), &st) != 0) return errno;
      if (::rename((dir + "/file").c_str(), (dir + "/moved").c_str()) != 0) return errno;
      if (::unlink((dir + "/link").c_str()) != 0) return errno;
      return 0;
    };
  };
  ASSERT_EQ(AsTeamMember(work(H("team/host"))), ENOENT) << "host baseline: no such dir yet";
  MakeGroupDir(H("team/host"), kTeam, 0770);
  MakeGroupDir(H("team/mount"), kTeam, 0770);
  const int host = AsTeamMember(work(H("team/host")));
  ASSERT_EQ(host, 0) << "host baseline: " << ErrnoName(host);
  const int mount = AsTeamMember(work(M("team/mount")));
  EXPECT_EQ(mount, host) << "a member of the directory's group, through the mount: "
                         << ErrnoName(mount);
  // What the member made is its own, in its primary group, as on the host.
  for (const char* name : {"moved", "sub", "fifo"}) {
    auto h = Lstat(H(std::string("team/host/") + name));
    auto m = Lstat(H(std::string("team/mount/") + name));
    ASSERT_TRUE(h && m) << name;
    EXPECT_EQ(m->st_uid, h->st_uid) << name;
    EXPECT_EQ(m->st_gid, h->st_gid) << name;
    EXPECT_EQ(m->st_mode, h->st_mode) << name;
  }
  // Someone outside the group gets what the host gives.
  auto outsider = [](const std::string& path) {
    return [path] { return OpenErrno(path, O_RDONLY); };
  };
  const int host_out = RunWithGroups(kTeamUser, kTeamUserGroup, {kOutsiders},
                                     outsider(H("team/host/moved")));
  ASSERT_EQ(host_out, EACCES) << "host baseline";
  EXPECT_EQ(RunWithGroups(kTeamUser, kTeamUserGroup, {kOutsiders}, outsider(M("team/mount/moved"))),
            host_out);
}

TEST_F(PosixTest, ChgrpToASupplementaryGroupWorksAndToOthersNot) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (switching users)";
  for (const char* name : {"host", "mount"}) {
    ASSERT_EQ(WriteFile(H(name), "mine"), 0);
    ASSERT_EQ(::chown(H(name).c_str(), kTeamUser, kTeamUserGroup), 0);
  }
  auto chgrp = [](const std::string& path, gid_t group) {
    return [path, group] { return ::chown(path.c_str(), static_cast<uid_t>(-1), group) == 0 ? 0 : errno; };
  };
  const int host = AsTeamMember(chgrp(H("host"), kTeam));
  ASSERT_EQ(host, 0) << "host baseline: " << ErrnoName(host);
  EXPECT_EQ(AsTeamMember(chgrp(M("mount"), kTeam)), 0) << "chgrp to a group the owner is in";
  EXPECT_EQ(Lstat(H("mount"))->st_gid, kTeam);
  // And through fchown and chown(uid unchanged, gid) alike.
  EXPECT_EQ(AsTeamMember([&] {
              Fd fd(::open(M("mount").c_str(), O_RDONLY));
              if (!fd.ok()) return errno;
              return ::fchown(fd.get(), kTeamUser, kTeamUserGroup) == 0 ? 0 : errno;
            }),
            0);
  EXPECT_EQ(Lstat(H("mount"))->st_gid, kTeamUserGroup);
  const int host_refused = AsTeamMember(chgrp(H("host"), kOutsiders));
  ASSERT_EQ(host_refused, EPERM) << "host baseline";
  EXPECT_EQ(AsTeamMember(chgrp(M("mount"), kOutsiders)), host_refused);
  EXPECT_EQ(Lstat(H("mount"))->st_gid, kTeamUserGroup);
}

TEST_F(PosixTest, CreatingInASetgidDirectoryKeepsTheBitsTheHostKeeps) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (switching users)";
  // Writable by all, so creating needs no group: what differs is whether the creator counts as
  // a member of the directory's group, for which a new file keeps S_ISGID.
  MakeGroupDir(H("sg-host"), kTeam, 02777);
  MakeGroupDir(H("sg-mount"), kTeam, 02777);
  auto make = [](const std::string& dir) {
    return [dir] {
      if (int e = OpenErrno(dir + "/tool", O_CREAT | O_WRONLY | O_EXCL, 02755); e != 0) return e;
      if (::mkdir((dir + "/sub").c_str(), 0750) != 0) return errno;
      if (::mknod((dir + "/node").c_str(), S_IFIFO | 02710, 0) != 0) return errno;
      return 0;
    };
  };
  for (const auto& groups : std::vector<std::vector<gid_t>>{{kTeam}, {}}) {
    SCOPED_TRACE(groups.empty() ? "not a member" : "a member");
    const int host = RunWithGroups(kTeamUser, kTeamUserGroup, groups, make(H("sg-host")));
    ASSERT_EQ(host, 0) << "host baseline: " << ErrnoName(host);
    const int mount = RunWithGroups(kTeamUser, kTeamUserGroup, groups, make(M("sg-mount")));
    ASSERT_EQ(mount, 0) << ErrnoName(mount);
    for (const char* name : {"tool", "sub", "node"}) {
      auto h = Lstat(H(std::string("sg-host/") + name));
      auto m = Lstat(H(std::string("sg-mount/") + name));
      ASSERT_TRUE(h && m) << name;
      EXPECT_EQ(m->st_gid, h->st_gid) << name;
      EXPECT_EQ(m->st_mode, h->st_mode) << name << ": through the mount " << std::oct
                                        << m->st_mode << ", on the host " << h->st_mode;
      if (!groups.empty() && std::string(name) == "tool") {
        EXPECT_TRUE(h->st_mode & S_ISGID) << "host baseline: a member keeps S_ISGID";
      }
      ::unlink(H(std::string("sg-host/") + name).c_str());
      ::rmdir(H(std::string("sg-host/") + name).c_str());
      ::unlink(H(std::string("sg-mount/") + name).c_str());
      ::rmdir(H(std::string("sg-mount/") + name).c_str());
    }
  }
}

// ---------------------------------------------------------------------------
// Clearing setuid/setgid and file capabilities, with and without --killpriv-v2.

class KillprivTest : public SvfsdFixture, public ::testing::WithParamInterface<bool> {
 protected:
  DaemonOptions Options() override {
    DaemonOptions o;
    o.xattr = true;
    if (GetParam()) o.extra_args.push_back("--killpriv-v2");
    return o;
  }
};

// A file capability (cap_net_raw+ep), as setcap writes it.
std::string FileCapability() {
  vfs_cap_data cap{};
  cap.magic_etc = VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE;
  cap.data[0].permitted = 1u << CAP_NET_RAW;
  return std::string(reinterpret_cast<const char*>(&cap), XATTR_CAPS_SZ_2);
}

bool HasCapability(const std::string& path) {
  return ::getxattr(path.c_str(), "security.capability", nullptr, 0) > 0;
}

struct Modified {
  mode_t mode = 0;
  bool capability = false;
  int error = 0;
};

// One way of modifying a file, run by `uid` (root: 0) on `path`.
struct Change {
  const char* what;
  uid_t owner;
  mode_t mode;
  bool capability;
  uid_t by;
  std::function<int(const std::string& path)> run;
};

int WriteTo(const std::string& path) {
  Fd fd(::open(path.c_str(), O_WRONLY));
  if (!fd.ok()) return errno;
  return ::pwrite(fd.get(), "data", 4, 0) == 4 ? 0 : errno;
}

TEST_P(KillprivTest, SetuidSetgidAndCapabilitiesAreClearedAsOnTheHost) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (switching users, file capabilities)";
  const std::vector<Change> changes = {
      {"write by another user", 0, 06777, false, kTeamUser, WriteTo},
      {"write to setgid without group-exec by another user", 0, 02666, false, kTeamUser, WriteTo},
      {"write by the owner", kTeamUser, 06775, false, kTeamUser, WriteTo},
      {"write by root", 0, 06777, false, 0, WriteTo},
      {"write by another user to a file with a capability", 0, 0777, true, kTeamUser, WriteTo},
      {"write by root to a file with a capability", 0, 0777, true, 0, WriteTo},
      {"ftruncate by another user", 0, 06777, false, kTeamUser,
       [](const std::string& path) {
         Fd fd(::open(path.c_str(), O_WRONLY));
         if (!fd.ok()) return errno;
         return ::ftruncate(fd.get(), 1) == 0 ? 0 : errno;
       }},
      {"truncate by another user", 0, 06777, false, kTeamUser,
       [](const std::string& path) { return ::truncate(path.c_str(), 2) == 0 ? 0 : errno; }},
      {"open O_TRUNC by another user", 0, 06777, false, kTeamUser,
       [](const std::string& path) { return OpenErrno(path, O_WRONLY | O_TRUNC); }},
      {"chgrp by the owner", kTeamUser, 06755, false, kTeamUser,
       [](const std::string& path) {
         return ::chown(path.c_str(), static_cast<uid_t>(-1), kTeamUserGroup) == 0 ? 0 : errno;
       }},
      {"chown by root", 0, 06755, true, 0,
       [](const std::string& path) {
         return ::chown(path.c_str(), kTeamUser, kTeamUserGroup) == 0 ? 0 : errno;
       }},
      {"write by root to a file without write permission for others", kTeamUser, 06700, false, 0,
       WriteTo},
  };
  int n = 0;
  for (const Change& change : changes) {
    SCOPED_TRACE(change.what);
    Modified result[2];
    for (int side = 0; side < 2; ++side) {
      const std::string name = "f" + std::to_string(n) + (side == 0 ? "-host" : "-mount");
      const std::string host_path = H(name);
      ASSERT_EQ(WriteFile(host_path, "contents"), 0);
      ASSERT_EQ(::chown(host_path.c_str(), change.owner, change.owner == 0 ? 0 : kTeamUserGroup), 0);
      if (change.capability) {
        const std::string cap = FileCapability();
        ASSERT_EQ(::setxattr(host_path.c_str(), "security.capability", cap.data(), cap.size(), 0), 0)
            << std::strerror(errno);
      }
      ASSERT_EQ(::chmod(host_path.c_str(), change.mode), 0);
      const std::string path = side == 0 ? host_path : M(name);
      if (side == 1) {
        ASSERT_TRUE(Lstat(path)) << "the mount sees the file";
      }
      result[side].error = change.by == 0
                               ? change.run(path)
                               : RunWithGroups(change.by, kTeamUserGroup, {}, [&] { return change.run(path); });
      auto st = Lstat(host_path);
      ASSERT_TRUE(st);
      result[side].mode = st->st_mode & 07777;
      result[side].capability = HasCapability(host_path);
    }
    ++n;
    ASSERT_EQ(result[0].error, 0) << "host baseline: " << ErrnoName(result[0].error);
    EXPECT_EQ(result[1].error, result[0].error) << ErrnoName(result[1].error);
    if (!GetParam() && change.mode == 02666) {
      // Without killpriv_v2 the kernel's FUSE client clears setgid itself, and only when the
      // file is group-executable: a documented difference (docs/architecture.md), which
      // --killpriv-v2 removes.
      EXPECT_EQ(result[1].mode, 02666u) << std::oct << result[1].mode;
      EXPECT_EQ(result[0].mode, 0666u) << std::oct << result[0].mode;
      continue;
    }
    EXPECT_EQ(result[1].mode, result[0].mode)
        << std::oct << "through the mount " << result[1].mode << ", on the host " << result[0].mode;
    EXPECT_EQ(result[1].capability, result[0].capability)
        << "security.capability: through the mount " << result[1].capability << ", on the host "
        << result[0].capability;
  }
}

INSTANTIATE_TEST_SUITE_P(Killpriv, KillprivTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return std::string(info.param ? "KillprivV2" : "GuestKernelClears");
                         });

// ---------------------------------------------------------------------------
// POSIX ACLs (--posix-acl), set and read with setfacl/getfacl.

class PosixAclTest : public SvfsdFixture {
 protected:
  DaemonOptions Options() override {
    DaemonOptions o;
    o.extra_args.push_back("--posix-acl");
    return o;
  }
};

// Output (or "" and a failure) of a shell command.
std::string Run(const std::string& command) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    ADD_FAILURE() << "popen " << command;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  const int status = ::pclose(pipe);
  EXPECT_EQ(status, 0) << command << "\n" << out;
  return out;
}

// The ACL of `path` as getfacl prints it, numeric, without the header naming the file.
std::string Acl(const std::string& path) {
  return Run("getfacl --numeric --omit-header --absolute-names '" + path + "' 2>&1");
}

void SetAcl(const std::string& args, const std::string& path) {
  Run("setfacl " + args + " '" + path + "' 2>&1");
}

TEST_F(PosixAclTest, AccessAclsGrantAndRefuseAsOnTheHost) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (switching users)";
  SVFS_SKIP_WITHOUT_DAEMON();
  for (const char* name : {"host", "mount"}) {
    ASSERT_EQ(WriteFile(H(name), "for one user"), 0);
    ASSERT_EQ(::chmod(H(name).c_str(), 0600), 0);
  }
  // Set on the host directly, and through the mount (SETXATTR of system.posix_acl_access).
  SetAcl("-m u:41000:rw,u:41001:-", H("host"));
  SetAcl("-m u:41000:rw,u:41001:-", M("mount"));
  EXPECT_EQ(Acl(M("mount")), Acl(H("host")));
  EXPECT_EQ(Acl(H("mount")), Acl(H("host"))) << "what the host stores";
  EXPECT_EQ(Lstat(H("mount"))->st_mode, Lstat(H("host"))->st_mode) << "the mask shows in the mode";
  auto read_as = [](uid_t uid, const std::string& path) {
    return RunWithGroups(uid, uid, {}, [path] {
      auto content = ReadFile(path);
      return content ? 0 : errno;
    });
  };
  auto write_as = [](uid_t uid, const std::string& path) {
    return RunWithGroups(uid, uid, {}, [path] { return OpenErrno(path, O_WRONLY); });
  };
  for (uid_t uid : {uid_t{41000}, uid_t{41001}, uid_t{41002}}) {
    SCOPED_TRACE("uid " + std::to_string(uid));
    const int host_read = read_as(uid, H("host"));
    EXPECT_EQ(host_read, uid == 41000 ? 0 : EACCES) << "host baseline";
    EXPECT_EQ(read_as(uid, M("mount")), host_read);
    EXPECT_EQ(write_as(uid, M("mount")), write_as(uid, H("host")));
  }
  // chmod narrows the mask, on the host as through the mount.
  ASSERT_EQ(::chmod(H("host").c_str(), 0640), 0);
  ASSERT_EQ(::chmod(M("mount").c_str(), 0640), 0);
  EXPECT_EQ(Acl(M("mount")), Acl(H("host")));
  EXPECT_EQ(write_as(41000, M("mount")), write_as(41000, H("host")));
  EXPECT_EQ(write_as(41000, H("host")), EACCES) << "host baseline: the mask allows reading only";
}

TEST_F(PosixAclTest, DefaultAclsAreInheritedAndTheUmaskOnlyCountsWithout) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (switching users)";
  SVFS_SKIP_WITHOUT_DAEMON();
  for (const char* name : {"host", "mount"}) {
    ASSERT_EQ(::mkdir(H(name).c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(H(std::string(name) + "-plain").c_str(), 0755), 0);
  }
  SetAcl("-d -m u:41000:rwx,g::r-x,o::-", H("host"));
  SetAcl("-d -m u:41000:rwx,g::r-x,o::-", M("mount"));
  EXPECT_EQ(Acl(M("mount")), Acl(H("host")));
  // As root with umask 022: a file, a directory and a fifo in each directory.
  auto make = [](const std::string& dir) {
    Child c([dir](const Child::Channel&) {
      ::umask(022);
      if (int e = OpenErrno(dir + "/file", O_CREAT | O_WRONLY | O_EXCL, 0666); e != 0) return e;
      if (::mkdir((dir + "/dir").c_str(), 0777) != 0) return errno;
      if (::mkfifo((dir + "/fifo").c_str(), 0666) != 0) return errno;
      return 0;
    });
    return c.Wait();
  };
  for (const char* name : {"host", "host-plain"}) ASSERT_EQ(make(H(name)), 0) << name;
  for (const char* name : {"mount", "mount-plain"}) ASSERT_EQ(make(M(name)), 0) << name;
  for (const char* child : {"file", "dir", "fifo"}) {
    SCOPED_TRACE(child);
    EXPECT_EQ(Acl(H(std::string("mount/") + child)), Acl(H(std::string("host/") + child)))
        << "inherited from the default ACL";
    EXPECT_EQ(Lstat(H(std::string("mount/") + child))->st_mode,
              Lstat(H(std::string("host/") + child))->st_mode);
    EXPECT_EQ(Lstat(H(std::string("mount-plain/") + child))->st_mode,
              Lstat(H(std::string("host-plain/") + child))->st_mode)
        << "without a default ACL the umask applies";
  }
  EXPECT_NE(Acl(H("host/file")).find("user:41000:rwx"), std::string::npos)
      << "host baseline: the file inherited the entry\n" << Acl(H("host/file"));
  // The inherited entry counts: 41000 may write the new file through the mount.
  EXPECT_EQ(RunWithGroups(41000, 41000, {}, [&] { return OpenErrno(M("mount/file"), O_WRONLY); }),
            RunWithGroups(41000, 41000, {}, [&] { return OpenErrno(H("host/file"), O_WRONLY); }));
}

}  // namespace
}  // namespace svfs_it
