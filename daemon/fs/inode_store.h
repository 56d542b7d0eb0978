// Node ids handed to the guest and the host inodes behind them.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "daemon/fs/filesystem.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace svfs::fs {

// Identity of a host inode. mnt_id distinguishes the same (dev, ino) seen through different
// bind mounts, so submounts get their own node ids.
struct InodeKey {
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t mnt_id = 0;
  friend auto operator<=>(const InodeKey&, const InodeKey&) = default;
};

// For the store's key index: a hash table rather than a tree, so finding a key costs the same
// in a tree of a million files as in a tree of ten (one probe, under the store's lock).
struct InodeKeyHash {
  size_t operator()(const InodeKey& key) const {
    // Inode numbers are dense and the other two fields rarely differ: mix all three
    // (splitmix64's finalizer) so that neighbouring keys spread over the buckets.
    uint64_t h = key.ino ^ (key.dev * 0x9e3779b97f4a7c15ull) ^ (key.mnt_id * 0xc2b2ae3d27d4eb4full);
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
    return static_cast<size_t>(h ^ (h >> 31));
  }
};

// A file handle from name_to_handle_at, to be reopened with open_by_handle_at on a descriptor of
// the same mount.
struct FileHandle {
  int mount_id = 0;
  std::vector<unsigned char> bytes;  // a struct file_handle with its f_handle payload
};

// An fd to operate on an inode: either borrowed from the inode's O_PATH fd or owned (opened
// from a file handle for this one operation).
class InodeFd {
 public:
  explicit InodeFd(int borrowed) : fd_(borrowed) {}
  explicit InodeFd(UniqueFd owned) : owned_(std::move(owned)), fd_(owned_.get()) {}
  int get() const { return fd_; }

 private:
  UniqueFd owned_;
  int fd_;
};

// Immutable once published in the store (only the store's bookkeeping changes), so it can be
// shared across threads without locking. Operations keep a shared_ptr to it for their duration,
// so a concurrent FORGET cannot close the fd under them.
struct InodeData {
  NodeId id = 0;       // assigned by InodeStore::acquire
  InodeKey key;
  mode_t file_type = 0;  // st_mode & S_IFMT
  UniqueFd fd;           // O_PATH|O_NOFOLLOW; invalid when `handle` is set
  std::optional<FileHandle> handle;
  std::shared_ptr<const UniqueFd> mount_fd;  // for open_by_handle_at; set with `handle`
  // Shared versions: the identity the inode's version-table slot is computed from
  // (protocol/inode_identity.h), set when the inode is made; 0 when versions are not tracked.
  uint64_t identity = 0;

  // An O_PATH fd for this inode: the held fd, or the file handle reopened.
  Result<InodeFd> path_fd() const;
  bool is_dir() const { return file_type == S_IFDIR; }
  bool is_symlink() const { return file_type == S_IFLNK; }
  bool is_regular() const { return file_type == S_IFREG; }
};

// Node id <-> inode table with FUSE lookup counts.
//
// Every reply that hands an entry to the kernel takes one reference (acquire); FORGET drops n.
// At zero the entry is removed, and the inode's fd closes when the last in-flight operation
// drops its shared_ptr. The root (node 1) is never freed.
//
// Locking: one mutex (`mutex_`) guards both maps and all reference counts. It is a leaf lock:
// no other lock is taken while holding it, and it is never held across a syscall (fds are opened
// before acquire() and closed after the lock is released, by the shared_ptr's destructor running
// outside the critical section).
class InodeStore {
 public:
  InodeStore() = default;
  InodeStore(const InodeStore&) = delete;
  InodeStore& operator=(const InodeStore&) = delete;

  // Installs the root inode as node 1 (never freed, not reference counted).
  void set_root(std::shared_ptr<InodeData> root);

