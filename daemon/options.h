// svfsd's command line: the Rust virtiofsd options, the C virtiofsd `-o` dialect, and svfs's own.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "daemon/fs/id_map.h"
#include "daemon/fs/passthrough_config.h"
#include "daemon/sandbox/sandbox.h"

namespace svfs {

struct Options {
  fs::PassthroughConfig fs;

  // Transport: exactly one of these.
  std::string socket_path;
  int fd = -1;
  std::string mountpoint;  // svfs: serve through the host's /dev/fuse on this directory

  // --cache shared: where svfs-versiond listens.
  std::string versiond_socket = "/run/svfs/versiond.sock";

  // Prometheus /metrics (common/metrics_server.h): a UNIX socket and/or a numeric TCP address.
  std::string metrics_socket;
  std::string metrics_address;

  std::string socket_group;
  std::string tag;
  unsigned thread_pool_size = 0;
  // vhost-user: longest a request queue polls its ring before sleeping (0: never).
  unsigned poll_us = 50;
  // vhost-user: the DAX window's size, the VMM's cache-size (0: no DAX).
  uint64_t dax_window_size = 0;
  // RLIMIT_NOFILE to set; unset: the system maximum (as virtiofsd); 0: leave it as it is.
  std::optional<uint64_t> rlimit_nofile;
  std::string log_level = "info";
  bool syslog = false;
  bool print_capabilities = false;
  // The sandbox: namespace (default, as virtiofsd), chroot or none.
  std::string sandbox = "namespace";
  std::string seccomp = "kill";  // as the Rust virtiofsd
  std::string modcaps;  // --modcaps "+cap:-cap"
  // --uid-map/--gid-map: the user namespace an unprivileged svfsd creates.
  sandbox::UserNamespaceMap user_namespace;
  // --translate-uid/--translate-gid.
  fs::IdTranslation ids;
};

// What parsing produced: options to run with, or an exit (help, version, capabilities printed;
// or an error already reported on stderr).
struct ParseOutcome {
  std::optional<Options> options;
  int exit_code = 0;
};

ParseOutcome ParseOptions(int argc, char** argv);

// The JSON QEMU/libvirt/Kata read from `--print-capabilities`.
std::string CapabilitiesJson();

// What `--version` prints: "virtiofsd X.Y.Z (svfsd V)", the version of the Rust virtiofsd whose
// command line svfsd accepts first, so scripts that parse "virtiofsd X.Y.Z" accept it.
std::string VersionLine();

// The line svfsd writes to stderr once its vhost-user socket listens: Kata (runtime-rs, and the
// 1.x Go runtime) waits for it before starting the VM, as virtiofsd prints it.
inline constexpr const char* kWaitingForConnection = "Waiting for vhost-user socket connection...";

}  // namespace svfs
