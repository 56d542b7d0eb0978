// svfsd: serves a host directory over FUSE (host /dev/fuse mount now; vhost-user next).
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstring>

#include "daemon/fs/credentials.h"
#include "daemon/fs/passthrough.h"
#include "daemon/fuse/server.h"
#include "daemon/options.h"
#include "daemon/transport/fuse_dev.h"

namespace {

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

}  // namespace

int main(int argc, char** argv) {
  auto parsed = svfs::ParseOptions(argc, argv);
  if (!parsed.options) return parsed.exit_code;
  svfs::Options& options = *parsed.options;
  if (!SetupLogging(options)) return 2;

  if (options.rlimit_nofile) {
    rlimit limit{*options.rlimit_nofile, *options.rlimit_nofile};
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      std::fprintf(stderr, "svfsd: --rlimit-nofile %llu: %s\n",
                   static_cast<unsigned long long>(*options.rlimit_nofile), std::strerror(errno));
      return 1;
    }
  }

  auto filesystem = svfs::fs::PassthroughFs::Create(options.fs);
  if (!filesystem) {
    std::fprintf(stderr, "svfsd: --shared-dir %s: %s\n", options.fs.shared_dir.c_str(),
                 std::strerror(filesystem.error()));
    return 1;
  }

  // Every thread inherits this mask; the main thread takes these signals with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&signals, sig);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  svfs::fuse::Server server(**filesystem);
  auto session = svfs::transport::FuseDevSession::Mount(options.mountpoint, "svfs");
  if (!session) {
    std::fprintf(stderr, "svfsd: --mount %s: %s%s\n", options.mountpoint.c_str(),
                 std::strerror(session.error()),
                 session.error() == EPERM ? " (mounting through /dev/fuse needs root)" : "");
    return 1;
  }
  unsigned threads = options.thread_pool_size ? options.thread_pool_size : 4;
  (*session)->start(server, threads, [] { svfs::fs::DropSupplementaryGroupsForThread(); },
                    [] { kill(getpid(), SIGTERM); });
  spdlog::info("serving {} on {} (cache={}, {} threads)", options.fs.shared_dir,
               options.mountpoint, svfs::fs::CacheModeName(options.fs.cache.mode()), threads);

  for (;;) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGUSR1) {
      std::fputs(server.stats().format_table().c_str(), stderr);
      std::fflush(stderr);
      continue;
    }
    spdlog::info("signal {}: unmounting {}", strsignal(sig), options.mountpoint);
    break;
  }
  (*session)->stop();
  spdlog::info("stopped after {} requests", server.stats().total());
  return 0;
}
