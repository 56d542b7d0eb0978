#include "tests/support/fuse_mount.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "tests/support/process.h"
#include "tests/support/wait.h"

namespace svfs_test {

std::string MountDevice(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, devno, root, mp;
    ls >> id >> parent >> devno >> root >> mp;
    if (mp == path) return devno;
  }
  return "";
}

FuseProbe ProbeFuseMount(const std::string& path, std::chrono::milliseconds timeout) {
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return FuseProbe::kNotFuse;
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    struct statfs sfs {};
    if (::statfs(path.c_str(), &sfs) != 0) ::_exit(2);
    ::_exit(static_cast<long>(sfs.f_type) == kFuseSuperMagic ? 0 : 1);
  }
  int status = 0;
  bool done = WaitUntil([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, timeout,
                        std::chrono::milliseconds(1));
  if (!done) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return FuseProbe::kTimedOut;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? FuseProbe::kFuse : FuseProbe::kNotFuse;
}

void AbortAndDetach(const std::string& path) {
  std::string dev = MountDevice(path);
  if (dev.empty()) return;
  auto colon = dev.find(':');
  if (colon != std::string::npos) {
    std::string abort_path = "/sys/fs/fuse/connections/" + dev.substr(colon + 1) + "/abort";
    int fd = ::open(abort_path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      (void)!::write(fd, "1", 1);
      ::close(fd);
    }
  }
  ::umount2(path.c_str(), MNT_DETACH);
}

MountWait WaitForFuseMount(Process& process, const std::string& path, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (!process.Running()) return MountWait::kExited;
    auto now = std::chrono::steady_clock::now();
    if (now > deadline) return MountWait::kTimedOut;
    if (IsMountPoint(path)) {
      auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
      switch (ProbeFuseMount(path, std::max(remaining, std::chrono::milliseconds(100)))) {
        case FuseProbe::kFuse: return MountWait::kMounted;
        case FuseProbe::kTimedOut: return MountWait::kHung;
        case FuseProbe::kNotFuse: break;
      }
    }
    ::usleep(10000);
  }
}

}  // namespace svfs_test
