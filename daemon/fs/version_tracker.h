// What the passthrough filesystem needs of the shared version table (shared-versions mode).
// An inode's slot is computed from its identity (protocol/inode_identity.h), so tracking needs
// no call to anyone: the filesystem hands over the identity, the tracker maps it to a slot of
// the table it currently trusts.
//
// The ordering invariant (docs/architecture.md): sample an inode's slot BEFORE reading the
// metadata a reply carries, bump it AFTER a change completes and BEFORE replying. A guest can then
// never hold metadata tagged with a version newer than the metadata.
#pragma once

#include <cstdint>
#include <optional>

#include "daemon/fs/filesystem.h"

namespace svfs::fs {

class VersionTracker {
 public:
  virtual ~VersionTracker() = default;

  // The table versions refer to, or nullopt while there is none to trust (versiond unreachable).
  virtual std::optional<VersionTableId> table() const = 0;
  // The slot of the inode with this identity and its current version; {0, 0} while unversioned.
  virtual Version sample(uint64_t identity) const = 0;
  // Increments the slot of the inode with this identity.
  virtual void bump(uint64_t identity) = 0;
};

}  // namespace svfs::fs
