// The filesystem interface the FUSE server dispatches to: one method per FUSE operation.
//
// The server has already decoded and validated the request (sizes, NUL-terminated names, names
// free of '/' and not "." / ".." where the operation forbids them), so implementations receive
// typed arguments. They never see transport details. Expected failures are returned as positive
// errno values.
#pragma once

#include <linux/fuse.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/unique_fd.h"

namespace svfs::fs {

using NodeId = uint64_t;    // FUSE node id: a counter into the inode store, never a pointer.
using HandleId = uint64_t;  // FUSE file handle: a counter into a handle table.

inline constexpr NodeId kRootNodeId = FUSE_ROOT_ID;

// The supplementary groups of a caller, where the transport can learn them (host /dev/fuse
// mounts: from the host's /proc, as libfuse's fuse_req_getgroups does). Guests' groups are not
// visible to svfsd: a guest sends at most the one group FUSE_EXT_GROUPS carries.
class CallerGroups {
 public:
  virtual ~CallerGroups() = default;
  // The groups of thread `pid` now; empty if it is gone or unknown.
  virtual std::vector<uint32_t> of(uint32_t pid) const = 0;
};

// Who asked: the credentials the request runs with.
struct Context {
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t pid = 0;
  uint64_t unique = 0;
  // Supplementary groups the request itself carries (FUSE_EXT_GROUPS on CREATE, MKDIR, MKNOD,
  // SYMLINK, TMPFILE: the parent directory's group, which the kernel found the caller in).
  std::vector<uint32_t> request_groups;
  // Where the caller's own supplementary groups come from, if anywhere; read on first use
  // (credentials.h, CallerSupplementaryGroups) and kept for the rest of the request.
  const CallerGroups* caller_groups = nullptr;
  mutable std::optional<std::vector<uint32_t>> caller_groups_read;
  // OPEN/CREATE carried FUSE_OPEN_KILL_SUIDGID (killpriv_v2: the caller lacks CAP_FSETID, and an
  // O_TRUNC must clear setuid/setgid as for such a caller).
  bool kill_suidgid = false;
  // --translate-uid/--translate-gid forbid the guest's uid or gid: ScopedCredentials refuses to
  // switch (EPERM), so nothing runs as this caller.
  bool forbidden_caller = false;
  // Set by the server when the guest sends FUSE_INTERRUPT for this request. Operations that may
  // block indefinitely (SETLKW) poll it and return EINTR.
  const std::atomic<bool>* interrupted = nullptr;

  bool is_interrupted() const { return interrupted && interrupted->load(std::memory_order_acquire); }
};

// A shared-version tag (docs/protocol.md, "Shared versions"): the slot of the host inode in the
// version table and the slot's value sampled before the metadata was read. index 0: none.
struct Version {
  uint64_t index = 0;
  uint64_t value = 0;
};

// Attributes of an inode plus the cache lifetime the reply gives them.
struct Attr {
  struct stat st {};
  uint32_t flags = 0;          // FUSE_ATTR_SUBMOUNT, FUSE_ATTR_DAX
  uint64_t timeout_ns = 0;     // attr_valid
  Version version;             // sent only when shared versions were negotiated
};

// A LOOKUP-style reply. node == 0 is a negative entry (cacheable for entry_timeout_ns). With
// shared versions, attr.version tags the entry (for a negative entry it is zero).
struct Entry {
  NodeId node = 0;
  uint64_t generation = 0;
  Attr attr;
  uint64_t entry_timeout_ns = 0;
};

// Reply to OPEN/OPENDIR/CREATE/TMPFILE.
struct Opened {
  HandleId handle = 0;
  uint32_t open_flags = 0;  // FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FOPEN_CACHE_DIR, ...
};

struct EntryOpened {
  Entry entry;
  Opened opened;
};

// SETATTR arguments: only the fields named by `valid` (FATTR_* bits) are meaningful.
struct SetattrArgs {
  uint32_t valid = 0;
  std::optional<HandleId> handle;  // FATTR_FH
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;
  struct timespec atime {};  // tv_nsec may be UTIME_NOW when FATTR_ATIME_NOW
  struct timespec mtime {};
};

// Where READ data goes. The transport implements it; for vhost-user it reads straight into guest
// memory (zero copy). `read_from` performs the preadv and returns the byte count.
class ReadSink {
 public:
  virtual ~ReadSink() = default;
  virtual Result<size_t> read_from(int fd, uint64_t offset, size_t length) = 0;
};

// Where WRITE data comes from; `write_to` performs the pwritev and returns the byte count.
class WriteSource {
 public:
  virtual ~WriteSource() = default;
  virtual size_t size() const = 0;
  virtual Result<size_t> write_to(int fd, uint64_t offset) = 0;
};

// WRITE data held in memory (the /dev/fuse transport's request buffer; tests).
class SpanWriteSource final : public WriteSource {
 public:
  explicit SpanWriteSource(std::span<const uint8_t> data) : data_(data) {}
  explicit SpanWriteSource(std::string_view data)
      : data_(reinterpret_cast<const uint8_t*>(data.data()), data.size()) {}
  size_t size() const override { return data_.size(); }
  Result<size_t> write_to(int fd, uint64_t offset) override {
    ssize_t n = ::pwrite(fd, data_.data(), data_.size(), static_cast<off_t>(offset));
    if (n < 0) return ErrnoErr();
    return static_cast<size_t>(n);
  }

