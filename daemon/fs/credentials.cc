#include "daemon/fs/credentials.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

namespace svfs::fs {
namespace {

bool RunningAsRoot() {
  // geteuid() cannot change while the daemon runs (we never call setuid), so caching is safe.
  static const bool root = ::geteuid() == 0;
  return root;
}

// setfsuid/setfsgid return the previous value and never report errors; read back the current
// value (passing -1 changes nothing) to learn whether the switch took effect.
bool SetFsUid(uid_t uid) {
  ::syscall(SYS_setfsuid, uid);
  return static_cast<uid_t>(::syscall(SYS_setfsuid, -1)) == uid;
}

bool SetFsGid(gid_t gid) {
  ::syscall(SYS_setfsgid, gid);
  return static_cast<gid_t>(::syscall(SYS_setfsgid, -1)) == gid;
}

}  // namespace

bool DropSupplementaryGroupsForThread() {
  if (!RunningAsRoot()) return true;
  // Once per thread is enough: nothing in the daemon adds groups back.
  thread_local bool dropped = false;
  if (dropped) return true;
  if (::syscall(SYS_setgroups, 0, nullptr) != 0) {
    spdlog::warn("setgroups(0) for worker thread failed: errno {}", errno);
    return false;
  }
  dropped = true;
  return true;
}

ScopedCredentials::ScopedCredentials(uid_t uid, gid_t gid) {
  if (!RunningAsRoot()) return;
  if (uid != 0) DropSupplementaryGroupsForThread();
  // gid first: once fsuid is non-zero we would still be allowed to change fsgid (setfsgid needs
  // CAP_SETGID, which is not a filesystem capability), but doing it first keeps the window in
  // which the thread has a mixed identity as small as possible.
  // Restore whatever was switched even on partial failure: SetFsUid/SetFsGid(0) are harmless
  // if the value never changed.
  if (gid != 0) {
    switched_gid_ = true;
    ok_ = SetFsGid(gid);
  }
  if (uid != 0 && ok_) {
    switched_uid_ = true;
    ok_ = SetFsUid(uid);
  }
  if (!ok_) spdlog::error("cannot switch to fsuid {} fsgid {}", uid, gid);
}

ScopedCredentials::~ScopedCredentials() {
  if (switched_uid_) SetFsUid(0);
  if (switched_gid_) SetFsGid(0);
}

}  // namespace svfs::fs
