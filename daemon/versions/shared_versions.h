// svfsd's side of shared versions: the VersionTracker the passthrough filesystem uses, backed by
// a versiond session (slots for inodes) and a read-write mapping of the version table (sample
// and bump with plain atomics, no round trip).
//
// Each inode's slot lives in InodeData::version_ref, packed with the session (epoch) that
// granted it, so a slot from a session that is gone is never bumped, sampled or released.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/fs/inode_store.h"
#include "daemon/fs/version_tracker.h"
#include "shm/version_table.h"
#include "versiond/client.h"

namespace svfs::versions {

class SharedVersions final : public fs::VersionTracker, private versiond::Client::Listener {
 public:
  struct Options {
    std::string socket_path;
    std::string client_name;                  // shown by svfsctl
    std::string shared_dir;                   // versiond watches its filesystem
    std::chrono::milliseconds attach_wait{2000};  // how long Start waits for the first attach
  };

  // Connects to versiond in the background and waits up to attach_wait for the first attach,
  // so a guest that mounts right away can negotiate versions. Never fails for an unreachable
  // versiond: svfsd then serves unversioned until it attaches.
  static std::unique_ptr<SharedVersions> Start(Options options);
  ~SharedVersions() override;

  // The store whose inodes get slots on every (re)attach. Set before serving.
  void set_store(const fs::InodeStore* store);

  // fs::VersionTracker
  std::optional<fs::VersionTableId> table() const override;
  void track(const fs::InodeData& inode) override;
  void untrack(const fs::InodeData& inode) override;
  fs::Version sample(const fs::InodeData& inode) const override;
  void bump(const fs::InodeData& inode) override;
  void begin_batch(int dir_fd, std::span<const std::string_view> names) override;
  void end_batch() override;

  bool attached() const { return current_epoch_.load(std::memory_order_acquire) != 0; }

 private:
  explicit SharedVersions(Options options);

  // versiond::Client::Listener (on the client's notifier thread).
  void attached(const versiond::TableIdentity& table, uint64_t epoch) override;
  void detached(uint64_t epoch) override;

  // The key versiond knows `inode` by; false if the inode cannot be reached any more.
  bool KeyOf(const fs::InodeData& inode, versiond::Key& key);
  // statfs f_fsid of the filesystem of `fd` (device `dev`), cached per device.
  uint64_t FsidOf(uint64_t dev, int fd);
  // Stores `grant` in `inode` unless it got a slot or left the store meanwhile; then the grant
  // is returned to versiond. Returns whether it was stored.
  bool Install(const fs::InodeData& inode, uint64_t epoch, const versiond::Grant& grant);
  // The table of the current session and the slot `inode` holds in it, or {nullptr, 0}.
  std::pair<shm::VersionTable*, uint64_t> CurrentSlot(const fs::InodeData& inode) const;

  Options options_;
  std::unique_ptr<versiond::Client> client_;
  const fs::InodeStore* store_ = nullptr;

  // Epoch of the session whose slots are valid (0: detached), and its table. A guest keeps
  // reading a table it mapped as long as it runs, so mappings are never unmapped: old ones stay
  // in tables_ (append-only).
  std::atomic<uint64_t> current_epoch_{0};
  std::atomic<shm::VersionTable*> current_table_{nullptr};
  // The table named in INIT replies (the first one attached). A later session on another table
  // (versiond restarted with a fresh one) cannot version this guest's replies any more.
  std::optional<std::array<uint8_t, 16>> announced_uuid_;

  // Lock order: attach_mutex_ (held by attached/detached, serializing them; not across RPCs from
  // worker threads) -> tables_mutex_ -> fsid_mutex_. The latter two are leaves for workers.
  std::mutex attach_mutex_;
  std::condition_variable attach_cv_;  // signalled after each attach (Start waits on it)
  mutable std::mutex tables_mutex_;
  std::vector<std::unique_ptr<shm::VersionTable>> tables_;  // guarded by tables_mutex_
  std::mutex fsid_mutex_;
  std::unordered_map<uint64_t, uint64_t> fsid_by_dev_;      // guarded by fsid_mutex_
};

}  // namespace svfs::versions
