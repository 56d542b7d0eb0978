// Integration-test fixture for svfsd: starts the daemon on a fresh source dir
// and mountpoint, waits for the FUSE mount, and tears everything down again.
//
// Header-only on purpose: tests/CMakeLists.txt globs integration/*_test.cc. Process spawning,
// mount probes and tree removal come from tests/support (svfs_test_support).
//
// Debugging aid: SVFS_IT_NO_DAEMON=1 makes the fixture skip the daemon and use
// the source dir itself as the "mount". Host-comparison tests must then pass
// trivially, which validates the tests; daemon-specific tests skip.
#pragma once

#include <gtest/gtest.h>

#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/files.h"
#include "tests/support/fuse_mount.h"
#include "tests/support/process.h"
#include "tests/support/wait.h"

#ifndef SVFSD_PATH
#define SVFSD_PATH "svfsd"
#endif

namespace svfs_it {

using svfs_test::AbortAndDetach;
using svfs_test::IsMountPoint;
using svfs_test::kFuseSuperMagic;
using svfs_test::RemoveTree;

inline constexpr uid_t kNobodyUid = 65534;
inline constexpr gid_t kNobodyGid = 65534;
inline constexpr uid_t kUserUid = 1000;
inline constexpr gid_t kUserGid = 1000;

inline bool NoDaemonMode() {
  const char* v = std::getenv("SVFS_IT_NO_DAEMON");
  return v != nullptr && v[0] != '\0' && std::string(v) != "0";
}

// ---------------------------------------------------------------------------
// Small file helpers (host side and mount side alike: they are just paths).

inline std::string ReadFileOrDie(const std::string& path) { return svfs_test::ReadWholeFile(path); }

// Returns 0 or errno.
inline int WriteFile(const std::string& path, const std::string& data, int flags = O_WRONLY | O_CREAT | O_TRUNC,
                     mode_t mode = 0644) {
  int fd = ::open(path.c_str(), flags, mode);
  if (fd < 0) return errno;
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      int e = errno;
      ::close(fd);
      return e;
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) return errno;
  return 0;
}

// Returns content, or nullopt with errno set.
inline std::optional<std::string> ReadFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return std::nullopt;
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      int e = errno;
      ::close(fd);
      errno = e;
      return std::nullopt;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

inline std::optional<struct stat> Lstat(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return std::nullopt;
  return st;
}

inline std::optional<struct stat> Stat(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return st;
}

// Deterministic pseudo-random bytes.
inline std::string PatternData(size_t size, uint64_t seed) {
  std::string s(size, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < size; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[i] = static_cast<char>(x & 0xff);
  }
  return s;
}

inline uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// ---------------------------------------------------------------------------
// Child processes.

// A forked child with a bidirectional byte channel. The body gets a Channel;
// its int return value becomes the child's exit code (keep it < 256; by
// convention 0 = success, otherwise an errno value).
class Child {
 public:
  class Channel {
   public:
    Channel(int rfd, int wfd) : rfd_(rfd), wfd_(wfd) {}
    void Send(int v) const { (void)!::write(wfd_, &v, sizeof(v)); }
    // Returns nullopt on timeout/EOF.
    std::optional<int> Recv(int timeout_ms) const {
      pollfd p{rfd_, POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) return std::nullopt;
      int v = 0;
      if (::read(rfd_, &v, sizeof(v)) != static_cast<ssize_t>(sizeof(v))) return std::nullopt;
      return v;
    }

   private:
    int rfd_, wfd_;
  };

