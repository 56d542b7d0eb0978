// I/O on one descriptor chain's buffers (the chain's iovecs, translated from guest memory):
// copies out of and into them, the WRITE payload written to a file straight from guest memory,
// and the reply channel that puts a FUSE reply into the chain's writable buffers. The guest may
// change these buffers at any time; callers copy what they decide on once (CopyRequest).
//
// Buffers outside svfsd's guest memory (Chain::outside) are allowed in one place only, and only
// with a DAX window: the data of a READ or the payload of a WRITE, which then moves through the
// VMM (WindowIo). Headers, arguments and every other reply must lie in svfsd's mapping.
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
#include "daemon/transport/vhost_user/window_io.h"

namespace svfs::transport::vhost_user {

// A guest can send malformed chains in a loop: log at most a burst of them per second
// (process-wide).
bool MayLogGuestError();

// Copies `len` bytes starting `offset` bytes into the iovecs to `dst`; returns the count copied
// (these three stop at an iovec outside guest memory: callers check InGuestMemory first).
size_t GatherFrom(const std::vector<iovec>& iov, size_t offset, void* dst, size_t len);
// Copies `len` bytes from `src` into the iovecs starting `offset` bytes in.
size_t ScatterTo(const std::vector<iovec>& iov, size_t offset, const void* src, size_t len);
// The iovecs covering [offset, offset + len) of `iov`.
void SliceIov(const std::vector<iovec>& iov, size_t offset, size_t len, std::vector<iovec>& out);

// Whether the first `bytes` of the chain's readable (or writable) side lie in svfsd's mapping of
// guest memory.
bool InGuestMemory(const Chain& chain, bool writable, size_t bytes);

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
// `queue_index` is for the log. `window_io`: buffers outside guest memory may carry a READ's
// data or a WRITE's payload (a DAX window exists); otherwise a chain with any is refused.
CopiedRequest CopyRequest(uint32_t queue_index, const Chain& chain, std::span<uint8_t> buffer,
                          bool window_io = false);

// WRITE payload straight from guest memory: `size` bytes from `offset` of the chain's readable
// side. `scratch` holds its iovecs (the caller's, reused across requests).
class GuestWriteSource final : public fs::WriteSource {
 public:
  GuestWriteSource(const Chain& chain, size_t offset, size_t size, std::vector<iovec>& scratch,
                   WindowIo* window_io)
      : chain_(chain), offset_(offset), size_(size), scratch_(scratch), window_io_(window_io) {}
  size_t size() const override { return size_; }
  Result<size_t> write_to(int fd, uint64_t offset) override;

 private:
  const Chain& chain_;
  size_t offset_;
  size_t size_;
  std::vector<iovec>& scratch_;
  WindowIo* window_io_;
};

// One request's reply path into the chain's writable buffers.
class ChainReplyChannel final : public fuse::ReplyChannel, public fs::ReadSink {
 public:
  ChainReplyChannel(const Chain& chain, uint64_t unique, WindowIo* window_io = nullptr)
      : chain_(chain), unique_(unique), window_io_(window_io) {}

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
  WindowIo* window_io_;
  size_t written_ = 0;
  size_t limit_ = 0;
  size_t filled_ = 0;
  std::vector<iovec> slice_;
};

struct ServedChain {
  size_t written;                         // bytes written into the chain: its used length
  fuse::Server::Clock::time_point done;   // when it was answered (`started` if refused or
                                          // too short for a header)
};

// Serves one chain from its request copy (a refused one gets EIO if it can be answered).
// `scratch` is for WRITE payload iovecs; `started`: when the caller took the chain up.
ServedChain ServeChain(fuse::Server& server, fuse::DaxWindow* dax, WindowIo* window_io,
                       const Chain& chain, const CopiedRequest& copy, std::vector<iovec>& scratch,
                       fuse::Server::Clock::time_point started);

}  // namespace svfs::transport::vhost_user
