// svfs-versiond: one per host (or per trust domain). Owns the shared version table, registers
// svfsd daemons over a UNIX socket, and bumps slots for changes made on the host.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <grp.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "versiond/lockdown.h"
#include "versiond/server.h"

#if defined(__SANITIZE_ADDRESS__)
// LeakSanitizer's exit-time check opens /proc files with open(2), which versiond's filter kills:
// sanitizer builds check versiond's leaks in --seccomp none runs only (as svfsd's, main.cc there).
extern "C" int __lsan_is_turned_off() { return svfs::versiond::SeccompInstalled() ? 1 : 0; }
#endif
#include "versiond/socket_activation.h"

int main(int argc, char** argv) {
  svfs::versiond::ServerOptions options;
  std::string log_level = "info";
  bool foreground = false;

  CLI::App app{"svfs-versiond: shared version table coordinator for svfsd daemons", "svfs-versiond"};
  app.add_option("--socket", options.socket_path, "UNIX socket to serve")
      ->capture_default_str();
  app.add_option("--table", options.table_name, "shared-memory object name (/dev/shm/NAME)")
      ->capture_default_str();
  app.add_option("--capacity", options.capacity,
                 "slots of a newly created table, slot 0 included (an existing table keeps its size)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{2}, uint64_t{1} << 32));
  std::string table_mode = "0640";
  app.add_option("--table-mode", table_mode,
                 "permission bits of a newly created table, octal (owner rw, others never write)")
      ->capture_default_str();
  app.add_option("--allow-uid", options.allow_uids, "also allow peers with this uid (repeatable; root always)");
  std::vector<std::string> allow_groups;
  app.add_option("--allow-gid", allow_groups,
                 "also allow peers with this primary group, by name or number (repeatable); the "
                 "first one owns the socket")
      ->type_name("GROUP");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str();
  std::string host_changes = "fanotify";
  app.add_option("--host-changes", host_changes,
                 "fanotify: changes made on the host outside svfsd bump versions (and, with "
                 "--federation, go to the other hosts); none: no fanotify, for hosts where only "
                 "svfsd and other hosts change the shared directories")
      ->capture_default_str()
      ->check(CLI::IsMember({"fanotify", "none"}));
  std::string seccomp = "kill";
  app.add_option("--seccomp", seccomp,
                 "seccomp action for a system call versiond does not make: kill, log, trap or none "
                 "(capabilities are cut to sys_admin and dac_read_search for fanotify either way, "
                 "to none with --host-changes none)")
      ->capture_default_str();
  std::string federation;
  app.add_option("--federation", federation,
                 "federate with the svfs-versiond of other hosts sharing --volume over NATS "
                 "JetStream: nats://HOST:PORT[,nats://...] (docs/operations.md, Federation); from "
                 "SVFS_FEDERATION if not given, where a URL's password stays out of argv")
      ->type_name("URLS")
      ->envname("SVFS_FEDERATION");
  std::vector<std::string> volume_names, volume_dirs;
  app.add_option("--volume", volume_names,
                 "with --federation: a shared volume's name (letters, digits, _ -), the same on "
                 "every host; stream svfs-NAME, subject svfs.NAME.bumps. Repeat --volume and "
                 "--volume-dir in pairs for several volumes")
      ->type_name("NAME");
  app.add_option("--volume-dir", volume_dirs,
                 "with --federation: the --volume of the same position as mounted on this host "
                 "(its filesystem's changes are published; remote ones bump the slots computed "
                 "with its fsid)")
      ->type_name("DIR");
  // Files handed to the NATS client (each must exist at start).
  const struct {
    const char* name;
    std::string* file;
    const char* help;
  } federation_files[] = {
      {"--federation-creds", &options.federation_creds,
       "with --federation: NATS user credentials (a .creds file: JWT and NKey seed); a user and "
       "password or a token go in the URL, nats://USER:PASS@HOST:PORT"},
      {"--federation-tls-ca", &options.federation_tls_ca,
       "with --federation: TLS to the NATS servers, whose certificates must chain to these CA "
       "certificates (PEM)"},
      {"--federation-tls-cert", &options.federation_tls_cert,
       "with --federation: this host's TLS client certificate chain (PEM), for servers that "
       "verify clients; with --federation-tls-key"},
      {"--federation-tls-key", &options.federation_tls_key,
       "with --federation: the private key of --federation-tls-cert (PEM)"},
  };
  for (const auto& option : federation_files) {
    app.add_option(option.name, *option.file, option.help)
        ->type_name("FILE")
        ->check(CLI::ExistingFile);
  }
  app.add_option("--federation-replicas", options.federation_replicas,
                 "with --federation: replicas of the stream if this versiond creates it (at most "
                 "the NATS cluster's size)")
      ->capture_default_str()
      ->check(CLI::Range(1, 5));
  app.add_option("--metrics-socket", options.metrics_socket,
                 "serve Prometheus metrics (GET /metrics, HTTP/1.0) on this UNIX socket (0600)")
      ->type_name("PATH");
  app.add_option("--metrics-address", options.metrics_address,
                 "serve Prometheus metrics on this numeric TCP address: 127.0.0.1:PORT or "
                 "[::1]:PORT")
      ->type_name("ADDR:PORT");
  app.add_flag("--foreground", foreground, "accepted for compatibility; always runs in the foreground");
  app.set_version_flag("--version", "svfs-versiond " SVFS_VERSION);
  app.footer("Socket activation: started by systemd with one listening socket (LISTEN_FDS=1, "
             "svfs-versiond.socket), it serves that socket instead of binding --socket, and leaves "
             "the socket file to systemd.");
  CLI11_PARSE(app, argc, argv);
  options.watch_host_changes = host_changes == "fanotify";
  for (size_t start = 0; !federation.empty() && start <= federation.size();) {
    const size_t comma = std::min(federation.find(',', start), federation.size());
    if (comma == start) {
      std::fprintf(stderr, "svfs-versiond: --federation %s: an empty server URL; give "
                   "nats://HOST:PORT[,nats://HOST:PORT...] without empty items\n", federation.c_str());
      return 2;
    }
    options.federation_servers.push_back(federation.substr(start, comma - start));
    start = comma + 1;
  }
  if (federation.empty() && (app.count("--volume") > 0 || app.count("--volume-dir") > 0)) {
    std::fprintf(stderr, "svfs-versiond: --volume and --volume-dir go with --federation "
                 "nats://HOST:PORT; add it or leave them out\n");
    return 2;
  }
  if (options.federation_tls_cert.empty() != options.federation_tls_key.empty()) {
    std::fprintf(stderr, "svfs-versiond: --federation-tls-cert and --federation-tls-key go "
                 "together; give both or neither\n");
    return 2;
  }
  if (!federation.empty()) {
    if (volume_names.empty() || volume_names.size() != volume_dirs.size()) {
      std::fprintf(stderr, "svfs-versiond: --federation: %zu --volume and %zu --volume-dir; give "
                   "one --volume NAME --volume-dir DIR pair per shared volume\n",
                   volume_names.size(), volume_dirs.size());
      return 2;
    }
    for (size_t i = 0; i < volume_names.size(); ++i) {
      for (size_t j = 0; j < i; ++j) {
        if (volume_names[j] == volume_names[i]) {
          std::fprintf(stderr, "svfs-versiond: --volume %s given twice\n", volume_names[i].c_str());
          return 2;
        }
      }
      options.volumes.push_back({.name = volume_names[i], .dir = volume_dirs[i]});
    }
  }
  for (const std::string& name : allow_groups) {
    // A name (--allow-gid kvm) or a number, which need not be in /etc/group.
    if (const group* entry = ::getgrnam(name.c_str()); entry != nullptr) {
      options.allow_gids.push_back(entry->gr_gid);
      continue;
    }
    char* end = nullptr;
    const unsigned long gid = std::strtoul(name.c_str(), &end, 10);
    if (name.empty() || *end != '\0' || gid >= UINT32_MAX) {
      std::fprintf(stderr, "svfs-versiond: --allow-gid %s: no such group (give a group name or "
                   "number)\n", name.c_str());
      return 2;
    }
    options.allow_gids.push_back(static_cast<gid_t>(gid));
  }
  {
    char* end = nullptr;
    unsigned long mode = std::strtoul(table_mode.c_str(), &end, 8);
    if (table_mode.empty() || *end != '\0' || mode > 0777 || (mode & 0002) != 0 ||
        (mode & 0600) != 0600) {
      std::fprintf(stderr, "svfs-versiond: --table-mode %s: expected octal bits with owner read "
                   "and write and no write for others (e.g. 0640, or 0660 for svfsd daemons "
                   "in the group)\n", table_mode.c_str());
      return 2;
    }
    options.table_mode = static_cast<unsigned>(mode);
  }

  if (auto action = svfs::ParseSeccompAction(seccomp)) {
    options.seccomp = *action;
  } else {
    std::fprintf(stderr, "svfs-versiond: --seccomp %s: expected kill, log, trap or none\n",
                 seccomp.c_str());
    return 2;
  }

  auto level = spdlog::level::from_str(log_level);
  if (level == spdlog::level::off && log_level != "off") {
    std::fprintf(stderr, "svfs-versiond: --log-level %s: expected trace, debug, info, warn, error or off\n",
                 log_level.c_str());
    return 2;
  }
  auto logger = spdlog::stderr_color_mt("svfs-versiond");
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [svfs-versiond] [%^%l%$] %v");
  logger->set_level(level);
  spdlog::set_default_logger(logger);
  spdlog::flush_on(spdlog::level::info);  // tests and journald read the log as it happens

  auto activation = svfs::versiond::TakeActivationSocket();
  if (!activation) {
    spdlog::critical("{}", activation.error());
    return 1;
  }
  if (activation->fd && app.count("--socket") > 0 && activation->path != options.socket_path) {
    spdlog::warn("--socket {} ignored: serving {}, the socket passed by systemd",
                 options.socket_path, activation->path);
  }
  auto result = svfs::versiond::RunServer(options, std::move(activation->fd), activation->path);
  if (!result) {
    spdlog::critical("{}", result.error());
    return 1;
  }
  return 0;
}
