#include "daemon/fs/passthrough.h"

#include "protocol/fuse_request.h"
#include "protocol/inode_identity.h"
#include "protocol/shared_versions.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include <spdlog/spdlog.h>

namespace svfs::fs {
namespace {

// FUSE 7.39 (newer than our linux/fuse.h): shared mmap of FOPEN_DIRECT_IO files, which the kernel
// otherwise refuses with ENODEV. A flags2 bit, hence shifted by 32.
#ifdef FUSE_DIRECT_IO_ALLOW_MMAP
constexpr uint64_t kDirectIoAllowMmap = FUSE_DIRECT_IO_ALLOW_MMAP;
#else
constexpr uint64_t kDirectIoAllowMmap = 1ULL << 36;
#endif

// The SETATTR bits that change the inode (the others select how: FATTR_FH, FATTR_*_NOW, ...).
constexpr uint32_t kSetattrChanges =
    FATTR_MODE | FATTR_UID | FATTR_GID | FATTR_SIZE | FATTR_ATIME | FATTR_MTIME;

Result<struct statx> StatxFd(int fd) {
  struct statx stx {};
  if (::statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT,
              STATX_BASIC_STATS | STATX_MNT_ID, &stx) != 0) {
    return ErrnoErr();
  }
  return stx;
}

uint64_t MntId(const struct statx& stx) { return (stx.stx_mask & STATX_MNT_ID) ? stx.stx_mnt_id : 0; }

InodeKey KeyOf(const struct statx& stx) {
  return InodeKey{makedev(stx.stx_dev_major, stx.stx_dev_minor), stx.stx_ino, MntId(stx)};
}

struct stat StatFromStatx(const struct statx& stx) {
  struct stat st {};
  st.st_dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
  st.st_ino = stx.stx_ino;
  st.st_mode = stx.stx_mode;
  st.st_nlink = stx.stx_nlink;
  st.st_uid = stx.stx_uid;
  st.st_gid = stx.stx_gid;
  st.st_rdev = makedev(stx.stx_rdev_major, stx.stx_rdev_minor);
  st.st_size = static_cast<off_t>(stx.stx_size);
  st.st_blksize = stx.stx_blksize;
  st.st_blocks = static_cast<blkcnt_t>(stx.stx_blocks);
  st.st_atim = {stx.stx_atime.tv_sec, stx.stx_atime.tv_nsec};
  st.st_mtim = {stx.stx_mtime.tv_sec, stx.stx_mtime.tv_nsec};
  st.st_ctim = {stx.stx_ctime.tv_sec, stx.stx_ctime.tv_nsec};
  return st;
}

// Whether changing the mode of `fd` to `mode` only clears setuid and/or setgid bits it has.
bool OnlyClearsSetid(int fd, uint32_t mode) {
  struct stat st {};
  if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return false;
  if (!S_ISREG(st.st_mode)) return false;
  const mode_t now = st.st_mode & 07777;
  const mode_t wanted = mode & 07777;
  const mode_t cleared = now & ~wanted;
  return (wanted & ~now) == 0 && cleared != 0 && (cleared & ~(S_ISUID | S_ISGID)) == 0;
}

bool WritesData(int flags) { return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC); }

}  // namespace

// Cheap double check of what the server already validates: a single path component.
bool PassthroughFs::ValidName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find('/') == std::string_view::npos && name.find('\0') == std::string_view::npos;
}

// ---------------------------------------------------------------------------------------------
// HandleTable

HandleId HandleTable::insert(std::shared_ptr<Handle> handle) {
  std::lock_guard lock(mutex_);
  HandleId id = next_id_++;
  handles_.emplace(id, std::move(handle));
  return id;
}

std::shared_ptr<Handle> HandleTable::get(HandleId id) const {
  std::lock_guard lock(mutex_);
  auto it = handles_.find(id);
  return it == handles_.end() ? nullptr : it->second;
}

std::shared_ptr<Handle> HandleTable::remove(HandleId id) {
  std::lock_guard lock(mutex_);
  auto node = handles_.extract(id);
  return node.empty() ? nullptr : std::move(node.mapped());
}

void HandleTable::clear() {
  std::unordered_map<HandleId, std::shared_ptr<Handle>> dropped;  // closed outside the lock
  std::lock_guard lock(mutex_);
  dropped.swap(handles_);
}

size_t HandleTable::size() const {
  std::lock_guard lock(mutex_);
  return handles_.size();
}

// ---------------------------------------------------------------------------------------------
// Setup

PassthroughFs::PassthroughFs(PassthroughConfig config, UniqueFd proc_self_fd)
    : config_(std::move(config)), proc_self_fd_(std::move(proc_self_fd)) {}

