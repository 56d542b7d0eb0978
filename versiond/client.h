// The svfs-versiond client library svfsd uses: keeps a registration with versiond alive on its
// own kj event-loop thread (reconnecting forever), and tells a listener when the table can be
// trusted (attached) and when not (detached: versiond gone or not answering its heartbeat).
// Nothing here is on a request path: slots are computed, not asked for.
//
// Epochs: every successful attach starts a new session with a larger epoch, so a listener can
// tell a late "detached" of an old session from the current one.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace svfs::versiond {

struct TableIdentity {
  std::string name;
  std::array<uint8_t, 16> uuid{};
  uint64_t generation = 0;
  uint64_t slot_count = 0;
  uint32_t slot_stride = 0;
  uint64_t mapped_bytes = 0;
};

class Client {
 public:
  // Called on a client-owned notifier thread (NOT the kj event-loop thread), no locks held.
  // Calls come in order: attached(1), detached(1), attached(2), ...
  class Listener {
   public:
    virtual ~Listener() = default;
    virtual void attached(const TableIdentity& table, uint64_t epoch) = 0;  // every (re)attach; epoch increases
    virtual void detached(uint64_t epoch) = 0;  // the session of `epoch` is gone
  };

  struct Options {
    std::string socket_path;
    // Where connect(2) goes if not socket_path (named in the logs): a sandboxed svfsd connects to
    // the socket's name relative to its working directory, the socket's directory.
    std::string connect_path;
    uint32_t pid = 0;  // reported to versiond (0: getpid(); a sandboxed svfsd's outside pid)
    std::string name;                      // shown in versiond's log and svfsctl clients
    std::vector<std::string> shared_dirs;  // versiond watches their filesystems for host changes
    std::chrono::milliseconds retry_interval{200};
    std::chrono::milliseconds call_timeout{2000};  // attach, and each heartbeat
    // A versiond that stops answering (wedged, SIGSTOPped) sees no host edits either: one
    // heartbeat per interval, and a missed one detaches.
    std::chrono::milliseconds heartbeat_interval{1000};
    Listener* listener = nullptr;  // must outlive the Client
  };

  // Starts the background thread (kj event loop). Never fails because versiond is unreachable: it
  // keeps retrying every retry_interval, logging once when it loses versiond and once when it gets
  // it back.
  static std::unique_ptr<Client> Start(Options options);
  ~Client();  // stops and joins; no listener call after it returns

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool attached() const;
  std::optional<TableIdentity> table() const;

  class Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace svfs::versiond
