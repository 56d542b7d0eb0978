// A recording fake FileSystem for unit-testing the FUSE server (and fuzzing it): every method
// records the decoded arguments it received and returns a configurable result — success with
// plausible values by default, or an errno set with fail(). It touches no real files: READ and
// WRITE go through a memfd so the server's sinks and sources are exercised for real.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "daemon/fs/cache_policy.h"
#include "daemon/fs/filesystem.h"

namespace svfs::testing {

// Everything one call received. Fields an operation does not take keep their defaults.
struct FakeCall {
  std::string op;  // "lookup", "mkdir", ... (the FileSystem method name)
  fs::Context context;
  fs::NodeId node = 0;      // the node the request targets (parent for entry ops, node_in)
  fs::NodeId node2 = 0;     // new parent (rename, link), node_out (copy_file_range)
  fs::HandleId handle = 0;
  fs::HandleId handle2 = 0;  // handle_out (copy_file_range)
  std::optional<fs::HandleId> opt_handle;  // getattr
  std::string name;
  std::string name2;  // new name (rename), target (symlink)
  uint32_t mode = 0;
  uint32_t rdev = 0;
  uint32_t umask = 0;
  uint32_t flags = 0;   // open flags, rename flags, setxattr flags, write_flags, release open flags,
                        // dax_file writable
  uint32_t flags2 = 0;  // release_flags, lk_flags
  uint32_t mask = 0;    // access
  uint32_t size = 0;    // read/getxattr/listxattr size
  uint32_t whence = 0;
  uint64_t offset = 0;
  uint64_t offset2 = 0;
  uint64_t length = 0;
  uint64_t owner = 0;   // lock_owner / lock owner
  uint64_t count = 0;   // forget nlookup
  uint64_t cfr_flags = 0;
  bool datasync = false;
  bool plus = false;
  bool wait = false;
  std::string data;  // WRITE payload, SETXATTR value
  fs::SetattrArgs setattr;
  fs::FileLock lock;
};

struct FakeDirItem {
  uint64_t ino;
  uint64_t offset;
  uint32_t type;
  std::string name;
};

class FakeFileSystem : public fs::FileSystem {
 public:
  FakeFileSystem() {
    entry.node = 42;
    entry.generation = 7;
    entry.entry_timeout_ns = 1'000'000'000;
    entry.attr = plausible_attr(42, S_IFREG | 0644);
    attr = entry.attr;
    opened = fs::Opened{.handle = 99, .open_flags = 0};
    statvfs_result.f_bsize = 4096;
    statvfs_result.f_frsize = 4096;
    statvfs_result.f_blocks = 1000;
    statvfs_result.f_bfree = 500;
    statvfs_result.f_bavail = 400;
    statvfs_result.f_files = 100;
    statvfs_result.f_ffree = 50;
    statvfs_result.f_namemax = 255;
    dir_items = {{1, 1, DT_DIR, "."}, {1, 2, DT_DIR, ".."}, {10, 3, DT_REG, "a"},
                 {11, 4, DT_REG, "file-two"}, {12, 5, DT_LNK, "l"}};
  }

  static fs::Attr plausible_attr(uint64_t ino, uint32_t mode) {
    fs::Attr a;
    a.st.st_ino = ino;
    a.st.st_mode = mode;
    a.st.st_nlink = 1;
    a.st.st_uid = 1000;
    a.st.st_gid = 1001;
    a.st.st_size = 1234;
    a.st.st_blocks = 8;
    a.st.st_blksize = 4096;
    a.st.st_atim = {1000, 1};
    a.st.st_mtim = {2000, 2};
    a.st.st_ctim = {3000, 3};
    a.timeout_ns = 1'000'000'000;
    return a;
  }

  // ---- configuration ----
  // Makes `op` fail with `error` (positive errno); 0 clears it.
  void fail(const std::string& op, int error) { failures_[op] = error; }
  // Makes replies carry the timeouts and open flags a passthrough would under `policy`.
  void use_policy(const fs::CachePolicy& policy) { policy_ = policy; }