Result<std::unique_ptr<PassthroughFs>> PassthroughFs::Create(PassthroughConfig config,
                                                             VersionTracker* versions) {
  int root = ::open(config.shared_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) {
    int err = errno;
    spdlog::error("shared directory {}: {}", config.shared_dir, std::strerror(err));
    return Err(err);
  }
  UniqueFd root_fd(root);
  UniqueFd proc(::open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!proc) {
    int err = errno;
    spdlog::error("/proc/self/fd: {} (is /proc mounted?)", std::strerror(err));
    return Err(err);
  }
  const struct statx stx = SVFS_TRY(StatxFd(root_fd.get()));

  // Create ops apply the guest's umask themselves (FUSE_DONT_MASK); the process umask would
  // mask a second time. umask is per process, so this affects the whole daemon, which is fine:
  // the daemon creates no other files.
  ::umask(0);

  if (config.posix_acl) config.xattr = true;  // ACLs are xattrs
  std::unique_ptr<PassthroughFs> fs(new PassthroughFs(std::move(config), std::move(proc)));
  fs->versions_ = versions;

  if (fs->config_.file_handles != InodeFileHandles::kNever) {
    // Probe: can we make a handle of the root and open it again (needs CAP_DAC_READ_SEARCH)?
    alignas(struct file_handle) unsigned char buf[sizeof(struct file_handle) + MAX_HANDLE_SZ];
    auto* fh = reinterpret_cast<struct file_handle*>(buf);
    fh->handle_bytes = MAX_HANDLE_SZ;
    int mount_id = 0;
    int err = 0;
    auto mount_fd = fs->reopen(root_fd.get(), O_RDONLY | O_DIRECTORY);
    if (!mount_fd) {
      err = mount_fd.error();
    } else if (::name_to_handle_at(root_fd.get(), "", fh, &mount_id, AT_EMPTY_PATH) != 0) {
      err = errno;
    } else {
      int fd = ::open_by_handle_at(mount_fd->get(), fh, O_PATH | O_CLOEXEC);
      if (fd < 0) err = errno;
      else ::close(fd);
    }
    if (err == 0) {
      fs->use_file_handles_ = true;
    } else if (fs->config_.file_handles == InodeFileHandles::kMandatory) {
      spdlog::error("--inode-file-handles=mandatory but file handles do not work: {}",
                    std::strerror(err));
      return Err(err);
    } else {
      spdlog::info("file handles unavailable ({}), using O_PATH fds", std::strerror(err));
    }
  }

  auto root_inode = std::make_shared<InodeData>();
  root_inode->key = KeyOf(stx);
  root_inode->file_type = stx.stx_mode & S_IFMT;
  root_inode->fd = std::move(root_fd);  // the root always keeps its fd
  if (fs->versions_) root_inode->identity = fs->identity_of(root_inode->fd.get(), *root_inode);
  fs->inodes_.set_root(std::move(root_inode));
  spdlog::debug("passthrough: sharing {} (cache {})", fs->config_.shared_dir,
                CacheModeName(fs->config_.cache.mode()));
  return fs;
}

uint64_t PassthroughFs::init(uint64_t offered) {
  uint64_t want = FUSE_ASYNC_READ | FUSE_PARALLEL_DIROPS | FUSE_BIG_WRITES | FUSE_ATOMIC_O_TRUNC |
                  FUSE_DONT_MASK;
  // Guests' supplementary groups never reach svfsd otherwise: with this a 6.3+ kernel sends the
  // parent directory's group with each creation (protocol/fuse_request.h).
  want |= protocol::kInitCreateSuppGroup;
  want |= config_.cache.init_flags();
  if (config_.posix_lock) want |= FUSE_POSIX_LOCKS;
  if (config_.flock) want |= FUSE_FLOCK_LOCKS;
  if (config_.writeback) want |= FUSE_WRITEBACK_CACHE;
  if (config_.announce_submounts) want |= FUSE_SUBMOUNTS;
  // The kernel leaves clearing setuid/setgid to us, flagging the writes, truncates and O_TRUNC
  // opens of callers without CAP_FSETID; svfsd does those as the caller without CAP_FSETID, so
  // the host clears exactly what it would for that caller.
  if (config_.killpriv_v2) want |= FUSE_HANDLE_KILLPRIV_V2;
  // The kernel then checks permissions with the ACLs (read as system.posix_acl_* xattrs) and
  // leaves default-ACL inheritance to us (creation_umask), the host doing the inheriting.
  if (config_.posix_acl) want |= FUSE_POSIX_ACL;
  // Files opened with FOPEN_DIRECT_IO (none/metadata, or O_DIRECT with --allow-direct-io) must
  // still be mmap-able MAP_SHARED (git, sqlite): the kernel then uses the page cache for maps.
  want |= kDirectIoAllowMmap;
  if (config_.cache.mode() == CacheMode::kShared && versions_ &&
      (offered & protocol::kInitSharedVersions) && versions_->table()) {
    want |= protocol::kInitSharedVersions | ReplyPolicy::kVersionedInitFlags;
  }
  return want & offered;
}

