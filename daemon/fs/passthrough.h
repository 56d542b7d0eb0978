// The passthrough filesystem: serves a host directory to the guest.
//
// Security model: the guest is hostile. Every path resolution starts at an inode fd we hold and
// walks a single validated name component with O_NOFOLLOW; inodes are reopened through
// /proc/self/fd/N (which reopens the resolved inode without a path walk). Symlinks are never
// followed on the host, so nothing outside shared_dir is reachable.
//
// Lock order (outer to inner): Handle::dir_mutex -> InodeStore's mutex / MountFds' mutex.
// HandleTable's mutex and locks_mutex_ are leaves. Only dir_mutex is held across syscalls
// (getdents64 and lookups of the listed names, for that one directory stream).
#pragma once

#include <fcntl.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

#include "daemon/fs/credentials.h"
#include "daemon/fs/filesystem.h"
#include "daemon/fs/inode_store.h"
#include "daemon/fs/passthrough_config.h"
#include "daemon/fs/version_tracker.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace svfs::fs {

// An open file or directory (FUSE fh).
struct Handle {
  NodeId node = 0;
  // The node's inode, so WRITE and friends bump its version without a store lookup (and its
  // mutex) per request.
  std::shared_ptr<const InodeData> inode;
  UniqueFd fd;
  int access_mode = O_RDONLY;  // O_ACCMODE bits of the host open
  bool is_dir = false;

  // READDIR: the directory stream position is shared state (lseek + getdents64).
  std::mutex dir_mutex;
};

// Handle id -> open handle. Lock order: `mutex_` is a leaf lock, held only for map access.
class HandleTable {
 public:
  HandleId insert(std::shared_ptr<Handle> handle);
  std::shared_ptr<Handle> get(HandleId id) const;
  // Removes and returns the handle (nullptr if unknown); the fd closes when the last user drops it.
  std::shared_ptr<Handle> remove(HandleId id);
  void clear();
  size_t size() const;

 private:
  mutable std::mutex mutex_;
  std::unordered_map<HandleId, std::shared_ptr<Handle>> handles_;  // guarded by mutex_
  HandleId next_id_ = 1;                                           // guarded by mutex_
};

// Implemented in passthrough.cc (setup, lookup, attributes, opening and creating files), with
// name operations in passthrough_names.cc, directories and the filesystem-wide calls in
// passthrough_dir.cc, data operations on open files in passthrough_io.cc, locks in
// passthrough_locks.cc and extended attributes in passthrough_xattr.cc.
class PassthroughFs : public FileSystem {
 public:
  // Opens shared_dir; fails with ENOENT/ENOTDIR/... if it cannot be used. `versions` (shared
  // mode only; must outlive the filesystem) tags replies and is bumped for every change.
  static Result<std::unique_ptr<PassthroughFs>> Create(PassthroughConfig config,
                                                       VersionTracker* versions = nullptr);

  std::optional<VersionTableId> version_table() const override;
  uint64_t init(uint64_t offered) override;
  void initialized(const Negotiated& negotiated) override;
  void destroy() override;

  Result<Entry> lookup(const Context&, NodeId parent, std::string_view name) override;
  void forget(NodeId node, uint64_t count) override;

  Result<Attr> getattr(const Context&, NodeId node, std::optional<HandleId> handle) override;
  Result<Attr> setattr(const Context&, NodeId node, const SetattrArgs& args) override;
  Result<std::string> readlink(const Context&, NodeId node) override;

  Result<Entry> symlink(const Context&, std::string_view target, NodeId parent,
                        std::string_view name) override;
  Result<Entry> mknod(const Context&, NodeId parent, std::string_view name, uint32_t mode,
                      uint32_t rdev, uint32_t umask) override;
  Result<Entry> mkdir(const Context&, NodeId parent, std::string_view name, uint32_t mode,
                      uint32_t umask) override;
  Status unlink(const Context&, NodeId parent, std::string_view name) override;
  Status rmdir(const Context&, NodeId parent, std::string_view name) override;
  Status rename(const Context&, NodeId old_parent, std::string_view old_name, NodeId new_parent,
                std::string_view new_name, uint32_t flags) override;
  Result<Entry> link(const Context&, NodeId node, NodeId new_parent,
                     std::string_view new_name) override;

