#include "versiond/fanotify_watcher.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/fanotify.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace svfs::versiond {
namespace {

// Large enough for hundreds of FID events per read; the kernel never splits an event across reads.
constexpr size_t kReadBufferSize = 64 * 1024;
// Reads per drain() before handing control back to the caller's event loop.
constexpr int kMaxReadsPerDrain = 64;

constexpr uint64_t kEventMask = FAN_ATTRIB | FAN_MODIFY | FAN_CLOSE_WRITE | FAN_CREATE |
                                FAN_DELETE | FAN_MOVED_FROM | FAN_MOVED_TO | FAN_DELETE_SELF |
                                FAN_MOVE_SELF | FAN_ONDIR;

// Sizes of the fixed parts of an FID info record: header, fsid, then struct file_handle's
// handle_bytes and handle_type ahead of f_handle[].
constexpr size_t kInfoHeaderSize = sizeof(fanotify_event_info_header);
constexpr size_t kFidRecordFixedSize = sizeof(fanotify_event_info_fid);  // header + fsid
constexpr size_t kFileHandleFixedSize = sizeof(uint32_t) + sizeof(int32_t);

std::string Errno(int err) { return std::strerror(err); }

bool IsFidRecord(uint8_t type) {
  return type == FAN_EVENT_INFO_TYPE_FID || type == FAN_EVENT_INFO_TYPE_DFID ||
         type == FAN_EVENT_INFO_TYPE_DFID_NAME || type == FAN_EVENT_INFO_TYPE_OLD_DFID_NAME ||
         type == FAN_EVENT_INFO_TYPE_NEW_DFID_NAME;
}

bool HasName(uint8_t type) {
  return type == FAN_EVENT_INFO_TYPE_DFID_NAME || type == FAN_EVENT_INFO_TYPE_OLD_DFID_NAME ||
         type == FAN_EVENT_INFO_TYPE_NEW_DFID_NAME;
}

// Decodes one FID-type record (the bytes of exactly one record, padding included).
std::expected<HostChange::Object, std::string> ParseFidRecord(std::span<const unsigned char> rec,
                                                              uint8_t type) {
  if (rec.size() < kFidRecordFixedSize + kFileHandleFixedSize) {
    return std::unexpected(fmt::format("FID record type {} of {} bytes is too short", type,
                                       rec.size()));
  }
  fanotify_event_info_fid fid{};
  std::memcpy(&fid, rec.data(), kFidRecordFixedSize);
  uint32_t handle_bytes = 0;
  int32_t handle_type = 0;
  const unsigned char* fh = rec.data() + kFidRecordFixedSize;
  std::memcpy(&handle_bytes, fh, sizeof(handle_bytes));
  std::memcpy(&handle_type, fh + sizeof(handle_bytes), sizeof(handle_type));
  const size_t room = rec.size() - kFidRecordFixedSize - kFileHandleFixedSize;
  if (handle_bytes > room) {
    return std::unexpected(
        fmt::format("file handle of {} bytes overruns its {}-byte record", handle_bytes, rec.size()));
  }
  HostChange::Object obj;
  obj.fsid = protocol::PackFsid(fid.fsid);
  obj.handle_type = handle_type;
  obj.info_type = type;
  const unsigned char* handle = fh + kFileHandleFixedSize;
  obj.handle.assign(handle, handle + handle_bytes);
  if (HasName(type)) {
    const char* name = reinterpret_cast<const char*>(handle + handle_bytes);
    const size_t name_room = room - handle_bytes;
    const size_t len = strnlen(name, name_room);
    if (len == name_room) {
      return std::unexpected("entry name in a DFID_NAME record is not NUL-terminated");
    }
    obj.name.assign(name, len);
    // The kernel names a directory's event on itself "." in the directory's own record.
    obj.is_parent_dir = obj.name != ".";
  } else {
    obj.is_parent_dir = type == FAN_EVENT_INFO_TYPE_DFID;
  }
  return obj;
}

// Decodes the info records of one event (the bytes after its metadata, up to event_len).
std::expected<void, std::string> ParseInfoRecords(std::span<const unsigned char> info,
                                                  HostChange& change) {
  size_t off = 0;
  while (off < info.size()) {
    if (info.size() - off < kInfoHeaderSize) {
      return std::unexpected(fmt::format("{} trailing bytes after the info records", info.size() - off));
    }
    fanotify_event_info_header hdr{};
    std::memcpy(&hdr, info.data() + off, kInfoHeaderSize);
    if (hdr.len < kInfoHeaderSize || hdr.len > info.size() - off) {
      return std::unexpected(fmt::format("info record type {} has length {} with {} bytes left",
                                         hdr.info_type, hdr.len, info.size() - off));
    }
    if (IsFidRecord(hdr.info_type)) {
      auto obj = ParseFidRecord(info.subspan(off, hdr.len), hdr.info_type);
      if (!obj) return std::unexpected(std::move(obj.error()));
      change.objects.push_back(std::move(*obj));
    }
    // Other types (pidfd, error, future ones) are skipped by their length.
    off += hdr.len;
  }
  return {};
}

void CloseEventFd(int32_t fd) {
  if (fd >= 0) ::close(fd);
}

}  // namespace