void PassthroughFs::initialized(const Negotiated& negotiated) {
  bool versioned = (negotiated.flags & protocol::kInitSharedVersions) != 0;
  replies_.store(versioned ? &versioned_replies_ : &plain_replies_, std::memory_order_release);
  if (config_.cache.mode() == CacheMode::kShared) {
    spdlog::info("shared versions {}", versioned ? "negotiated: replies carry versions"
                                                 : "not negotiated: serving as cache=none");
  }
}

std::optional<VersionTableId> PassthroughFs::version_table() const {
  if (config_.cache.mode() != CacheMode::kShared || !versions_) return std::nullopt;
  return versions_->table();
}

void PassthroughFs::destroy() {
  {
    std::map<std::pair<NodeId, uint64_t>, OwnerLocks> dropped;  // closed outside the lock
    std::lock_guard lock(locks_mutex_);
    dropped.swap(locks_);
  }
  handles_.clear();
  inodes_.clear();
}

// ---------------------------------------------------------------------------------------------
// Helpers

Result<std::shared_ptr<InodeData>> PassthroughFs::inode_of(NodeId id) const {
  auto inode = inodes_.get(id);
  if (!inode) return Err(EBADF);
  return inode;
}

Result<std::shared_ptr<Handle>> PassthroughFs::handle_of(HandleId id) const {
  auto handle = handles_.get(id);
  if (!handle) return Err(EBADF);
  return handle;
}

std::string PassthroughFs::FdName(int fd) { return std::to_string(fd); }

uint32_t PassthroughFs::creation_umask(int dir_fd, uint32_t umask) const {
  if (!config_.posix_acl || umask == 0) return umask;
  // O_PATH fds have no xattr calls: read it through a description of the directory.
  auto dir = reopen(dir_fd, O_RDONLY | O_DIRECTORY);
  if (!dir) return umask;
  ssize_t n = ::fgetxattr(dir->get(), "system.posix_acl_default", nullptr, 0);
  return n > 0 ? 0 : umask;
}

Result<uint32_t> PassthroughFs::umask_in(NodeId parent, uint32_t umask) const {
  if (!config_.posix_acl || umask == 0) return umask;
  auto dir = SVFS_TRY(inode_of(parent));
  const InodeFd dir_fd = SVFS_TRY(dir->path_fd());
  return creation_umask(dir_fd.get(), umask);
}

Result<UniqueFd> PassthroughFs::reopen(int path_fd, int flags) const {
  // Through the magic link the already-resolved inode is opened: no path walk, no symlink
  // following. O_NOFOLLOW would make the magic link itself fail, and O_CREAT is meaningless.
  flags &= ~(O_NOFOLLOW | O_CREAT | O_EXCL);
  int fd = ::openat(proc_self_fd_.get(), FdName(path_fd).c_str(), flags | O_CLOEXEC);
  if (fd < 0) return ErrnoErr();
  return UniqueFd(fd);
}

Result<UniqueFd> PassthroughFs::open_mount_fd(int fd, mode_t file_type, uint64_t mnt_id,
                                             const InodeData* parent) const {
  if (file_type == S_IFDIR) return reopen(fd, O_RDONLY | O_DIRECTORY);
  if (file_type == S_IFREG) return reopen(fd, O_RDONLY | O_NONBLOCK);
  // Opening fifos or devices could block or have side effects: use the parent directory, which
  // is on the same mount unless this inode is itself a mount point.
  if (parent && parent->key.mnt_id == mnt_id) {
    auto parent_fd = SVFS_TRY(parent->path_fd());
    return reopen(parent_fd.get(), O_RDONLY | O_DIRECTORY);
  }
  return Err(EOPNOTSUPP);
}

