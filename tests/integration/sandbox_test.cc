// The sandbox, at the process level: svfsd (the real binary, --mount) under --sandbox
// namespace (the default), chroot and none; what the serving process can reach, its namespaces
// and its capabilities, as the host's /proc shows them.
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/files.h"
#include "svfsd_fixture.h"

namespace svfs_it {
namespace {

// chown dac_override fowner fsetid setgid setuid mknod setfcap
constexpr uint64_t kPassthroughCaps = 0x880000dbULL;
constexpr uint64_t kCapSysAdmin = 1ULL << 21;
constexpr uint64_t kCapMknod = 1ULL << 27;

std::string Proc(pid_t pid, const std::string& rel) {
  return "/proc/" + std::to_string(pid) + "/" + rel;
}

uint64_t CapEff(pid_t pid) {
  std::ifstream status(Proc(pid, "status"));
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) == 0) return std::stoull(line.substr(7), nullptr, 16);
  }
  ADD_FAILURE() << "no CapEff in " << Proc(pid, "status");
  return ~0ULL;
}

std::string Namespace(pid_t pid, const std::string& kind) {
  std::error_code error;
  auto target = std::filesystem::read_symlink(Proc(pid, "ns/" + kind), error);
  return error ? "?" : target.string();
}

bool SameFile(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

std::vector<std::string> Words(const std::string& line) {
  std::istringstream in(line);
  return {std::istream_iterator<std::string>(in), std::istream_iterator<std::string>()};
}

class SandboxTest : public SvfsdFixture {
 protected:
  pid_t Serving() const { return svfs_test::ServingPid(daemon_.pid()); }
};

// The daemon with these arguments added.
#define SANDBOX_FIXTURE(name, ...)                                 \
  class name : public SandboxTest {                                \
   protected:                                                      \
    DaemonOptions Options() override {                             \
      DaemonOptions opt;                                           \
      opt.extra_args = {__VA_ARGS__};                              \
      return opt;                                                  \
    }                                                              \
  }

SANDBOX_FIXTURE(DefaultSandboxTest);
SANDBOX_FIXTURE(ChrootSandboxTest, "-o", "sandbox=chroot");
SANDBOX_FIXTURE(NoSandboxTest, "--sandbox", "none");
SANDBOX_FIXTURE(ModcapsTest, "--modcaps=+sys_admin:-mknod");

// The default: pid 1 of its own pid, mount, net and ipc namespaces, root the shared directory,
// under a supervisor that stays outside; capabilities cut to passthrough's.
TEST_F(DefaultSandboxTest, NamespaceSandboxIsTheSharedDirectoryAlone) {
  if (NoDaemonMode()) GTEST_SKIP();
  ASSERT_EQ(::symlink("/etc/passwd", H("passwd").c_str()), 0);
  const pid_t supervisor = daemon_.pid();
  const pid_t serving = Serving();
  ASSERT_NE(serving, supervisor) << "no sandboxed child under the supervisor";
  EXPECT_TRUE(SameFile(Proc(serving, "root/"), src_)) << "its root is not the shared directory";
  EXPECT_TRUE(SameFile(Proc(supervisor, "root/"), "/"));
  // Nothing of the host beside the share: its root holds the share's names only.
  EXPECT_FALSE(std::filesystem::exists(Proc(serving, "root/etc")));
  EXPECT_TRUE(std::filesystem::is_symlink(Proc(serving, "root/passwd")));
  for (const char* kind : {"mnt", "pid", "net", "ipc"}) {
    EXPECT_NE(Namespace(serving, kind), Namespace(::getpid(), kind)) << kind;
    EXPECT_EQ(Namespace(supervisor, "mnt"), Namespace(::getpid(), "mnt"));
  }
  // One mount, the share as its root: every other mount (the host's, its own /proc) is gone.
  std::vector<std::vector<std::string>> mounts;
  for (const std::string& line : Lines(Proc(serving, "mountinfo"))) mounts.push_back(Words(line));
  ASSERT_EQ(mounts.size(), 1u) << svfs_test::ReadWholeFile(Proc(serving, "mountinfo"));
  ASSERT_GE(mounts[0].size(), 5u);
  EXPECT_EQ(mounts[0][4], "/");  // the mount point
  // Its root within its filesystem: the share's directory (the path's tail, whatever is mounted
  // above it on the host).
  const std::string share = std::filesystem::path(src_).filename().string();
  EXPECT_EQ(mounts[0][3].substr(mounts[0][3].size() - std::min(mounts[0][3].size(), share.size())),
            share)
      << mounts[0][3];
  // No network interface but loopback.
  std::vector<std::string> interfaces;
  for (const std::string& line : Lines(Proc(serving, "net/dev"))) {
    if (const size_t colon = line.find(':'); colon != std::string::npos) {
      interfaces.push_back(Words(line.substr(0, colon)).at(0));
    }
  }
  EXPECT_EQ(interfaces, std::vector<std::string>{"lo"});
  std::ifstream status(Proc(serving, "status"));
  std::string text((std::istreambuf_iterator<char>(status)), {});
  EXPECT_NE(text.find("NSpid:\t" + std::to_string(serving) + "\t1\n"), std::string::npos)
      << "not pid 1 of its pid namespace:\n" << text;
  EXPECT_EQ(CapEff(serving), kPassthroughCaps);
  // It serves, and stops (the supervisor unmounts, exits 0).
  EXPECT_EQ(std::filesystem::read_symlink(M("passwd")).string(), "/etc/passwd");
  StopDaemon();
}

TEST_F(ChrootSandboxTest, RootsTheDaemonInTheSharedDirectory) {
  if (NoDaemonMode()) GTEST_SKIP();
  const pid_t serving = Serving();
  EXPECT_TRUE(SameFile(Proc(serving, "root/"), src_));
  EXPECT_EQ(Namespace(serving, "mnt"), Namespace(::getpid(), "mnt"));
  EXPECT_EQ(CapEff(serving), kPassthroughCaps);
  StopDaemon();
}

// Without a supervisor, a --mount daemon unmounts itself at exit: it keeps CAP_SYS_ADMIN.
TEST_F(NoSandboxTest, KeepsTheHostRootButDropsCapabilities) {
  if (NoDaemonMode()) GTEST_SKIP();
  EXPECT_EQ(Serving(), daemon_.pid()) << "no supervisor without a sandbox";
  EXPECT_TRUE(SameFile(Proc(daemon_.pid(), "root/"), "/"));
  EXPECT_EQ(CapEff(daemon_.pid()), kPassthroughCaps | kCapSysAdmin);
  StopDaemon();
}

TEST_F(ModcapsTest, ChangesTheKeptCapabilities) {
  if (NoDaemonMode()) GTEST_SKIP();
  EXPECT_EQ(CapEff(Serving()), (kPassthroughCaps | kCapSysAdmin) & ~kCapMknod);
  StopDaemon();
}

TEST_F(DefaultSandboxTest, KillingTheSupervisorTakesTheDaemonWithIt) {
  if (NoDaemonMode()) GTEST_SKIP();
  const pid_t serving = Serving();
  ASSERT_NE(serving, daemon_.pid());
  daemon_.Kill(SIGKILL);
  auto gone = [&] {
    std::ifstream stat(Proc(serving, "stat"));
    std::string text((std::istreambuf_iterator<char>(stat)), {});
    auto paren = text.rfind(')');
    return text.empty() || (paren != std::string::npos && text.substr(paren + 2, 1) == "Z");
  };
  EXPECT_TRUE(svfs_test::WaitUntil(gone,
                                   std::chrono::milliseconds(5000), std::chrono::milliseconds(10)))
      << "the sandboxed daemon outlived its supervisor";
}

// Reaps `pid` into `status` if it exits within `timeout`; otherwise kills and reaps it and
// returns false, so a daemon that lives on fails the test instead of hanging it.
bool ReapWithin(pid_t pid, int& status, std::chrono::milliseconds timeout) {
  const bool exited = svfs_test::WaitUntil(
      [&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout,
      std::chrono::milliseconds(10));
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
  return exited;
}

// Under --seccomp kill, the default, a system call outside the list kills svfsd; so does trap
// (SIGSYS, whose default action ends the process). The call comes from a test-only trigger in
// the launcher's environment (no guest reaches it), right after the filter: `trigger` "1" a
// system call svfsd never makes, "fork" a new process. `seccomp` empty: no --seccomp option.
void ExpectForbiddenSystemCallKills(const char* seccomp, const char* trigger = "1") {
  char tmpl[] = "/tmp/svfs-seccomp-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string base = tmpl, share = base + "/share", mnt = base + "/mnt";
  ASSERT_EQ(::mkdir(share.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(mnt.c_str(), 0755), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setenv("SVFSD_TEST_FORBIDDEN_SYSCALL", trigger, 1);
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 2);
    if (*seccomp == '\0') {
      ::execl(SVFSD_PATH, SVFSD_PATH, "--shared-dir", share.c_str(), "--mount", mnt.c_str(),
              static_cast<char*>(nullptr));
    } else {
      ::execl(SVFSD_PATH, SVFSD_PATH, "--shared-dir", share.c_str(), "--mount", mnt.c_str(),
              "--seccomp", seccomp, static_cast<char*>(nullptr));
    }
    ::_exit(127);
  }
  int status = 0;
  ASSERT_TRUE(ReapWithin(pid, status, std::chrono::seconds(10)))
      << "svfsd still runs 10 s after the forbidden call (killed now)";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS)
      << "status " << status << ": not killed by SIGSYS";
  EXPECT_FALSE(IsMountPoint(mnt)) << "the supervisor left the mount behind";
  if (IsMountPoint(mnt)) AbortAndDetach(mnt);
  ::rmdir(mnt.c_str());
  ::rmdir(share.c_str());
  ::rmdir(base.c_str());
}

TEST(SeccompTest, ForbiddenSystemCallKills) {
  if (NoDaemonMode() || ::geteuid() != 0) GTEST_SKIP() << "needs root (mount)";
  ExpectForbiddenSystemCallKills("kill");
}

TEST(SeccompTest, KillIsTheDefault) {
  if (NoDaemonMode() || ::geteuid() != 0) GTEST_SKIP() << "needs root (mount)";
  ExpectForbiddenSystemCallKills("");
}

TEST(SeccompTest, TrapEndsTheDaemonWithSigsys) {
  if (NoDaemonMode() || ::geteuid() != 0) GTEST_SKIP() << "needs root (mount)";
  ExpectForbiddenSystemCallKills("trap");
}

// Threads only: a fork after the filter is a forbidden clone (sanitizer builds allow any clone,
// for LeakSanitizer).
TEST(SeccompTest, AForkAfterTheFilterKills) {
  if (NoDaemonMode() || ::geteuid() != 0) GTEST_SKIP() << "needs root (mount)";
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "sanitizer builds allow clone without CLONE_THREAD";
#endif
  ExpectForbiddenSystemCallKills("kill", "fork");
}

// --seccomp log lets the call through (the kernel logs it) and svfsd keeps serving.
TEST(SeccompTest, LogKeepsTheDaemonServing) {
  if (NoDaemonMode() || ::geteuid() != 0) GTEST_SKIP() << "needs root (mount)";
  char tmpl[] = "/tmp/svfs-seccomp-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string base = tmpl, share = base + "/share", mnt = base + "/mnt";
  ASSERT_EQ(::mkdir(share.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(mnt.c_str(), 0755), 0);
  { std::ofstream(share + "/file") << "served"; }
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setenv("SVFSD_TEST_FORBIDDEN_SYSCALL", "1", 1);
    int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 2);
    ::execl(SVFSD_PATH, SVFSD_PATH, "--shared-dir", share.c_str(), "--mount", mnt.c_str(),
            "--seccomp", "log", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::string read_back;
  EXPECT_TRUE(svfs_test::WaitUntil(
      [&] {
        std::ifstream in(mnt + "/file");
        read_back.assign(std::istreambuf_iterator<char>(in), {});
        return read_back == "served";
      },
      std::chrono::milliseconds(5000), std::chrono::milliseconds(10)))
      << "read '" << read_back << "' through the mount";
  int status = 0;
  EXPECT_EQ(::waitpid(pid, &status, WNOHANG), 0) << "svfsd ended: status " << status;
  ::kill(pid, SIGTERM);
  ASSERT_TRUE(ReapWithin(pid, status, std::chrono::seconds(10))) << "svfsd ignored SIGTERM";
  EXPECT_FALSE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS);
  if (IsMountPoint(mnt)) AbortAndDetach(mnt);
  ::unlink((share + "/file").c_str());
  ::rmdir(mnt.c_str());
  ::rmdir(share.c_str());
  ::rmdir(base.c_str());
}

}  // namespace
}  // namespace svfs_it
