// svfsd: serves a host directory over FUSE: to a VM through vhost-user-fs (--socket-path/--fd),
// or on a host mount through /dev/fuse (--mount).
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string_view>
#include <thread>

#include "common/metrics_server.h"
#include "daemon/fs/credentials.h"
#include "daemon/fs/passthrough.h"
#include "daemon/fuse/server.h"
#include "daemon/options.h"
#include "daemon/sandbox/sandbox.h"
#include "daemon/transport/fuse_dev.h"
#include "daemon/transport/vhost_user/backend.h"
#include "daemon/versions/shared_versions.h"
#include "shm/version_table.h"

#if defined(__SANITIZE_ADDRESS__)
// LeakSanitizer's exit-time check lists threads in /proc/<pid>/task, which a sandboxed svfsd no
// longer reaches (it would abort): sanitizer builds check leaks of --sandbox none runs only.
extern "C" int __lsan_is_turned_off() { return svfs::sandbox::Closed() ? 1 : 0; }
#endif

namespace {

std::string AbsolutePath(const std::string& path) {
  std::error_code error;
  auto absolute = std::filesystem::absolute(path, error);
  return error ? path : absolute.lexically_normal().string();
}

bool SetupLogging(const svfs::Options& options) {
  auto level = spdlog::level::from_str(options.log_level);
  if (level == spdlog::level::off && options.log_level != "off") {
    std::fprintf(stderr, "svfsd: --log-level %s: expected trace, debug, info, warn, error or off\n",
                 options.log_level.c_str());
    return false;
  }
  std::shared_ptr<spdlog::logger> logger;
  if (options.syslog) {
    logger = spdlog::syslog_logger_mt("svfsd", "svfsd", LOG_PID, LOG_DAEMON);
  } else {
    logger = spdlog::stderr_color_mt("svfsd");
    logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [svfsd] [%^%l%$] %v");
  }
  logger->set_level(level);
  spdlog::set_default_logger(logger);
  return true;
}

// Serves a vhost-user frontend until it disconnects (exit 0, as virtiofsd) or SIGTERM/SIGINT.
// The per-opcode table, on SIGUSR1 and once more at exit (demos and benchmarks read it).
void PrintStats(const svfs::fuse::Server& server) {
  std::fputs(server.stats().format_table().c_str(), stderr);
  std::fflush(stderr);
}

// Each inode a guest holds keeps a descriptor (O_PATH, or its handle's mount fd), so, as both
// virtiofsds do, svfsd raises RLIMIT_NOFILE to the system maximum (fs.nr_open, capped by
// fs.file-max) unless told a number; an unprivileged svfsd that may not raise its hard limit
// raises the soft one to it and says so.
uint64_t ReadProcNumber(const char* path) {
  unsigned long long value = 0;
  if (FILE* file = std::fopen(path, "re")) {
    if (std::fscanf(file, "%llu", &value) != 1) value = 0;
    std::fclose(file);
  }
  return value;
}

bool RaiseOpenFileLimit(const svfs::Options& options) {
  if (options.rlimit_nofile == 0u) return true;  // --rlimit-nofile 0: leave it as it is
  rlimit current{};
  if (getrlimit(RLIMIT_NOFILE, &current) != 0) current = {1024, 1024};
  if (options.rlimit_nofile) {
    rlimit limit{*options.rlimit_nofile, *options.rlimit_nofile};
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      std::fprintf(stderr, "svfsd: --rlimit-nofile %llu: %s (the hard limit is %llu; raising it "
                   "needs CAP_SYS_RESOURCE)\n",
                   static_cast<unsigned long long>(*options.rlimit_nofile), std::strerror(errno),
                   static_cast<unsigned long long>(current.rlim_max));
      return false;
    }
    return true;
  }
  uint64_t target = ReadProcNumber("/proc/sys/fs/nr_open");
  const uint64_t file_max = ReadProcNumber("/proc/sys/fs/file-max");
  if (target == 0 || (file_max != 0 && file_max < target)) target = file_max;
  if (target == 0 || target <= current.rlim_cur) return true;
  rlimit wanted{target, std::max<rlim_t>(target, current.rlim_max)};
  if (setrlimit(RLIMIT_NOFILE, &wanted) == 0) {
    spdlog::debug("RLIMIT_NOFILE raised to {}", target);
    return true;
  }
  if (current.rlim_cur < current.rlim_max) {
    rlimit soft{current.rlim_max, current.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &soft) == 0) current.rlim_cur = current.rlim_max;
  }
  spdlog::info("RLIMIT_NOFILE is {} (the hard limit; the system maximum {} needs "
               "CAP_SYS_RESOURCE): a guest holding more files gets EMFILE",
               current.rlim_cur, target);
  return true;
}

