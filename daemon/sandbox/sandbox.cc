#include "daemon/sandbox/sandbox.h"

#include <cap-ng.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
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
#include <cstdio>
#include <cstring>
#include <vector>

#include "common/unique_fd.h"

extern char** environ;

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

bool WriteProcSelf(const char* name, const std::string& text) {
  UniqueFd fd(::open(fmt::format("/proc/self/{}", name).c_str(), O_WRONLY | O_CLOEXEC));
  return fd && ::write(fd.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size());
}

// newuidmap/newgidmap PID INSIDE OUTSIDE COUNT...: 0 when it succeeded.
int RunIdMapProgram(const char* program, pid_t pid, const std::vector<NamespaceIdRange>& ranges) {
  std::vector<std::string> args{program, std::to_string(pid)};
  for (const NamespaceIdRange& range : ranges) {
    for (uint32_t value : {range.inside, range.outside, range.count}) {
      args.push_back(std::to_string(value));
    }
  }
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t child = 0;
  if (int error = ::posix_spawnp(&child, program, nullptr, nullptr, argv.data(), environ)) {
    std::fprintf(stderr, "svfsd: %s: %s (it comes with the uidmap package)\n", program,
                 std::strerror(error));
    return 1;
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

// The helper outside the new user namespace: once svfsd has unshared it (a byte on `ready`),
// maps svfsd's IDs and exits 0 if both programs succeeded.
[[noreturn]] void MapIdsFromOutside(int ready, pid_t daemon, const UserNamespaceMap& map) {
  char byte = 0;
  if (::read(ready, &byte, 1) != 1) ::_exit(1);  // svfsd could not unshare
  if (RunIdMapProgram("newuidmap", daemon, map.uids) != 0) ::_exit(1);
  ::_exit(RunIdMapProgram("newgidmap", daemon, map.gids) != 0 ? 1 : 0);
}

std::string UnshareUserFailure(int error) {
  return fmt::format(
      "cannot create a user namespace: {} (unprivileged user namespaces are disabled here: "
      "sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces; or run svfsd as "
      "root, or with --sandbox none)",
      std::strerror(error));
}

}  // namespace

std::expected<void, std::string> EnterUserNamespace(const UserNamespaceMap& map) {
  if (map.uids.empty() != map.gids.empty()) {
    return std::unexpected(
        "--uid-map and --gid-map go together: give both, or neither to map svfsd's own uid and "
        "gid only");
  }
  if (map.uids.empty()) {
    const uid_t uid = ::geteuid();
    const gid_t gid = ::getegid();
    if (::unshare(CLONE_NEWUSER) != 0) return std::unexpected(UnshareUserFailure(errno));
    // An unprivileged process may map its own gid only once setgroups(2) is denied for good.
    if (!WriteProcSelf("setgroups", "deny") ||
        !WriteProcSelf("uid_map", fmt::format("{0} {0} 1", uid)) ||
        !WriteProcSelf("gid_map", fmt::format("{0} {0} 1", gid))) {
      return std::unexpected(
          fmt::format("writing /proc/self/uid_map or gid_map: {}", std::strerror(errno)));
    }
    return {};
  }
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return std::unexpected(fmt::format("pipe: {}", std::strerror(errno)));
  }
  UniqueFd ready_read(fds[0]);
  UniqueFd ready(fds[1]);
  const pid_t daemon = ::getpid();
  const pid_t helper = ::fork();
  if (helper < 0) return std::unexpected(fmt::format("fork: {}", std::strerror(errno)));
  if (helper == 0) {
    ready.reset();
    MapIdsFromOutside(ready_read.get(), daemon, map);
  }
  ready_read.reset();
  const int unshared = ::unshare(CLONE_NEWUSER) == 0 ? 0 : errno;
  if (unshared == 0 && ::write(ready.get(), "x", 1) != 1) ::kill(helper, SIGKILL);
  ready.reset();
  int status = 0;
  while (::waitpid(helper, &status, 0) < 0 && errno == EINTR) {
  }
  if (unshared != 0) return std::unexpected(UnshareUserFailure(unshared));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return std::unexpected(
        "--uid-map/--gid-map: newuidmap or newgidmap failed (see above): every OUTSIDE range must "
        "be svfsd's own uid/gid or lie in its user's ranges in /etc/subuid and /etc/subgid");
  }
  return {};
}

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
