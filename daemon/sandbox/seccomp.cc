// svfsd's seccomp filter: the system calls svfsd, glibc, spdlog, Cap'n Proto/kj and
// Boost.Interprocess make on x86_64 once the sandbox is closed; anything else gets the action.
#include "daemon/sandbox/sandbox.h"

#include <sched.h>
#include <unistd.h>

#include <span>

namespace svfs::sandbox {
namespace {

constexpr const char* kAllowed[] = {
    // Memory, threads, signals, time (glibc, the C++ runtime, kj's event loop).
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mlock", "munlock", "membarrier",
    "exit", "exit_group", "set_robust_list", "get_robust_list", "rseq",
    "set_tid_address", "futex", "futex_waitv", "sched_yield", "sched_getaffinity",
    "sched_setaffinity", "getpid", "gettid", "getppid", "tkill",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigtimedwait", "rt_sigpending",
    "sigaltstack", "restart_syscall", "clock_gettime", "clock_getres", "clock_nanosleep",
    "nanosleep", "gettimeofday", "time", "getrandom", "uname", "sysinfo", "getrlimit",
    "prlimit64", "getrusage", "prctl", "arch_prctl", "capget", "capset", "getcwd",
    // Descriptors and waiting (vhost-user, /dev/fuse, eventfds, kj).
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
    "pwritev2", "close", "close_range", "dup", "dup2", "dup3", "fcntl", "ioctl", "lseek",
    "pipe", "pipe2", "eventfd", "eventfd2", "poll", "ppoll", "select", "pselect6",
    "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
    "timerfd_create", "timerfd_settime", "timerfd_gettime", "signalfd", "signalfd4",
    // Sockets: the vhost-user connection (fds passed), versiond (reconnects), syslog, metrics.
    // No bind or listen: every listening socket is bound before the filter goes on.
    "socket", "connect", "accept", "accept4", "shutdown", "getsockname",
    "getpeername", "getsockopt", "setsockopt", "sendmsg", "recvmsg", "sendto", "recvfrom",
    "sendmmsg", "recvmmsg", "socketpair",
    // Credentials for guest requests.
    "setfsuid", "setfsgid", "setgroups",
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
    // The passthrough filesystem.
    "openat", "openat2", "open", "open_by_handle_at", "name_to_handle_at", "newfstatat",
    "fstat", "stat", "lstat", "statx", "fstatfs", "statfs", "getdents64", "getdents",
    "readlinkat", "readlink", "mkdirat", "mknodat", "symlinkat", "linkat", "unlinkat",
    "renameat", "renameat2", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchownat",
    "utimensat", "futimesat", "truncate", "ftruncate", "fallocate", "fsync", "fdatasync",
    "syncfs", "sync_file_range", "copy_file_range", "sendfile", "splice", "flock",
    "fadvise64", "fgetxattr", "fsetxattr", "flistxattr", "fremovexattr", "getxattr",
    "lgetxattr", "setxattr", "lsetxattr", "listxattr", "llistxattr", "removexattr",
    "lremovexattr", "umask", "fchdir", "chdir", "access", "faccessat", "faccessat2",
    "umount2",  // a --mount daemon without a supervisor unmounts at exit
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    // The sanitizer runtimes (reports, LeakSanitizer's stop-the-world at exit).
    "ptrace", "wait4", "waitid", "process_vm_readv", "getpriority", "setpriority", "mincore",
    "msync", "personality", "execve",
    // LeakSanitizer's stop-the-world thread is a clone without CLONE_THREAD.
    "clone", "clone3",
#endif
};

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
// Threads (the queues', the pool's, lock waiters'), never a new process.
constexpr SyscallArgRule kCloneThreadsOnly = {"clone", 0, CLONE_THREAD, CLONE_THREAD};
// glibc makes threads with clone3 and falls back to clone on ENOSYS; clone3's flags are behind
// a pointer the filter cannot read.
constexpr const char* kRefusedEnosys[] = {"clone3"};
#else
constexpr std::span<const char* const> kRefusedEnosys;
#endif

}  // namespace

Status InstallSeccomp(SeccompAction action) {
  const auto self = static_cast<uint64_t>(::getpid());
  const SyscallArgRule allowed_if_arg0[] = {
      // A working directory of a thread's own (the xattr calls on symlinks), nothing else
      // unshare can do.
      {"unshare", 0, CLONE_FS},
      // Signals to svfsd itself only (pthread_kill: interrupting a queue's lock waiters), not to
      // other processes of the same uid.
      {"kill", 0, self},
      {"tgkill", 0, self},
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
      kCloneThreadsOnly,
#endif
  };
  return InstallSeccompFilter(action, kAllowed, allowed_if_arg0, kRefusedEnosys);
}

}  // namespace svfs::sandbox
