#include "daemon/options.h"

#include "daemon/sandbox/sandbox.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string_view>

namespace svfs {
namespace {

constexpr const char* kFooter = R"(
C virtiofsd dialect (-o, comma-separated, repeatable):
  source=DIR  cache=none|auto|always|shared  versiond_socket=PATH  timeout=SECONDS
  xattr|no_xattr  flock|no_flock
  posix_lock|no_posix_lock  writeback|no_writeback  announce_submounts  readdirplus
  allow_direct_io|no_allow_direct_io  log_level=debug|info|warn|err
  sandbox=namespace|chroot|none  modcaps=+CAP:-CAP
  -f (foreground; always the case)  -d (debug logging)

Sandbox (as the Rust virtiofsd): namespace forks; the daemon is pid 1 of new pid, mount, net and
ipc namespaces whose root is the shared directory (pivot_root), the parent waits, forwards
signals and, with --mount, unmounts. chroot chroots into the shared directory (where
namespaces are not available). Both need root. Capabilities are cut to chown, dac_override,
fowner, fsetid, setgid, setuid, mknod, setfcap (+dac_read_search with --inode-file-handles);
--modcaps=+sys_admin:-mknod changes that set.

Seccomp (--seccomp kill|log|trap): once set up, svfsd allows only the system calls it makes
(x86_64); kill ends the process at any other, log lets it through and logs it (audit),
trap raises SIGSYS. The default is none, unlike virtiofsd's kill: see docs/security.md.

Refused because svfsd does not implement them yet (never silently ignored): --xattrmap,
--translate-uid/--translate-gid, --uid-map/--gid-map.

Transports: --socket-path PATH or --fd N serve a vhost-user-fs frontend (QEMU
vhost-user-fs-pci, cloud-hypervisor, ...): one thread per virtqueue, svfsd exits when the
frontend disconnects. --mount MOUNTPOINT serves the host's /dev/fuse instead.

Shared versions (--cache shared): svfsd attaches to svfs-versiond (--versiond-socket), tags
replies with version-table slots for a guest that negotiates them and serves any other guest as
cache=none. Without versiond it keeps serving, unversioned, and re-attaches when it returns.)";

[[noreturn]] void Fail(const std::string& message) {
  throw CLI::ValidationError(message);
}

void Unsupported(std::string_view option, std::string_view what) {
  Fail(fmt::format("{}: not supported by this svfsd ({})", option, what));
}

// Applies one C-dialect `-o` item.
void ApplyLegacyOption(Options& options, std::optional<fs::CacheMode>& cache,
                       std::optional<double>& timeout_s, std::string_view item) {
  auto eq = item.find('=');
  std::string_view key = item.substr(0, eq);
  std::string_view value = eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1);
  auto flag = [&](bool& target, bool on) {
    if (eq != std::string_view::npos) Fail(fmt::format("-o {}: takes no value", key));
    target = on;
  };
  bool ignored = false;
  if (key == "source") {
    options.fs.shared_dir = std::string(value);
  } else if (key == "cache") {
    cache = fs::ParseCacheMode(value);
    if (!cache) Fail(fmt::format("-o cache={}: expected none, auto, always or shared", value));
  } else if (key == "versiond_socket") {
    options.versiond_socket = std::string(value);
  } else if (key == "timeout") {
    char* end = nullptr;
    std::string text(value);
    double seconds = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || seconds < 0) {
      Fail(fmt::format("-o timeout={}: expected a number of seconds", value));
    }
    timeout_s = seconds;
  } else if (key == "xattr") {
    flag(options.fs.xattr, true);
  } else if (key == "no_xattr") {
    flag(options.fs.xattr, false);
  } else if (key == "flock") {
    flag(options.fs.flock, true);
  } else if (key == "no_flock") {
    flag(options.fs.flock, false);
  } else if (key == "posix_lock") {
    flag(options.fs.posix_lock, true);
  } else if (key == "no_posix_lock") {
    flag(options.fs.posix_lock, false);
  } else if (key == "writeback") {
    flag(options.fs.writeback, true);
  } else if (key == "no_writeback") {
    flag(options.fs.writeback, false);
  } else if (key == "announce_submounts") {
    flag(options.fs.announce_submounts, true);
  } else if (key == "allow_direct_io") {
    flag(options.fs.allow_direct_io, true);
  } else if (key == "no_allow_direct_io") {
    flag(options.fs.allow_direct_io, false);
  } else if (key == "readdirplus" || key == "no_readdirplus") {
    ignored = true;  // follows the cache mode in svfsd, as in the Rust virtiofsd
  } else if (key == "no_killpriv_v2") {
    flag(options.fs.killpriv_v2, false);
  } else if (key == "killpriv_v2") {
    flag(options.fs.killpriv_v2, true);
  } else if (key == "log_level") {
    if (value == "err") value = "error";
    options.log_level = std::string(value);
  } else if (key == "sandbox") {
    if (!sandbox::ParseMode(value)) {
      Fail(fmt::format("-o sandbox={}: expected namespace, chroot or none", value));
    }
    options.sandbox = std::string(value);
  } else if (key == "modcaps") {
    options.modcaps = std::string(value);
  } else if (key == "posix_acl") {
    flag(options.fs.posix_acl, true);
  } else if (key == "no_posix_acl") {
    flag(options.fs.posix_acl, false);
  } else if (key == "xattrmap") {
    Unsupported(fmt::format("-o {}", key), "see --help");
  } else {
    Fail(fmt::format("-o {}: unknown option (see --help)", key));
  }
  (void)ignored;
}

}  // namespace

