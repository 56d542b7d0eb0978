// svfsd's command line: the Rust virtiofsd options, the C virtiofsd `-o` dialect, and svfs's own.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "daemon/fs/passthrough_config.h"

namespace svfs {

struct Options {
  fs::PassthroughConfig fs;

  // Transport: exactly one of these.
  std::string socket_path;
  int fd = -1;
  std::string mountpoint;  // svfs: serve through the host's /dev/fuse on this directory

  // --cache shared: where svfs-versiond listens.
  std::string versiond_socket = "/run/svfs/versiond.sock";

  std::string socket_group;
  std::string tag;
  unsigned thread_pool_size = 0;
  // vhost-user: longest a request queue polls its ring before sleeping (0: never).
  unsigned poll_us = 50;
  std::optional<uint64_t> rlimit_nofile;
  std::string log_level = "info";
  bool syslog = false;
  bool print_capabilities = false;
  // The sandbox: namespace (default, as virtiofsd), chroot or none.
  std::string sandbox = "namespace";
  std::string seccomp = "kill";  // as the Rust virtiofsd
  std::string modcaps;  // --modcaps "+cap:-cap"
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

}  // namespace svfs