// What /metrics serves: the request counters, the inode store, and shared versions if on.
std::string RenderMetrics(const svfs::fuse::Server& server, const svfs::fs::PassthroughFs& fs,
                          const svfs::versions::SharedVersions* versions) {
  using Type = svfs::metrics::Exposition::Type;
  svfs::metrics::Exposition out;
  server.stats().write_metrics(out);
  out.family("svfsd_inodes", Type::kGauge, "Inodes the guest holds (node ids), the root included.");
  out.sample("svfsd_inodes", fs.inodes().size());
  out.family("svfsd_inode_fds", Type::kGauge,
             "O_PATH descriptors held for those inodes (none for inodes held by file handle).");
  out.sample("svfsd_inode_fds", fs.inodes().held_fds());
  out.family("svfsd_open_handles", Type::kGauge, "Files and directories the guest holds open.");
  out.sample("svfsd_open_handles", fs.open_handles());
  if (versions != nullptr) {
    out.family("svfsd_version_samples_total", Type::kCounter,
               "Version-table slots sampled for replies (--cache shared).");
    out.sample("svfsd_version_samples_total", versions->samples());
    out.family("svfsd_version_bumps_total", Type::kCounter,
               "Version-table bumps for changes the guest made (--cache shared).");
    out.sample("svfsd_version_bumps_total", versions->bumps());
    out.family("svfsd_versiond_attached", Type::kGauge,
               "1 while attached to svfs-versiond (replies versioned), else 0.");
    out.sample("svfsd_versiond_attached", versions->attached() ? 1 : 0);
  }
  return out.text();
}

using Backend = std::unique_ptr<svfs::transport::vhost_user::VhostUserBackend>;

// Creates the vhost-user backend, whose listening socket must exist before the sandbox closes.
std::optional<Backend> CreateVhostUser(const svfs::Options& options, svfs::fuse::Server& server) {
  svfs::transport::vhost_user::BackendOptions backend_options{
      .socket_path = options.socket_path,
      .listen_fd = options.fd,
      .socket_group = options.socket_group,
      .pid = svfs::sandbox::DaemonPid(),
      .tag = options.tag,
      .pool_threads = options.thread_pool_size,
      .poll_max = std::chrono::microseconds(options.poll_us),
      .thread_init = [] { svfs::fs::DropSupplementaryGroupsForThread(); },
      .dax_window_size = options.dax_window_size};
  auto backend =
      svfs::transport::vhost_user::VhostUserBackend::Create(server, std::move(backend_options));
  if (!backend) {
    if (options.fd >= 0) {
      std::fprintf(stderr, "svfsd: --fd %d: %s\n", options.fd, std::strerror(backend.error()));
    } else {
      std::fprintf(stderr, "svfsd: --socket-path %s: %s\n", options.socket_path.c_str(),
                   std::strerror(backend.error()));
    }
    return std::nullopt;
  }
  return std::move(*backend);
}

