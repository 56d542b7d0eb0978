#include "daemon/options.h"

#include "daemon/sandbox/sandbox.h"

#include <fmt/format.h>
#include <grp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdio>
#include <stdexcept>
#include <string_view>

namespace svfs {
namespace {

constexpr const char* kSvfsVersion = "0.1.0";
// The Rust virtiofsd release whose options svfsd takes (--translate-uid/gid came with 1.13).
constexpr const char* kVirtiofsdCompatVersion = "1.13.0";

constexpr const char* kFooter = R"(
Repeated options: the last one wins, across both dialects (--cache=auto ... --cache=shared
serves shared; so does --cache=auto ... --shared-versions).

C virtiofsd dialect (-o, comma-separated, repeatable; ",," is a comma inside a value):
  source=DIR  vhost_user_socket=PATH  cache=none|auto|always|shared  versiond_socket=PATH
  timeout=SECONDS  xattr|no_xattr  flock|no_flock  posix_lock|no_posix_lock
  writeback|no_writeback  announce_submounts  allow_direct_io|no_allow_direct_io
  killpriv_v2|no_killpriv_v2  posix_acl|no_posix_acl
  sandbox=namespace|chroot|none  modcaps=+CAP:-CAP  log_level=debug|info|warn|err  debug
  Accepted and ignored (see docs/operations.md): readdirplus, no_readdirplus, norace,
  no_security_label.
  -f (foreground; always the case)  -d (debug logging)

Sandbox (as the Rust virtiofsd): namespace forks; the daemon is pid 1 of new pid, mount, net and
ipc namespaces whose root is the shared directory (pivot_root), the parent waits, forwards
signals and, with --mount, unmounts. chroot chroots into the shared directory (where
namespaces are not available). Both need root. Capabilities are cut to chown, dac_override,
fowner, fsetid, setgid, setuid, mknod, setfcap (+dac_read_search with --inode-file-handles);
--modcaps=+sys_admin:-mknod changes that set.

Seccomp (--seccomp kill|log|trap): once set up, svfsd allows only the system calls it makes
(x86_64); kill ends the process at any other, log lets it through and logs it (audit),
trap raises SIGSYS. The default is kill, as virtiofsd's; none turns the filter off.

ID translation (--translate-uid/--translate-gid, as the Rust virtiofsd; repeatable, ranges of
one direction may not overlap, IDs no rule covers stay as they are):
  map:GUEST:HOST:COUNT           both directions, 1:1
  guest:GUEST:HOST:COUNT         guest -> host only    host:HOST:GUEST:COUNT   host -> guest only
  squash-guest:GUEST:HOST:COUNT  COUNT guest IDs -> one host ID
  squash-host:HOST:GUEST:COUNT   COUNT host IDs -> one guest ID
  forbid-guest:GUEST:COUNT       a caller or chown target in the range gets EPERM
Callers and chown targets are translated guest -> host, owners in replies host -> guest; IDs
inside POSIX ACLs are not, so --posix-acl is refused with them.

Unprivileged (svfsd started as a non-root user, --sandbox namespace, vhost-user only): svfsd
creates a user namespace first. Without --uid-map/--gid-map it maps only its own uid and gid
(setgroups denied); --uid-map/--gid-map :INSIDE:OUTSIDE:COUNT: (repeatable, as libvirt's session
mode passes them) are written by newuidmap/newgidmap (package uidmap; /etc/subuid, /etc/subgid).
What cannot work unprivileged is logged once at start (docs/security.md).

Refused because svfsd does not implement them (never silently ignored): --xattrmap,
--security-label, --preserve-noatime, --migration-* (no live migration),
-o xattrmap=, security_label.

Transports: --socket-path PATH or --fd N serve a vhost-user-fs frontend (QEMU
vhost-user-fs-pci, cloud-hypervisor, ...): one thread per virtqueue, svfsd exits when the
frontend disconnects. --mount MOUNTPOINT serves the host's /dev/fuse instead. Once the socket
listens svfsd writes "Waiting for vhost-user socket connection..." to stderr (Kata waits for it).

Shared versions (--cache shared): svfsd attaches to svfs-versiond (--versiond-socket), tags
replies with version-table slots for a guest that negotiates them and serves any other guest as
cache=none. Without versiond it keeps serving, unversioned, and re-attaches when it returns.)";

// A refusal of the command line, printed as "svfsd: <message>". Not a CLI::ParseError, so CLI11
// does not prefix it with the option's name when a callback throws it.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void Fail(const std::string& message) { throw UsageError(message); }

[[noreturn]] void Unsupported(std::string_view option, std::string_view why) {
  Fail(fmt::format("{}: not supported by svfsd ({})", option, why));
}

// What the options set in the order they appear: parsed on the fly, so the last one wins.
struct ParseState {
  Options& options;
  std::optional<fs::CacheMode> cache;
  std::optional<double> timeout_s;
  std::string file_handles = "never";
};

fs::CacheMode CacheModeOrFail(std::string_view option, std::string_view value) {
  auto mode = fs::ParseCacheMode(value);
  if (!mode) {
    Fail(fmt::format("{} {}: expected never, none, metadata, auto, always or shared", option, value));
  }
  return *mode;
}

void SetSandbox(Options& options, std::string_view option, std::string_view value) {
  if (!sandbox::ParseMode(value)) {
    Fail(fmt::format("{} {}: expected namespace, chroot or none", option, value));
  }
  options.sandbox = std::string(value);
}

bool ParseU32(std::string_view text, uint32_t& value) {
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && end == text.data() + text.size() && !text.empty();
}

// --dax-window-size: bytes, or with a K, M or G suffix (powers of 1024).
uint64_t DaxWindowSizeOrFail(std::string_view text) {
  const std::string given(text);
  uint64_t unit = 1;
  if (!text.empty()) {
    switch (text.back()) {
      case 'K': case 'k': unit = 1ull << 10; break;
      case 'M': case 'm': unit = 1ull << 20; break;
      case 'G': case 'g': unit = 1ull << 30; break;
      default: break;
    }
    if (unit != 1) text.remove_suffix(1);
  }
  uint64_t count = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), count);
  // The guest maps the window in 2 MiB ranges (Linux's FUSE_DAX_SZ): a rest could not be used.
  constexpr uint64_t kRange = 2ull << 20;
  if (error != std::errc() || end != text.data() + text.size() || text.empty() ||
      count > UINT64_MAX / unit || (count * unit) % kRange != 0) {
    Fail(fmt::format("--dax-window-size {}: expected a size in bytes (suffix K, M or G) that is "
                     "a multiple of 2M, equal to the VMM's cache-size; 0 turns DAX off",
                     given));
  }
  return count * unit;
}

