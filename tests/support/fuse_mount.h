// Looking at a FUSE mount without ever blocking on it: /proc/self/mountinfo sends no FUSE request,
// and the one probe that does runs in a killable child.
#pragma once

#include <chrono>
#include <string>

namespace svfs_test {

class Process;

inline constexpr long kFuseSuperMagic = 0x65735546;

// The "major:minor" of the mount at `path` from /proc/self/mountinfo, or "".
std::string MountDevice(const std::string& path);
inline bool IsMountPoint(const std::string& path) { return !MountDevice(path).empty(); }

enum class FuseProbe {
  kFuse,      // statfs returned a FUSE filesystem
  kNotFuse,   // statfs failed or returned another filesystem (not mounted yet)
  kTimedOut,  // statfs did not return (daemon not answering FUSE_INIT/STATFS); child killed
};

// statfs(path) in a forked child, so a daemon that never answers cannot hang the caller.
FuseProbe ProbeFuseMount(const std::string& path, std::chrono::milliseconds timeout);

// Aborts the FUSE connection behind `path` through fusectl (requests in flight fail ENOTCONN),
// then detaches the mount. For a daemon that is dead or hung.
void AbortAndDetach(const std::string& path);

enum class MountWait {
  kMounted,   // a FUSE file system answers at the path
  kExited,    // the process exited first (its status in last_status())
  kTimedOut,  // no mount within the timeout
  kHung,      // mounted, but statfs on it did not return (not answering FUSE_INIT/STATFS)
};

// Waits, without ever blocking on the mount, until `process` serves a FUSE mount at `path`.
MountWait WaitForFuseMount(Process& process, const std::string& path, std::chrono::milliseconds timeout);

}  // namespace svfs_test