int RunVhostUser(const svfs::Options& options, svfs::fuse::Server& server, Backend backend,
                 const sigset_t& signals) {
  if (!options.socket_group.empty() && options.socket_path.empty()) {
    spdlog::warn("--socket-group {} ignored: it applies to --socket-path only",
                 options.socket_group);
  }
  // Kata waits for this line on stderr (runtime-rs: with no timeout) before starting the VM.
  // It goes to stderr even when the log level hides info, and to syslog with --syslog.
  if (options.syslog) {
    spdlog::info("{}", svfs::kWaitingForConnection);
  } else if (spdlog::default_logger()->should_log(spdlog::level::info)) {
    spdlog::info("{}", svfs::kWaitingForConnection);
  } else {
    std::fprintf(stderr, "svfsd: %s\n", svfs::kWaitingForConnection);
    std::fflush(stderr);
  }
  std::atomic<bool> finished{false};
  svfs::Status status;
  std::thread serving([&] {
    status = backend->run();
    finished.store(true, std::memory_order_release);
    kill(getpid(), SIGTERM);  // wakes the sigwait below
  });
  if (options.fd >= 0) {
    spdlog::info("serving {} on vhost-user fd {} (cache={})", options.fs.shared_dir, options.fd,
                 svfs::fs::CacheModeName(options.fs.cache.mode()));
  } else {
    spdlog::info("serving {} on vhost-user socket {} (cache={})", options.fs.shared_dir,
                 options.socket_path, svfs::fs::CacheModeName(options.fs.cache.mode()));
  }
  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGUSR1) {
      PrintStats(server);
      continue;
    }
    if (!finished.load(std::memory_order_acquire)) {
      spdlog::info("signal {}: stopping", strsignal(sig));
      backend->stop();
    }
    break;
  }
  serving.join();
  backend.reset();
  if (!status) {
    spdlog::error("vhost-user: {}", std::strerror(status.error()));
    return 1;
  }
  spdlog::info("stopped after {} requests", server.stats().total());
  PrintStats(server);
  return 0;
}

