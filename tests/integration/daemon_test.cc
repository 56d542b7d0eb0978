// Daemon-level behaviour: lifecycle, SIGUSR1 counters, cache-mode visibility.
#include <regex>

#include "svfsd_fixture.h"

namespace svfs_it {
namespace {

class DaemonTest : public SvfsdFixture {};

TEST_F(DaemonTest, MountsAsFuseAndUnmountsOnSigterm) {
  SVFS_SKIP_WITHOUT_DAEMON();
  struct statfs sfs {};
  ASSERT_EQ(::statfs(mnt_.c_str(), &sfs), 0);
  EXPECT_EQ(static_cast<long>(sfs.f_type), kFuseSuperMagic);
  EXPECT_TRUE(IsMountPoint(mnt_));
  // The mount root is the source dir: same mode/owner, once cache=auto's 1 s attribute
  // timeout has passed (the root's attributes may be cached from the mount's first stat).
  ASSERT_EQ(::chmod(src_.c_str(), 0751), 0);
  ASSERT_EQ(::chown(src_.c_str(), 321, 654), 0);
  auto root = Stat(mnt_);
  for (int i = 0; i < 30 && root && root->st_uid != 321u; ++i) {
    ::usleep(100 * 1000);
    root = Stat(mnt_);
  }
  ASSERT_TRUE(root);
  EXPECT_TRUE(S_ISDIR(root->st_mode));
  EXPECT_EQ(root->st_mode & 07777, 0751u);
  EXPECT_EQ(root->st_uid, 321u);
  ASSERT_EQ(::chown(src_.c_str(), 0, 0), 0);
  ASSERT_EQ(::chmod(src_.c_str(), 0755), 0);
  StopDaemon();  // asserts exit status 0 and that the mount is gone
  EXPECT_FALSE(IsMountPoint(mnt_));
  ASSERT_EQ(::statfs(mnt_.c_str(), &sfs), 0);
  EXPECT_NE(static_cast<long>(sfs.f_type), kFuseSuperMagic);
}

TEST_F(DaemonTest, SigintAlsoUnmountsCleanly) {
  SVFS_SKIP_WITHOUT_DAEMON();
  ASSERT_EQ(WriteFile(M("f"), "x"), 0);
  int st = daemon_.Kill(SIGINT, std::chrono::seconds(10));
  ASSERT_FALSE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) << "svfsd did not exit within 10 s of SIGINT";
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << "status " << st;
  EXPECT_FALSE(IsMountPoint(mnt_));
  EXPECT_EQ(ReadFileOrDie(H("f")), "x");
}

TEST_F(DaemonTest, BusyMountStillExitsOnSigterm) {
  SVFS_SKIP_WITHOUT_DAEMON();
  // An open file and a cwd inside the mount must not make shutdown fail/hang.
  Fd fd(::open(M("held").c_str(), O_CREAT | O_RDWR, 0644));
  ASSERT_TRUE(fd.ok());
  const std::string mnt = mnt_;
  Child holder([mnt](const Child::Channel& ch) {
    if (::chdir(mnt.c_str()) != 0) return 1;
    ch.Send(0);
    ch.Recv(30000);
    return 0;
  });
  ASSERT_EQ(holder.Recv(5000), std::optional<int>(0));
  auto t0 = std::chrono::steady_clock::now();
  StopDaemon(/*timeout_s=*/40);  // must exit 0 and leave no mount
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 10) << "svfsd took " << secs << " s to stop with a busy mount";
  holder.Send(1);
  holder.Wait();
}