 private:
  std::span<const uint8_t> data_;
};

// One directory entry as READDIR/READDIRPLUS deliver it.
struct DirEntry {
  uint64_t ino = 0;
  uint64_t offset = 0;  // the cookie that resumes the listing after this entry
  uint32_t type = 0;    // DT_* value
  std::string_view name;
};

// Accumulates READDIR(PLUS) entries into the reply buffer.
class DirSink {
 public:
  virtual ~DirSink() = default;
  // Whether an entry with a name of this length still fits. READDIRPLUS implementations check
  // this before the lookup, so they never take a lookup reference for an entry that is not sent.
  virtual bool has_room(size_t name_length) const = 0;
  // Adds an entry. `entry` is required for READDIRPLUS (a zeroed Entry for "." and "..").
  // Returns false when the entry did not fit (nothing was added).
  virtual bool add(const DirEntry& dirent, const Entry* entry) = 0;
};

// Lock as FUSE describes it (struct fuse_file_lock: start, end, type, pid).
struct FileLock {
  uint64_t start = 0;
  uint64_t end = 0;
  uint32_t type = 0;  // F_RDLCK, F_WRLCK, F_UNLCK
  uint32_t pid = 0;
};

// What INIT settled: the options the kernel and the daemon agreed on.
struct Negotiated {
  uint32_t minor = 0;
  uint64_t flags = 0;  // FUSE_* init flags, including flags2 bits shifted by 32
  uint32_t max_write = 0;
};

// The version table a filesystem in shared-versions mode announces in the INIT reply.
struct VersionTableId {
  std::array<uint8_t, 16> uuid{};
  uint64_t generation = 0;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // The table behind the versions this filesystem would send, asked during INIT after init()
  // returned protocol::kInitSharedVersions; nullopt withdraws the flag.
  virtual std::optional<VersionTableId> version_table() const { return std::nullopt; }

  // INIT: `offered` are the kernel's flags (flags2 << 32 | flags). Returns the flags the
  // filesystem wants enabled; the server masks them with what the kernel offered.
  virtual uint64_t init(uint64_t offered) = 0;
  // Called after INIT completes with the agreed parameters.
  virtual void initialized(const Negotiated&) {}
  virtual void destroy() = 0;

  virtual Result<Entry> lookup(const Context&, NodeId parent, std::string_view name) = 0;
  virtual void forget(NodeId node, uint64_t count) = 0;

  virtual Result<Attr> getattr(const Context&, NodeId node, std::optional<HandleId> handle) = 0;
  virtual Result<Attr> setattr(const Context&, NodeId node, const SetattrArgs& args) = 0;
  virtual Result<std::string> readlink(const Context&, NodeId node) = 0;

  virtual Result<Entry> symlink(const Context&, std::string_view target, NodeId parent,
                                std::string_view name) = 0;
  virtual Result<Entry> mknod(const Context&, NodeId parent, std::string_view name, uint32_t mode,
                              uint32_t rdev, uint32_t umask) = 0;
  virtual Result<Entry> mkdir(const Context&, NodeId parent, std::string_view name, uint32_t mode,
                              uint32_t umask) = 0;
  virtual Status unlink(const Context&, NodeId parent, std::string_view name) = 0;
  virtual Status rmdir(const Context&, NodeId parent, std::string_view name) = 0;
  // flags: RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT (0 for plain RENAME).
  virtual Status rename(const Context&, NodeId old_parent, std::string_view old_name,
                        NodeId new_parent, std::string_view new_name, uint32_t flags) = 0;
  virtual Result<Entry> link(const Context&, NodeId node, NodeId new_parent,
                             std::string_view new_name) = 0;