std::string CapabilitiesJson() {
  // "separate-options": the daemon takes --shared-dir etc. rather than only -o source=.
  return "{\n  \"type\": \"fs\",\n  \"features\": [\n    \"separate-options\"\n  ]\n}\n";
}

ParseOutcome ParseOptions(int argc, char** argv) {
  Options options;
  CLI::App app{"svfsd: virtio-fs host daemon with shared versions (drop-in for virtiofsd)", "svfsd"};
  app.footer(kFooter);
  app.get_formatter()->column_width(36);

  std::string cache_name;
  std::string file_handles = "never";
  std::string sandbox;
  std::string seccomp;
  std::string modcaps;
  std::vector<std::string> legacy;
  bool debug = false;
  bool readonly = false;
  std::string unsupported_value;

  app.add_option("--shared-dir", options.fs.shared_dir, "Shared directory path")
      ->type_name("DIR");
  app.add_option("--socket-path", options.socket_path, "vhost-user UNIX socket path")
      ->type_name("PATH");
  app.add_option("--fd", options.fd, "File descriptor of a listening vhost-user socket")
      ->type_name("N");
  app.add_option("--mount", options.mountpoint,
                 "Serve through the host's /dev/fuse, mounted on this directory (svfs)")
      ->type_name("MOUNTPOINT");
  app.add_option("--socket-group", options.socket_group, "Group that owns the socket")
      ->type_name("GROUP");
  app.add_option("--tag", options.tag, "virtio-fs tag reported in the device config")
      ->type_name("TAG");
  app.add_option("--cache", cache_name,
                 "Cache mode: never|none|metadata|auto|always|shared (default auto)")
      ->type_name("MODE");
  bool shared_versions = false;
  app.add_flag("--shared-versions", shared_versions,
               "Shared versions with svfs-versiond (same as --cache shared)");
  app.add_option("--versiond-socket", options.versiond_socket,
                 "svfs-versiond socket for --cache shared (default /run/svfs/versiond.sock)")
      ->type_name("PATH");
  app.add_option("--thread-pool-size", options.thread_pool_size,
                 "Worker threads (--mount: default 4; vhost-user: default 0, each queue's thread "
                 "serves its requests, and 1 is served as 0)")
      ->type_name("N");
  app.add_option("--poll-us", options.poll_us,
                 "vhost-user: poll each request queue up to this long before sleeping; the window "
                 "adapts to the load and an idle queue does not poll (default 50, 0 = never)")
      ->type_name("US")
      ->check(CLI::Range(0u, 100000u));
  app.add_option("--sandbox", sandbox,
                 "Sandbox: namespace|chroot|none (default namespace; see below)")
      ->type_name("MODE");
  app.add_option("--seccomp", seccomp,
                 "Seccomp action for a system call svfsd does not make: kill|log|trap|none "
                 "(default none)")
      ->type_name("ACTION");
  app.add_option("--modcaps", modcaps,
                 "Capabilities kept, changed: +CAP:-CAP (e.g. +sys_admin:-mknod)")
      ->type_name("CAPS");
  app.add_flag("--xattr", options.fs.xattr, "Enable extended attributes");
  app.add_flag("--announce-submounts", options.fs.announce_submounts,
               "Tell the guest about host submounts (FUSE_ATTR_SUBMOUNT)");
  app.add_option("--inode-file-handles", file_handles,
                 "Hold inodes by file handle: never|prefer|mandatory (default never)")
      ->type_name("MODE");
  app.add_flag("--writeback", options.fs.writeback, "Enable the guest's writeback cache");
  app.add_flag("--allow-direct-io", options.fs.allow_direct_io,
               "Honour O_DIRECT opens from the guest");
  app.add_flag("--readonly", readonly, "Refuse every modification (EROFS)");
  app.add_option("--rlimit-nofile", options.rlimit_nofile, "Set RLIMIT_NOFILE")->type_name("N");
  app.add_option("--log-level", options.log_level, "trace|debug|info|warn|error|off")
      ->type_name("LEVEL");
  app.add_flag("--syslog", options.syslog, "Log to syslog instead of stderr");
  app.add_flag("--print-capabilities", options.print_capabilities,
               "Print vhost-user backend capabilities as JSON and exit");
  app.add_option("-o", legacy, "C virtiofsd options, comma-separated (see below)")
      ->type_name("OPT[,OPT...]");
  bool foreground = true;
  bool no_flag_value = false;
  app.add_flag("-f", foreground, "Foreground (svfsd always runs in the foreground)");
  app.add_flag("-d", debug, "Debug logging (C virtiofsd)");
  app.add_flag("--killpriv-v2,!--no-killpriv-v2", options.fs.killpriv_v2,
               "Negotiate FUSE_HANDLE_KILLPRIV_V2: svfsd clears setuid/setgid on writes, "
               "truncates and chowns (default: off, the guest kernel does)");
  app.add_flag("--no-xattr", no_flag_value, "Disable extended attributes (the default)");
  app.set_version_flag("-V,--version", "svfsd 0.1.0");
  for (const char* name : {"--xattrmap", "--translate-uid", "--translate-gid",
                           "--uid-map", "--gid-map"}) {
    app.add_option(name, unsupported_value)->group("")->each([name](const std::string&) {
      Unsupported(name, "see --help");
    });
  }
  app.add_flag("--posix-acl,!--no-posix-acl", options.fs.posix_acl,
               "Enforce and inherit POSIX ACLs (FUSE_POSIX_ACL; turns on --xattr)");

  try {
    app.parse(argc, argv);
    if (options.print_capabilities) {
      std::fputs(CapabilitiesJson().c_str(), stdout);
      return ParseOutcome{std::nullopt, 0};
    }
    std::optional<fs::CacheMode> cache;
    std::optional<double> timeout_s;
    for (const auto& group : legacy) {
      size_t start = 0;
      while (start <= group.size()) {
        size_t comma = group.find(',', start);
        std::string_view item(group.data() + start,
                              (comma == std::string::npos ? group.size() : comma) - start);
        if (!item.empty()) ApplyLegacyOption(options, cache, timeout_s, item);
        if (comma == std::string::npos) break;
        start = comma + 1;
      }
    }
    if (!cache_name.empty()) {
      cache = fs::ParseCacheMode(cache_name);
      if (!cache) {
        Fail(fmt::format("--cache {}: expected never, metadata, auto, always or shared", cache_name));
      }
    }
    if (shared_versions) {
      if (cache && *cache != fs::CacheMode::kShared) {
        Fail(fmt::format("--shared-versions conflicts with cache mode {}",
                         fs::CacheModeName(*cache)));
      }
      cache = fs::CacheMode::kShared;
    }
    std::optional<uint64_t> timeout_ns;
    if (timeout_s) timeout_ns = static_cast<uint64_t>(*timeout_s * 1e9);
    options.fs.cache = fs::CachePolicy(cache.value_or(fs::CacheMode::kAuto), timeout_ns);
    options.fs.readonly = readonly;
    if (debug) options.log_level = "debug";

    if (file_handles == "never") {
      options.fs.file_handles = fs::InodeFileHandles::kNever;
    } else if (file_handles == "prefer") {
      options.fs.file_handles = fs::InodeFileHandles::kPrefer;
    } else if (file_handles == "mandatory") {
      options.fs.file_handles = fs::InodeFileHandles::kMandatory;
    } else {
      Fail(fmt::format("--inode-file-handles {}: expected never, prefer or mandatory", file_handles));
    }
    if (!sandbox.empty()) {
      if (!sandbox::ParseMode(sandbox)) {
        Fail(fmt::format("--sandbox {}: expected namespace, chroot or none", sandbox));
      }
      options.sandbox = sandbox;
    }
    if (!modcaps.empty()) options.modcaps = modcaps;
    if (std::string why; !options.modcaps.empty() && !sandbox::ValidModcaps(options.modcaps, &why)) {
      Fail(fmt::format("--modcaps {}: {}", options.modcaps, why));
    }
    if (!seccomp.empty()) {
      if (!sandbox::ParseSeccompAction(seccomp)) {
        Fail(fmt::format("--seccomp {}: expected kill, log, trap or none", seccomp));
      }
      options.seccomp = seccomp;
    }
    if (options.fs.shared_dir.empty()) Fail("--shared-dir (or -o source=DIR) is required");
    int transports = !options.socket_path.empty() + (options.fd >= 0) + !options.mountpoint.empty();
    if (transports != 1) Fail("give exactly one of --socket-path, --fd or --mount");
  } catch (const CLI::ParseError& error) {
    if (error.get_exit_code() == 0) {
      app.exit(error);
      return ParseOutcome{std::nullopt, 0};
    }
    std::fprintf(stderr, "svfsd: %s\n", error.what());
    return ParseOutcome{std::nullopt, 2};
  }
  return ParseOutcome{std::move(options), 0};
}

}  // namespace svfs
