// svfsd's side of shared versions: the VersionTracker the passthrough filesystem uses. Slots are
// computed from the inode's identity (protocol/inode_identity.h), so sample and bump are plain
// atomics on a read-write mapping of the table, with no call to svfs-versiond on any request.
// The session with versiond only registers this daemon (whose filesystem to watch, whose
// fanotify events to ignore) and says whether the table can be trusted: without versiond nobody
// sees host-side edits, so replies go unversioned until it is back.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "daemon/fs/version_tracker.h"
#include "shm/version_table.h"
#include "versiond/client.h"

namespace svfs::versions {

class SharedVersions final : public fs::VersionTracker, private versiond::Client::Listener {
 public:
  struct Options {
    std::string socket_path;
    std::string client_name;                  // shown by svfsctl
    uint32_t pid = 0;                         // reported to versiond (0: getpid())
    std::string shared_dir;                   // versiond watches its filesystem
    std::chrono::milliseconds attach_wait{2000};  // how long Start waits for the first attach
  };

  // Connects to versiond in the background and waits up to attach_wait for the first attach,
  // so a guest that mounts right away can negotiate versions. Never fails for an unreachable
  // versiond: svfsd then serves unversioned until it attaches.
  static std::unique_ptr<SharedVersions> Start(Options options);
  // Or in two steps: Create (no thread, no connection), then start once the sandbox is closed.
  // connect_path: where to connect if not options.socket_path (a sandboxed svfsd connects to the
  // socket's name relative to its working directory, the socket's directory kept open).
  static std::unique_ptr<SharedVersions> Create(Options options);
  void start(std::string connect_path = {});
  ~SharedVersions() override;

  // fs::VersionTracker
  std::optional<fs::VersionTableId> table() const override;
  fs::Version sample(uint64_t identity) const override;
  void bump(uint64_t identity) override;

  bool attached() const { return trusted_.load(std::memory_order_acquire) != nullptr; }
  // Calls of sample() and bump() so far (the requests' own, not a detach's bump of every slot).
  uint64_t samples() const { return samples_.load(std::memory_order_relaxed); }
  uint64_t bumps() const { return bumps_.load(std::memory_order_relaxed); }

 private:
  explicit SharedVersions(Options options);

  // versiond::Client::Listener (on the client's notifier thread).
  void attached(const versiond::TableIdentity& table, uint64_t epoch) override;
  void detached(uint64_t epoch) override;

  Options options_;
  std::unique_ptr<versiond::Client> client_;

  // Maps the table versiond names, or finds it mapped. Under attach_mutex_.
  shm::VersionTable* map_table(const versiond::TableIdentity& identity);

  // Every table mapped, kept for svfsd's lifetime (guarded by attach_mutex_).
  std::vector<std::unique_ptr<shm::VersionTable>> tables_;
  // The table named in INIT replies (the first attached): our guest reads that one. Bumped
  // whether or not versiond is there, so our own changes always move its versions.
  std::atomic<shm::VersionTable*> mapped_{nullptr};
  // A different table versiond serves now (it was replaced), bumped too; else null.
  std::atomic<shm::VersionTable*> other_{nullptr};
  // The table while versiond serves it (replies versioned), else null.
  std::atomic<shm::VersionTable*> trusted_{nullptr};
  std::atomic<uint64_t> epoch_{0};  // of the session that made the table trusted
  // A bump came before any table was mapped (seq_cst with mapped_, see bump()).
  std::atomic<bool> missed_{false};
  mutable std::atomic<uint64_t> samples_{0};
  std::atomic<uint64_t> bumps_{0};

  std::mutex attach_mutex_;  // serializes attached/detached; no other lock is taken under it
  std::condition_variable attach_cv_;  // signalled after each attach (Start waits on it)
};

}  // namespace svfs::versions