  virtual Result<Opened> open(const Context&, NodeId node, uint32_t flags) = 0;
  virtual Result<EntryOpened> create(const Context&, NodeId parent, std::string_view name,
                                     uint32_t mode, uint32_t flags, uint32_t umask) = 0;
  virtual Result<EntryOpened> tmpfile(const Context&, NodeId parent, uint32_t mode, uint32_t flags,
                                      uint32_t umask) = 0;
  virtual Result<size_t> read(const Context&, NodeId node, HandleId handle, uint64_t offset,
                              uint32_t size, ReadSink& sink) = 0;
  virtual Result<size_t> write(const Context&, NodeId node, HandleId handle, uint64_t offset,
                               WriteSource& data, uint32_t write_flags) = 0;
  virtual Status flush(const Context&, NodeId node, HandleId handle, uint64_t lock_owner) = 0;
  // release_flags: FUSE_RELEASE_FLUSH, FUSE_RELEASE_FLOCK_UNLOCK.
  virtual Status release(const Context&, NodeId node, HandleId handle, uint32_t open_flags,
                         uint32_t release_flags, uint64_t lock_owner) = 0;
  virtual Status fsync(const Context&, NodeId node, HandleId handle, bool datasync) = 0;
  // A new fd of the regular file `node` for the VMM to mmap into the DAX window (SETUPMAPPING):
  // the open handle's file (which must belong to `node` and be open for reading, and for writing
  // when `writable`), or without a handle (Linux sends none) the file opened as the caller.
  // Filesystems without DAX keep the default.
  virtual Result<UniqueFd> dax_file(const Context&, NodeId /*node*/,
                                    std::optional<HandleId> /*handle*/, bool /*writable*/) {
    return Err(ENOSYS);
  }

  virtual Result<Opened> opendir(const Context&, NodeId node, uint32_t flags) = 0;
  virtual Status readdir(const Context&, NodeId node, HandleId handle, uint64_t offset, bool plus,
                         DirSink& sink) = 0;
  virtual Status releasedir(const Context&, NodeId node, HandleId handle) = 0;
  virtual Status fsyncdir(const Context&, NodeId node, HandleId handle, bool datasync) = 0;

  virtual Result<struct statvfs> statfs(const Context&, NodeId node) = 0;
  virtual Status access(const Context&, NodeId node, uint32_t mask) = 0;

  virtual Status setxattr(const Context&, NodeId node, std::string_view name,
                          std::span<const char> value, uint32_t flags) = 0;
  // size == 0 asks for the value's length only: the server then replies with the returned
  // vector's size and sends no bytes. With size > 0 a value longer than size is ERANGE.
  virtual Result<std::vector<char>> getxattr(const Context&, NodeId node, std::string_view name,
                                             uint32_t size) = 0;
  virtual Result<std::vector<char>> listxattr(const Context&, NodeId node, uint32_t size) = 0;
  virtual Status removexattr(const Context&, NodeId node, std::string_view name) = 0;

  virtual Status fallocate(const Context&, NodeId node, HandleId handle, uint32_t mode,
                           uint64_t offset, uint64_t length) = 0;
  virtual Result<uint64_t> lseek(const Context&, NodeId node, HandleId handle, uint64_t offset,
                                 uint32_t whence) = 0;
  virtual Result<size_t> copy_file_range(const Context&, NodeId node_in, HandleId handle_in,
                                         uint64_t offset_in, NodeId node_out, HandleId handle_out,
                                         uint64_t offset_out, uint64_t length, uint64_t flags) = 0;
  virtual Status syncfs(const Context&, NodeId node) = 0;

  // POSIX record locks (lk_flags without FUSE_LK_FLOCK) and flock (with it). `owner` is the
  // kernel's lock owner; locks of different owners never merge.
  virtual Result<FileLock> getlk(const Context&, NodeId node, HandleId handle, uint64_t owner,
                                 const FileLock& lock) = 0;
  virtual Status setlk(const Context&, NodeId node, HandleId handle, uint64_t owner,
                       const FileLock& lock, uint32_t lk_flags, bool wait) = 0;
};

}  // namespace svfs::fs