Result<std::shared_ptr<InodeData>> PassthroughFs::make_inode(UniqueFd fd, const struct statx& stx,
                                                            const InodeData* parent) {
  auto inode = std::make_shared<InodeData>();
  inode->key = KeyOf(stx);
  inode->file_type = stx.stx_mode & S_IFMT;
  if (use_file_handles_) {
    std::vector<unsigned char> buf(sizeof(struct file_handle) + MAX_HANDLE_SZ);
    auto* fh = reinterpret_cast<struct file_handle*>(buf.data());
    fh->handle_bytes = MAX_HANDLE_SZ;
    int mount_id = 0;
    if (::name_to_handle_at(fd.get(), "", fh, &mount_id, AT_EMPTY_PATH) == 0) {
      auto mount_fd = mount_fds_.get(mount_id, [&] {
        return open_mount_fd(fd.get(), inode->file_type, inode->key.mnt_id, parent);
      });
      if (mount_fd) {
        buf.resize(sizeof(struct file_handle) + fh->handle_bytes);
        inode->handle = FileHandle{mount_id, std::move(buf)};
        inode->mount_fd = std::move(*mount_fd);
        if (versions_) inode->identity = identity_of(fd.get(), *inode);
        return inode;  // `fd` closes: the handle is enough to reopen the inode
      }
      if (config_.file_handles == InodeFileHandles::kMandatory) return Err(mount_fd.error());
    } else if (config_.file_handles == InodeFileHandles::kMandatory) {
      return ErrnoErr();
    }
  }
  inode->fd = std::move(fd);
  if (versions_) inode->identity = identity_of(inode->fd.get(), *inode);
  return inode;
}

uint64_t PassthroughFs::fsid_of(uint64_t dev, int fd) const {
  {
    std::lock_guard lock(fsid_mutex_);
    if (auto it = fsid_by_dev_.find(dev); it != fsid_by_dev_.end()) return it->second;
  }
  struct statfs st {};
  if (::fstatfs(fd, &st) != 0) return 0;
  uint64_t fsid = protocol::PackFsid(st.f_fsid);
  std::lock_guard lock(fsid_mutex_);
  fsid_by_dev_.emplace(dev, fsid);
  return fsid;
}

uint64_t PassthroughFs::identity_of(int fd, const InodeData& inode) const {
  const uint64_t fsid = fsid_of(inode.key.dev, fd);
  if (!inode.handle) return protocol::IdentityOfFd(fd, fsid, inode.key.dev, inode.key.ino);
  const auto* fh = reinterpret_cast<const struct file_handle*>(inode.handle->bytes.data());
  return protocol::HandleIdentity(fsid, fh->handle_type,
                                  std::span<const unsigned char>(fh->f_handle, fh->handle_bytes));
}

Attr PassthroughFs::make_attr(const struct statx& stx, const InodeData* parent,
                             uint64_t own_mnt_id) const {
  Attr attr;
  attr.st = StatFromStatx(stx);
  set_timeouts(attr);
  if (config_.announce_submounts && S_ISDIR(stx.stx_mode) && parent &&
      parent->key.mnt_id != own_mnt_id) {
    attr.flags |= FUSE_ATTR_SUBMOUNT;
  }
  return attr;
}

Result<PassthroughFs::ReferencedEntry> PassthroughFs::entry_from_fd(UniqueFd fd,
                                                                  const InodeData* parent) {
  const struct statx stx = SVFS_TRY(StatxFd(fd.get()));
  return entry_from_statx(std::move(fd), stx, parent);
}

Result<PassthroughFs::ReferencedEntry> PassthroughFs::entry_from_statx(UniqueFd fd,
                                                                     const struct statx& stx,
                                                                     const InodeData* parent) {
  auto candidate = SVFS_TRY(make_inode(std::move(fd), stx, parent));
  LookupRef ref(inodes_, inodes_.acquire(std::move(candidate)));
  Entry entry = entry_for(*ref.inode(), stx, parent);
  return ReferencedEntry{entry, std::move(ref)};
}

Entry PassthroughFs::entry_for(const InodeData& inode, struct statx stx, const InodeData* parent) const {
  Entry entry;
  entry.node = inode.id;
  if (versions_) {
    Version version = versions_->sample(inode.identity);
    if (version.index != 0) {
      // The stat that found the inode predates the sample: read the attributes again, after it.
      auto path_fd = inode.path_fd();
      auto again = path_fd ? StatxFd(path_fd->get()) : Result<struct statx>(Err(path_fd.error()));
      if (again) stx = *again;
      else version = {};  // vanished meanwhile: reply unversioned, with what we have
    }
    entry.attr = make_attr(stx, parent, MntId(stx));
    entry.attr.version = version;
    set_timeouts(entry.attr);
  } else {
    entry.attr = make_attr(stx, parent, MntId(stx));
  }
  entry.entry_timeout_ns = replies().entry_timeout_ns();
  return entry;
}