  uint64_t init_result = FUSE_ASYNC_READ | FUSE_DO_READDIRPLUS | FUSE_POSIX_LOCKS;
  std::optional<fs::VersionTableId> table_id;  // shared versions: the table INIT announces
  fs::Entry entry;       // lookup/mknod/mkdir/symlink/link/create/tmpfile
  bool negative_lookup = false;  // lookup returns node 0
  fs::Attr attr;         // getattr/setattr
  fs::Opened opened;     // open/opendir/create/tmpfile
  std::string readlink_target = "some/target";
  std::string read_data = "hello, fuse world";
  std::optional<size_t> write_result;  // default: the payload size
  struct statvfs statvfs_result {};
  std::vector<char> xattr_value{'v', 'a', 'l', 'u', 'e'};
  std::vector<char> xattr_list{'u', 's', 'e', 'r', '.', 'a', 0, 'u', 's', 'e', 'r', '.', 'b', 0};
  std::vector<FakeDirItem> dir_items;
  fs::FileLock getlk_result{.start = 5, .end = 15, .type = F_WRLCK, .pid = 777};
  uint64_t lseek_result = 4096;
  size_t copy_result = 512;

  // ---- what was received ----
  std::vector<FakeCall> calls;
  std::vector<std::pair<fs::NodeId, uint64_t>> forgets;
  uint64_t offered_flags = 0;
  std::optional<fs::Negotiated> negotiated;
  int destroyed = 0;
  size_t dir_items_sent = 0;

  const FakeCall& last() const { return calls.back(); }
  size_t count(const std::string& op) const {
    size_t n = 0;
    for (const auto& c : calls) n += c.op == op;
    return n;
  }

  // ---- FileSystem ----
  uint64_t init(uint64_t offered) override {
    offered_flags = offered;
    uint64_t want = init_result;
    if (policy_) {
      if (policy_->readdirplus()) want |= FUSE_DO_READDIRPLUS;
      else want &= ~static_cast<uint64_t>(FUSE_DO_READDIRPLUS);
      if (policy_->auto_inval_data()) want |= FUSE_AUTO_INVAL_DATA;
    }
    return want;
  }
  void initialized(const fs::Negotiated& n) override { negotiated = n; }
  std::optional<fs::VersionTableId> version_table() const override { return table_id; }
  void destroy() override { ++destroyed; }