size_t ParseFanotifyEvents(std::span<const unsigned char> buf, const ChangeCallback& on_change) {
  size_t count = 0;
  size_t off = 0;
  // On a malformed event, what follows cannot be trusted either: report lost events instead.
  auto malformed = [&](const std::string& why) {
    spdlog::error("fanotify: malformed event at offset {} of a {}-byte read: {}; treating as queue "
                  "overflow",
                  off, buf.size(), why);
    HostChange lost;
    lost.overflow = true;
    lost.mask = FAN_Q_OVERFLOW;
    on_change(lost);
    return count + 1;
  };
  while (off < buf.size()) {
    const size_t left = buf.size() - off;
    if (left < FAN_EVENT_METADATA_LEN) {
      return malformed(fmt::format("{} bytes are too few for event metadata", left));
    }
    fanotify_event_metadata meta{};
    std::memcpy(&meta, buf.data() + off, FAN_EVENT_METADATA_LEN);
    if (meta.vers != FANOTIFY_METADATA_VERSION) {
      CloseEventFd(meta.fd);
      return malformed(fmt::format("metadata version {} (expected {})", meta.vers,
                                   FANOTIFY_METADATA_VERSION));
    }
    if (meta.metadata_len < FAN_EVENT_METADATA_LEN || meta.event_len < meta.metadata_len ||
        meta.event_len > left) {
      CloseEventFd(meta.fd);
      return malformed(fmt::format("event_len {} metadata_len {} with {} bytes left",
                                   meta.event_len, meta.metadata_len, left));
    }
    // With FID reporting the kernel sends FAN_NOFD; close anything else so fds cannot leak.
    CloseEventFd(meta.fd);

    HostChange change;
    change.pid = static_cast<uint32_t>(meta.pid);
    change.mask = meta.mask;
    change.overflow = (meta.mask & FAN_Q_OVERFLOW) != 0;
    auto info = buf.subspan(off + meta.metadata_len, meta.event_len - meta.metadata_len);
    if (auto ok = ParseInfoRecords(info, change); !ok) return malformed(ok.error());
    on_change(change);
    ++count;
    off += meta.event_len;
  }
  return count;
}

FanotifyWatcher::FanotifyWatcher(UniqueFd fd, bool target_fid)
    : fd_(std::move(fd)), target_fid_(target_fid),
      buf_(std::make_unique<unsigned char[]>(kReadBufferSize)) {}

