// POSIX behaviour where svfsd once differed from the host (issue 16): each test does the same
// thing on the host directory and through the mount and expects the host's result.
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

}  // namespace
}  // namespace svfs_it
