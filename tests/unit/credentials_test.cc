// Supplementary groups: parsing /proc/PID/status, merging the caller's and the request's groups,
// and switching a worker thread to them (as root; skipped otherwise).
#include "daemon/fs/credentials.h"

#include <grp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

namespace svfs::fs {
namespace {

TEST(ParseStatusGroupsTest, ReadsTheGroupsLine) {
  EXPECT_EQ(ParseStatusGroups("Name:\tx\nUid:\t1\t1\t1\t1\nGroups:\t4 27 1000 \nNgid:\t0\n"),
            (std::vector<uint32_t>{4, 27, 1000}));
  EXPECT_EQ(ParseStatusGroups("Groups:\t\n"), std::vector<uint32_t>{});
  EXPECT_EQ(ParseStatusGroups("Groups:\t7"), std::vector<uint32_t>{7});
  EXPECT_FALSE(ParseStatusGroups("Name:\tGroups:\t1\n").has_value()) << "not at a line start";
  EXPECT_FALSE(ParseStatusGroups("Name:\tx\n").has_value());
  EXPECT_FALSE(ParseStatusGroups("Groups:\t1 x2\n").has_value());
  EXPECT_FALSE(ParseStatusGroups("Groups:\t99999999999\n").has_value());
}

TEST(ProcCallerGroupsTest, ReadsAProcessesGroupsFromProc) {
  auto proc = ProcCallerGroups::Open("/proc");
  ASSERT_TRUE(proc.has_value());
  std::vector<gid_t> mine(static_cast<size_t>(::getgroups(0, nullptr)));
  ASSERT_EQ(::getgroups(static_cast<int>(mine.size()), mine.data()), static_cast<int>(mine.size()));
  std::vector<uint32_t> read = proc->of(static_cast<uint32_t>(::getpid()));
  std::sort(mine.begin(), mine.end());
  std::sort(read.begin(), read.end());
  EXPECT_EQ(read, std::vector<uint32_t>(mine.begin(), mine.end()));
  EXPECT_TRUE(proc->of(0).empty()) << "pid 0 is no process";
  EXPECT_TRUE(proc->of(0x7ffffff0).empty()) << "no such process";
}

class FixedGroups final : public CallerGroups {
 public:
  explicit FixedGroups(std::vector<uint32_t> groups) : groups_(std::move(groups)) {}
  std::vector<uint32_t> of(uint32_t pid) const override {
    ++calls;
    return pid == 77 ? groups_ : std::vector<uint32_t>{};
  }
  mutable int calls = 0;

 private:
  std::vector<uint32_t> groups_;
};

TEST(CallerSupplementaryGroupsTest, MergesOnceWithoutDuplicatesOrThePrimaryGroup) {
  FixedGroups source({30, 1000, 10, 30});
  Context ctx{.uid = 1000, .gid = 1000, .pid = 77, .request_groups = {20, 10}, .caller_groups = &source};
  auto groups = CallerSupplementaryGroups(ctx);
  EXPECT_EQ(std::vector<uint32_t>(groups.begin(), groups.end()), (std::vector<uint32_t>{10, 20, 30}));
  CallerSupplementaryGroups(ctx);
  EXPECT_EQ(source.calls, 1) << "read once per request";
  Context guest{.uid = 1000, .gid = 1000, .request_groups = {5}};
  groups = CallerSupplementaryGroups(guest);
  EXPECT_EQ(std::vector<uint32_t>(groups.begin(), groups.end()), std::vector<uint32_t>{5});
}

TEST(ScopedCredentialsTest, ForbiddenCallerIsRefusedAndNothingRuns) {
  // As root it would switch, unprivileged it would run as the daemon: refused either way.
  Context ctx{.uid = 1000, .gid = 1000, .forbidden_caller = true};
  ScopedCredentials creds(ctx);
  EXPECT_FALSE(creds.ok());
  int calls = 0;
  auto result = AsGuest(ctx, [&] { return ++calls; });
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error(), EPERM);
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(::syscall(SYS_setfsuid, -1), static_cast<long>(::geteuid())) << "fsuid untouched";
}

// The calling thread's groups as the kernel sees them.
std::vector<uint32_t> ThreadGroups() {
  std::ifstream in("/proc/thread-self/status");
  std::stringstream text;
  text << in.rdbuf();
  return ParseStatusGroups(text.str()).value_or(std::vector<uint32_t>{9999999});
}

TEST(ScopedCredentialsTest, SwitchesThisThreadsGroupsAndRestoresNone) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (switching credentials)";
  const std::vector<uint32_t> process_groups = ThreadGroups();
  std::vector<uint32_t> inside, after, with_also, for_root;
  bool ok = false;
  std::thread worker([&] {
    FixedGroups source({41001, 41002});
    Context ctx{.uid = 41000, .gid = 41000, .pid = 77, .caller_groups = &source};
    {
      ScopedCredentials creds(ctx);
      ok = creds.ok();
      inside = ThreadGroups();
    }
    after = ThreadGroups();
    {
      ScopedCredentials creds(ctx, 41003);
      with_also = ThreadGroups();
    }
    Context root{.uid = 0, .gid = 0, .pid = 77, .caller_groups = &source};
    {
      ScopedCredentials creds(root);
      for_root = ThreadGroups();
    }
  });
  worker.join();
  EXPECT_TRUE(ok);
  EXPECT_EQ(inside, (std::vector<uint32_t>{41001, 41002}));
  EXPECT_TRUE(after.empty());
  EXPECT_EQ(with_also, (std::vector<uint32_t>{41001, 41002, 41003}));
  EXPECT_TRUE(for_root.empty()) << "root's requests carry no caller groups";
  EXPECT_EQ(ThreadGroups(), process_groups) << "other threads keep theirs";
}

}  // namespace
}  // namespace svfs::fs
