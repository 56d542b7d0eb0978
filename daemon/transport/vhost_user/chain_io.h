// I/O on one descriptor chain's buffers (the chain's iovecs, translated from guest memory):
// copies out of and into them, the WRITE payload written to a file straight from guest memory,
// and the reply channel that puts a FUSE reply into the chain's writable buffers. The guest may
// change these buffers at any time; callers copy what they decide on once (CopyRequest).
#pragma once

#include <linux/fuse.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "daemon/fs/filesystem.h"
#include "daemon/fuse/server.h"
#include "daemon/transport/vhost_user/virtqueue.h"

namespace svfs::transport::vhost_user {

// A guest can send malformed chains in a loop: log at most a burst of them per second
// (process-wide).
bool MayLogGuestError();

// Copies `len` bytes starting `offset` bytes into the iovecs to `dst`; returns the count copied.
size_t GatherFrom(const std::vector<iovec>& iov, size_t offset, void* dst, size_t len);
// Copies `len` bytes from `src` into the iovecs starting `offset` bytes in.
size_t ScatterTo(const std::vector<iovec>& iov, size_t offset, const void* src, size_t len);
// The iovecs covering [offset, offset + len) of `iov`.
void SliceIov(const std::vector<iovec>& iov, size_t offset, size_t len, std::vector<iovec>& out);

// A chain's request as copied out of guest memory once. The guest may go on changing its
// buffers; what is classified and served is this copy.
struct CopiedRequest {
  std::span<const uint8_t> bytes;  // header and arguments (WRITE: its two headers)
  uint64_t unique = 0;
  bool has_header = false;
  bool refused = false;           // malformed chain or too large (logged): answer EIO, not served
  bool external_payload = false;  // WRITE: the data stays in guest memory after `bytes`
  size_t payload = 0;             // its length
};
// Copies a chain's request (header and arguments; for WRITE only its headers) into `buffer`;
// `queue_index` is for the log.
CopiedRequest CopyRequest(uint32_t queue_index, const Chain& chain, std::span<uint8_t> buffer);

// WRITE payload straight from guest memory: `iov` (the caller's, kept alive for the write).
class GuestWriteSource final : public fs::WriteSource {
 public:
  GuestWriteSource(std::span<const iovec> iov, size_t size) : iov_(iov), size_(size) {}
  size_t size() const override { return size_; }
  Result<size_t> write_to(int fd, uint64_t offset) override;

 private:
  std::span<const iovec> iov_;
  size_t size_;
};

// One request's reply path into the chain's writable buffers.
class ChainReplyChannel final : public fuse::ReplyChannel, public fs::ReadSink {
 public:
  ChainReplyChannel(const Chain& chain, uint64_t unique) : chain_(chain), unique_(unique) {}

  // The bytes put into the chain: its used length.
  size_t written() const { return written_; }

  bool send(std::span<const iovec> parts) override;
  fs::ReadSink& data_sink(size_t max_length) override;
  Result<size_t> read_from(int fd, uint64_t offset, size_t length) override;
  void send_data(const fuse_out_header& header) override;
  // An error reply (no payload).
  void send_error(int error);

 private:
  void too_large(size_t total);

  const Chain& chain_;
  uint64_t unique_;
  size_t written_ = 0;
  size_t limit_ = 0;
  size_t filled_ = 0;
  std::vector<iovec> slice_;
};

}  // namespace svfs::transport::vhost_user