// --uid-map/--gid-map as the Rust virtiofsd takes them: the first character is the delimiter,
// which also ends the map (":0:1000:1:").
sandbox::NamespaceIdRange ParseNamespaceMap(std::string_view option, std::string_view map) {
  const std::string shown = fmt::format("{} '{}'", option, map);
  if (map.size() < 2 || map.back() != map.front()) {
    Fail(fmt::format("{}: expected :INSIDE:OUTSIDE:COUNT: (the first character is the "
                     "delimiter and ends the map)", shown));
  }
  const char delimiter = map.front();
  std::string_view body = map.substr(1, map.size() - 2);
  uint32_t values[3] = {};
  for (int i = 0; i < 3; ++i) {
    size_t end = i < 2 ? body.find(delimiter) : body.size();
    if (end == std::string_view::npos || !ParseU32(body.substr(0, end), values[i])) {
      Fail(fmt::format("{}: expected :INSIDE:OUTSIDE:COUNT: with three numbers", shown));
    }
    body.remove_prefix(i < 2 ? end + 1 : end);
  }
  if (values[2] == 0) Fail(fmt::format("{}: COUNT must be at least 1", shown));
  return {.inside = values[0], .outside = values[1], .count = values[2]};
}

void AddTranslation(fs::IdMap& map, std::string_view option, std::string_view rule) {
  if (auto added = map.add(rule); !added) {
    Fail(fmt::format("{} '{}': {}", option, rule, added.error()));
  }
}

