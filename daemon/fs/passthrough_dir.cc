// PassthroughFs: directories (OPENDIR, READDIR/READDIRPLUS, RELEASEDIR, FSYNCDIR) and the calls
// on the whole filesystem (STATFS, ACCESS, SYNCFS).
#include <fcntl.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>
#include <string>

#include "daemon/fs/credentials.h"
#include "daemon/fs/passthrough.h"

namespace svfs::fs {
// ---------------------------------------------------------------------------------------------
// Directories

Result<Opened> PassthroughFs::opendir(const Context& ctx, NodeId node, uint32_t) {
  auto inode = SVFS_TRY(inode_of(node));
  if (!inode->is_dir()) return Err(ENOTDIR);
  const InodeFd path_fd = SVFS_TRY(inode->path_fd());
  // As the guest: the host checks its read permission on the directory.
  auto fd = SVFS_TRY(reopen_as_guest(ctx, path_fd.get(), O_RDONLY | O_DIRECTORY));
  return add_handle(inode, std::move(fd), O_RDONLY, true, 0);
}

namespace {

// The kernel's struct linux_dirent64 (not exported by glibc headers).
struct LinuxDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

}  // namespace

Status PassthroughFs::readdir(const Context& ctx, NodeId, HandleId handle, uint64_t offset, bool plus,
                              DirSink& sink) {
  auto h = SVFS_TRY(handle_of(handle));
  Handle& dir = *h;
  if (!dir.is_dir) return Err(ENOTDIR);
  std::shared_ptr<InodeData> parent;
  if (plus) parent = SVFS_TRY(inode_of(dir.node));

  // Lock order: dir_mutex, then (inside lookup_name) the InodeStore mutex.
  std::lock_guard lock(dir.dir_mutex);
  if (::lseek(dir.fd.get(), static_cast<off_t>(offset), SEEK_SET) < 0) return ErrnoErr();
  alignas(LinuxDirent64) char buf[16 * 1024];
  bool first = true;
  for (;;) {
    long n = ::syscall(SYS_getdents64, dir.fd.get(), buf, sizeof(buf));
    if (n < 0) return first ? Status(ErrnoErr()) : Status{};
    if (n == 0) return {};
    first = false;
    for (long pos = 0; pos < n;) {
      const auto* d = reinterpret_cast<const LinuxDirent64*>(buf + pos);
      pos += d->d_reclen;
      std::string_view name(d->d_name);
      DirEntry dirent{d->d_ino, static_cast<uint64_t>(d->d_off), d->d_type, name};
      // Checked before the lookup so no reference is taken for an entry that is not sent.
      if (!sink.has_room(name.size())) return {};
      if (!plus) {
        if (!sink.add(dirent, nullptr)) return {};
        continue;
      }
      ReferencedEntry entry;  // zeroed for "." and ".." and when the name vanished meanwhile
      if (name != "." && name != "..") {
        // As the caller: a directory readable but not searchable must not leak attributes.
        if (auto looked_up = lookup_name(*parent, name, &ctx)) entry = std::move(*looked_up);
      }
      if (!sink.add(dirent, &entry.entry)) return {};  // `entry` gives its reference back
      entry.ref.release();  // sent: the reference is the guest's now
    }
  }
}

Status PassthroughFs::releasedir(const Context&, NodeId, HandleId handle) {
  if (!handles_.remove(handle)) return Err(EBADF);
  return {};
}

Status PassthroughFs::fsyncdir(const Context& ctx, NodeId node, HandleId handle, bool datasync) {
  return fsync(ctx, node, handle, datasync);
}

// ---------------------------------------------------------------------------------------------
// Filesystem-wide

Result<struct statvfs> PassthroughFs::statfs(const Context&, NodeId node) {
  auto inode = SVFS_TRY(inode_of(node));
  const InodeFd fd = SVFS_TRY(inode->path_fd());
  struct statvfs st {};
  if (::fstatvfs(fd.get(), &st) != 0) return ErrnoErr();
  return st;
}

Status PassthroughFs::access(const Context& ctx, NodeId node, uint32_t mask) {
  auto inode = SVFS_TRY(inode_of(node));
  const InodeFd fd = SVFS_TRY(inode->path_fd());
  if (config_.readonly && (mask & W_OK)) return Err(EROFS);
  const std::string proc_name = FdName(fd.get());
  // AT_EACCESS checks with the fsuid/fsgid we switch to; without it faccessat uses the real
  // uid (root). Raw syscall: glibc may emulate faccessat2 in userspace using the euid.
  SVFS_TRY(AsGuest(ctx, [&] {
    return ::syscall(SYS_faccessat2, proc_self_fd_.get(), proc_name.c_str(), mask, AT_EACCESS);
  }));
  return {};
}

Status PassthroughFs::syncfs(const Context&, NodeId node) {
  auto inode = SVFS_TRY(inode_of(node));
  const InodeFd path_fd = SVFS_TRY(inode->path_fd());
  // syncfs does not accept O_PATH fds. Only a directory or a regular file is opened: opening a
  // device or fifo would reach its host driver. Any other inode syncs its mount's filesystem
  // through the mount fd (held with file handles) or the shared directory.
  int sync_fd = -1;
  UniqueFd opened;
  if (inode->is_dir() || inode->is_regular()) {
    opened = SVFS_TRY(reopen(path_fd.get(),
                             inode->is_dir() ? O_RDONLY | O_DIRECTORY : O_RDONLY | O_NONBLOCK));
    sync_fd = opened.get();
  } else if (inode->mount_fd) {
    sync_fd = inode->mount_fd->get();
  } else {
    auto root = SVFS_TRY(inode_of(kRootNodeId));
    const InodeFd root_fd = SVFS_TRY(root->path_fd());
    opened = SVFS_TRY(reopen(root_fd.get(), O_RDONLY | O_DIRECTORY));
    sync_fd = opened.get();
  }
  if (::syncfs(sync_fd) != 0) return ErrnoErr();
  return {};
}

}  // namespace svfs::fs
