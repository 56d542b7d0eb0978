// svfs-versiond's stats() over Cap'n Proto RPC, copied out of the reply into plain structs.
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
  uint64_t references = 0;
  uint64_t dev = 0;
  uint64_t ino = 0;
};

struct ClientRow {
  uint64_t id = 0;
  std::string name;
  uint32_t pid = 0;
  uint32_t uid = 0;
  uint64_t references = 0;
  uint64_t slots = 0;
};

struct StatsSnapshot {
  std::string table;
  uint64_t generation = 0;
  uint64_t in_use = 0;
  uint64_t free = 0;
  uint64_t high_water = 0;
  uint64_t host_bumps = 0;
  std::vector<ClientRow> clients;
  std::vector<SlotRow> slots;  // the `hottest` in-use slots asked for

  std::optional<SlotRow> Find(uint64_t dev, uint64_t ino) const;
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

}  // namespace svfs_test
