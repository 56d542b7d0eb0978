// svfs-versiond's RPC server: owns the version table, serves the Versiond
// bootstrap (protocol/versiond.capnp) to authorised peers on a UNIX socket, and bumps slots for
// host-side changes reported by fanotify.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <expected>
#include <string>

#include "common/seccomp_filter.h"
#include <vector>

#include "common/unique_fd.h"

namespace svfs::versiond {

struct ServerOptions {
  std::string socket_path = "/run/svfs/versiond.sock";
  std::string table_name = "svfs-versions";
  // Slots including slot 0, for a new table: 2^20 - 1 fills exactly 64 MiB with the 64-byte
  // header and padded slots (the object is rounded up to a power of two for ivshmem).
  uint64_t capacity = (1 << 20) - 1;
  // Permission bits of a new table (the VMMs that map it for guests need read access).
  unsigned table_mode = 0640;
  // Peers allowed besides root: by uid, or by primary gid (SO_PEERCRED reports only that one).
  std::vector<uid_t> allow_uids;
  std::vector<gid_t> allow_gids;
  // --host-changes none: no fanotify at all, for hosts where only svfsd (and, federated, the
  // other hosts) change the shared directories: nothing else's changes are seen, and with
  // --federation this host publishes none of its own.
  bool watch_host_changes = true;
  // Once set up: capabilities cut to fanotify's, and this seccomp action (versiond/lockdown.h).
  SeccompAction seccomp = SeccompAction::kKill;
  // --federation: NATS servers (nats://HOST:PORT) and the volumes (--volume NAME --volume-dir
  // DIR, each its name and its directory on this host); empty servers: no federation
  // (versiond/federation.h).
  struct Volume {
    std::string name;
    std::string dir;
  };
  std::vector<std::string> federation_servers;
  std::vector<Volume> volumes;
  int federation_replicas = 1;
  // NATS credentials and TLS files (FederationOptions); empty: not used.
  std::string federation_creds, federation_tls_ca, federation_tls_cert, federation_tls_key;
  // /metrics (Prometheus text) on a UNIX socket and/or a numeric TCP address; empty: none.
  std::string metrics_socket;
  std::string metrics_address;
  // False only where RunServer runs inside another program (the fuzzer), whose own calls the
  // filter would kill.
  bool lock_down = true;
};

// Sets up the table and the socket, then serves until SIGINT or SIGTERM. Removes the socket file
// on the way out but keeps the table: daemons and guests go on using it, and the next versiond
// takes it over (bumping every slot). Returns an error (a log-ready message) if startup fails.
// `activation_socket`, when valid, is a listening socket passed by systemd (socket activation):
// it is served instead of binding options.socket_path, and its file is systemd's, so versiond
// neither replaces nor removes it (clients queue on it while versiond restarts).
std::expected<void, std::string> RunServer(const ServerOptions& options,
                                           UniqueFd activation_socket = {},
                                           const std::string& activation_path = {});

}  // namespace svfs::versiond