  Result<fs::Entry> lookup(const fs::Context& ctx, fs::NodeId parent,
                           std::string_view name) override {
    FakeCall& c = record("lookup", ctx, parent);
    c.name = name;
    if (int e = failure("lookup")) return Err(e);
    if (negative_lookup) {
      fs::Entry negative;
      negative.entry_timeout_ns = policy_ ? policy_->negative_timeout_ns() : entry.entry_timeout_ns;
      return negative;
    }
    return make_entry();
  }
  void forget(fs::NodeId node, uint64_t count) override {
    FakeCall& c = record("forget", {}, node);
    c.count = count;
    forgets.emplace_back(node, count);
  }
  Result<fs::Attr> getattr(const fs::Context& ctx, fs::NodeId node,
                           std::optional<fs::HandleId> handle) override {
    FakeCall& c = record("getattr", ctx, node);
    c.opt_handle = handle;
    if (int e = failure("getattr")) return Err(e);
    return make_attr();
  }
  Result<fs::Attr> setattr(const fs::Context& ctx, fs::NodeId node,
                           const fs::SetattrArgs& args) override {
    FakeCall& c = record("setattr", ctx, node);
    c.setattr = args;
    if (int e = failure("setattr")) return Err(e);
    return make_attr();
  }
  Result<std::string> readlink(const fs::Context& ctx, fs::NodeId node) override {
    record("readlink", ctx, node);
    if (int e = failure("readlink")) return Err(e);
    return readlink_target;
  }
  Result<fs::Entry> symlink(const fs::Context& ctx, std::string_view target, fs::NodeId parent,
                            std::string_view name) override {
    FakeCall& c = record("symlink", ctx, parent);
    c.name = name;
    c.name2 = target;
    if (int e = failure("symlink")) return Err(e);
    return make_entry();
  }
  Result<fs::Entry> mknod(const fs::Context& ctx, fs::NodeId parent, std::string_view name,
                          uint32_t mode, uint32_t rdev, uint32_t umask) override {
    FakeCall& c = record("mknod", ctx, parent);
    c.name = name;
    c.mode = mode;
    c.rdev = rdev;
    c.umask = umask;
    if (int e = failure("mknod")) return Err(e);
    return make_entry();
  }
  Result<fs::Entry> mkdir(const fs::Context& ctx, fs::NodeId parent, std::string_view name,
                          uint32_t mode, uint32_t umask) override {
    FakeCall& c = record("mkdir", ctx, parent);
    c.name = name;
    c.mode = mode;
    c.umask = umask;
    if (int e = failure("mkdir")) return Err(e);
    return make_entry();
  }
  Status unlink(const fs::Context& ctx, fs::NodeId parent, std::string_view name) override {
    record("unlink", ctx, parent).name = name;
    return status("unlink");
  }
  Status rmdir(const fs::Context& ctx, fs::NodeId parent, std::string_view name) override {
    record("rmdir", ctx, parent).name = name;
    return status("rmdir");
  }
  Status rename(const fs::Context& ctx, fs::NodeId old_parent, std::string_view old_name,
                fs::NodeId new_parent, std::string_view new_name, uint32_t flags) override {
    FakeCall& c = record("rename", ctx, old_parent);
    c.name = old_name;
    c.node2 = new_parent;
    c.name2 = new_name;
    c.flags = flags;
    return status("rename");
  }
  Result<fs::Entry> link(const fs::Context& ctx, fs::NodeId node, fs::NodeId new_parent,
                         std::string_view new_name) override {
    FakeCall& c = record("link", ctx, node);
    c.node2 = new_parent;
    c.name = new_name;
    if (int e = failure("link")) return Err(e);
    return make_entry();
  }
  Result<fs::Opened> open(const fs::Context& ctx, fs::NodeId node, uint32_t flags) override {
    record("open", ctx, node).flags = flags;
    if (int e = failure("open")) return Err(e);
    fs::Opened o = opened;
    if (policy_) o.open_flags = policy_->file_open_flags(false);
    return o;
  }
  Result<fs::EntryOpened> create(const fs::Context& ctx, fs::NodeId parent, std::string_view name,
                                 uint32_t mode, uint32_t flags, uint32_t umask) override {
    FakeCall& c = record("create", ctx, parent);
    c.name = name;
    c.mode = mode;
    c.flags = flags;
    c.umask = umask;
    if (int e = failure("create")) return Err(e);
    return fs::EntryOpened{make_entry(), opened};
  }
  Result<fs::EntryOpened> tmpfile(const fs::Context& ctx, fs::NodeId parent, uint32_t mode,
                                  uint32_t flags, uint32_t umask) override {
    FakeCall& c = record("tmpfile", ctx, parent);
    c.mode = mode;
    c.flags = flags;
    c.umask = umask;
    if (int e = failure("tmpfile")) return Err(e);
    return fs::EntryOpened{make_entry(), opened};
  }
  Result<size_t> read(const fs::Context& ctx, fs::NodeId node, fs::HandleId handle,
                      uint64_t offset, uint32_t size, fs::ReadSink& sink) override {
    FakeCall& c = record("read", ctx, node);
    c.handle = handle;
    c.offset = offset;
    c.size = size;
    if (int e = failure("read")) return Err(e);
    int fd = memfd_with(read_data);
    if (fd < 0) return Err(EIO);
    auto n = sink.read_from(fd, offset, size);
    ::close(fd);
    return n;
  }
  Result<size_t> write(const fs::Context& ctx, fs::NodeId node, fs::HandleId handle,
                       uint64_t offset, fs::WriteSource& data, uint32_t write_flags) override {
    FakeCall& c = record("write", ctx, node);
    c.handle = handle;
    c.offset = offset;
    c.flags = write_flags;
    c.length = data.size();
    if (int e = failure("write")) return Err(e);
    // Capture the payload through the source, as a real filesystem would write it.
    int fd = memfd_with({});
    if (fd < 0) return Err(EIO);
    auto n = data.write_to(fd, 0);
    if (n) {
      c.data.resize(*n);
      if (::pread(fd, c.data.data(), *n, 0) != static_cast<ssize_t>(*n)) c.data.clear();
    }
    ::close(fd);
    if (!n) return n;
    return write_result.value_or(*n);
  }
  Result<UniqueFd> dax_file(const fs::Context& ctx, fs::NodeId node,
                            std::optional<fs::HandleId> handle, bool writable) override {
    FakeCall& c = record("dax_file", ctx, node);
    c.opt_handle = handle;
    c.flags = writable;
    if (int e = failure("dax_file")) return Err(e);
    UniqueFd fd(memfd_with({}));
    if (!fd) return Err(EIO);
    return fd;
  }
  Status flush(const fs::Context& ctx, fs::NodeId node, fs::HandleId handle,
               uint64_t lock_owner) override {
    FakeCall& c = record("flush", ctx, node);
    c.handle = handle;
    c.owner = lock_owner;
    return status("flush");
  }
  Status release(const fs::Context& ctx, fs::NodeId node, fs::HandleId handle, uint32_t open_flags,
                 uint32_t release_flags, uint64_t lock_owner) override {
    FakeCall& c = record("release", ctx, node);
    c.handle = handle;
    c.flags = open_flags;
    c.flags2 = release_flags;
    c.owner = lock_owner;
    return status("release");
  }
  Status fsync(const fs::Context& ctx, fs::NodeId node, fs::HandleId handle,
               bool datasync) override {
    FakeCall& c = record("fsync", ctx, node);
    c.handle = handle;
    c.datasync = datasync;
    return status("fsync");
  }
  Result<fs::Opened> opendir(const fs::Context& ctx, fs::NodeId node, uint32_t flags) override {
    record("opendir", ctx, node).flags = flags;
    if (int e = failure("opendir")) return Err(e);
    fs::Opened o = opened;
    if (policy_) o.open_flags = policy_->dir_open_flags();
    return o;
  }
  Status readdir(const fs::Context& ctx, fs::NodeId node, fs::HandleId handle, uint64_t offset,
                 bool plus, fs::DirSink& sink) override {
    FakeCall& c = record("readdir", ctx, node);
    c.handle = handle;
    c.offset = offset;
    c.plus = plus;
    if (int e = failure("readdir")) return Err(e);
    dir_items_sent = 0;
    for (const auto& item : dir_items) {
      if (item.offset <= offset) continue;
      if (!sink.has_room(item.name.size())) break;
      fs::DirEntry d{.ino = item.ino, .offset = item.offset, .type = item.type, .name = item.name};
      fs::Entry e;
      if (plus && item.name != "." && item.name != "..") {
        e = make_entry();
        e.node = 1000 + item.ino;
        e.attr.st.st_ino = item.ino;
        // Distinct versions per entry, so tests see each trailer follow its own record.
        if (e.attr.version.index != 0) e.attr.version.index += item.ino;
      }
      if (!sink.add(d, plus ? &e : nullptr)) break;
      ++dir_items_sent;
    }
    return {};
  }
  Status releasedir(const fs::Context& ctx, fs::NodeId node, fs::HandleId handle) override {
    record("releasedir", ctx, node).handle = handle;
    return status("releasedir");
  }
  Status fsyncdir(const fs::Context& ctx, fs::NodeId node, fs::HandleId handle,
                  bool datasync) override {
    FakeCall& c = record("fsyncdir", ctx, node);
    c.handle = handle;
    c.datasync = datasync;
    return status("fsyncdir");
  }
  Result<struct statvfs> statfs(const fs::Context& ctx, fs::NodeId node) override {
    record("statfs", ctx, node);
    if (int e = failure("statfs")) return Err(e);
    return statvfs_result;
  }
  Status access(const fs::Context& ctx, fs::NodeId node, uint32_t mask) override {
    record("access", ctx, node).mask = mask;
    return status("access");
  }
  Status setxattr(const fs::Context& ctx, fs::NodeId node, std::string_view name,
                  std::span<const char> value, uint32_t flags) override {
    FakeCall& c = record("setxattr", ctx, node);
    c.name = name;
    c.data.assign(value.begin(), value.end());
    c.flags = flags;
    return status("setxattr");
  }
  Result<std::vector<char>> getxattr(const fs::Context& ctx, fs::NodeId node,
                                     std::string_view name, uint32_t size) override {
    FakeCall& c = record("getxattr", ctx, node);
    c.name = name;
    c.size = size;
    if (int e = failure("getxattr")) return Err(e);
    return xattr_value;
  }
  Result<std::vector<char>> listxattr(const fs::Context& ctx, fs::NodeId node,
                                      uint32_t size) override {
    record("listxattr", ctx, node).size = size;
    if (int e = failure("listxattr")) return Err(e);
    return xattr_list;
  }
  Status removexattr(const fs::Context& ctx, fs::NodeId node, std::string_view name) override {
    record("removexattr", ctx, node).name = name;
    return status("removexattr");
  }
  Status fallocate(const fs::Context& ctx, fs::NodeId node, fs::HandleId handle, uint32_t mode,
                   uint64_t offset, uint64_t length) override {
    FakeCall& c = record("fallocate", ctx, node);
    c.handle = handle;
    c.mode = mode;
    c.offset = offset;
    c.length = length;
    return status("fallocate");
  }
  Result<uint64_t> lseek(const fs::Context& ctx, fs::NodeId node, fs::HandleId handle,
                         uint64_t offset, uint32_t whence) override {
    FakeCall& c = record("lseek", ctx, node);
    c.handle = handle;
    c.offset = offset;
    c.whence = whence;
    if (int e = failure("lseek")) return Err(e);
    return lseek_result;
  }
  Result<size_t> copy_file_range(const fs::Context& ctx, fs::NodeId node_in,
                                 fs::HandleId handle_in, uint64_t offset_in, fs::NodeId node_out,
                                 fs::HandleId handle_out, uint64_t offset_out, uint64_t length,
                                 uint64_t flags) override {
    FakeCall& c = record("copy_file_range", ctx, node_in);
    c.handle = handle_in;
    c.offset = offset_in;
    c.node2 = node_out;
    c.handle2 = handle_out;
    c.offset2 = offset_out;
    c.length = length;
    c.cfr_flags = flags;
    if (int e = failure("copy_file_range")) return Err(e);
    return copy_result;
  }
  Status syncfs(const fs::Context& ctx, fs::NodeId node) override {
    record("syncfs", ctx, node);
    return status("syncfs");
  }
  Result<fs::FileLock> getlk(const fs::Context& ctx, fs::NodeId node, fs::HandleId handle,
                             uint64_t owner, const fs::FileLock& lock) override {
    FakeCall& c = record("getlk", ctx, node);
    c.handle = handle;
    c.owner = owner;
    c.lock = lock;
    if (int e = failure("getlk")) return Err(e);
    return getlk_result;
  }
  Status setlk(const fs::Context& ctx, fs::NodeId node, fs::HandleId handle, uint64_t owner,
               const fs::FileLock& lock, uint32_t lk_flags, bool wait) override {
    FakeCall& c = record("setlk", ctx, node);
    c.handle = handle;
    c.owner = owner;
    c.lock = lock;
    c.flags2 = lk_flags;
    c.wait = wait;
    return status("setlk");
  }

