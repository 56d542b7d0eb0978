#include "versiond/lockdown.h"

#include <cap-ng.h>
#include <fmt/format.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>

#include <atomic>
#include <cstring>
#include <iterator>
#include <span>
#include <vector>

namespace svfs::versiond {
namespace {

// What versiond, glibc, kj's event loop, Cap'n Proto and Boost.Interprocess call on x86_64 after
// setup: serving connections, fanotify events, the table, signals, and the way out (unlinking
// the socket, removing a damaged table).
constexpr const char* kAllowed[] = {
    // Memory, threads, signals, time.
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "exit",
    "exit_group", "set_robust_list", "rseq", "set_tid_address", "futex", "sched_yield",
    "sched_getaffinity", "getpid", "gettid", "tgkill", "rt_sigaction", "rt_sigprocmask",
    "rt_sigreturn", "rt_sigtimedwait", "restart_syscall", "clock_gettime", "clock_getres",
    "clock_nanosleep", "nanosleep", "gettimeofday", "getrandom", "uname", "getrlimit",
    "prlimit64",
    // Descriptors and waiting (kj's epoll port, its eventfd and signalfd, timers).
    "read", "write", "readv", "writev", "close", "dup", "dup3", "fcntl", "lseek",
    "pipe2", "eventfd2", "poll", "ppoll", "epoll_create1", "epoll_ctl", "epoll_wait",
    "epoll_pwait", "timerfd_create", "timerfd_settime", "signalfd4",
    // The socket: accepting, peer credentials, Cap'n Proto messages (with fds: the table).
    "accept", "accept4", "getsockopt", "setsockopt", "getsockname", "getpeername", "shutdown",
    "sendmsg", "recvmsg", "sendto", "recvfrom",
    // fanotify marks on the shared directories daemons register, the fsid they name.
    "fanotify_mark", "statfs", "fstatfs", "newfstatat", "fstat", "statx", "openat",
    "name_to_handle_at",
    // The way out: the socket file, a damaged table.
    "unlink", "unlinkat",
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    "ptrace", "wait4", "waitid", "process_vm_readv", "getpriority", "setpriority", "mincore",
    "msync", "personality", "execve", "sigaltstack", "getppid", "sched_setaffinity",
    // LeakSanitizer's stop-the-world thread is a clone without CLONE_THREAD, and the runtimes
    // use prctl and ioctl as they like: unrestricted in sanitizer builds only.
    "clone", "clone3", "prctl", "ioctl",
#endif
};

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
// Calls allowed with some arguments only: threads but no new processes; the ioctls of
// non-blocking and close-on-exec sockets (kj), isatty (spdlog's colour check) and FIONREAD; a
// thread's name.
constexpr SyscallArgRule kAllowedWithArg[] = {
    {"clone", 0, CLONE_THREAD, CLONE_THREAD},
    {"ioctl", 1, FIONBIO}, {"ioctl", 1, FIOCLEX}, {"ioctl", 1, FIONCLEX}, {"ioctl", 1, FIONREAD},
    {"ioctl", 1, TCGETS}, {"ioctl", 1, TIOCGWINSZ},
    {"prctl", 0, PR_SET_NAME}, {"prctl", 0, PR_GET_NAME},
};
// glibc makes threads with clone3 and falls back to clone on ENOSYS; clone3's flags are behind
// a pointer the filter cannot read.
constexpr const char* kRefusedEnosys[] = {"clone3"};
#else
constexpr std::span<const SyscallArgRule> kAllowedWithArg;
constexpr std::span<const char* const> kRefusedEnosys;
#endif

// --federation: the NATS client's TCP connections (and reconnections) to its servers, from its
// own threads; glibc's getaddrinfo for a host name (its netlink query, /etc files, DNS);
// OpenSSL's TLS setup, which lists a directory (getdents64).
constexpr const char* kAllowedForNetwork[] = {
    "socket", "connect", "bind", "select", "pselect6", "sendmmsg", "getuid", "geteuid",
    "getgid", "getegid", "getppid", "sysinfo", "getdents64",
};

std::atomic<bool> seccomp_installed{false};

}  // namespace

bool SeccompInstalled() { return seccomp_installed.load(std::memory_order_relaxed); }

std::expected<void, std::string> LockDown(bool fanotify, bool network, SeccompAction seccomp) {
  capng_get_caps_process();
  if (capng_have_capabilities(CAPNG_SELECT_CAPS) != CAPNG_NONE) {
    // Only what the process has can be kept: one started without CAP_SYS_ADMIN keeps the rest.
    const bool had_sys_admin = capng_have_capability(CAPNG_PERMITTED, CAP_SYS_ADMIN);
    const bool had_dac_read_search = capng_have_capability(CAPNG_PERMITTED, CAP_DAC_READ_SEARCH);
    capng_clear(CAPNG_SELECT_BOTH);
    if (fanotify) {
      auto sets = static_cast<capng_type_t>(CAPNG_EFFECTIVE | CAPNG_PERMITTED | CAPNG_BOUNDING_SET);
      if (had_sys_admin) capng_update(CAPNG_ADD, sets, CAP_SYS_ADMIN);
      if (had_dac_read_search) capng_update(CAPNG_ADD, sets, CAP_DAC_READ_SEARCH);
    }
    if (capng_apply(CAPNG_SELECT_BOTH) != 0) {
      return std::unexpected(
          "svfs-versiond: cannot drop capabilities (capng_apply failed); run it as root or "
          "with CAP_SETPCAP");
    }
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    return std::unexpected(fmt::format("svfs-versiond: prctl(PR_SET_NO_NEW_PRIVS): {}",
                                       std::strerror(errno)));
  }
  std::vector<const char*> allowed(std::begin(kAllowed), std::end(kAllowed));
  if (network) allowed.insert(allowed.end(), std::begin(kAllowedForNetwork), std::end(kAllowedForNetwork));
  if (auto filtered = InstallSeccompFilter(seccomp, allowed, kAllowedWithArg, kRefusedEnosys);
      !filtered) {
    return std::unexpected(fmt::format("svfs-versiond: --seccomp: cannot install the filter: {}; "
                                       "use --seccomp none on a kernel without seccomp",
                                       std::strerror(filtered.error())));
  }
  seccomp_installed.store(seccomp != SeccompAction::kNone, std::memory_order_relaxed);
  return {};
}

}  // namespace svfs::versiond
