// PassthroughFs: file locks. POSIX record locks (GETLK, SETLK, SETLKW) are OFD locks on one open
// file description per (node, lock owner), see OwnerLocks; flock locks are taken on the handle.
#include <fcntl.h>
#include <sys/file.h>

#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "daemon/fs/passthrough.h"

namespace svfs::fs {
namespace {

// fuse_file_lock.end value meaning "up to EOF" (the kernel's OFFSET_MAX).
constexpr uint64_t kOffsetMax = 0x7fffffffffffffffULL;

struct flock ToFlock(const FileLock& lock) {
  struct flock fl {};
  fl.l_type = static_cast<short>(lock.type);
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(lock.start);
  fl.l_len = lock.end >= kOffsetMax ? 0 : static_cast<off_t>(lock.end - lock.start + 1);
  fl.l_pid = 0;  // required by the OFD commands
  return fl;
}

bool ValidLockRange(const FileLock& lock) {
  return lock.start <= kOffsetMax && (lock.end >= kOffsetMax || lock.end >= lock.start);
}

// POSIX: a read lock needs a readable fd, a write lock a writable one.
bool LockAllowedByAccessMode(uint32_t type, int access_mode) {
  if (type == F_RDLCK) return access_mode != O_WRONLY;
  if (type == F_WRLCK) return access_mode != O_RDONLY;
  return true;
}

}  // namespace

Result<std::shared_ptr<UniqueFd>> PassthroughFs::lock_fd(NodeId node, const Handle& handle,
                                                        uint64_t owner,
                                                        std::optional<uint32_t> pid) {
  const auto key = std::make_pair(node, owner);
  {
    std::lock_guard lock(locks_mutex_);
    if (auto it = locks_.find(key); it != locks_.end()) {
      if (pid) it->second.pid = *pid;
      return it->second.fd;
    }
  }
  // Read-write when possible so the same description serves read and write locks of this owner
  // from any of its handles (the access-mode check against the handle is done by the caller).
  {
    // One description per locking owner: bounded, so a guest cannot exhaust the daemon's fds.
    std::lock_guard lock(locks_mutex_);
    if (locks_.size() >= kMaxLockOwners) return Err(ENOLCK);
  }
  auto fd = reopen(handle.fd.get(), O_RDWR | O_NONBLOCK);
  if (!fd) fd = reopen(handle.fd.get(), O_RDONLY | O_NONBLOCK);
  auto shared = std::make_shared<UniqueFd>(SVFS_TRY(std::move(fd)));
  std::lock_guard lock(locks_mutex_);
  auto [it, inserted] = locks_.emplace(key, OwnerLocks{shared, pid.value_or(0)});
  if (!inserted && pid) it->second.pid = *pid;
  return it->second.fd;  // a concurrent caller may have won; ours closes unused
}

void PassthroughFs::drop_owner_locks(NodeId node, uint64_t owner) {
  std::shared_ptr<UniqueFd> fd;  // closed outside the lock
  std::lock_guard lock(locks_mutex_);
  if (auto entry = locks_.extract(std::make_pair(node, owner)); !entry.empty()) {
    fd = std::move(entry.mapped().fd);
  }
}

uint32_t PassthroughFs::lock_holder_pid(NodeId node, uint64_t except,
                                      const struct flock& conflict) {
  std::vector<OwnerLocks> candidates;
  {
    std::lock_guard lock(locks_mutex_);
    for (auto it = locks_.lower_bound({node, 0}); it != locks_.end() && it->first.first == node;
         ++it) {
      if (it->first.second != except) candidates.push_back(it->second);
    }
  }
  // OFD GETLK does not name the holder. A description does not conflict with its own locks, so
  // the holder is the candidate that does not see exactly this lock when asking for its range.
  for (const auto& candidate : candidates) {
    struct flock probe {};
    probe.l_type = F_WRLCK;
    probe.l_whence = SEEK_SET;
    probe.l_start = conflict.l_start;
    probe.l_len = conflict.l_len;
    if (::fcntl(candidate.fd->get(), F_OFD_GETLK, &probe) != 0) continue;
    if (probe.l_type != conflict.l_type || probe.l_start != conflict.l_start ||
        probe.l_len != conflict.l_len) {
      return candidate.pid;
    }
  }
  return 0;
}

Result<FileLock> PassthroughFs::getlk(const Context&, NodeId, HandleId handle, uint64_t owner,
                                      const FileLock& lock) {
  if (!config_.posix_lock) return Err(ENOSYS);
  if (!ValidLockRange(lock)) return Err(EINVAL);
  auto h = SVFS_TRY(handle_of(handle));
  const NodeId node = h->node;
  // An owner that never locked holds nothing, so any description answers for it: a temporary
  // one, not a kept one (a guest asking with ever new owners would otherwise pile up fds).
  std::shared_ptr<UniqueFd> fd;
  {
    std::lock_guard guard(locks_mutex_);
    if (auto it = locks_.find({node, owner}); it != locks_.end()) fd = it->second.fd;
  }
  if (!fd) {
    auto probe = reopen(h->fd.get(), O_RDONLY | O_NONBLOCK);
    if (!probe) probe = reopen(h->fd.get(), O_WRONLY | O_NONBLOCK);
    fd = std::make_shared<UniqueFd>(SVFS_TRY(std::move(probe)));
  }
  struct flock fl = ToFlock(lock);
  if (::fcntl(fd->get(), F_OFD_GETLK, &fl) != 0) return ErrnoErr();
  FileLock result;
  result.type = static_cast<uint32_t>(fl.l_type);
  if (fl.l_type == F_UNLCK) {
    result.start = lock.start;
    result.end = lock.end;
    return result;
  }
  result.start = static_cast<uint64_t>(fl.l_start);
  result.end = fl.l_len == 0 ? kOffsetMax : static_cast<uint64_t>(fl.l_start + fl.l_len - 1);
  // OFD locks report no pid; name the guest process of our owner holding it (0 if the holder
  // is not one of ours, e.g. a process on the host).
  result.pid = lock_holder_pid(node, owner, fl);
  return result;
}

Status PassthroughFs::setlk(const Context& ctx, NodeId, HandleId handle, uint64_t owner,
                            const FileLock& lock, uint32_t lk_flags, bool wait) {
  auto h = SVFS_TRY(handle_of(handle));

  if (lk_flags & FUSE_LK_FLOCK) {
    if (!config_.flock) return Err(ENOSYS);
    int op = lock.type == F_RDLCK ? LOCK_SH : lock.type == F_WRLCK ? LOCK_EX : LOCK_UN;
    if (!wait) op |= LOCK_NB;
    for (;;) {
      if (wait && ctx.is_interrupted()) return Err(EINTR);
      if (::flock(h->fd.get(), op) == 0) return {};
      if (errno != EINTR) return ErrnoErr();
      if (ctx.is_interrupted()) return Err(EINTR);
    }
  }

  if (!config_.posix_lock) return Err(ENOSYS);
  if (!ValidLockRange(lock)) return Err(EINVAL);
  const NodeId node = h->node;
  if (!LockAllowedByAccessMode(lock.type, h->access_mode)) return Err(EBADF);
  if (lock.type == F_UNLCK) {
    // Nothing to unlock if this owner never locked (don't open a description just for that).
    std::lock_guard guard(locks_mutex_);
    if (!locks_.contains({node, owner})) return {};
  }
  auto fd = SVFS_TRY(lock_fd(node, *h, owner, lock.pid));
  struct flock fl = ToFlock(lock);
  const int cmd = wait ? F_OFD_SETLKW : F_OFD_SETLK;
  for (;;) {
    if (wait && ctx.is_interrupted()) return Err(EINTR);
    if (::fcntl(fd->get(), cmd, &fl) == 0) return {};
    if (errno != EINTR) return ErrnoErr();
    if (ctx.is_interrupted()) return Err(EINTR);
  }
}

}  // namespace svfs::fs