  Result<Opened> open(const Context&, NodeId node, uint32_t flags) override;
  Result<EntryOpened> create(const Context&, NodeId parent, std::string_view name, uint32_t mode,
                             uint32_t flags, uint32_t umask) override;
  Result<EntryOpened> tmpfile(const Context&, NodeId parent, uint32_t mode, uint32_t flags,
                              uint32_t umask) override;
  Result<size_t> read(const Context&, NodeId node, HandleId handle, uint64_t offset, uint32_t size,
                      ReadSink& sink) override;
  Result<size_t> write(const Context&, NodeId node, HandleId handle, uint64_t offset,
                       WriteSource& data, uint32_t write_flags) override;
  Status flush(const Context&, NodeId node, HandleId handle, uint64_t lock_owner) override;
  Status release(const Context&, NodeId node, HandleId handle, uint32_t open_flags,
                 uint32_t release_flags, uint64_t lock_owner) override;
  Status fsync(const Context&, NodeId node, HandleId handle, bool datasync) override;

  Result<Opened> opendir(const Context&, NodeId node, uint32_t flags) override;
  Status readdir(const Context&, NodeId node, HandleId handle, uint64_t offset, bool plus,
                 DirSink& sink) override;
  Result<UniqueFd> dax_file(const Context&, NodeId node, std::optional<HandleId> handle,
                            bool writable) override;
  Status releasedir(const Context&, NodeId node, HandleId handle) override;
  Status fsyncdir(const Context&, NodeId node, HandleId handle, bool datasync) override;

  Result<struct statvfs> statfs(const Context&, NodeId node) override;
  Status access(const Context&, NodeId node, uint32_t mask) override;

  Status setxattr(const Context&, NodeId node, std::string_view name, std::span<const char> value,
                  uint32_t flags) override;
  Result<std::vector<char>> getxattr(const Context&, NodeId node, std::string_view name,
                                     uint32_t size) override;
  Result<std::vector<char>> listxattr(const Context&, NodeId node, uint32_t size) override;
  Status removexattr(const Context&, NodeId node, std::string_view name) override;

  Status fallocate(const Context&, NodeId node, HandleId handle, uint32_t mode, uint64_t offset,
                   uint64_t length) override;
  Result<uint64_t> lseek(const Context&, NodeId node, HandleId handle, uint64_t offset,
                         uint32_t whence) override;
  Result<size_t> copy_file_range(const Context&, NodeId node_in, HandleId handle_in,
                                 uint64_t offset_in, NodeId node_out, HandleId handle_out,
                                 uint64_t offset_out, uint64_t length, uint64_t flags) override;
  Status syncfs(const Context&, NodeId node) override;

  Result<FileLock> getlk(const Context&, NodeId node, HandleId handle, uint64_t owner,
                         const FileLock& lock) override;
  Status setlk(const Context&, NodeId node, HandleId handle, uint64_t owner, const FileLock& lock,
               uint32_t lk_flags, bool wait) override;

  // The inode store (lookup counts), for tests and the metrics.
  const InodeStore& inodes() const { return inodes_; }
  // Files and directories the guest holds open (each an fd), for the metrics.
  size_t open_handles() const { return handles_.size(); }

 private:
  PassthroughFs(PassthroughConfig config, UniqueFd proc_self_fd);

  Result<std::shared_ptr<InodeData>> inode_of(NodeId id) const;
  Result<std::shared_ptr<Handle>> handle_of(HandleId id) const;

  // An entry for a reply with the lookup reference it hands the guest: given back if the entry
  // is not sent after all. Default: no node (a zeroed entry) and no reference.
  struct ReferencedEntry {
    Entry entry;
    LookupRef ref;
    // The entry, for a reply that is sure to go out: the reference is the guest's from here.
    Entry release() {
      ref.release();
      return entry;
    }
  };