  // Returns the inode for `id`, or nullptr if unknown.
  std::shared_ptr<InodeData> get(NodeId id) const;
  // Returns the inode with `key`, or nullptr if the store has none.
  std::shared_ptr<InodeData> find(const InodeKey& key) const;

  // Takes one lookup reference on the inode with `candidate->key`: if the store already has one,
  // that inode is returned (and `candidate` is discarded); otherwise `candidate` gets a fresh
  // node id and is inserted.
  std::shared_ptr<InodeData> acquire(std::shared_ptr<InodeData> candidate);

  // Takes one lookup reference on the inode with `key` if the store holds its fd (so the host
  // cannot have reused the inode number); nullptr if unknown or known only by file handle.
  std::shared_ptr<InodeData> acquire_pinned(const InodeKey& key);

  // Drops `count` lookup references (saturating at zero); frees the node at zero. Unknown ids
  // and the root are ignored.
  void forget(NodeId id, uint64_t count);

  // Drops every node but the root (DESTROY: the kernel forgets everything).
  void clear();


  // Current lookup count of `id` (0 if unknown); for tests and debugging.
  uint64_t ref_count(NodeId id) const;
  // Number of nodes including the root.
  size_t size() const;
  // Nodes (root included) that hold an O_PATH fd; those known by file handle hold none.
  size_t held_fds() const;

 private:
  struct Slot {
    std::shared_ptr<InodeData> data;
    uint64_t refs = 0;
  };

  mutable std::mutex mutex_;
  std::unordered_map<NodeId, Slot> by_id_;   // guarded by mutex_
  std::unordered_map<InodeKey, NodeId, InodeKeyHash> by_key_;  // guarded by mutex_
  NodeId next_id_ = kRootNodeId + 1;         // guarded by mutex_
  size_t held_fds_ = 0;                      // guarded by mutex_
};

// One lookup reference on a node, taken by InodeStore::acquire/acquire_pinned and given back
// (forget(id, 1)) when this is dropped, unless release()d: an operation whose reply hands the
// node to the guest releases it, one that fails after the lookup just returns.
class LookupRef {
 public:
  LookupRef() = default;
  // Adopts the reference the caller took on `inode` (nullptr: none).
  LookupRef(InodeStore& store, std::shared_ptr<InodeData> inode)
      : store_(inode ? &store : nullptr), inode_(std::move(inode)) {}
  LookupRef(LookupRef&& other) noexcept
      : store_(std::exchange(other.store_, nullptr)), inode_(std::move(other.inode_)) {}
  LookupRef& operator=(LookupRef&& other) noexcept {
    if (this != &other) {
      give_back();
      store_ = std::exchange(other.store_, nullptr);
      inode_ = std::move(other.inode_);
    }
    return *this;
  }
  LookupRef(const LookupRef&) = delete;
  LookupRef& operator=(const LookupRef&) = delete;
  ~LookupRef() { give_back(); }

  // The referenced inode (kept after release()); nullptr if none.
  const std::shared_ptr<InodeData>& inode() const { return inode_; }
  // The reference now belongs to the guest: nothing is given back.
  void release() { store_ = nullptr; }

 private:
  void give_back() {
    if (store_) std::exchange(store_, nullptr)->forget(inode_->id, 1);
  }

  InodeStore* store_ = nullptr;  // null once released (or if nothing is held)
  std::shared_ptr<InodeData> inode_;
};

// Descriptors used as mount_fd for open_by_handle_at, one per mount id.
class MountFds {
 public:
  // Returns the fd for `mount_id`; the first time, `open` (called without the lock held) must
  // return a non-O_PATH fd on that mount (open_by_handle_at refuses O_PATH mount fds).
  Result<std::shared_ptr<const UniqueFd>> get(int mount_id,
                                              const std::function<Result<UniqueFd>()>& open);

 private:
  std::mutex mutex_;  // leaf lock; guards fds_
  std::unordered_map<int, std::shared_ptr<const UniqueFd>> fds_;
};

}  // namespace svfs::fs
