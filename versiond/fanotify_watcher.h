// Watches host filesystems with fanotify (filesystem marks, FID reporting) so versiond can bump
// the version slots of inodes and directories changed on the host behind the daemons' backs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "protocol/inode_identity.h"  // PackFsid

namespace svfs::versiond {

// One fanotify event, decoded.
struct HostChange {
  uint32_t pid = 0;       // process that caused it (fanotify metadata pid, a tgid); 0 if outside our pid namespace
  uint64_t mask = 0;      // FAN_* bits of the event
  bool overflow = false;  // events were lost (FAN_Q_OVERFLOW, or a record we could not parse): the
                          // caller must assume everything changed
  // One per FID / DFID / DFID_NAME / OLD_DFID_NAME / NEW_DFID_NAME info record, in record order.
  struct Object {
    uint64_t fsid = 0;                  // PackFsid of the record's fsid
    int32_t handle_type = 0;            // file_handle.handle_type
    std::vector<unsigned char> handle;  // file_handle.f_handle bytes (what name_to_handle_at returns)
    // The record names a directory whose entry `name` changed (DFID_NAME, OLD/NEW_DFID_NAME, or a
    // DFID without name). False for FID records (the object itself) and for the "." DFID_NAME the
    // kernel reports for an event on a directory itself.
    bool is_parent_dir = false;
    std::string name;       // entry name for *_NAME records, else empty
    uint8_t info_type = 0;  // FAN_EVENT_INFO_TYPE_* of the record
  };
  std::vector<Object> objects;
};

using ChangeCallback = std::function<void(const HostChange&)>;

// Decodes a buffer as read from a fanotify fd and calls `on_change` per event. Every length is
// checked against the event and the buffer; a malformed event yields one overflow change (the safe
// answer) and ends parsing of this buffer. Closes event fds that are not FAN_NOFD. Returns the
// number of changes delivered.
size_t ParseFanotifyEvents(std::span<const unsigned char> buf, const ChangeCallback& on_change);

class FanotifyWatcher {
 public:
  FanotifyWatcher(FanotifyWatcher&&) noexcept = default;
  FanotifyWatcher& operator=(FanotifyWatcher&&) noexcept = default;
  FanotifyWatcher(const FanotifyWatcher&) = delete;
  FanotifyWatcher& operator=(const FanotifyWatcher&) = delete;
  ~FanotifyWatcher() = default;

  // fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME |
  // FAN_REPORT_FID | FAN_REPORT_TARGET_FID), without FAN_REPORT_TARGET_FID on kernels < 5.17.
  static std::expected<FanotifyWatcher, std::string> Create();

  // Adds a filesystem mark on the filesystem holding `path` (idempotent) and returns its packed
  // fsid. Subscribes to FAN_RENAME too when the kernel has it.
  std::expected<uint64_t, std::string> watch_filesystem_of(const std::string& path);

  int fd() const { return fd_.get(); }
  // Whether the kernel took FAN_REPORT_TARGET_FID: dirent events (create, delete, moves) then
  // also carry the FID of the entry's inode.
  bool reports_target_fid() const { return target_fid_; }
  // Whether marks include FAN_RENAME (known after the first successful watch_filesystem_of).
  bool reports_rename() const { return rename_ == RenameSupport::kYes; }

  // Reads pending events without blocking and calls `on_change` for each. Returns the number of
  // events, or an error on a read error other than EAGAIN. Stops after a bounded number of reads
  // so a busy filesystem cannot starve the caller's loop; the fd then stays readable.
  std::expected<size_t, std::string> drain(const ChangeCallback& on_change);

 private:
  enum class RenameSupport { kUnknown, kYes, kNo };
  FanotifyWatcher(UniqueFd fd, bool target_fid);

  UniqueFd fd_;
  bool target_fid_ = false;
  RenameSupport rename_ = RenameSupport::kUnknown;
  std::unique_ptr<unsigned char[]> buf_;  // read buffer, kept across drain() calls
};

}  // namespace svfs::versiond