  // Resolves `name` under `parent` (O_PATH|O_NOFOLLOW), takes a lookup reference and fills an
  // Entry. The walk runs with `as`'s credentials if given (search permission), else as root.
  Result<ReferencedEntry> lookup_name(const InodeData& parent, std::string_view name,
                                   const Context* as = nullptr);
  // Takes a lookup reference on the inode open as `fd` (O_PATH) and fills an Entry.
  Result<ReferencedEntry> entry_from_fd(UniqueFd fd, const InodeData* parent);
  // The same, with the fd's statx already taken.
  Result<ReferencedEntry> entry_from_statx(UniqueFd fd, const struct statx& stx,
                                         const InodeData* parent);
  // The entry reply for `inode` (already referenced), whose statx the caller just took.
  Entry entry_for(const InodeData& inode, struct statx stx, const InodeData* parent) const;
  Result<std::shared_ptr<InodeData>> make_inode(UniqueFd fd, const struct statx& stx,
                                               const InodeData* parent);
  // A readable fd on the mount of `fd` (for open_by_handle_at), never opening special files.
  Result<UniqueFd> open_mount_fd(int fd, mode_t file_type, uint64_t mnt_id,
                               const InodeData* parent) const;
  Attr make_attr(const struct statx& stx, const InodeData* parent, uint64_t own_mnt_id) const;
  Result<Attr> stat_inode(const InodeData& inode) const;
  // Attributes of `fd`, tagged with `inode`'s version sampled before the stat.
  Result<Attr> stat_fd(int fd, const InodeData* inode = nullptr) const;

  // Shared versions. Versions are tracked whenever a tracker is attached (other daemons' guests
  // rely on our bumps) but replies carry them only once INIT agreed on it (replies()).
  bool tracking_versions() const { return versions_ != nullptr; }
  void bump(const InodeData* inode) const {
    if (versions_ && inode) versions_->bump(inode->identity);
  }
  // The identity `inode`'s version slot is computed from (`fd` reaches the inode): its file
  // handle where the filesystem has them (as fanotify reports host edits), else (dev, ino).
  uint64_t identity_of(int fd, const InodeData& inode) const;
  // statfs f_fsid of the filesystem of `fd` (device `dev`), cached per device.
  uint64_t fsid_of(uint64_t dev, int fd) const;
  void bump_node(NodeId id) const;
  // The store's inode for the host inode `name` under `dir_fd` names now, if we have one: the
  // inode an unlink/rename is about to drop a link of (bumped once the change is done).
  std::shared_ptr<InodeData> stored_inode_at(int dir_fd, const std::string& name) const;
  // Sets the reply timeout of `attr` for this session.
  void set_timeouts(Attr& attr) const;

  // The umask a creation in the directory `dir_fd` (O_PATH) applies: none under --posix-acl
  // when the directory has a default ACL (the host then inherits it, which the umask must not
  // narrow: POSIX ACL semantics), else the guest's.
  uint32_t creation_umask(int dir_fd, uint32_t umask) const;
  // The same for the directory node `parent`.
  Result<uint32_t> umask_in(NodeId parent, uint32_t umask) const;

  // Reopens an O_PATH fd as a real file description via /proc/self/fd/N.
  Result<UniqueFd> reopen(int path_fd, int flags) const;
  // The same with the guest's credentials, so the host checks its permission to open.
  Result<UniqueFd> reopen_as_guest(const Context& ctx, int path_fd, int flags) const;
  // Path "/proc/self/fd/N" relative to proc_self_fd_: the string "N".
  static std::string FdName(int fd);
  // A single path component: not empty, ".", ".." and without '/' or NUL.
  static bool ValidName(std::string_view name);
  // Makes proc_self_fd_ the calling thread's own working directory, for calls that take only a
  // path (the xattr family on symlinks and special files); returns the one to go back to.
  Result<UniqueFd> enter_proc_self_fd();

