// --translate-uid/--translate-gid through a real /dev/fuse mount: the mount's callers play the
// guest. Guest uid/gid 41000 is host 42000 (both ways), guest uid 43000 is forbidden.
#include "svfsd_fixture.h"

namespace svfs_it {
namespace {

constexpr uint32_t kGuestId = 41000;
constexpr uint32_t kHostId = 42000;
constexpr uid_t kForbiddenUid = 43000;

class IdTranslationTest : public SvfsdFixture {
 protected:
  DaemonOptions Options() override {
    // cache none: every stat reaches svfsd, so each one shows the translation.
    return {.cache = "none",
            .extra_args = {"--translate-uid", "map:41000:42000:1", "--translate-gid",
                           "map:41000:42000:1", "--translate-uid", "forbid-guest:43000:1"}};
  }
  struct stat StatOrDie(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
    return st;
  }
};

TEST_F(IdTranslationTest, HostOwnersAppearAsTheirGuestIds) {
  if (NoDaemonMode()) GTEST_SKIP() << "translation is svfsd's";
  ASSERT_EQ(WriteFile(H("theirs"), "x"), 0);
  ASSERT_EQ(::chown(H("theirs").c_str(), kHostId, kHostId), 0);
  ASSERT_EQ(WriteFile(H("other"), "x"), 0);
  ASSERT_EQ(::chown(H("other").c_str(), 5555, 6666), 0);

  struct stat theirs = StatOrDie(M("theirs"));
  EXPECT_EQ(theirs.st_uid, kGuestId);
  EXPECT_EQ(theirs.st_gid, kGuestId);
  struct stat other = StatOrDie(M("other"));  // no rule covers these: unchanged
  EXPECT_EQ(other.st_uid, 5555u);
  EXPECT_EQ(other.st_gid, 6666u);
}

TEST_F(IdTranslationTest, ChownToTheGuestIdStoresTheHostId) {
  if (NoDaemonMode()) GTEST_SKIP() << "translation is svfsd's";
  ASSERT_EQ(WriteFile(H("file"), "x"), 0);
  ASSERT_EQ(::chown(M("file").c_str(), kGuestId, kGuestId), 0) << std::strerror(errno);
  struct stat host = StatOrDie(H("file"));
  EXPECT_EQ(host.st_uid, kHostId);
  EXPECT_EQ(host.st_gid, kHostId);
  EXPECT_EQ(StatOrDie(M("file")).st_uid, kGuestId);
}

TEST_F(IdTranslationTest, CallersActAsTheirHostIds) {
  if (NoDaemonMode()) GTEST_SKIP() << "translation is svfsd's";
  ASSERT_EQ(::chmod(src_.c_str(), 0777), 0);
  EXPECT_EQ(RunAs(kGuestId, kGuestId, [&] { return WriteFile(M("made"), "x"); }), 0);
  struct stat host = StatOrDie(H("made"));
  EXPECT_EQ(host.st_uid, kHostId) << "created as the caller's host uid";
  EXPECT_EQ(host.st_gid, kHostId);
  EXPECT_EQ(StatOrDie(M("made")).st_uid, kGuestId);
}

TEST_F(IdTranslationTest, ForbiddenGuestIdsGetEperm) {
  if (NoDaemonMode()) GTEST_SKIP() << "translation is svfsd's";
  ASSERT_EQ(::chmod(src_.c_str(), 0777), 0);
  // The kernel allows it (the directory is writable for all); svfsd refuses the caller.
  EXPECT_EQ(RunAs(kForbiddenUid, kForbiddenUid, [&] { return WriteFile(M("refused"), "x"); }),
            EPERM);
  EXPECT_FALSE(Lstat(H("refused")));
  // Nor may anyone make a file the forbidden uid's.
  ASSERT_EQ(WriteFile(H("file"), "x"), 0);
  EXPECT_NE(::chown(M("file").c_str(), kForbiddenUid, static_cast<gid_t>(-1)), 0);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(StatOrDie(H("file")).st_uid, 0u);
}

}  // namespace
}  // namespace svfs_it