std::expected<FanotifyWatcher, std::string> FanotifyWatcher::Create() {
  constexpr unsigned kBase =
      FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME | FAN_REPORT_FID;
  bool target_fid = true;
  int fd = fanotify_init(kBase | FAN_REPORT_TARGET_FID, O_RDONLY);
  if (fd < 0 && errno == EINVAL) {
    // FAN_REPORT_TARGET_FID came in 5.17; without it dirent events lack the entry's own FID.
    target_fid = false;
    fd = fanotify_init(kBase, O_RDONLY);
  }
  if (fd < 0) {
    const int err = errno;
    std::string hint;
    switch (err) {
      case EPERM:
        hint = "fanotify with FID reporting needs CAP_SYS_ADMIN in the initial user namespace";
        break;
      case EINVAL:
        hint = "FAN_REPORT_DFID_NAME needs Linux >= 5.9";
        break;
      case ENOSYS:
        hint = "the kernel was built without CONFIG_FANOTIFY";
        break;
      case EMFILE:
        hint = "too many fanotify groups or open fds; raise fs.fanotify.max_user_groups or RLIMIT_NOFILE";
        break;
      default:
        break;
    }
    return std::unexpected(fmt::format(
        "fanotify_init(FID reporting) failed: {}{}{}; host-side changes will not be seen", Errno(err),
        hint.empty() ? "" : ": ", hint));
  }
  if (!target_fid) {
    spdlog::info("fanotify: kernel lacks FAN_REPORT_TARGET_FID (< 5.17); create/delete/move "
                 "events will name only the parent directory");
  }
  return FanotifyWatcher(UniqueFd(fd), target_fid);
}

std::expected<uint64_t, std::string> FanotifyWatcher::watch_filesystem_of(const std::string& path) {
  // statfs first: a bad path gets a plain error, and we need the fsid the daemons will send.
  struct statfs st {};
  if (::statfs(path.c_str(), &st) != 0) {
    return std::unexpected(fmt::format("cannot watch {}: statfs: {}", path, Errno(errno)));
  }
  const uint64_t fsid = protocol::PackFsid(st.f_fsid);
  if (fsid == 0) {
    // Events could not be matched to the daemons' keys (the kernel refuses such marks too).
    return std::unexpected(fmt::format(
        "cannot watch the filesystem of {}: it reports a zero fsid, so host-side changes on it "
        "will not be seen",
        path));
  }

  auto mark = [&](uint64_t mask) {
    return fanotify_mark(fd_.get(), FAN_MARK_ADD | FAN_MARK_FILESYSTEM, mask, AT_FDCWD,
                         path.c_str());
  };
  int rc = -1;
  if (rename_ != RenameSupport::kNo) {
    rc = mark(kEventMask | FAN_RENAME);
    if (rc == 0) {
      rename_ = RenameSupport::kYes;
    } else if (errno == EINVAL && rename_ == RenameSupport::kUnknown) {
      // FAN_RENAME came in 5.17; MOVED_FROM/MOVED_TO still report both sides of a move.
      rename_ = RenameSupport::kNo;
    }
  }
  bool retried_without_rename = false;
  if (rename_ == RenameSupport::kNo && rc != 0) {
    retried_without_rename = true;
    rc = mark(kEventMask);
  }
  if (rc != 0) {
    const int err = errno;
    // EINVAL without FAN_RENAME too: that EINVAL was not about FAN_RENAME.
    if (retried_without_rename && err == EINVAL) rename_ = RenameSupport::kUnknown;
    switch (err) {
      case EOPNOTSUPP:
      case ENODEV:
      case EXDEV:
        // The kernel refuses FID marks when the filesystem cannot encode file handles (EOPNOTSUPP),
        // has a zero fsid (ENODEV) or is a subvolume whose fsid differs from its sb's (EXDEV).
        return std::unexpected(fmt::format(
            "cannot watch the filesystem of {} ({}): it has no usable file handles or fsid for "
            "fanotify, so host-side changes on it will not be seen",
            path, Errno(err)));
      case ENOSPC:
        return std::unexpected(fmt::format(
            "cannot watch the filesystem of {}: too many fanotify marks ({}); raise "
            "fs.fanotify.max_user_marks",
            path, Errno(err)));
      default:
        return std::unexpected(
            fmt::format("cannot watch the filesystem of {}: fanotify_mark: {}", path, Errno(err)));
    }
  }
  return fsid;
}

std::expected<size_t, std::string> FanotifyWatcher::drain(const ChangeCallback& on_change) {
  size_t total = 0;
  for (int reads = 0; reads < kMaxReadsPerDrain;) {
    const ssize_t n = ::read(fd_.get(), buf_.get(), kReadBufferSize);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      return std::unexpected(fmt::format("reading fanotify events failed: {}", Errno(errno)));
    }
    if (n == 0) break;
    ++reads;
    total += ParseFanotifyEvents({buf_.get(), static_cast<size_t>(n)}, on_change);
  }
  return total;
}

}  // namespace svfs::versiond
