// What svfs-versiond sets up before it serves (RunServer, versiond/server.cc): the version
// table (created, or taken over and every slot bumped), the listening socket, and the
// federation's options with everything read that the lock-down would put out of reach.
#pragma once

#include <cstdint>
#include <expected>
#include <string>

#include "common/unique_fd.h"
#include "shm/version_table.h"
#include "versiond/federation.h"
#include "versiond/server.h"

namespace svfs::versiond {

// The table, and how many slots taking it over bumped (0 for a new one).
struct OpenedTable {
  shm::VersionTable table;
  uint64_t bumped = 0;
};

// --table: takes an existing table over (it must be this user's and not writable by others;
// then this start's --table-mode and group apply) or creates it.
std::expected<OpenedTable, std::string> OpenTable(const ServerOptions& options);

// --socket: bound (mode 0660, group the first --allow-gid) and listening; refuses a socket a
// running versiond still serves.
std::expected<UniqueFd, std::string> ListenOn(const ServerOptions& options);

// --federation's options: each volume's fsid on this host, the TLS files' contents (read now:
// the lock-down may drop the capabilities reading them needs).
std::expected<FederationOptions, std::string> FederationOptionsFor(const ServerOptions& options);

}  // namespace svfs::versiond
