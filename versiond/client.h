// The svfs-versiond client library svfsd uses: keeps a session with versiond alive on its own
// kj event-loop thread (reconnecting forever), and offers blocking batched acquire and
// non-blocking batched release to any thread.
//
// Epochs: every successful attach starts a new session with a larger epoch. Grants belong to the
// session that made them; when it ends (versiond restarted or the connection broke) versiond has
// already dropped its references, so the caller must treat its grants of that epoch as void and
// acquire again in the new session (the listener says when).
#pragma once

#include <linux/posix_types.h>  // __kernel_fsid_t, the fsid type in fanotify info records
#include <sys/statfs.h>         // fsid_t, the fsid type of statfs

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
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

// A file system id as one number, the way Key::fsid carries it: val[0] in the low half. The
// two kernel spellings (statfs's fsid_t, fanotify's __kernel_fsid_t) must pack alike, so that
// svfsd's keys (from fstatfs) match versiond's (from fanotify records).
inline uint64_t PackFsid(const fsid_t& fsid) {
  return uint64_t{static_cast<uint32_t>(fsid.__val[0])} |
         uint64_t{static_cast<uint32_t>(fsid.__val[1])} << 32;
}
inline uint64_t PackFsid(const __kernel_fsid_t& fsid) {
  return uint64_t{static_cast<uint32_t>(fsid.val[0])} |
         uint64_t{static_cast<uint32_t>(fsid.val[1])} << 32;
}

struct Key {
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t fsid = 0;  // PackFsid
  int32_t handle_type = 0;
  std::vector<unsigned char> handle;
};

struct Grant {
  uint64_t slot = 0;
  uint64_t version = 0;
};

struct AcquireResult {
  uint64_t epoch = 0;  // which session granted them
  std::vector<Grant> grants;
};

class Client {
 public:
  // Called on a client-owned notifier thread (NOT the kj event-loop thread), no locks held; may
  // call acquire()/release(). Calls come in order: attached(1), detached(1), attached(2), ...
  class Listener {
   public:
    virtual ~Listener() = default;
    virtual void attached(const TableIdentity& table, uint64_t epoch) = 0;  // every (re)attach; epoch increases
    virtual void detached(uint64_t epoch) = 0;  // the session of `epoch` is gone; its grants are void
  };

  struct Options {
    std::string socket_path;
    std::string name;                      // shown in versiond's log and svfsctl clients
    std::vector<std::string> shared_dirs;  // versiond watches their filesystems for host changes
    std::chrono::milliseconds retry_interval{200};
    std::chrono::milliseconds call_timeout{2000};
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
  // Blocking, thread-safe, one RPC for the whole batch; nullopt if not attached or the call
  // failed/timed out (then it reconnects).
  std::optional<AcquireResult> acquire(std::span<const Key> keys);
  // Non-blocking: queued and sent in batches from the event-loop thread. Slots of an epoch other
  // than the current session's are dropped (those references died with their session).
  void release(uint64_t epoch, std::span<const uint64_t> slots);

  class Impl;

 private:
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace svfs::versiond
