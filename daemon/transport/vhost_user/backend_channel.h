// The backend request channel (SET_BACKEND_REQ_FD): svfsd's requests to the frontend. For DAX
// it asks the VMM to map a file into the device's window (FS_MAP, the fd in SCM_RIGHTS) or to
// unmap ranges (FS_UNMAP), and waits, bounded, for the frontend's REPLY_ACK answer (none in
// time: EIO, and the channel is closed). Any queue or pool thread may call; one request is on
// the channel at a time.
//
// Wire facts (the virtio-fs-dev QEMU branch, hw/virtio/vhost-user.c and
// include/hw/virtio/vhost-user-fs.h; rust-vmm's vhost crate carries the same): backend request
// 6 = FS_MAP, 7 = FS_UNMAP; the payload is 8 entries as arrays of fd_offset, c_offset, len and
// flags (bit 0 map readable, bit 1 writable), unused entries of len 0; the answer is a u64,
// 0 for success. (The later v3 patches, never merged, use a count-prefixed layout instead.)
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>

#include "common/log_limiter.h"
#include "common/result.h"
#include "common/unique_fd.h"
#include "daemon/fuse/dax_window.h"

namespace svfs::transport::vhost_user {

namespace backend_msg {
inline constexpr uint32_t kFsMap = 6;
inline constexpr uint32_t kFsUnmap = 7;
inline constexpr size_t kFsEntries = 8;
inline constexpr uint64_t kFsFlagRead = 1ull << 0;
inline constexpr uint64_t kFsFlagWrite = 1ull << 1;
}  // namespace backend_msg

// VhostUserFSSlaveMsg of the virtio-fs-dev branch.
struct FsBackendMessage {
  uint64_t fd_offset[backend_msg::kFsEntries];
  uint64_t cache_offset[backend_msg::kFsEntries];
  uint64_t len[backend_msg::kFsEntries];
  uint64_t flags[backend_msg::kFsEntries];
};
static_assert(sizeof(FsBackendMessage) == 256);

class BackendChannel final : public fuse::DaxMapper {
 public:
  explicit BackendChannel(std::chrono::milliseconds answer_timeout) : timeout_(answer_timeout) {}

  // The channel the frontend sent; `usable`: REPLY_ACK and BACKEND_SEND_FD were negotiated
  // (without them svfsd could neither pass the fd nor learn that a mapping is in place).
  void attach(UniqueFd fd, bool usable);
  void detach();

  Status map(int fd, const fuse::DaxMapping& mapping) override;
  Status unmap(std::span<const fuse::DaxRange> ranges) override;

 private:
  // Sends one request and waits for its answer; EIO (logged) when there is no channel, it
  // failed, the frontend refused or did not answer within the timeout.
  Status request(uint32_t code, const FsBackendMessage& payload, int fd);
  // Reads one answer before `deadline`: its u64, or nullopt (logged; the channel closed) on
  // timeout or failure.
  std::optional<uint64_t> read_answer(std::chrono::steady_clock::time_point deadline);

  const std::chrono::milliseconds timeout_;
  std::mutex mutex_;
  UniqueFd fd_;         // guarded by mutex_
  bool usable_ = false;  // guarded by mutex_
  // Requests without a channel come from the guest, as often as it likes.
  LogLimiter refused_log_{"DAX refusal warnings"};
};

}  // namespace svfs::transport::vhost_user