  explicit Child(std::function<int(const Channel&)> body) {
    int to_child[2], from_child[2];
    if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0) {
      ADD_FAILURE() << "pipe: " << std::strerror(errno);
      return;
    }
    fflush(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::close(to_child[1]);
      ::close(from_child[0]);
      Channel ch(to_child[0], from_child[1]);
      int rc = body(ch);
      ::_exit(rc & 0xff);
    }
    ::close(to_child[0]);
    ::close(from_child[1]);
    to_fd_ = to_child[1];
    from_fd_ = from_child[0];
    if (pid_ < 0) ADD_FAILURE() << "fork: " << std::strerror(errno);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      int st;
      ::waitpid(pid_, &st, 0);
    }
    if (to_fd_ >= 0) ::close(to_fd_);
    if (from_fd_ >= 0) ::close(from_fd_);
  }

  void Send(int v) const { (void)!::write(to_fd_, &v, sizeof(v)); }
  std::optional<int> Recv(int timeout_ms) const {
    pollfd p{from_fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return std::nullopt;
    int v = 0;
    if (::read(from_fd_, &v, sizeof(v)) != static_cast<ssize_t>(sizeof(v))) return std::nullopt;
    return v;
  }

  // Waits for exit; returns the exit code, or -1 on timeout (child killed) or
  // abnormal termination.
  int Wait(int timeout_ms = 10000) {
    if (pid_ <= 0) return -1;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      int st = 0;
      pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        reaped_ = true;
        if (WIFEXITED(st)) return WEXITSTATUS(st);
        return -1;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "child " << pid_ << " timed out; killing it";
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
        reaped_ = true;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int to_fd_ = -1, from_fd_ = -1;
  bool reaped_ = false;
};

// Drops to uid/gid (no supplementary groups) in the calling process.
// Returns 0 or errno.
inline int DropPrivileges(uid_t uid, gid_t gid) {
  if (::setgroups(0, nullptr) != 0) return errno;
  if (::setgid(gid) != 0) return errno;
  if (::setuid(uid) != 0) return errno;
  return 0;
}

// Runs fn as uid/gid in a forked child. fn returns 0 or an errno value; the
// result is that value (or -1 if the child crashed / timed out, or 200 + errno
// if dropping privileges failed).
inline int RunAs(uid_t uid, gid_t gid, const std::function<int()>& fn, int timeout_ms = 20000) {
  Child c([&](const Child::Channel&) {
    if (int e = DropPrivileges(uid, gid); e != 0) return 200 + (e & 0x3f);
    return fn();
  });
  return c.Wait(timeout_ms);
}

// errno of an open() attempt (0 if it succeeded; the fd is closed).
inline int OpenErrno(const std::string& path, int flags, mode_t mode = 0644) {
  int fd = ::open(path.c_str(), flags, mode);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

// RAII fd.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    reset(o.release());
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// ---------------------------------------------------------------------------
// The daemon.

struct DaemonOptions {
  std::string cache = "auto";
  bool xattr = false;
  std::vector<std::string> extra_args;
  std::string log_level = "info";
};

inline std::string ErrnoName(int e) { return std::to_string(e) + " (" + std::strerror(e) + ")"; }

class SvfsdFixture : public ::testing::Test {
 protected:
  // Override in subclasses to change the daemon's command line.
  virtual DaemonOptions Options() { return {}; }

  void SetUp() override {
    ::alarm(170);  // last-resort watchdog (see also StartWatchdog).
    char tmpl[] = "/tmp/svfs-it-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr) << std::strerror(errno);
    base_ = tmpl;
    host_ = base_ + "/host";
    src_ = host_ + "/src";
    mnt_ = base_ + "/mnt";
    log_path_ = base_ + "/svfsd.log";
    // Everything world-traversable so that unprivileged children can reach it.
    ASSERT_EQ(::chmod(base_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(host_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(src_.c_str(), 0755), 0);
    ASSERT_EQ(::chmod(src_.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(mnt_.c_str(), 0755), 0);
    // A file next to (not inside) the source dir: it must never be reachable.
    ASSERT_EQ(WriteFile(host_ + "/parent-sentinel", "host parent of the source dir\n"), 0);

    if (NoDaemonMode()) {
      mount_ = src_;
      return;
    }
    mount_ = mnt_;
    StartDaemon(Options());
  }

  // Set once a daemon start hung in this process: later tests fail fast instead
  // of each waiting for the full timeouts again.
  static bool& StartupHung() {
    static bool hung = false;
    return hung;
  }

  // For a daemon that is known broken: SIGKILL, abort the FUSE connection and
  // detach the mount.
  void KillDaemonHard() {
    daemon_.Kill(SIGKILL);
    AbortAndDetach(mnt_);
  }

  void StartDaemon(const DaemonOptions& opt) {
    if (StartupHung() && !std::getenv("SVFS_IT_RETRY_HUNG"))
      FAIL() << "an earlier svfsd start in this run hung (see the first failure); not retrying "
                "(set SVFS_IT_RETRY_HUNG=1 to retry every time)";
    std::vector<std::string> args = {SVFSD_PATH, "--shared-dir", src_, "--mount", mnt_, "--cache", opt.cache,
                                     "--log-level", opt.log_level};
    if (opt.xattr) args.push_back("--xattr");
    for (auto& a : opt.extra_args) args.push_back(a);
    // The log is new: Start appends, and each test has its own base_.
    ASSERT_TRUE(daemon_.Start(args, log_path_)) << std::strerror(errno);

    switch (svfs_test::WaitForFuseMount(daemon_, mnt_, std::chrono::seconds(10))) {
      case svfs_test::MountWait::kMounted:
        break;
      case svfs_test::MountWait::kExited:
        FAIL() << "svfsd exited before mounting (status " << daemon_.last_status() << ")\ncmd: "
               << daemon_.cmdline() << "\n--- log ---\n" << ReadFileOrDie(log_path_);
      case svfs_test::MountWait::kTimedOut:
        KillDaemonHard();
        StartupHung() = true;
        FAIL() << "svfsd did not mount within 10 s\ncmd: " << daemon_.cmdline() << "\n--- log ---\n"
               << ReadFileOrDie(log_path_);
      case svfs_test::MountWait::kHung:
        KillDaemonHard();
        StartupHung() = true;
        FAIL() << "svfsd mounted " << mnt_ << " but statfs on it did not return within 10 s "
               << "(daemon not answering FUSE_INIT/STATFS?)\ncmd: " << daemon_.cmdline() << "\n--- log ---\n"
               << ReadFileOrDie(log_path_);
    }
    StartWatchdog();
  }

  // Kills the daemon (SIGKILL aborts the FUSE connection, so any request stuck
  // in the test process returns ENOTCONN) if a test runs for too long.
  void StartWatchdog(int seconds = 100) {
    watchdog_fired_ = false;
    watchdog_stop_ = false;
    pid_t pid = daemon_.pid();
    watchdog_ = std::thread([this, pid, seconds] {
      std::unique_lock lock(watchdog_mu_);
      if (!watchdog_cv_.wait_for(lock, std::chrono::seconds(seconds), [this] { return watchdog_stop_; })) {
        watchdog_fired_ = true;
        std::fprintf(stderr, "svfs_it watchdog: test exceeded %d s; killing svfsd %d\n", seconds, pid);
        ::kill(pid, SIGKILL);
      }
    });
  }
  void StopWatchdog() {
    if (!watchdog_.joinable()) return;
    {
      std::lock_guard lock(watchdog_mu_);
      watchdog_stop_ = true;
    }
    watchdog_cv_.notify_all();
    watchdog_.join();
    EXPECT_FALSE(watchdog_fired_) << "watchdog fired: svfsd was killed because the test hung";
  }

  // Sends SIGTERM and checks a clean exit (status 0 within timeout_s) and unmount.
  void StopDaemon(int timeout_s = 10) {
    if (!DaemonRunning()) return;
    int st = daemon_.Kill(SIGTERM, std::chrono::seconds(timeout_s));
    if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) {
      ADD_FAILURE() << "svfsd did not exit within " << timeout_s << " s of SIGTERM (killed)";
      return;
    }
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
        << "svfsd exit status: " << (WIFEXITED(st) ? "exit " + std::to_string(WEXITSTATUS(st))
                                                   : "signal " + std::to_string(WTERMSIG(st)));
    EXPECT_FALSE(IsMountPoint(mnt_)) << "mount still present after svfsd exited";
  }

  void TearDown() override {
    if (!NoDaemonMode()) {
      StopWatchdog();
      StopDaemon();
      if (IsMountPoint(mnt_)) AbortAndDetach(mnt_);
      if (HasFailure()) {
        std::cerr << "--- svfsd cmd: " << daemon_.cmdline() << "\n--- svfsd log (" << log_path_ << ") ---\n"
                  << ReadFileOrDie(log_path_) << "--- end of svfsd log ---\n";
      }
    }
    if (!base_.empty()) {
      if (IsMountPoint(mnt_)) {
        ADD_FAILURE() << "could not unmount " << mnt_ << "; leaving " << base_ << " in place";
      } else if (!std::getenv("SVFS_IT_KEEP")) {
        RemoveTree(base_);
      }
    }
    ::alarm(0);
  }

  bool DaemonRunning() const { return daemon_.pid() > 0; }
  std::string M(const std::string& rel) const { return mount_ + "/" + rel; }  // through the mount
  std::string H(const std::string& rel) const { return src_ + "/" + rel; }    // on the host

  std::string base_, host_, src_, mnt_, mount_, log_path_;
  svfs_test::Process daemon_;
  std::thread watchdog_;
  std::mutex watchdog_mu_;
  std::condition_variable watchdog_cv_;
  bool watchdog_stop_ = false;
  std::atomic<bool> watchdog_fired_ = false;
};

// Fixture parameterized by cache mode.
class SvfsdCacheFixture : public SvfsdFixture, public ::testing::WithParamInterface<std::string> {
 protected:
  DaemonOptions Options() override {
    DaemonOptions o;
    o.cache = GetParam();
    return o;
  }
};

#define SVFS_SKIP_WITHOUT_DAEMON()                                                  \
  do {                                                                              \
    if (::svfs_it::NoDaemonMode()) GTEST_SKIP() << "needs the daemon (SVFS_IT_NO_DAEMON)"; \
  } while (0)

}  // namespace svfs_it
