// svfs-versiond's stats() over Cap'n Proto RPC, copied out of the reply into plain structs, and
// the slot a host file has (computed as svfsd and versiond compute it).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace svfs_test {

struct SlotRow {
  uint64_t slot = 0;
  uint64_t version = 0;
};

struct ClientRow {
  uint64_t id = 0;
  std::string name;
  uint32_t pid = 0;
  uint32_t uid = 0;
  std::vector<std::string> shared_dirs;
};

struct VolumeRow {
  std::string name;
  bool connected = false;
  uint64_t remote_bumps = 0, resyncs = 0;
  uint64_t published_handles = 0, published_messages = 0, published_bytes = 0;
};

struct StatsSnapshot {
  std::string table;
  uint64_t generation = 0;
  uint64_t slot_count = 0;
  uint64_t host_bumps = 0;
  uint64_t watched_filesystems = 0;
  std::vector<ClientRow> clients;
  std::vector<SlotRow> slots;  // the `hottest` slots asked for
  std::vector<VolumeRow> federation;  // with --federation, one per volume

  std::optional<SlotRow> FindSlot(uint64_t slot) const;
  const ClientRow* FindClient(pid_t pid) const;
};

// One stats() call on a fresh connection, with its own kj event loop on the calling thread.
// Throws kj::Exception if versiond cannot be reached or does not answer within `timeout`.
StatsSnapshot GetStats(const std::string& socket_path, uint32_t hottest = 0,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(3000));

// GetStats for callers that do not want exceptions: nullopt, with `error` set, on failure.
std::optional<StatsSnapshot> QueryStats(const std::string& socket_path, std::string* error = nullptr,
                                        uint32_t hottest = 100000,
                                        std::chrono::milliseconds timeout = std::chrono::milliseconds(3000));

// The slot of the host file `path` (not following a final symlink) in a table of `slot_count`
// slots; 0 if it cannot be reached.
uint64_t SlotOfPath(const std::string& path, uint64_t slot_count);

}  // namespace svfs_test
