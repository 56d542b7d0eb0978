// PassthroughFs: data operations on open files (READ, WRITE, FLUSH, RELEASE, FSYNC, FALLOCATE,
// LSEEK, COPY_FILE_RANGE), each on the handle's fd, kept open by the handle for the call.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>

#include "daemon/fs/credentials.h"
#include "daemon/fs/passthrough.h"

namespace svfs::fs {

Result<size_t> PassthroughFs::read(const Context&, NodeId, HandleId handle, uint64_t offset,
                                   uint32_t size, ReadSink& sink) {
  auto h = SVFS_TRY(handle_of(handle));  // the shared_ptr keeps the fd open during the read
  if (h->is_dir) return Err(EISDIR);
  return sink.read_from(h->fd.get(), offset, size);
}

Result<size_t> PassthroughFs::write(const Context& ctx, NodeId, HandleId handle,
                                    uint64_t offset, WriteSource& data, uint32_t write_flags) {
  if (config_.readonly) return Err(EROFS);
  auto h = SVFS_TRY(handle_of(handle));
  if (h->is_dir) return Err(EISDIR);
  int fd = h->fd.get();
  // Our writes run as root, whose CAP_FSETID keeps setuid/setgid. A WRITE flagged
  // FUSE_WRITE_KILL_SUIDGID (killpriv_v2: the writer lacks CAP_FSETID) is done as the writer,
  // without CAP_FSETID, so the host clears what it would for that writer: setuid, and setgid if
  // group-executable or the writer is not in the file's group. Only files with such a bit pay
  // for the switch. security.capability the host drops on any write, root's too.
  std::optional<ScopedCredentials> creds;
  std::optional<ScopedWithoutFsetid> no_fsetid;
  struct stat st {};
  if ((write_flags & FUSE_WRITE_KILL_SUIDGID) && ::fstat(fd, &st) == 0 &&
      (st.st_mode & (S_ISUID | S_ISGID))) {
    if (!creds.emplace(ctx).ok() || !no_fsetid.emplace().ok()) return Err(EPERM);
  }
  auto written = data.write_to(fd, offset);
  no_fsetid.reset();
  creds.reset();
  // Even a failed write may have written part of its data.
  bump(h->inode.get());
  return written;
}

Status PassthroughFs::flush(const Context&, NodeId, HandleId handle, uint64_t lock_owner) {
  auto h = SVFS_TRY(handle_of(handle));
  // Like close() on the host: the owner's POSIX locks on this inode go away.
  drop_owner_locks(h->node, lock_owner);
  // close() of a duplicate gives the host filesystem its flush-on-close (e.g. NFS writeback).
  int dup = ::fcntl(h->fd.get(), F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return ErrnoErr();
  if (::close(dup) != 0 && errno != EINTR) return ErrnoErr();
  return {};
}

Status PassthroughFs::release(const Context&, NodeId, HandleId handle, uint32_t,
                              uint32_t release_flags, uint64_t lock_owner) {
  auto h = handles_.remove(handle);
  if (!h) return Err(EBADF);
  if (release_flags & FUSE_RELEASE_FLUSH) drop_owner_locks(h->node, lock_owner);
  if (release_flags & FUSE_RELEASE_FLOCK_UNLOCK) ::flock(h->fd.get(), LOCK_UN);
  return {};
}

Result<UniqueFd> PassthroughFs::dax_file(const Context& ctx, NodeId node,
                                          std::optional<HandleId> handle, bool writable) {
  if (writable && config_.readonly) return Err(EROFS);
  if (!handle) {
    auto inode = SVFS_TRY(inode_of(node));
    if (!inode->is_regular()) return Err(inode->is_dir() ? EISDIR : EINVAL);
    const InodeFd path_fd = SVFS_TRY(inode->path_fd());
    // As the caller, so the host decides whether it may read (and write) the file.
    return reopen_as_guest(ctx, path_fd.get(), writable ? O_RDWR : O_RDONLY);
  }
  auto h = SVFS_TRY(handle_of(*handle));
  if (h->node != node) return Err(EBADF);
  if (h->is_dir) return Err(EISDIR);
  // The VMM maps the fd shared: reading needs a readable description, writing O_RDWR.
  if (h->access_mode == O_WRONLY || (writable && h->access_mode != O_RDWR)) return Err(EACCES);
  UniqueFd fd(::fcntl(h->fd.get(), F_DUPFD_CLOEXEC, 0));
  if (!fd) return ErrnoErr();
  return fd;
}

Status PassthroughFs::fsync(const Context&, NodeId, HandleId handle, bool datasync) {
  auto h = SVFS_TRY(handle_of(handle));
  int r = datasync ? ::fdatasync(h->fd.get()) : ::fsync(h->fd.get());
  if (r != 0) return ErrnoErr();
  return {};
}

Status PassthroughFs::fallocate(const Context&, NodeId, HandleId handle, uint32_t mode,
                                uint64_t offset, uint64_t length) {
  if (config_.readonly) return Err(EROFS);
  auto h = SVFS_TRY(handle_of(handle));
  int r = ::fallocate(h->fd.get(), static_cast<int>(mode), static_cast<off_t>(offset),
                      static_cast<off_t>(length));
  int err = errno;
  if (r == 0) bump(h->inode.get());
  if (r != 0) return Err(err);
  return {};
}

Result<uint64_t> PassthroughFs::lseek(const Context&, NodeId, HandleId handle, uint64_t offset,
                                      uint32_t whence) {
  if (whence != SEEK_SET && whence != SEEK_CUR && whence != SEEK_END && whence != SEEK_DATA &&
      whence != SEEK_HOLE) {
    return Err(EINVAL);
  }
  auto h = SVFS_TRY(handle_of(handle));
  off_t r = ::lseek(h->fd.get(), static_cast<off_t>(offset), static_cast<int>(whence));
  if (r < 0) return ErrnoErr();
  return static_cast<uint64_t>(r);
}

Result<size_t> PassthroughFs::copy_file_range(const Context&, NodeId, HandleId handle_in,
                                              uint64_t offset_in, NodeId, HandleId handle_out,
                                              uint64_t offset_out, uint64_t length,
                                              uint64_t flags) {
  if (config_.readonly) return Err(EROFS);
  auto in = SVFS_TRY(handle_of(handle_in));
  auto out = SVFS_TRY(handle_of(handle_out));
  loff_t off_in = static_cast<loff_t>(offset_in);
  loff_t off_out = static_cast<loff_t>(offset_out);
  ssize_t n = ::copy_file_range(in->fd.get(), &off_in, out->fd.get(), &off_out, length,
                                static_cast<unsigned>(flags));
  int err = errno;
  if (n > 0) bump(out->inode.get());
  if (n < 0) return Err(err);
  return static_cast<size_t>(n);
}

}  // namespace svfs::fs
