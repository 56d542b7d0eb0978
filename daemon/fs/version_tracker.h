// What the passthrough filesystem needs of the shared version table (shared-versions mode).
//
// The ordering invariant (docs/architecture.md): sample an inode's slot BEFORE reading the
// metadata a reply carries, bump it AFTER a change completes and BEFORE replying. A guest can then
// never hold metadata tagged with a version newer than the metadata.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "daemon/fs/filesystem.h"
#include "daemon/fs/inode_store.h"

namespace svfs::fs {

class VersionTracker {
 public:
  virtual ~VersionTracker() = default;

  // The table versions refer to, or nullopt while there is none (versiond unreachable).
  virtual std::optional<VersionTableId> table() const = 0;
  // A new inode entered the store: obtain its slot (may block on one call to versiond; no-op
  // while detached, the inode then stays unversioned until the next attach).
  virtual void track(const InodeData& inode) = 0;
  // The inode left the store: return its slot reference.
  virtual void untrack(const InodeData& inode) = 0;
  // The inode's slot and current version; {0, 0} if it has none.
  virtual Version sample(const InodeData& inode) const = 0;
  // Increments the inode's slot (no-op without one).
  virtual void bump(const InodeData& inode) = 0;

  // READDIRPLUS looks up many names in a row: get slots for the entries `names` under the
  // directory `dir_fd` in one call to versiond, for this thread's track() calls to take until
  // end_batch(), which returns the grants nobody took. Optional; a no-op by default.
  virtual void begin_batch(int dir_fd, std::span<const std::string_view> names) {
    (void)dir_fd;
    (void)names;
  }
  virtual void end_batch() {}
};

}  // namespace svfs::fs