 private:
  FakeCall& record(const char* op, const fs::Context& ctx, fs::NodeId node) {
    FakeCall c;
    c.op = op;
    c.context = ctx;
    c.context.interrupted = nullptr;  // points into the server's stack frame
    c.node = node;
    calls.push_back(std::move(c));
    return calls.back();
  }
  int failure(const std::string& op) const {
    auto it = failures_.find(op);
    return it == failures_.end() ? 0 : it->second;
  }
  Status status(const std::string& op) const {
    if (int e = failure(op)) return Err(e);
    return {};
  }
  fs::Entry make_entry() const {
    fs::Entry e = entry;
    if (policy_) {
      e.entry_timeout_ns = policy_->entry_timeout_ns();
      e.attr.timeout_ns = policy_->attr_timeout_ns();
    }
    return e;
  }
  fs::Attr make_attr() const {
    fs::Attr a = attr;
    if (policy_) a.timeout_ns = policy_->attr_timeout_ns();
    return a;
  }
  static int memfd_with(const std::string& contents) {
    int fd = ::memfd_create("svfs-fake", MFD_CLOEXEC);
    if (fd < 0) return -1;
    if (!contents.empty() &&
        ::pwrite(fd, contents.data(), contents.size(), 0) != static_cast<ssize_t>(contents.size())) {
      ::close(fd);
      return -1;
    }
    return fd;
  }

  std::map<std::string, int> failures_;
  std::optional<fs::CachePolicy> policy_;
};

}  // namespace svfs::testing