// An unprivileged svfsd: a user namespace of its own for --sandbox namespace (docs/security.md,
// "Unprivileged svfsd"), and once, what cannot work so.
bool PrepareUnprivileged(const svfs::Options& options, svfs::sandbox::Mode mode) {
  const bool maps = !options.user_namespace.uids.empty() || !options.user_namespace.gids.empty();
  if (::geteuid() == 0) return true;  // maps as root: only identities pass the command line
  if (mode == svfs::sandbox::Mode::kChroot) {
    std::fprintf(stderr, "svfsd: --sandbox chroot needs root (chroot(2) takes CAP_SYS_CHROOT); "
                         "unprivileged, use --sandbox namespace\n");
    return false;
  }
  if (mode == svfs::sandbox::Mode::kNone) {
    if (maps) {
      std::fprintf(stderr, "svfsd: --uid-map/--gid-map need --sandbox namespace (they map IDs "
                           "into its user namespace)\n");
      return false;
    }
    return true;
  }
  const uid_t uid = ::geteuid();
  const gid_t gid = ::getegid();
  if (auto entered = svfs::sandbox::EnterUserNamespace(options.user_namespace); !entered) {
    std::fprintf(stderr, "svfsd: --sandbox namespace: %s\n", entered.error().c_str());
    return false;
  }
  if (!maps) {
    spdlog::warn("unprivileged (uid {}, gid {}): every guest user acts as uid {}, which owns what "
                 "the guest creates; chown/chgrp to any other ID, device nodes, other users' files "
                 "beyond their mode bits, trusted.* attributes and --inode-file-handles do not "
                 "work; host files of other owners appear owned by 65534 "
                 "(--uid-map/--gid-map map more IDs)",
                 uid, gid, uid);
  } else {
    spdlog::warn("unprivileged (uid {}, gid {}) in a user namespace of the --uid-map/--gid-map "
                 "ranges: IDs outside them cannot be owners (EINVAL) and appear as 65534; device "
                 "nodes, trusted.* attributes and --inode-file-handles do not work",
                 uid, gid);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = svfs::ParseOptions(argc, argv);
  if (!parsed.options) return parsed.exit_code;
  svfs::Options& options = *parsed.options;
  if (!SetupLogging(options)) return 2;

  if (!RaiseOpenFileLimit(options)) return 1;

  // Every thread (versiond's client threads too) inherits this mask; the main thread takes
  // these signals with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&signals, sig);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // --mount: mounted here, in the host's mount namespace (a sandbox supervisor unmounts it).
  std::unique_ptr<svfs::transport::FuseDevSession> session;
  if (!options.mountpoint.empty()) {
    auto mounted = svfs::transport::FuseDevSession::Mount(options.mountpoint, "svfs");
    if (!mounted) {
      std::fprintf(stderr, "svfsd: --mount %s: %s%s\n", options.mountpoint.c_str(),
                   std::strerror(mounted.error()),
                   mounted.error() == EPERM ? " (mounting through /dev/fuse needs root)" : "");
      return 1;
    }
    session = std::move(*mounted);
  }
  // Before the sandbox: a socket bound in the host's network namespace (and next to the socket
  // file's path) keeps serving from inside it; the thread starts once seccomp is on.
  std::unique_ptr<svfs::metrics::MetricsServer> metrics_listening;
  // "{pid}" makes one path per daemon where a launcher gives every daemon the same arguments
  // (Kata's virtio_fs_extra_args).
  constexpr std::string_view kPidField = "{pid}";
  if (const size_t at = options.metrics_socket.find(kPidField); at != std::string::npos) {
    options.metrics_socket.replace(at, kPidField.size(), std::to_string(::getpid()));
  }
  if (!options.metrics_socket.empty() || !options.metrics_address.empty()) {
    auto listening = svfs::metrics::MetricsServer::Listen(
        {.program = "svfsd", .socket_path = options.metrics_socket,
         .address = options.metrics_address});
    if (!listening) {
      std::fprintf(stderr, "%s\n", listening.error().c_str());
      return 1;
    }
    metrics_listening = std::move(*listening);
  }
  // Checked here so a missing directory is reported as what it is, not as a sandbox failure.
  struct stat shared_stat {};
  const int shared_error = ::stat(options.fs.shared_dir.c_str(), &shared_stat) != 0 ? errno
                           : S_ISDIR(shared_stat.st_mode)                            ? 0
                                                                                     : ENOTDIR;
  if (shared_error != 0) {
    std::fprintf(stderr, "svfsd: --shared-dir %s: %s\n", options.fs.shared_dir.c_str(),
                 std::strerror(shared_error));
    return 1;
  }
  const auto sandbox_mode = *svfs::sandbox::ParseMode(options.sandbox);
  const std::string shared_dir = AbsolutePath(options.fs.shared_dir);
  if (!PrepareUnprivileged(options, sandbox_mode)) return 1;
  if (auto entered = svfs::sandbox::Enter(
          sandbox_mode, shared_dir,
          {.mountpoint = session && sandbox_mode != svfs::sandbox::Mode::kNone
                             ? AbsolutePath(options.mountpoint)
                             : std::string(),
           .fuse_fd = session ? session->device_fd() : -1});
      !entered) {
    std::fprintf(stderr, "svfsd: --sandbox %s: %s%s\n", options.sandbox.c_str(),
                 std::strerror(entered.error()),
                 entered.error() == EPERM ? " (needs root; or --sandbox chroot or none)" : "");
    return 1;
  }
  if (session && sandbox_mode != svfs::sandbox::Mode::kNone) session->leave_unmount_to_supervisor();

  // Declared before the filesystem, which samples and bumps through it until destroyed; its
  // client starts once the sandbox is closed.
  std::unique_ptr<svfs::versions::SharedVersions> versions;
  svfs::UniqueFd versiond_dir;
  svfs::UniqueFd shm_dir;
  std::string versiond_name;
  if (options.fs.cache.mode() == svfs::fs::CacheMode::kShared) {
    std::string where = !options.socket_path.empty() ? options.socket_path
                        : !options.mountpoint.empty() ? options.mountpoint
                                                      : fmt::format("fd {}", options.fd);
    versions = svfs::versions::SharedVersions::Create({
        .socket_path = options.versiond_socket,
        .client_name = fmt::format("svfsd {} ({})", svfs::sandbox::DaemonPid(), where),
        .pid = static_cast<uint32_t>(svfs::sandbox::DaemonPid()),
        .shared_dir = options.fs.shared_dir,
    });
    if (sandbox_mode != svfs::sandbox::Mode::kNone) {
      // Reached through descriptors once the sandbox hides their paths: versiond's socket (by
      // its name in the working directory) for reconnects, /dev/shm for a new table.
      const std::string socket = AbsolutePath(options.versiond_socket);
      const auto slash = socket.rfind('/');
      const std::string dir = slash == 0 ? "/" : socket.substr(0, slash);
      versiond_name = socket.substr(slash + 1);
      versiond_dir = svfs::UniqueFd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      shm_dir = svfs::UniqueFd(::open("/dev/shm", O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (!versiond_dir || !shm_dir) {
        std::fprintf(stderr, "svfsd: --versiond-socket %s: %s: %s\n",
                     options.versiond_socket.c_str(), !versiond_dir ? dir.c_str() : "/dev/shm",
                     std::strerror(errno));
        return 1;
      }
    }
  }
  auto filesystem = svfs::fs::PassthroughFs::Create(options.fs, versions.get());
  if (!filesystem) {
    std::fprintf(stderr, "svfsd: --shared-dir %s: %s\n", options.fs.shared_dir.c_str(),
                 std::strerror(filesystem.error()));
    return 1;
  }

  svfs::fuse::Server server(**filesystem, {.ids = options.ids});
  // Declared after what it reads, so its thread stops first.
  auto metrics = std::move(metrics_listening);
  std::optional<Backend> backend;
  if (options.mountpoint.empty()) {
    backend = CreateVhostUser(options, server);
    if (!backend) return 1;
  }

  // Everything from outside the shared directory is open: close the sandbox.
  if (auto closed = svfs::sandbox::Close(sandbox_mode, shared_dir); !closed) {
    std::fprintf(stderr, "svfsd: --sandbox %s: closing on %s: %s\n", options.sandbox.c_str(),
                 shared_dir.c_str(), std::strerror(closed.error()));
    return 1;
  }
  if (versiond_dir) {
    if (::fchdir(versiond_dir.get()) != 0) {
      std::fprintf(stderr, "svfsd: --versiond-socket %s: %s\n", options.versiond_socket.c_str(),
                   std::strerror(errno));
      return 1;
    }
    svfs::shm::SetShmDirectory(shm_dir.get());
  }
  if (auto dropped = svfs::sandbox::DropCapabilities(
          options.modcaps, options.fs.file_handles != svfs::fs::InodeFileHandles::kNever,
          session && sandbox_mode == svfs::sandbox::Mode::kNone);
      !dropped) {
    std::fprintf(stderr, "svfsd: dropping capabilities: %s\n", std::strerror(dropped.error()));
    return 1;
  }
  if (auto filtered = svfs::sandbox::InstallSeccomp(
          *svfs::ParseSeccompAction(options.seccomp));
      !filtered) {
    std::fprintf(stderr, "svfsd: --seccomp %s: %s\n", options.seccomp.c_str(),
                 std::strerror(filtered.error()));
    return 1;
  }
  // Test-only (the environment of the daemon's launcher; no guest reaches it): a system call
  // outside the filter, or ("fork") a new process, to show what --seccomp does with it.
  if (const char* forbidden = std::getenv("SVFSD_TEST_FORBIDDEN_SYSCALL"); forbidden != nullptr) {
    if (std::string_view(forbidden) == "fork") {
      if (::fork() == 0) ::_exit(0);
    } else {
      ::syscall(SYS_acct, nullptr);
    }
  }
  if (versions) versions->start(versiond_name);
  if (metrics) {
    metrics->start([&server, fs = filesystem->get(), v = versions.get()] {
      return RenderMetrics(server, *fs, v);
    });
    for (const std::string& address : metrics->addresses()) {
      spdlog::info("metrics: serving /metrics on {}", address);
    }
  }

  if (backend) return RunVhostUser(options, server, std::move(*backend), signals);
  unsigned threads = options.thread_pool_size ? options.thread_pool_size : 4;
  session->start(server, threads, [] { svfs::fs::DropSupplementaryGroupsForThread(); },
                    [] { kill(getpid(), SIGTERM); });
  spdlog::info("serving {} on {} (cache={}, {} threads)", options.fs.shared_dir,
               options.mountpoint, svfs::fs::CacheModeName(options.fs.cache.mode()), threads);

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGUSR1) {
      PrintStats(server);
      continue;
    }
    spdlog::info("signal {}: unmounting {}", strsignal(sig), options.mountpoint);
    break;
  }
  session->stop();
  spdlog::info("stopped after {} requests", server.stats().total());
  PrintStats(server);
  return 0;
}
