#include "daemon/sandbox/sandbox.h"

#include <cap-ng.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <vector>

namespace svfs::sandbox {
namespace {

void Unmount(const std::string& mountpoint) {
  if (mountpoint.empty()) return;
  if (::umount2(mountpoint.c_str(), 0) != 0 && errno != EINVAL &&
      ::umount2(mountpoint.c_str(), MNT_DETACH) != 0 && errno != EINVAL) {
    spdlog::warn("unmounting {} failed: {}", mountpoint, std::strerror(errno));
  }
}

// The parent outside the sandbox: waits for the daemon and exits as it did.
[[noreturn]] void Supervise(pid_t child, const Supervision& supervision) {
  if (supervision.fuse_fd >= 0) ::close(supervision.fuse_fd);
  sigset_t signals;
  sigemptyset(&signals);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGCHLD}) sigaddset(&signals, sig);
  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig != SIGCHLD) {
      // The daemon's FUSE workers end when the mount goes (as when svfsd unmounts itself).
      if (sig != SIGUSR1) Unmount(supervision.mountpoint);
      ::kill(child, sig);
      continue;
    }
    int status = 0;
    pid_t done = ::waitpid(child, &status, WNOHANG);
    if (done != child) continue;
    Unmount(supervision.mountpoint);
    if (WIFEXITED(status)) ::_exit(WEXITSTATUS(status));
    const int killed_by = WIFSIGNALED(status) ? WTERMSIG(status) : SIGKILL;
    rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::signal(killed_by, SIG_DFL);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, killed_by);
    ::pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
    ::raise(killed_by);
    ::_exit(128 + killed_by);
  }
}

int g_daemon_pid = 0;
std::atomic<bool> g_closed{false};

Status Fork(int unshare_flags, const Supervision& supervision) {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  ::pthread_sigmask(SIG_BLOCK, &chld, nullptr);
  if (unshare_flags != 0 && ::unshare(unshare_flags) != 0) return ErrnoErr();
  const pid_t parent = ::getpid();
  g_daemon_pid = parent;
  pid_t child = ::fork();
  if (child < 0) return ErrnoErr();
  if (child > 0) Supervise(child, supervision);
  ::pthread_sigmask(SIG_UNBLOCK, &chld, nullptr);
  // A supervisor killed outright (kill -9) takes the daemon with it, as abruptly.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (!(unshare_flags & CLONE_NEWPID) && ::getppid() != parent) ::_exit(1);
  return {};
}

const std::vector<int>& BaseCapabilities() {
  static const std::vector<int> caps = {CAP_CHOWN,  CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID,
                                        CAP_SETGID, CAP_SETUID,       CAP_MKNOD,  CAP_SETFCAP};
  return caps;
}

// "+sys_admin:-chown" (names with or without "cap_", any case) to (add, capability) pairs.
bool ParseModcaps(const std::string& modcaps, std::vector<std::pair<bool, int>>& out,
                  std::string* error) {
  size_t start = 0;
  while (start <= modcaps.size()) {
    size_t colon = modcaps.find(':', start);
    std::string item = modcaps.substr(start, colon == std::string::npos ? std::string::npos
                                                                        : colon - start);
    if (item.size() < 2 || (item[0] != '+' && item[0] != '-')) {
      if (error) *error = "each item is +CAP or -CAP (e.g. +sys_admin:-mknod), got '" + item + "'";
      return false;
    }
    std::string name = item.substr(1);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (name.starts_with("cap_")) name = name.substr(4);
    int cap = capng_name_to_capability(name.c_str());
    if (cap < 0) {
      if (error) *error = "unknown capability '" + item.substr(1) + "'";
      return false;
    }
    out.emplace_back(item[0] == '+', cap);
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return true;
}

}  // namespace

int DaemonPid() { return g_daemon_pid ? g_daemon_pid : ::getpid(); }

std::optional<Mode> ParseMode(std::string_view name) {
  if (name == "namespace") return Mode::kNamespace;
  if (name == "chroot") return Mode::kChroot;
  if (name == "none") return Mode::kNone;
  return std::nullopt;
}

Status Enter(Mode mode, const std::string& shared_dir, const Supervision& supervision) {
  if (mode == Mode::kNone) return {};
  if (mode == Mode::kChroot) {
    if (!supervision.mountpoint.empty()) return Fork(0, supervision);
    return {};
  }
  // CLONE_NEWPID applies to the children: the fork below is pid 1; the parent stays where it is
  // (in the host's mount namespace, where it unmounts).
  SVFS_TRY(Fork(CLONE_NEWPID, supervision));
  if (::unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC) != 0) return ErrnoErr();
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return ErrnoErr();
  // This pid namespace's own /proc: the /proc/self/fd handle opened next, kept after the pivot,
  // shows no process but ours.
  if (::mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME, nullptr) != 0) {
    return ErrnoErr();
  }
  // pivot_root needs a mount point; submounts come along (--announce-submounts).
  if (::mount(shared_dir.c_str(), shared_dir.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    return ErrnoErr();
  }
  return {};
}

Status Close(Mode mode, const std::string& shared_dir) {
  if (mode == Mode::kNone) return {};
  if (mode == Mode::kChroot) {
    if (::chroot(shared_dir.c_str()) != 0) return ErrnoErr();
    if (::chdir("/") != 0) return ErrnoErr();
    g_closed = true;
    return {};
  }
  if (::chdir(shared_dir.c_str()) != 0) return ErrnoErr();
  // The old root ends up on top of the new one, then is detached: nothing of it is reachable.
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return ErrnoErr();
  if (::umount2(".", MNT_DETACH) != 0) return ErrnoErr();
  if (::chdir("/") != 0) return ErrnoErr();
  g_closed = true;
  return {};
}

bool Closed() { return g_closed; }

bool ValidModcaps(const std::string& modcaps, std::string* error) {
  std::vector<std::pair<bool, int>> changes;
  return ParseModcaps(modcaps, changes, error);
}

Status DropCapabilities(const std::string& modcaps, bool file_handles, bool keep_sys_admin) {
  capng_get_caps_process();
  if (capng_have_capabilities(CAPNG_SELECT_CAPS) == CAPNG_NONE) return {};
  std::vector<int> keep = BaseCapabilities();
  if (file_handles) keep.push_back(CAP_DAC_READ_SEARCH);  // open_by_handle_at
  if (keep_sys_admin) keep.push_back(CAP_SYS_ADMIN);      // umount2 of our own mount
  std::vector<std::pair<bool, int>> changes;
  if (!modcaps.empty() && !ParseModcaps(modcaps, changes, nullptr)) return Err(EINVAL);
  capng_clear(CAPNG_SELECT_BOTH);
  auto type = static_cast<capng_type_t>(CAPNG_EFFECTIVE | CAPNG_PERMITTED | CAPNG_BOUNDING_SET);
  for (int cap : keep) capng_update(CAPNG_ADD, type, static_cast<unsigned>(cap));
  for (auto [add, cap] : changes) {
    capng_update(add ? CAPNG_ADD : CAPNG_DROP, type, static_cast<unsigned>(cap));
  }
  if (capng_apply(CAPNG_SELECT_BOTH) != 0) return Err(EPERM);
  return {};
}

}  // namespace svfs::sandbox