  // Adjusts guest open flags for the host open (O_DIRECT, writeback widening, no O_CREAT...).
  int host_open_flags(uint32_t flags, bool for_create) const;
  uint32_t reply_open_flags(uint32_t guest_flags) const;
  Opened add_handle(std::shared_ptr<const InodeData> inode, UniqueFd fd, int host_flags, bool is_dir,
                   uint32_t guest_flags);
  // SETATTR's changes on `path_fd` (the inode's, or `handle`'s when given), stopping at the
  // first that fails.
  Status change_attributes(const Context& ctx, const InodeData& inode, const Handle* handle,
                          int path_fd, const SetattrArgs& args);

  // Creates a name under `parent` with `make(dir_fd, name)` as the guest, then looks it up.
  template <typename F>
  Result<Entry> make_node(const Context& ctx, NodeId parent, std::string_view name, F&& make);
  Status remove_name(const Context& ctx, NodeId parent, std::string_view name, int flags);
  Result<std::pair<std::shared_ptr<InodeData>, InodeFd>> dir_for_name_change(
      NodeId parent, std::string_view name) const;
  // CREATE without O_EXCL of a name that exists: the existing inode opened with `host_flags`
  // as the guest if it is a regular file; EISDIR, ELOOP or ENXIO (devices, fifos, sockets).
  Result<UniqueFd> open_existing_for_create(const Context& ctx, int dir_fd, const char* name,
                                         int host_flags);
  // CREATE/TMPFILE: entry for the file just created and opened as `fd` plus a handle owning it;
  // `name` under `dir_fd` is where it was created (nullptr for O_TMPFILE).
  Result<EntryOpened> create_entry_and_handle(UniqueFd fd, const InodeData& parent, int dir_fd,
                                           const char* name, int host_flags, uint32_t guest_flags);
  // Runs `call(fd, path)` as the guest on an fd (regular files, dirs) or /proc path (others).
  template <typename F>
  Result<ssize_t> xattr_call(const Context& ctx, NodeId node, F&& call);

  // POSIX record locks. The kernel's lock owner stands for a guest process (its files_struct),
  // and POSIX locks belong to (process, inode), not to an open file: so there is one open file
  // description per (node, owner), and OFD locks on it never merge with other owners' locks.
  struct OwnerLocks {
    std::shared_ptr<UniqueFd> fd;  // shared: a blocked SETLKW keeps it alive across FLUSH
    uint32_t pid = 0;              // guest pid of the last SETLK, reported by GETLK
  };
  // The lock fd for (node, owner), opened from `handle` on first use.
  Result<std::shared_ptr<UniqueFd>> lock_fd(NodeId node, const Handle& handle, uint64_t owner,
                                           std::optional<uint32_t> pid);
  // Closes (node, owner)'s lock fd, releasing its locks as close() would on the host.
  void drop_owner_locks(NodeId node, uint64_t owner);
  // Guest pid of the owner (other than `except`) that holds `conflict` on `node`; 0 if unknown.
  uint32_t lock_holder_pid(NodeId node, uint64_t except, const struct flock& conflict);

  PassthroughConfig config_;
  VersionTracker* versions_ = nullptr;
  // The reply policy of the session: one of the two below, switched by INIT (initialized()).
  const ReplyPolicy plain_replies_{config_.cache, false};
  const ReplyPolicy versioned_replies_{config_.cache, true};
  std::atomic<const ReplyPolicy*> replies_{&plain_replies_};
  const ReplyPolicy& replies() const { return *replies_.load(std::memory_order_acquire); }
  mutable std::mutex fsid_mutex_;  // leaf lock; guards fsid_by_dev_
  mutable std::unordered_map<uint64_t, uint64_t> fsid_by_dev_;
  UniqueFd proc_self_fd_;
  InodeStore inodes_;
  HandleTable handles_;
  MountFds mount_fds_;
  bool use_file_handles_ = false;

  // (node, owner) pairs with a lock description at once; SETLK beyond gets ENOLCK.
  static constexpr size_t kMaxLockOwners = 16384;
  std::mutex locks_mutex_;  // leaf lock, never held across a syscall; guards locks_
  std::map<std::pair<NodeId, uint64_t>, OwnerLocks> locks_;
};

}  // namespace svfs::fs