// Applies one C-dialect `-o` item.
void ApplyLegacyOption(ParseState& state, std::string_view item) {
  Options& options = state.options;
  auto eq = item.find('=');
  std::string_view key = item.substr(0, eq);
  std::string_view value = eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1);
  auto flag = [&](bool& target, bool on) {
    if (eq != std::string_view::npos) Fail(fmt::format("-o {}: takes no value", key));
    target = on;
  };
  auto needs_value = [&] {
    if (eq == std::string_view::npos || value.empty()) {
      Fail(fmt::format("-o {}: needs a value ({}=...)", key, key));
    }
  };
  if (key == "source") {
    needs_value();
    options.fs.shared_dir = std::string(value);
  } else if (key == "vhost_user_socket") {
    needs_value();
    options.socket_path = std::string(value);
  } else if (key == "cache") {
    state.cache = CacheModeOrFail("-o cache=", value);
  } else if (key == "versiond_socket") {
    needs_value();
    options.versiond_socket = std::string(value);
  } else if (key == "timeout") {
    char* end = nullptr;
    std::string text(value);
    double seconds = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || seconds < 0) {
      Fail(fmt::format("-o timeout={}: expected a number of seconds", value));
    }
    state.timeout_s = seconds;
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
  } else if (key == "debug") {
    if (eq != std::string_view::npos) Fail("-o debug: takes no value");
    options.log_level = "debug";
  } else if (key == "readdirplus" || key == "no_readdirplus" || key == "norace" ||
             key == "no_security_label") {
    // Accepted, nothing to do: READDIRPLUS follows the cache mode (as in the Rust virtiofsd),
    // svfsd has no racy fallback to disable, and no security label to leave out.
  } else if (key == "no_killpriv_v2") {
    flag(options.fs.killpriv_v2, false);
  } else if (key == "killpriv_v2") {
    flag(options.fs.killpriv_v2, true);
  } else if (key == "log_level") {
    if (value == "err") value = "error";
    options.log_level = std::string(value);
  } else if (key == "sandbox") {
    SetSandbox(options, "-o sandbox=", value);
  } else if (key == "modcaps") {
    options.modcaps = std::string(value);
  } else if (key == "posix_acl") {
    flag(options.fs.posix_acl, true);
  } else if (key == "no_posix_acl") {
    flag(options.fs.posix_acl, false);
  } else if (key == "xattrmap" || key == "security_label") {
    Unsupported(fmt::format("-o {}", key), "leave it out");
  } else if (key == "dax") {
    // No virtiofsd takes it: it is the guest's mount option, and the window is the VMM's.
    Fail("-o dax: a guest mount option (mount -t virtiofs -o dax), not svfsd's; give svfsd "
         "--dax-window-size equal to the VMM's cache-size");
  } else {
    Fail(fmt::format("-o {}: unknown option (see svfsd --help)", key));
  }
}

// Splits one `-o` argument at commas; ",," is a literal comma (libvirt escapes commas in paths
// that way, as for QEMU).
void ApplyLegacyGroup(ParseState& state, const std::string& group) {
  std::string item;
  for (size_t i = 0; i <= group.size(); ++i) {
    if (i < group.size() && group[i] == ',' && i + 1 < group.size() && group[i + 1] == ',') {
      item.push_back(',');
      ++i;
    } else if (i == group.size() || group[i] == ',') {
      if (!item.empty()) ApplyLegacyOption(state, item);
      item.clear();
    } else {
      item.push_back(group[i]);
    }
  }
}

