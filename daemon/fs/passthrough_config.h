// Options of the passthrough filesystem, filled from the command line.
#pragma once

#include <cstdint>
#include <string>

#include "daemon/fs/cache_policy.h"

namespace svfs::fs {

enum class InodeFileHandles { kNever, kPrefer, kMandatory };

struct PassthroughConfig {
  std::string shared_dir;
  CachePolicy cache{CacheMode::kAuto};
  InodeFileHandles file_handles = InodeFileHandles::kNever;
  bool xattr = false;
  bool announce_submounts = false;
  bool writeback = false;        // FUSE_WRITEBACK_CACHE
  bool allow_direct_io = false;  // honour O_DIRECT from the guest (FOPEN_DIRECT_IO)
  bool readonly = false;         // refuse every modifying operation with EROFS
  bool posix_lock = true;        // FUSE_POSIX_LOCKS
  bool flock = true;             // FUSE_FLOCK_LOCKS
  bool killpriv_v2 = false;      // FUSE_HANDLE_KILLPRIV_V2 (--killpriv-v2)
  bool posix_acl = false;        // FUSE_POSIX_ACL (--posix-acl; turns xattr on)
};

}  // namespace svfs::fs
