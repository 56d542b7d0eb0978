// The backend request channel (SET_BACKEND_REQ_FD): svfsd's requests to the frontend. For DAX
// it asks the VMM to map a file into the device's window (FS_MAP, the fd in SCM_RIGHTS), to
// unmap ranges (FS_UNMAP), or to move a READ's or WRITE's data between a file and guest memory
// svfsd cannot reach (FS_IO: a buffer in the window itself), and waits, bounded, for the
// frontend's REPLY_ACK answer (none in time: EIO, and the channel is closed). Any queue or pool
// thread may call; one request is on the channel at a time.
//
// Wire facts (the virtio-fs-dev QEMU branch, hw/virtio/vhost-user.c and
// include/hw/virtio/vhost-user-fs.h; rust-vmm's vhost crate carries the same): backend request
// 6 = FS_MAP, 7 = FS_UNMAP; the payload is 8 entries as arrays of fd_offset, c_offset, len and
// flags (bit 0 map readable, bit 1 writable), unused entries of len 0; the answer is a u64,
// 0 for success. 9 = FS_IO: c_offset is a guest-physical address, flag bit 0 reads the file
// into guest memory and bit 1 writes guest memory to the file; the answer is the byte count,
// or a negative errno. A frontend that reduces failures to 1 (as QEMU does for requests it
// does not know) is indistinguishable from a 1-byte transfer: FS_IO needs a frontend that
// speaks it (the patched QEMU of tests/e2e/qemu-dax). (The later v3 patches, never merged, use
// a count-prefixed layout.)
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
#include "daemon/transport/vhost_user/window_io.h"

namespace svfs::transport::vhost_user {

namespace backend_msg {
inline constexpr uint32_t kFsMap = 6;
inline constexpr uint32_t kFsUnmap = 7;
inline constexpr uint32_t kFsIo = 9;  // 8 is the branch's FS_SYNC, which svfsd never sends
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

class BackendChannel final : public fuse::DaxMapper, public WindowIo {
 public:
  explicit BackendChannel(std::chrono::milliseconds answer_timeout) : timeout_(answer_timeout) {}

  // The channel the frontend sent; `usable`: REPLY_ACK and BACKEND_SEND_FD were negotiated
  // (without them svfsd could neither pass the fd nor learn that a mapping is in place).
  void attach(UniqueFd fd, bool usable);
  void detach();

  Status map(int fd, const fuse::DaxMapping& mapping) override;
  Status unmap(std::span<const fuse::DaxRange> ranges) override;
  // One FS_IO entry: the VMM's count (at most `length`) or its errno.
  Result<size_t> transfer(int fd, uint64_t file_offset, uint64_t guest_addr, uint64_t length,
                          Direction direction) override;

 private:
  // Sends one request and waits for its answer; EIO (logged) when there is no channel, it
  // failed or the frontend did not answer within the timeout.
  Result<uint64_t> request(uint32_t code, const FsBackendMessage& payload, int fd);
  // FS_MAP and FS_UNMAP: an answer other than 0 is a refusal (EIO, logged).
  Status request_ok(uint32_t code, const FsBackendMessage& payload, int fd);
  // The REPLY_ACK value answering request `code`; nullopt (channel closed) on a timeout or an
  // answer that is not one to `code`.
  std::optional<uint64_t> read_answer(uint32_t code, std::chrono::steady_clock::time_point deadline);

  const std::chrono::milliseconds timeout_;
  std::mutex mutex_;
  UniqueFd fd_;         // guarded by mutex_
  bool usable_ = false;  // guarded by mutex_
  // Requests without a channel come from the guest, as often as it likes.
  LogLimiter refused_log_{"DAX refusal warnings"};
};

}  // namespace svfs::transport::vhost_user
