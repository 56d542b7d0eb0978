// Federation of svfs-versiond instances over NATS JetStream: the versionds of the hosts that
// mount one shared volume (NFS, CephFS) tell each other which inodes changed, so that each bumps
// the slots its own guests use. Stream svfs-<volume>, subject svfs.<volume>.bumps.
//
// An inode is named on the wire by its file handle (type and bytes) alone: on a shared
// filesystem that is what all hosts agree on, while the fsid differs per host. Each receiver
// computes the slot with its own fsid for the volume and its own table size, as its svfsd do.
//
// Safety over speed: whatever may have been lost (a sequence gap, a reconnect, a full queue, a
// malformed message) becomes "every slot changed" for whoever may have missed it.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "shm/version_table.h"

namespace svfs::versiond {

struct FederationOptions {
  std::vector<std::string> servers;  // nats://HOST:PORT each
  std::string volume;                // [A-Za-z0-9_-]+
  uint64_t volume_fsid = 0;          // PackFsid of the volume's filesystem on this host
  int replicas = 1;                  // of the stream, if this versiond creates it (<= cluster size)
};

// Whether a volume name is usable as a NATS subject token and stream name.
inline bool ValidVolumeName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

class Federation {
 public:
  // Connects, creates the stream if missing, subscribes, then bumps every slot of `table` once
  // (changes made before the subscription cannot be known). `table` must outlive the result.
  // Call after LockDown (the client's threads must start with versiond's reduced privileges).
  static std::expected<std::unique_ptr<Federation>, std::string> Start(
      const FederationOptions& options, shm::VersionTable& table);
  virtual ~Federation() = default;

  uint64_t volume_fsid() const { return volume_fsid_; }
  // One changed inode of the volume, from the event loop: queued, never waits for NATS. A full
  // queue turns into one volume-wide bump for the other hosts.
  virtual void Publish(int32_t handle_type, std::span<const unsigned char> handle) = 0;
  // Everything on the volume may have changed (fanotify overflow).
  virtual void PublishAll() = 0;

  // For /metrics, from any thread: slots bumped for other hosts' changes, and bumps of every
  // slot (joining, a gap, a reconnect, a malformed message, a host that lost track).
  uint64_t remote_bumps() const { return remote_bumps_.load(std::memory_order_relaxed); }
  uint64_t resyncs() const { return resyncs_.load(std::memory_order_relaxed); }

 protected:
  explicit Federation(uint64_t volume_fsid) : volume_fsid_(volume_fsid) {}

  std::atomic<uint64_t> remote_bumps_{0};
  std::atomic<uint64_t> resyncs_{0};

 private:
  uint64_t volume_fsid_;
};

}  // namespace svfs::versiond