void PassthroughFs::set_timeouts(Attr& attr) const {
  attr.timeout_ns = replies().attr_timeout_ns(attr.version.index);
}

void PassthroughFs::bump_node(NodeId id) const {
  if (!versions_) return;
  if (auto inode = inodes_.get(id)) versions_->bump(inode->identity);
}

std::shared_ptr<InodeData> PassthroughFs::stored_inode_at(int dir_fd, const std::string& name) const {
  if (!versions_) return nullptr;
  struct statx stx {};
  if (::statx(dir_fd, name.c_str(), AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT,
              STATX_BASIC_STATS | STATX_MNT_ID, &stx) != 0) {
    return nullptr;
  }
  return inodes_.find(KeyOf(stx));
}

Result<PassthroughFs::ReferencedEntry> PassthroughFs::lookup_name(const InodeData& parent,
                                                               std::string_view name,
                                                               const Context* as) {
  if (!ValidName(name)) return Err(EINVAL);
  // Before switching: reopening a file handle is privileged.
  const InodeFd parent_fd = SVFS_TRY(parent.path_fd());
  const std::string cname(name);
  // Fast path: a name that resolves to an inode the store already pins needs no new fd. One
  // statx finds its key, and the fd the store holds keeps that inode (and so its number) alive,
  // so the key cannot name another file. Otherwise open it and make (or find) its node.
  struct statx stx {};
  LookupRef known;
  int fd = -1;
  auto walk = [&] {
    // Inodes held by file handle are never pinned: the statx could not find one.
    if (!use_file_handles_) {
      if (::statx(parent_fd.get(), cname.c_str(), AT_SYMLINK_NOFOLLOW | AT_STATX_SYNC_AS_STAT,
                  STATX_BASIC_STATS | STATX_MNT_ID, &stx) != 0) {
        return -1;
      }
      known = LookupRef(inodes_, inodes_.acquire_pinned(KeyOf(stx)));
      if (known.inode()) return 0;
    }
    fd = ::openat(parent_fd.get(), cname.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    return fd;
  };
  const int walked = SVFS_TRY(as ? AsGuest(*as, walk) : Result<int>(walk()));
  if (walked < 0) return ErrnoErr();  // as root (AsGuest reports a failed call itself)
  if (known.inode()) {
    Entry entry = entry_for(*known.inode(), stx, &parent);
    return ReferencedEntry{entry, std::move(known)};
  }
  return entry_from_fd(UniqueFd(fd), &parent);
}

Result<Attr> PassthroughFs::stat_inode(const InodeData& inode) const {
  const InodeFd fd = SVFS_TRY(inode.path_fd());
  return stat_fd(fd.get(), &inode);
}

Result<Attr> PassthroughFs::stat_fd(int fd, const InodeData* inode) const {
  Version version;
  if (versions_ && inode) version = versions_->sample(inode->identity);  // before the stat
  const struct statx stx = SVFS_TRY(StatxFd(fd));
  Attr attr;
  attr.st = StatFromStatx(stx);
  attr.version = version;
  set_timeouts(attr);
  return attr;
}

int PassthroughFs::host_open_flags(uint32_t guest_flags, bool for_create) const {
  int flags = static_cast<int>(guest_flags);
  flags &= ~(O_NOCTTY | O_PATH | O_NOFOLLOW);
  if (!for_create) flags &= ~(O_CREAT | O_EXCL | __O_TMPFILE);
  if (config_.writeback) {
    // The guest's page cache reads back partial pages before writing them, and appends are
    // positioned by the guest, so the host fd must be readable and not O_APPEND.
    if ((flags & O_ACCMODE) == O_WRONLY) flags = (flags & ~O_ACCMODE) | O_RDWR;
    flags &= ~O_APPEND;
  }
  if (!config_.allow_direct_io) flags &= ~O_DIRECT;
  return flags | O_CLOEXEC;
}

uint32_t PassthroughFs::reply_open_flags(uint32_t guest_flags) const {
  bool direct_io = (guest_flags & O_DIRECT) && config_.allow_direct_io;
  return replies().file_open_flags(direct_io);
}

Opened PassthroughFs::add_handle(std::shared_ptr<const InodeData> inode, UniqueFd fd,
                                int host_flags, bool is_dir, uint32_t guest_flags) {
  auto handle = std::make_shared<Handle>();
  handle->node = inode->id;
  handle->inode = std::move(inode);
  handle->fd = std::move(fd);
  handle->access_mode = host_flags & O_ACCMODE;
  handle->is_dir = is_dir;
  Opened opened;
  opened.handle = handles_.insert(std::move(handle));
  if (is_dir) {
    opened.open_flags = replies().dir_open_flags();
  } else {
    opened.open_flags = reply_open_flags(guest_flags);
  }
  return opened;
}

// ---------------------------------------------------------------------------------------------
// Lookup and attributes

Result<Entry> PassthroughFs::lookup(const Context& ctx, NodeId parent, std::string_view name) {
  if (!ValidName(name)) return Err(EINVAL);
  auto dir = SVFS_TRY(inode_of(parent));
  // Walk the name as the guest user, so the host checks search permission on the parent too
  // (the client's default_permissions check uses attributes that may be cached).
  auto entry = lookup_name(*dir, name, &ctx);
  if (entry) return entry->release();
  if (entry.error() == ENOENT) {
    // A negative entry the guest may keep, if this session's policy allows one.
    if (auto timeout = replies().negative_entry_timeout_ns()) {
      Entry negative;
      negative.entry_timeout_ns = *timeout;
      return negative;
    }
  }
  return Err(entry.error());
}

void PassthroughFs::forget(NodeId node, uint64_t count) { inodes_.forget(node, count); }

Result<Attr> PassthroughFs::getattr(const Context&, NodeId node, std::optional<HandleId> handle) {
  if (handle) {
    // fstat of an open file: works for unlinked files even when the inode is held by handle.
    if (auto h = handles_.get(*handle)) {
      return stat_fd(h->fd.get(), h->inode.get());
    }
  }
  auto inode = SVFS_TRY(inode_of(node));
  return stat_inode(*inode);
}

Result<Attr> PassthroughFs::setattr(const Context& ctx, NodeId node, const SetattrArgs& args) {
  auto inode = SVFS_TRY(inode_of(node));
  const bool modifying = (args.valid & kSetattrChanges) != 0;
  if (config_.readonly && modifying) return Err(EROFS);
  std::shared_ptr<Handle> handle;
  if ((args.valid & FATTR_FH) && args.handle) handle = SVFS_TRY(handle_of(*args.handle));
  // With a handle, operate on its fd: it stays valid for an unlinked file, where reopening a
  // file handle would fail with ESTALE.
  const InodeFd path_fd = handle ? InodeFd(handle->fd.get()) : SVFS_TRY(inode->path_fd());
  Status changed = change_attributes(ctx, *inode, handle.get(), path_fd.get(), args);
  // Any change attempted may have partly happened (chmod done, chown refused): bump whatever
  // the outcome, before the reply, and before the stat below samples the version.
  if (modifying) bump(inode.get());
  SVFS_TRY(changed);
  if (handle) return stat_fd(handle->fd.get(), inode.get());
  return stat_inode(*inode);
}

Status PassthroughFs::change_attributes(const Context& ctx, const InodeData& inode,
                                       const Handle* handle, int path_fd,
                                       const SetattrArgs& args) {
  const std::string proc_name = FdName(path_fd);
  const int proc = proc_self_fd_.get();
  if (args.valid & FATTR_MODE) {
    auto changed = AsGuest(ctx, [&] {
      return ::fchmodat(proc, proc_name.c_str(), args.mode & 07777, 0);
    });
    if (!changed && changed.error() == EPERM && OnlyClearsSetid(path_fd, args.mode)) {
      // Without killpriv_v2 a kernel clears setuid/setgid for a write or truncate itself, with
      // a SETATTR as the writer, who need not own the file (the kernel skips its own checks
      // for that one: ATTR_FORCE). The host lets any writer clear them by writing: so does
      // svfsd, as root. A mode change that sets or keeps anything else stays the owner's.
      if (::fchmodat(proc, proc_name.c_str(), args.mode & 07777, 0) != 0) return ErrnoErr();
    } else if (!changed) {
      return Err(changed.error());
    }
  }
  if (args.valid & (FATTR_UID | FATTR_GID)) {
    uid_t uid = (args.valid & FATTR_UID) ? args.uid : static_cast<uid_t>(-1);
    gid_t gid = (args.valid & FATTR_GID) ? args.gid : static_cast<gid_t>(-1);
    // The kernel let the caller chgrp only to a group it is in (default_permissions, which
    // svfsd's host mounts and every virtiofs guest use), but a guest's groups never reach svfsd:
    // the target group counts as one of the caller's for this call. That grants no more than
    // the request's gid field already could: a guest that sent the target as its gid would
    // pass the host's check too.
    ScopedCredentials creds(ctx, (args.valid & FATTR_GID) ? std::optional<uint32_t>(gid)
                                                          : std::nullopt);
    if (!creds.ok()) return Err(EPERM);
    if (::fchownat(path_fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoErr();
    }
  }
  if (args.valid & FATTR_SIZE) {
    auto size = static_cast<off_t>(args.size);
    // FATTR_KILL_SUIDGID (killpriv_v2): the caller lacks CAP_FSETID, so truncate as it and
    // without CAP_FSETID: the host clears setuid/setgid as it would for that caller.
    const bool kill = (args.valid & FATTR_KILL_SUIDGID) != 0;
    if (handle && !kill) {
      if (::ftruncate(handle->fd.get(), size) != 0) return ErrnoErr();
    } else if (handle) {
      ScopedCredentials creds(ctx);
      ScopedWithoutFsetid no_fsetid;
      if (!creds.ok() || !no_fsetid.ok()) return Err(EPERM);
      if (::ftruncate(handle->fd.get(), size) != 0) return ErrnoErr();
    } else {
      if (!inode.is_regular()) return Err(inode.is_dir() ? EISDIR : EINVAL);
      ScopedCredentials creds(ctx);  // write permission checked as the guest user
      if (!creds.ok()) return Err(EPERM);
      std::optional<ScopedWithoutFsetid> no_fsetid;
      if (kill && !no_fsetid.emplace().ok()) return Err(EPERM);
      auto fd = SVFS_TRY(reopen(path_fd, O_WRONLY | O_NONBLOCK));
      if (::ftruncate(fd.get(), size) != 0) return ErrnoErr();
    }
  }
  if (args.valid & (FATTR_ATIME | FATTR_MTIME)) {
    struct timespec times[2];
    times[0] = args.atime;
    times[1] = args.mtime;
    if (!(args.valid & FATTR_ATIME)) times[0].tv_nsec = UTIME_OMIT;
    else if (args.valid & FATTR_ATIME_NOW) times[0].tv_nsec = UTIME_NOW;
    if (!(args.valid & FATTR_MTIME)) times[1].tv_nsec = UTIME_OMIT;
    else if (args.valid & FATTR_MTIME_NOW) times[1].tv_nsec = UTIME_NOW;
    SVFS_TRY(AsGuest(ctx, [&] { return ::utimensat(proc, proc_name.c_str(), times, 0); }));
  }
  return {};
}

Result<std::string> PassthroughFs::readlink(const Context&, NodeId node) {
  auto inode = SVFS_TRY(inode_of(node));
  if (!inode->is_symlink()) return Err(EINVAL);
  const InodeFd fd = SVFS_TRY(inode->path_fd());
  std::string target(PATH_MAX, '\0');
  ssize_t n = ::readlinkat(fd.get(), "", target.data(), target.size());
  if (n < 0) return ErrnoErr();
  target.resize(static_cast<size_t>(n));
  return target;
}

// ---------------------------------------------------------------------------------------------
// Files

Result<Opened> PassthroughFs::open(const Context& ctx, NodeId node, uint32_t flags) {
  auto inode = SVFS_TRY(inode_of(node));
  if (inode->is_symlink()) return Err(ELOOP);
  // The guest kernel opens fifos, sockets and devices itself and never sends OPEN for them;
  // refusing keeps a hostile guest from opening host devices or blocking a worker on a fifo.
  if (!inode->is_regular() && !inode->is_dir()) return Err(ENXIO);
  int host_flags = host_open_flags(flags, false);
  if (config_.readonly && WritesData(host_flags)) return Err(EROFS);
  const InodeFd path_fd = SVFS_TRY(inode->path_fd());
  auto fd = SVFS_TRY(reopen_as_guest(ctx, path_fd.get(), host_flags));
  if (host_flags & O_TRUNC) bump(inode.get());
  return add_handle(inode, std::move(fd), host_flags, inode->is_dir(), flags);
}

Result<UniqueFd> PassthroughFs::reopen_as_guest(const Context& ctx, int path_fd, int flags) const {
  ScopedCredentials creds(ctx);
  if (!creds.ok()) return Err(EPERM);
  // FUSE_OPEN_KILL_SUIDGID: an O_TRUNC of a caller without CAP_FSETID (which a non-zero fsuid
  // has lost already; a guest's root may lack it too).
  std::optional<ScopedWithoutFsetid> no_fsetid;
  if (ctx.kill_suidgid && (flags & O_TRUNC) && !no_fsetid.emplace().ok()) return Err(EPERM);
  return reopen(path_fd, flags);
}

Result<EntryOpened> PassthroughFs::create_entry_and_handle(UniqueFd fd, const InodeData& parent,
                                                        int dir_fd, const char* name,
                                                        int host_flags, uint32_t guest_flags) {
  // The entry must describe the opened file itself, not whatever its name means by now (someone
  // may have renamed or replaced it). Reopening the fd through /proc/self/fd guarantees that but
  // costs twice an open by name, so open the name first and keep that only if it is the same
  // inode.
  std::optional<ReferencedEntry> entry;
  if (name != nullptr) {
    UniqueFd by_name(::openat(dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (by_name.valid()) {
      auto opened_stx = StatxFd(fd.get());
      auto named_stx = StatxFd(by_name.get());
      if (opened_stx && named_stx && KeyOf(*opened_stx) == KeyOf(*named_stx)) {
        entry = SVFS_TRY(entry_from_statx(std::move(by_name), *named_stx, &parent));
      }
    }
  }
  if (!entry) {
    auto path_fd = SVFS_TRY(reopen(fd.get(), O_PATH));
    entry = SVFS_TRY(entry_from_fd(std::move(path_fd), &parent));
  }
  Opened opened = add_handle(entry->ref.inode(), std::move(fd), host_flags, false, guest_flags);
  return EntryOpened{entry->release(), opened};
}

Result<UniqueFd> PassthroughFs::open_existing_for_create(const Context& ctx, int dir_fd,
                                                       const char* name, int host_flags) {
  UniqueFd path_fd(::openat(dir_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!path_fd) return ErrnoErr();
  const mode_t type = SVFS_TRY(StatxFd(path_fd.get())).stx_mode & S_IFMT;
  if (type == S_IFDIR) return Err(EISDIR);
  if (type == S_IFLNK) return Err(ELOOP);  // as open(O_CREAT | O_NOFOLLOW) on a symlink
  if (type != S_IFREG) return Err(ENXIO);
  // The checked inode itself is reopened (no second walk of the name).
  return reopen_as_guest(ctx, path_fd.get(), host_flags);
}

Result<EntryOpened> PassthroughFs::create(const Context& ctx, NodeId parent, std::string_view name,
                                          uint32_t mode, uint32_t flags, uint32_t umask) {
  auto [dir, dir_fd] = SVFS_TRY(dir_for_name_change(parent, name));
  int host_flags = host_open_flags(flags, true) | O_CREAT | O_NOFOLLOW;
  host_flags &= ~__O_TMPFILE;
  const std::string cname(name);
  // Created exclusively first: an existing name is then opened only after its type is checked,
  // so a guest cannot reach a host device (made with MKNOD) or block on a fifo through CREATE.
  const uint32_t applied_umask = creation_umask(dir_fd.get(), umask);
  auto opened = AsGuest(ctx, [&] {
    return ::openat(dir_fd.get(), cname.c_str(), host_flags | O_EXCL,
                    (mode & 07777) & ~applied_umask);
  });
  const bool created = opened.has_value();
  if (!opened && opened.error() == EEXIST && !(host_flags & O_EXCL)) {
    auto existing = SVFS_TRY(open_existing_for_create(ctx, dir_fd.get(), cname.c_str(), host_flags));
    opened = existing.release();
  }
  UniqueFd fd(SVFS_TRY(opened));
  if (created) bump(dir.get());  // opening an existing file leaves the directory as it was
  if (tracking_versions() && (host_flags & O_TRUNC)) {
    // An existing file may have been truncated: bump it before the entry samples it.
    if (auto stx = StatxFd(fd.get())) bump(inodes_.find(KeyOf(*stx)).get());
  }
  return create_entry_and_handle(std::move(fd), *dir, dir_fd.get(), cname.c_str(), host_flags, flags);
}

Result<EntryOpened> PassthroughFs::tmpfile(const Context& ctx, NodeId parent, uint32_t mode,
                                           uint32_t flags, uint32_t umask) {
  if (config_.readonly) return Err(EROFS);
  auto dir = SVFS_TRY(inode_of(parent));
  const InodeFd dir_fd = SVFS_TRY(dir->path_fd());
  // O_EXCL stays: with O_TMPFILE it means "never linkable".
  int host_flags = (host_open_flags(flags, false) & ~(O_CREAT | O_NOFOLLOW)) | (flags & O_EXCL);
  if ((host_flags & O_ACCMODE) == O_RDONLY) host_flags = (host_flags & ~O_ACCMODE) | O_RDWR;
  host_flags |= O_TMPFILE;
  const uint32_t applied_umask = creation_umask(dir_fd.get(), umask);
  UniqueFd fd(SVFS_TRY(AsGuest(ctx, [&] {
    return ::openat(dir_fd.get(), ".", host_flags, (mode & 07777) & ~applied_umask);
  })));
  return create_entry_and_handle(std::move(fd), *dir, -1, nullptr, host_flags, flags);
}

}  // namespace svfs::fs
