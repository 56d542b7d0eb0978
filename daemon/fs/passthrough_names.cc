// PassthroughFs: operations on names in a directory (MKNOD, MKDIR, SYMLINK, LINK, UNLINK, RMDIR,
// RENAME), each done as the guest relative to the parent's O_PATH fd.
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/fs/credentials.h"
#include "daemon/fs/passthrough.h"

namespace svfs::fs {

// ---------------------------------------------------------------------------------------------
// Namespace operations

// The directory a name is created in or removed from: the name checked, the share writable,
// the parent's inode and an O_PATH fd on it.
Result<std::pair<std::shared_ptr<InodeData>, InodeFd>> PassthroughFs::dir_for_name_change(
    NodeId parent, std::string_view name) const {
  if (!ValidName(name)) return Err(EINVAL);
  if (config_.readonly) return Err(EROFS);
  auto dir = SVFS_TRY(inode_of(parent));
  auto dir_fd = SVFS_TRY(dir->path_fd());
  return std::pair{std::move(dir), std::move(dir_fd)};
}

template <typename F>
Result<Entry> PassthroughFs::make_node(const Context& ctx, NodeId parent, std::string_view name,
                                      F&& make) {
  auto [dir, dir_fd] = SVFS_TRY(dir_for_name_change(parent, name));
  const std::string cname(name);
  SVFS_TRY(AsGuest(ctx, [&] { return make(dir_fd.get(), cname.c_str()); }));
  bump(dir.get());
  return SVFS_TRY(lookup_name(*dir, name)).release();
}

Result<Entry> PassthroughFs::symlink(const Context& ctx, std::string_view target, NodeId parent,
                                     std::string_view name) {
  if (target.find('\0') != std::string_view::npos) return Err(EINVAL);
  const std::string ctarget(target);
  return make_node(ctx, parent, name, [&](int dir, const char* n) {
    return ::symlinkat(ctarget.c_str(), dir, n);
  });
}

Result<Entry> PassthroughFs::mknod(const Context& ctx, NodeId parent, std::string_view name,
                                   uint32_t mode, uint32_t rdev, uint32_t umask) {
  const uint32_t applied_umask = SVFS_TRY(umask_in(parent, umask));
  return make_node(ctx, parent, name, [&](int dir, const char* n) {
    return ::mknodat(dir, n, (mode & S_IFMT) | (mode & 07777 & ~applied_umask), rdev);
  });
}

Result<Entry> PassthroughFs::mkdir(const Context& ctx, NodeId parent, std::string_view name,
                                   uint32_t mode, uint32_t umask) {
  const uint32_t applied_umask = SVFS_TRY(umask_in(parent, umask));
  return make_node(ctx, parent, name, [&](int dir, const char* n) {
    return ::mkdirat(dir, n, mode & 07777 & ~applied_umask);
  });
}

Status PassthroughFs::remove_name(const Context& ctx, NodeId parent, std::string_view name,
                                 int flags) {
  auto [dir, dir_fd] = SVFS_TRY(dir_for_name_change(parent, name));
  const std::string cname(name);
  auto victim = stored_inode_at(dir_fd.get(), cname);  // loses a link: bumped below
  SVFS_TRY(AsGuest(ctx, [&] { return ::unlinkat(dir_fd.get(), cname.c_str(), flags); }));
  bump(dir.get());
  bump(victim.get());
  return {};
}

Status PassthroughFs::unlink(const Context& ctx, NodeId parent, std::string_view name) {
  return remove_name(ctx, parent, name, 0);
}

Status PassthroughFs::rmdir(const Context& ctx, NodeId parent, std::string_view name) {
  return remove_name(ctx, parent, name, AT_REMOVEDIR);
}

Status PassthroughFs::rename(const Context& ctx, NodeId old_parent, std::string_view old_name,
                             NodeId new_parent, std::string_view new_name, uint32_t flags) {
  if (!ValidName(old_name) || !ValidName(new_name)) return Err(EINVAL);
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT)) return Err(EINVAL);
  if (config_.readonly) return Err(EROFS);
  auto old_dir = SVFS_TRY(inode_of(old_parent));
  auto new_dir = SVFS_TRY(inode_of(new_parent));
  const InodeFd old_fd = SVFS_TRY(old_dir->path_fd());
  const InodeFd new_fd = SVFS_TRY(new_dir->path_fd());
  const std::string from(old_name), to(new_name);
  // The moved inode and the one replaced (or exchanged): both change (ctime, link count, "..").
  auto moved = stored_inode_at(old_fd.get(), from);
  auto replaced = stored_inode_at(new_fd.get(), to);
  // RENAME_WHITEOUT is passed on: the host refuses it (EINVAL/EPERM) where it cannot work.
  SVFS_TRY(AsGuest(ctx, [&] {
    return ::renameat2(old_fd.get(), from.c_str(), new_fd.get(), to.c_str(), flags);
  }));
  bump(old_dir.get());
  if (new_dir != old_dir) bump(new_dir.get());
  bump(moved.get());
  bump(replaced.get());
  return {};
}

Result<Entry> PassthroughFs::link(const Context& ctx, NodeId node, NodeId new_parent,
                                  std::string_view new_name) {
  if (!ValidName(new_name)) return Err(EINVAL);
  if (config_.readonly) return Err(EROFS);
  auto inode = SVFS_TRY(inode_of(node));
  const InodeFd fd = SVFS_TRY(inode->path_fd());
  return make_node(ctx, new_parent, new_name, [&](int dir, const char* n) {
    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH, which the guest's credentials lack; linking the
    // /proc magic link (followed once, to the inode itself) works for everyone.
    int r = ::linkat(fd.get(), "", dir, n, AT_EMPTY_PATH);
    if (r != 0 && (errno == ENOENT || errno == EPERM) && !inode->is_dir()) {
      r = ::linkat(proc_self_fd_.get(), FdName(fd.get()).c_str(), dir, n, AT_SYMLINK_FOLLOW);
    }
    if (r == 0) bump(inode.get());  // its link count changed
    return r;
  });
}

}  // namespace svfs::fs