TEST_F(DaemonTest, Sigusr1PrintsPerOpcodeCounters) {
  SVFS_SKIP_WITHOUT_DAEMON();
  // Generate lookups (misses and hits) and some other traffic.
  for (int i = 0; i < 20; ++i) {
    struct stat st {};
    ::stat(M("does-not-exist-" + std::to_string(i)).c_str(), &st);
  }
  ASSERT_EQ(WriteFile(M("f"), "data"), 0);
  ASSERT_TRUE(Stat(M("f")));
  const size_t before = ReadFileOrDie(log_path_).size();
  ASSERT_EQ(::kill(daemon_.pid(), SIGUSR1), 0);

  // Wait (up to 5 s) for a line naming LOOKUP with a positive count.
  const std::regex lookup_line(R"(LOOKUP\D*([1-9][0-9]*))");
  std::string out;
  bool found = false;
  for (int i = 0; i < 250 && !found; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    out = ReadFileOrDie(log_path_).substr(before);
    std::istringstream lines(out);
    std::string line;
    while (std::getline(lines, line))
      if (std::regex_search(line, lookup_line)) found = true;
  }
  EXPECT_TRUE(found) << "no 'LOOKUP <positive count>' line after SIGUSR1; new stderr output:\n" << out;
  // The daemon keeps serving after SIGUSR1.
  EXPECT_EQ(ReadFileOrDie(M("f")), "data");
  EXPECT_TRUE(daemon_.Running()) << "svfsd exited on SIGUSR1";
}

class CacheNoneTest : public SvfsdFixture {
 protected:
  DaemonOptions Options() override {
    DaemonOptions o;
    o.cache = "none";
    return o;
  }
};

TEST_F(CacheNoneTest, HostChangesVisibleImmediately) {
  ASSERT_EQ(WriteFile(H("f"), "short"), 0);
  ASSERT_EQ(Stat(M("f"))->st_size, 5);
  EXPECT_EQ(ReadFileOrDie(M("f")), "short");
  // Keep an fd open through the mount across the host-side change.
  Fd fd(::open(M("f").c_str(), O_RDONLY));
  ASSERT_TRUE(fd.ok());
  ASSERT_EQ(WriteFile(H("f"), "a much longer content written on the host"), 0);
  auto st = Stat(M("f"));
  ASSERT_TRUE(st);
  EXPECT_EQ(st->st_size, 41) << "cache=none served a stale size";
  struct stat fst {};
  ASSERT_EQ(::fstat(fd.get(), &fst), 0);
  EXPECT_EQ(fst.st_size, 41);
  char buf[64] = {};
  EXPECT_EQ(::pread(fd.get(), buf, sizeof(buf), 0), 41);
  EXPECT_EQ(std::string(buf, 41), "a much longer content written on the host");
  EXPECT_EQ(ReadFileOrDie(M("f")), "a much longer content written on the host");

  // New names, removals and mode changes on the host are seen at once too.
  ASSERT_EQ(WriteFile(H("new"), "n"), 0);
  EXPECT_TRUE(Stat(M("new")));
  ASSERT_EQ(::chmod(H("new").c_str(), 0600), 0);
  EXPECT_EQ(Stat(M("new"))->st_mode & 07777, 0600u);
  ASSERT_EQ(::unlink(H("new").c_str()), 0);
  EXPECT_FALSE(Stat(M("new"))) << "cache=none served a stale dentry";
  // Replace a file by rename on the host.
  ASSERT_EQ(WriteFile(H("tmp"), "replacement"), 0);
  ASSERT_EQ(::rename(H("tmp").c_str(), H("f").c_str()), 0);
  EXPECT_EQ(Stat(M("f"))->st_size, 11);
  EXPECT_EQ(ReadFileOrDie(M("f")), "replacement");
}

class CacheAlwaysTest : public SvfsdFixture {
 protected:
  DaemonOptions Options() override {
    DaemonOptions o;
    o.cache = "always";
    return o;
  }
};

TEST_F(CacheAlwaysTest, HostChangesMayBeStaleButMountStaysConsistent) {
  ASSERT_EQ(WriteFile(H("f"), "short"), 0);
  ASSERT_EQ(ReadFileOrDie(M("f")), "short");
  ASSERT_EQ(WriteFile(H("f"), "a much longer content written on the host"), 0);
  // Staleness is allowed in cache=always: size is either old or new.
  auto st = Stat(M("f"));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->st_size == 5 || st->st_size == 41) << st->st_size;
  // Changes made through the mount are always visible through the mount and
  // reach the host once the file is closed.
  ASSERT_EQ(WriteFile(M("g"), "via mount"), 0);
  EXPECT_EQ(ReadFileOrDie(M("g")), "via mount");
  EXPECT_EQ(ReadFileOrDie(H("g")), "via mount");
}

}  // namespace
}  // namespace svfs_it