// A group by name or number (--socket-group kvm, --socket-group 36).
void CheckGroup(std::string_view option, const std::string& name) {
  uint32_t gid = 0;
  if (ParseU32(name, gid)) return;
  if (::getgrnam(name.c_str()) == nullptr) {
    Fail(fmt::format("{} {}: no such group (give a group name or number)", option, name));
  }
}

}  // namespace

std::string CapabilitiesJson() {
  // No "separate-options": libvirt would then refuse every <lock> element ("locking options are
  // not supported by this virtiofsd"), while through the -o dialect it passes posix_lock/flock,
  // which svfsd honours. No "migrate-precopy": svfsd offers no migration (VHOST_F_LOG_ALL).
  return "{\n  \"type\": \"fs\",\n  \"features\": []\n}\n";
}

std::string VersionLine() {
  return fmt::format("virtiofsd {} (svfsd {})", kVirtiofsdCompatVersion, kSvfsVersion);
}

ParseOutcome ParseOptions(int argc, char** argv) {
  Options options;
  // As the Rust virtiofsd since 1.6: submounts are announced unless turned off.
  options.fs.announce_submounts = true;
  ParseState state{options};
  CLI::App app{"svfsd: virtio-fs host daemon with shared versions (drop-in for virtiofsd)", "svfsd"};
  app.footer(kFooter);
  app.get_formatter()->column_width(36);

  bool readonly = false;
  std::string seccomp;

  app.add_option("--shared-dir", options.fs.shared_dir, "Shared directory path")
      ->type_name("DIR");
  app.add_option("--socket-path", options.socket_path, "vhost-user UNIX socket path")
      ->type_name("PATH");
  app.add_option("--fd", options.fd, "File descriptor of a listening vhost-user socket")
      ->type_name("N");
  app.add_option("--mount", options.mountpoint,
                 "Serve through the host's /dev/fuse, mounted on this directory (svfs)")
      ->type_name("MOUNTPOINT");
  app.add_option_function<std::string>(
         "--socket-group",
         [&](const std::string& group) {
           CheckGroup("--socket-group", group);
           options.socket_group = group;
         },
         "Group (name or number) that owns the socket, mode 0660")
      ->type_name("GROUP");
  app.add_option("--tag", options.tag, "virtio-fs tag reported in the device config")
      ->type_name("TAG");
  app.add_option_function<std::string>(
         "--cache", [&](const std::string& mode) { state.cache = CacheModeOrFail("--cache", mode); },
         "Cache mode: never|none|metadata|auto|always|shared (default auto)")
      ->type_name("MODE");
  app.add_flag_callback(
      "--shared-versions", [&] { state.cache = fs::CacheMode::kShared; },
      "Shared versions with svfs-versiond (same as --cache shared)");
  app.add_option("--versiond-socket", options.versiond_socket,
                 "svfs-versiond socket for --cache shared (default /run/svfs/versiond.sock)")
      ->type_name("PATH");
  app.add_option("--metrics-socket", options.metrics_socket,
                 "Serve Prometheus metrics (GET /metrics, HTTP/1.0) on this UNIX socket (0600); "
                 "{pid} in it is svfsd's process id")
      ->type_name("PATH");
  app.add_option("--metrics-address", options.metrics_address,
                 "Serve Prometheus metrics on this numeric TCP address: 127.0.0.1:PORT or "
                 "[::1]:PORT")
      ->type_name("ADDR:PORT");
  app.add_option("--thread-pool-size", options.thread_pool_size,
                 "Worker threads (--mount: default 4; vhost-user: default 0, each queue's thread "
                 "serves its requests, and 1 is served as 0)")
      ->type_name("N");
  app.add_option("--poll-us", options.poll_us,
                 "vhost-user: poll each request queue up to this long before sleeping; the window "
                 "adapts to the load and an idle queue does not poll (default 50, 0 = never)")
      ->type_name("US")
      ->check(CLI::Range(0u, 100000u));
  app.add_option_function<std::string>(
         "--dax-window-size",
         [&](const std::string& size) { options.dax_window_size = DaxWindowSizeOrFail(size); },
         "vhost-user: serve DAX (FUSE_SETUPMAPPING) in a window of this size, which must equal "
         "the VMM's cache-size for the device (a multiple of 2M; default 0 = no DAX)")
      ->type_name("SIZE");
  app.add_option_function<std::string>(
         "--sandbox", [&](const std::string& mode) { SetSandbox(options, "--sandbox", mode); },
         "Sandbox: namespace|chroot|none (default namespace; see below)")
      ->type_name("MODE");
  app.add_option_function<std::string>(
         "--seccomp",
         [&](const std::string& action) {
           if (!ParseSeccompAction(action)) {
             Fail(fmt::format("--seccomp {}: expected kill, log, trap or none", action));
           }
           seccomp = action;
         },
         "Seccomp action for a system call svfsd does not make: kill|log|trap|none "
         "(default kill)")
      ->type_name("ACTION");
  app.add_option("--modcaps", options.modcaps,
                 "Capabilities kept, changed: +CAP:-CAP (e.g. +sys_admin:-mknod)")
      ->type_name("CAPS");
  app.add_flag_callback("--xattr", [&] { options.fs.xattr = true; }, "Enable extended attributes");
  app.add_flag_callback("--no-xattr", [&] { options.fs.xattr = false; },
                        "Disable extended attributes (the default)");
  app.add_flag_callback("--announce-submounts", [&] { options.fs.announce_submounts = true; },
                        "Tell the guest about host submounts (FUSE_ATTR_SUBMOUNT; the default, "
                        "as in the Rust virtiofsd)");
  app.add_flag_callback("--no-announce-submounts", [&] { options.fs.announce_submounts = false; },
                        "Do not announce submounts (svfs)");
  app.add_flag_callback("--posix-lock", [&] { options.fs.posix_lock = true; },
                        "Serve POSIX locks (fcntl) on the host (the default; svfs)");
  app.add_flag_callback("--no-posix-lock", [&] { options.fs.posix_lock = false; },
                        "Leave POSIX locks to the guest kernel (svfs)");
  app.add_flag_callback("--flock", [&] { options.fs.flock = true; },
                        "Serve flock() locks on the host (the default; svfs)");
  app.add_flag_callback("--no-flock", [&] { options.fs.flock = false; },
                        "Leave flock() locks to the guest kernel (svfs)");
  app.add_option_function<std::string>(
         "--inode-file-handles", [&](const std::string& mode) { state.file_handles = mode; },
         "Hold inodes by file handle: never|prefer|mandatory (default never)")
      ->type_name("MODE");
  app.add_flag("--writeback", options.fs.writeback, "Enable the guest's writeback cache");
  app.add_flag("--allow-direct-io", options.fs.allow_direct_io,
               "Honour O_DIRECT opens from the guest");
  app.add_flag("--readonly", readonly, "Refuse every modification (EROFS)");
  app.add_option("--rlimit-nofile", options.rlimit_nofile,
                 "RLIMIT_NOFILE to set (default: the system maximum, as virtiofsd; 0 leaves the "
                 "limit as it is)")
      ->type_name("N");
  app.add_option("--log-level", options.log_level, "trace|debug|info|warn|error|off")
      ->type_name("LEVEL");
  app.add_flag("--syslog", options.syslog, "Log to syslog instead of stderr");
  app.add_flag("--print-capabilities", options.print_capabilities,
               "Print vhost-user backend capabilities as JSON and exit");
  app.add_option_function<std::string>(
         "-o", [&](const std::string& group) { ApplyLegacyGroup(state, group); },
         "C virtiofsd options, comma-separated (see below)")
      ->type_name("OPT[,OPT...]");
  app.add_flag_callback("-f", [] {}, "Foreground (svfsd always runs in the foreground)");
  app.add_flag_callback("-d", [&] { options.log_level = "debug"; }, "Debug logging (C virtiofsd)");
  app.add_flag_callback("--killpriv-v2", [&] { options.fs.killpriv_v2 = true; },
                        "Negotiate FUSE_HANDLE_KILLPRIV_V2: writes, truncates and chowns clear "
                        "setuid/setgid on the host as they would for the caller (default: off, "
                        "the guest kernel does)");
  app.add_flag_callback("--no-killpriv-v2", [&] { options.fs.killpriv_v2 = false; },
                        "Do not negotiate FUSE_HANDLE_KILLPRIV_V2 (the default)");
  app.add_flag_callback("--posix-acl", [&] { options.fs.posix_acl = true; },
                        "Enforce and inherit POSIX ACLs (FUSE_POSIX_ACL; turns on --xattr)");
  app.add_flag_callback("--no-posix-acl", [&] { options.fs.posix_acl = false; },
                        "No POSIX ACLs (the default)");
  app.add_flag_callback("--allow-mmap", [] {},
                        "Accepted; shared mmap of direct-I/O files (FUSE_DIRECT_IO_ALLOW_MMAP) is "
                        "always offered");
  app.add_flag_callback("--no-readdirplus", [] {},
                        "Accepted; READDIRPLUS follows the cache mode (as in the Rust virtiofsd)");
  // Repeatable: each occurrence adds a range or rule (the callback runs once per occurrence).
  app.add_option_function<std::string>(
         "--uid-map",
         [&](const std::string& map) {
           options.user_namespace.uids.push_back(ParseNamespaceMap("--uid-map", map));
         },
         "Unprivileged: map these uids into svfsd's user namespace, through newuidmap "
         "(repeatable; see below)")
      ->type_name(":INSIDE:OUTSIDE:COUNT:");
  app.add_option_function<std::string>(
         "--gid-map",
         [&](const std::string& map) {
           options.user_namespace.gids.push_back(ParseNamespaceMap("--gid-map", map));
         },
         "Same for gids, through newgidmap")
      ->type_name(":INSIDE:OUTSIDE:COUNT:");
  app.add_option_function<std::string>(
         "--translate-uid",
         [&](const std::string& rule) { AddTranslation(options.ids.uids, "--translate-uid", rule); },
         "Translate uids between guest and host (repeatable; see below)")
      ->type_name("KIND:FROM:TO:COUNT");
  app.add_option_function<std::string>(
         "--translate-gid",
         [&](const std::string& rule) { AddTranslation(options.ids.gids, "--translate-gid", rule); },
         "Same for gids")
      ->type_name("KIND:FROM:TO:COUNT");
  app.set_version_flag("-V,--version", VersionLine());
  const auto refuse = [](const char* name, const char* why) {
    return [name, why](const std::string&) { Unsupported(name, why); };
  };
  for (const char* name : {"--xattrmap", "--migration-mode", "--migration-on-error"}) {
    app.add_option_function<std::string>(name, refuse(name, "see svfsd --help"))->group("");
  }
  for (const char* name : {"--security-label",
                           "--preserve-noatime", "--migration-verify-handles",
                           "--migration-confirm-paths"}) {
    app.add_flag_function(name, [name](int64_t) { Unsupported(name, "see svfsd --help"); })
        ->group("");
  }
  // Each occurrence is applied as it is parsed, so that a later one replaces an earlier one
  // (Kata appends virtio_fs_extra_args after its own --cache) instead of being refused.
  for (CLI::Option* option : app.get_options()) {
    option->trigger_on_parse()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }

  try {
    app.parse(argc, argv);
    if (options.print_capabilities) {
      std::fputs(CapabilitiesJson().c_str(), stdout);
      return ParseOutcome{std::nullopt, 0};
    }
    std::optional<uint64_t> timeout_ns;
    if (state.timeout_s) timeout_ns = static_cast<uint64_t>(*state.timeout_s * 1e9);
    options.fs.cache = fs::CachePolicy(state.cache.value_or(fs::CacheMode::kAuto), timeout_ns);
    options.fs.readonly = readonly;

    if (state.file_handles == "never") {
      options.fs.file_handles = fs::InodeFileHandles::kNever;
    } else if (state.file_handles == "prefer") {
      options.fs.file_handles = fs::InodeFileHandles::kPrefer;
    } else if (state.file_handles == "mandatory") {
      options.fs.file_handles = fs::InodeFileHandles::kMandatory;
    } else {
      Fail(fmt::format("--inode-file-handles {}: expected never, prefer or mandatory",
                       state.file_handles));
    }
    if (std::string why; !options.modcaps.empty() && !sandbox::ValidModcaps(options.modcaps, &why)) {
      Fail(fmt::format("--modcaps {}: {}", options.modcaps, why));
    }
    if (!seccomp.empty()) options.seccomp = seccomp;
    // A root svfsd creates no user namespace; maps that change nothing pass (libvirt).
    for (const auto* ranges : {&options.user_namespace.uids, &options.user_namespace.gids}) {
      for (const sandbox::NamespaceIdRange& range : *ranges) {
        if (::geteuid() == 0 && range.inside != range.outside) {
          Fail(fmt::format("{} ':{}:{}:{}:': svfsd runs as root and creates no user namespace to "
                           "map IDs into; leave it out (--translate-uid/--translate-gid translate "
                           "IDs), or start svfsd as an unprivileged user",
                           ranges == &options.user_namespace.uids ? "--uid-map" : "--gid-map",
                           range.inside, range.outside, range.count));
        }
      }
    }
    if (options.fs.posix_acl && !options.ids.empty()) {
      Fail("--posix-acl cannot be used with --translate-uid/--translate-gid: the IDs inside ACLs "
           "would stay untranslated (as in the Rust virtiofsd); leave one of them out");
    }
    if (options.fs.shared_dir.empty()) Fail("--shared-dir (or -o source=DIR) is required");
    int transports = !options.socket_path.empty() + (options.fd >= 0) + !options.mountpoint.empty();
    if (transports != 1) {
      Fail("give exactly one of --socket-path (or -o vhost_user_socket=), --fd or --mount");
    }
    if (options.dax_window_size != 0 && !options.mountpoint.empty()) {
      Fail("--dax-window-size needs a vhost-user transport (--socket-path or --fd): a host "
           "/dev/fuse mount has no DAX window");
    }
  } catch (const UsageError& error) {
    std::fprintf(stderr, "svfsd: %s\n", error.what());
    return ParseOutcome{std::nullopt, 2};
  } catch (const CLI::ConversionError& error) {
    // CLI11 says "Could not convert: --fd = abc"; every option it converts takes a number.
    std::string text = error.what();
    const std::string prefix = "Could not convert: ";
    if (text.rfind(prefix, 0) == 0) text = text.substr(prefix.size());
    if (auto eq = text.find(" = "); eq != std::string::npos) text.replace(eq, 3, " ");
    std::fprintf(stderr, "svfsd: %s: expected a number\n", text.c_str());
    return ParseOutcome{std::nullopt, 2};
  } catch (const CLI::ParseError& error) {
    if (error.get_exit_code() == 0) {
      app.exit(error);
      return ParseOutcome{std::nullopt, 0};
    }
    std::fprintf(stderr, "svfsd: %s (see svfsd --help)\n", error.what());
    return ParseOutcome{std::nullopt, 2};
  }
  return ParseOutcome{std::move(options), 0};
}

}  // namespace svfs
