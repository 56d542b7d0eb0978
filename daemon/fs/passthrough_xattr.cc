// PassthroughFs: extended attributes. Calls run as the guest (the host checks its permission) on
// a description opened by svfsd, or on the /proc/self/fd path of inodes that cannot be opened.
#include <fcntl.h>
#include <sched.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/fs/credentials.h"
#include "daemon/fs/passthrough.h"

namespace svfs::fs {

namespace {

// trusted.* attributes take CAP_SYS_ADMIN on the host, which no guest should wield there:
// overlayfs keeps its whiteouts, redirects and metacopy state in trusted.overlay.*. As with the
// Rust virtiofsd (which runs without CAP_SYS_ADMIN), they do not exist for the guest: set and
// remove fail EPERM, get fails ENODATA, and lists leave them out.
bool HostOnlyXattr(std::string_view name) { return name.starts_with("trusted."); }

// `list` (NUL-terminated names) without the host-only names.
std::vector<char> WithoutHostOnlyXattrs(std::span<const char> list) {
  std::vector<char> out;
  out.reserve(list.size());
  for (size_t at = 0; at < list.size();) {
    std::string_view name(list.data() + at, strnlen(list.data() + at, list.size() - at));
    size_t next = at + name.size() + 1;
    if (!HostOnlyXattr(name)) out.insert(out.end(), list.begin() + at, list.begin() + std::min(next, list.size()));
    at = next;
  }
  return out;
}

}  // namespace

template <typename F>
Result<ssize_t> PassthroughFs::xattr_call(const Context& ctx, NodeId node, F&& call) {
  if (!config_.xattr) return Err(ENOSYS);
  auto inode = SVFS_TRY(inode_of(node));
  const InodeFd path_fd = SVFS_TRY(inode->path_fd());
  if (inode->is_regular() || inode->is_dir()) {
    // Opened as root (setting an xattr does not need read permission); the xattr call itself
    // runs as the guest so the host checks its permission.
    auto fd = SVFS_TRY(reopen(path_fd.get(), O_RDONLY | O_NONBLOCK));
    return AsGuest(ctx, [&] { return call(fd.get(), nullptr); });
  }
  // Symlinks and special files cannot be opened: use the path variant on the magic link, which
  // resolves to the inode itself (a symlink's own, not its target's). The sandbox has no /proc
  // path, and the xattr calls have no *at form, so the name is resolved from the /proc/self/fd
  // directory as this thread's working directory.
  UniqueFd previous_cwd = SVFS_TRY(enter_proc_self_fd());
  const std::string name = FdName(path_fd.get());
  auto result = AsGuest(ctx, [&] { return call(-1, name.c_str()); });
  if (::fchdir(previous_cwd.get()) != 0) return ErrnoErr();
  return result;
}

Result<UniqueFd> PassthroughFs::enter_proc_self_fd() {
  // A working directory of the thread's own (unshare(CLONE_FS), once per thread), so that other
  // threads' relative paths (the versiond client's socket) are untouched.
  thread_local bool unshared = false;
  if (!unshared) {
    if (::unshare(CLONE_FS) != 0) return ErrnoErr();
    unshared = true;
  }
  UniqueFd previous(::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!previous) return ErrnoErr();
  if (::fchdir(proc_self_fd_.get()) != 0) return ErrnoErr();
  return previous;
}

Status PassthroughFs::setxattr(const Context& ctx, NodeId node, std::string_view name,
                               std::span<const char> value, uint32_t flags) {
  if (!config_.xattr) return Err(ENOSYS);
  if (config_.readonly) return Err(EROFS);
  if (HostOnlyXattr(name)) return Err(EPERM);
  const std::string cname(name);
  SVFS_TRY(xattr_call(ctx, node, [&](int fd, const char* path) -> ssize_t {
    return fd >= 0 ? ::fsetxattr(fd, cname.c_str(), value.data(), value.size(), flags)
                   : ::setxattr(path, cname.c_str(), value.data(), value.size(), flags);
  }));
  bump_node(node);
  return {};
}

Result<std::vector<char>> PassthroughFs::getxattr(const Context& ctx, NodeId node,
                                                  std::string_view name, uint32_t size) {
  if (!config_.xattr) return Err(ENOSYS);
  if (HostOnlyXattr(name)) return Err(ENODATA);
  const std::string cname(name);
  std::vector<char> value(size);
  const ssize_t length = SVFS_TRY(xattr_call(ctx, node, [&](int fd, const char* path) -> ssize_t {
    void* buf = size ? value.data() : nullptr;
    return fd >= 0 ? ::fgetxattr(fd, cname.c_str(), buf, size)
                   : ::getxattr(path, cname.c_str(), buf, size);
  }));
  value.resize(static_cast<size_t>(length));  // size 0: a vector of the value's length
  return value;
}

Result<std::vector<char>> PassthroughFs::listxattr(const Context& ctx, NodeId node, uint32_t size) {
  // The whole list is read so that host-only names can be left out, and the size a probe
  // (size 0) reports is that of the filtered list.
  std::vector<char> list;
  for (;;) {
    const ssize_t length = SVFS_TRY(xattr_call(ctx, node, [&](int fd, const char* path) -> ssize_t {
      return fd >= 0 ? ::flistxattr(fd, nullptr, 0) : ::listxattr(path, nullptr, 0);
    }));
    list.resize(static_cast<size_t>(length));
    if (list.empty()) break;
    auto r = xattr_call(ctx, node, [&](int fd, const char* path) -> ssize_t {
      return fd >= 0 ? ::flistxattr(fd, list.data(), list.size())
                     : ::listxattr(path, list.data(), list.size());
    });
    if (r) {
      list.resize(static_cast<size_t>(*r));
      break;
    }
    if (r.error() != ERANGE) return Err(r.error());  // ERANGE: the list grew meanwhile
  }
  std::vector<char> visible = WithoutHostOnlyXattrs(list);
  if (size == 0) return std::vector<char>(visible.size());  // a probe: only the length counts
  if (visible.size() > size) return Err(ERANGE);
  return visible;
}

Status PassthroughFs::removexattr(const Context& ctx, NodeId node, std::string_view name) {
  if (!config_.xattr) return Err(ENOSYS);
  if (config_.readonly) return Err(EROFS);
  if (HostOnlyXattr(name)) return Err(EPERM);
  const std::string cname(name);
  SVFS_TRY(xattr_call(ctx, node, [&](int fd, const char* path) -> ssize_t {
    return fd >= 0 ? ::fremovexattr(fd, cname.c_str()) : ::removexattr(path, cname.c_str());
  }));
  bump_node(node);
  return {};
}

}  // namespace svfs::fs
